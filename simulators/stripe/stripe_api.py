"""Stripe's v1 API edge: API-key auth, parameter decoding, Idempotency-Key replay, errors.

Endpoints are plain handlers ``(params, ctx) -> StripeObject``; :class:`StripeApi` runs
them and renders their result or error exactly as Stripe's responses look.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request, Response

from . import objects
from .config import SimConfig
from .faults import Faults
from .idempotency import IdempotencyKeys
from .objects import ParamError, StripeApiError, StripeObject
from .params import Params, request_params
from .store import RequestContext

log = logging.getLogger(__name__)


def json_bytes(obj: StripeObject) -> bytes:
    return json.dumps(obj, indent=2).encode("utf-8")


# "Idempotency keys are up to 255 characters long" (https://docs.stripe.com/api/idempotent_requests).
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Stripe's advice to clients on whether the same request may get another answer; the official
# SDKs follow it before looking at the status.
SHOULD_RETRY = "Stripe-Should-Retry"


def _auth_error(message: str) -> StripeApiError:
    return StripeApiError(401, message)


def check_api_key(request: Request, expected: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    key = ""
    if scheme.lower() == "bearer":
        key = credential.strip()
    elif scheme.lower() == "basic":
        # `curl -u sk_test_...:` sends the key as the Basic username.
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            key = base64.b64decode(credential.strip()).decode("utf-8").partition(":")[0]
    if not key:
        raise _auth_error(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY')."
        )
    if not hmac.compare_digest(key.encode(), expected.encode()):
        masked = key[:8] + "*" * max(len(key) - 12, 0) + key[-4:] if len(key) > 12 else "****"
        raise _auth_error(f"Invalid API Key provided: {masked}")


def check_idempotency_key(key: str | None) -> None:
    # Stripe's own wording (quoted in github.com/cartalyst/stripe/issues/65).
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise StripeApiError(
            400,
            f"Idempotent key length is {len(key)}, which is outside accepted lengths. "
            f"Idempotent Keys must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters long. If you're "
            "looking for a decent generator, try using a UUID defined by IETF RFC 4122.",
        )


# How often a held response checks whether its client is still waiting.
_DISCONNECT_POLL_SECONDS = 0.05

Handler = Callable[[Params, RequestContext], Awaitable[StripeObject]]


class StripeApi:
    """Runs a v1 endpoint the way Stripe's edge does: auth, decoding, idempotency, errors.

    Injected faults (see :mod:`.faults`) act here too: an API error answers before anything
    else happens (``Stripe-Should-Retry: true``), an error after execution replaces the answer
    of a request that ran and is kept for its key (``Stripe-Should-Retry: false``, as every 5xx
    Stripe keeps), and a timeout-after-commit holds a response already committed.
    """

    def __init__(self, config: SimConfig, idempotency: IdempotencyKeys, faults: Faults) -> None:
        self._config = config
        self._idempotency = idempotency
        self._faults = faults

    async def call(self, request: Request, handler: Handler, status: int = 200) -> Response:
        request_id = objects.new_id("req_", 14)
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": request.headers.get("stripe-version", self._config.api_version),
        }
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        if key:
            headers["Idempotency-Key"] = key
        injected = self._faults.take_api_error(request.method, request.url.path)
        if injected is not None:
            # Before auth and idempotency: nothing is done and the key stays unused, so
            # a retry with the same key runs the request for real, and Stripe says so.
            if injected.status >= 500:
                headers[SHOULD_RETRY] = "true"
            return error_response(_injected_error(injected.status), headers)
        try:
            check_api_key(request, self._config.api_key)
            check_idempotency_key(key)
            params = await request_params(request)
        except StripeApiError as exc:
            return error_response(exc, headers)
        if not key:
            outcome = await self._run(handler, params, RequestContext(request_id), status)
            outcome = self._error_if_faulted(request, outcome)
            return await self._answer(request, outcome, headers)
        try:
            replay = await self._idempotency.begin(key, request.method, request.url.path, params)
        except StripeApiError as exc:
            return error_response(exc, headers)
        if replay is not None:
            headers["Idempotent-Replayed"] = "true"
            if replay.original_request_id:
                headers["Original-Request"] = replay.original_request_id
            if replay.status >= 500:
                headers[SHOULD_RETRY] = "false"  # the same key gets this 500 again, always
            return Response(replay.body, replay.status, headers, media_type="application/json")
        try:
            outcome = await self._run(handler, params, RequestContext(request_id, key), status)
        except BaseException:
            await self._idempotency.abort(key)
            raise
        outcome = self._error_if_faulted(request, outcome)
        if outcome.stored:
            await self._idempotency.finish(key, outcome.status, outcome.body, request_id)
        else:
            await self._idempotency.abort(key)
        # After finish(): a retry arriving while this response is held gets the replay.
        return await self._answer(request, outcome, headers)

    async def _answer(
        self, request: Request, outcome: _Outcome, headers: dict[str, str]
    ) -> Response:
        if outcome.stored and outcome.status >= 500:
            # The request ran: asking again cannot change what it did, only a new key could.
            headers[SHOULD_RETRY] = "false"
        await self._hold_if_faulted(request, outcome)
        return Response(outcome.body, outcome.status, headers, media_type="application/json")

    def _error_if_faulted(self, request: Request, outcome: _Outcome) -> _Outcome:
        """Stripe's 500 after execution: the request did its work, its answer is an error."""
        if not 200 <= outcome.status < 300:
            return outcome
        rule = self._faults.take_error_after_execution(request.method, request.url.path)
        if rule is None:
            return outcome
        body = json_bytes(_injected_error(rule.status, after_execution=True).to_body())
        return _Outcome(rule.status, body, stored=True)

    async def _hold_if_faulted(self, request: Request, outcome: _Outcome) -> None:
        """Stripe's "timed out after succeeding": only a request that did something counts."""
        if not 200 <= outcome.status < 300:
            return
        seconds = self._faults.take_timeout(request.method, request.url.path)
        if seconds is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            # Once the client has given up nobody can receive the response; stop holding so
            # the server is not kept busy (and can shut down) for the rest of the delay.
            if await request.is_disconnected():
                return
            await asyncio.sleep(min(remaining, _DISCONNECT_POLL_SECONDS))

    @staticmethod
    async def _run(handler: Handler, params: Params, ctx: RequestContext, status: int) -> _Outcome:
        try:
            return _Outcome(status, json_bytes(await handler(params, ctx)), stored=True)
        except ParamError as exc:
            # Stripe stores no idempotent result for requests that failed validation.
            return _Outcome(exc.status, json_bytes(exc.to_body()), stored=False)
        except StripeApiError as exc:
            return _Outcome(exc.status, json_bytes(exc.to_body()), stored=True)
        except Exception:
            # Stripe replays even its 500s for the same key, so this is stored too.
            log.exception("stripe_sim handler failed")
            err = StripeApiError(
                500, "An unknown error occurred in the Stripe simulator.", type_="api_error"
            )
            return _Outcome(500, json_bytes(err.to_body()), stored=True)


@dataclass(frozen=True)
class _Outcome:
    status: int
    body: bytes
    stored: bool  # whether an idempotency key keeps this result for replays


def _injected_error(status: int, *, after_execution: bool = False) -> StripeApiError:
    when = " after the request ran" if after_execution else ""
    return StripeApiError(
        status,
        f"An error occurred with our connection to Stripe. (Injected by the Stripe simulator"
        f"{when}.)",
        type_="api_error",
    )


def error_response(exc: StripeApiError, headers: dict[str, str] | None = None) -> Response:
    all_headers = dict(headers or {})
    if exc.status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="Stripe"'
    return Response(
        json_bytes(exc.to_body()), exc.status, all_headers, media_type="application/json"
    )
