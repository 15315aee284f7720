"""HTTP face of the Stripe simulator: Stripe's v1 wire format, the hosted page, webhooks.

Bodies are parsed by hand (``a[b][0][c]=v`` form encoding) because Stripe's nested
keys are not something FastAPI's form support understands.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import objects, pay_page
from .config import SimConfig
from .objects import ParamError, StripeApiError, StripeObject
from .signing import signature_header
from .store import (
    NO_REQUEST,
    LineItem,
    ListFilter,
    NewSession,
    RequestContext,
    SimStore,
    check_session_expand,
)

log = logging.getLogger(__name__)

# Stripe's own limits on Checkout Session expiry.
MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 3600
# A client computing `now + 30 min` reaches us a moment later; rejecting that would make the
# documented minimum unusable, so this much latency/clock skew is tolerated on the lower bound.
EXPIRY_SKEW_SECONDS = 60

Params = dict[str, Any]


# --- form decoding ----------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")
# Hashes whose keys are user data: digit keys there must not turn them into lists.
_HASH_PARAMS = frozenset({"metadata"})


def parse_params(pairs: list[tuple[str, str]]) -> Params:
    """Decode Stripe-style nested form keys into dicts and lists.

    ``a[0][b]=1`` and ``a[][b]=1`` both give ``{"a": [{"b": "1"}]}``; the SDK sends the
    indexed form, curl users tend to send ``[]``.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = _KEY_RE.match(key)
        if m is None:
            raise ParamError(f"Invalid parameter name: {key}", param=key)
        parts = [m.group(1), *_PART_RE.findall(m.group(2))]
        node = root
        for depth, raw_part in enumerate(parts):
            part = raw_part if raw_part != "" else str(len(node))
            existing = node.get(part)
            if depth == len(parts) - 1:
                if existing is not None:
                    raise ParamError(
                        f"Invalid parameter: {key} was given more than once.", param=key
                    )
                node[part] = value
            else:
                if existing is None:
                    existing = node[part] = {}
                if not isinstance(existing, dict):
                    raise ParamError(
                        f"Invalid parameter: {key} mixes a value and a hash.", param=key
                    )
                node = existing
    return {k: _listify(k, v) for k, v in root.items()}


def _listify(key: str, value: Any) -> Any:
    if not isinstance(value, dict) or key in _HASH_PARAMS:
        return value
    out = {k: _listify(k, v) for k, v in value.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


# --- parameter validation ------------------------------------------------------


def _reject_unknown(params: Params, allowed: frozenset[str], prefix: str = "") -> None:
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise ParamError(
                f"Received unknown parameter: {name} (the Stripe simulator supports: "
                f"{', '.join(sorted(allowed))})",
                param=name,
                code="parameter_unknown",
            )


def _missing(param: str) -> ParamError:
    return ParamError(f"Missing required param: {param}.", param=param, code="parameter_missing")


def _string(value: Any, param: str, *, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise ParamError(f"Invalid string: {param} must be a string.", param=param)
    if max_length is not None and len(value) > max_length:
        raise ParamError(
            f"Invalid string: {param} must be at most {max_length} characters.",
            param=param,
        )
    return value


def _opt_string(params: Params, key: str, *, max_length: int | None = None) -> str | None:
    value = params.get(key)
    # An empty string means "unset" in Stripe's form encoding.
    if value is None or value == "":
        return None
    return _string(value, key, max_length=max_length)


def _integer(value: Any, param: str, *, minimum: int | None = None) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        number = int(value)
        if minimum is None or number >= minimum:
            return number
        raise ParamError(
            f"This value must be greater than or equal to {minimum}.",
            param=param,
            code="parameter_invalid_integer",
        )
    raise ParamError(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")


def _hash(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParamError(f"Invalid hash: {param} must be a hash.", param=param)
    return value


def _array(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise ParamError(f"Invalid array: {param} must be an array.", param=param)
    return value


def _url(params: Params, key: str, *, required: bool) -> str | None:
    value = _opt_string(params, key, max_length=5000)
    if value is None:
        if required:
            raise _missing(key)
        return None
    if not re.match(r"^https?://[^\s/]+", value):
        raise ParamError("Not a valid URL", param=key, code="url_invalid")
    return value


def _metadata(params: Params) -> dict[str, str]:
    raw = params.get("metadata")
    if raw is None or raw == "":
        return {}
    out: dict[str, str] = {}
    for k, v in _hash(raw, "metadata").items():
        param = f"metadata[{k}]"
        if len(k) > 40:
            raise ParamError("Metadata keys must be at most 40 characters.", param=param)
        value = _string(v, param, max_length=500)
        if value != "":  # empty value unsets a key, so on create it simply is not stored
            out[k] = value
    if len(out) > 50:
        raise ParamError("Metadata can have at most 50 keys.", param="metadata")
    return out


def _expand(params: Params) -> list[str]:
    raw = params.get("expand")
    if raw is None:
        return []
    return [_string(v, f"expand[{i}]") for i, v in enumerate(_array(raw, "expand"))]


def _list_expand(params: Params) -> list[str]:
    # On list endpoints, fields of the listed objects are expanded as `data.<field>`.
    paths = []
    for path in _expand(params):
        if not path.startswith("data."):
            raise ParamError(f"This property cannot be expanded ({path}).", param="expand")
        paths.append(path.removeprefix("data."))
    return paths


_CREATE_SESSION_PARAMS = frozenset(
    {
        "cancel_url",
        "client_reference_id",
        "currency",
        "customer_email",
        "expand",
        "expires_at",
        "line_items",
        "metadata",
        "mode",
        "payment_method_types",
        "success_url",
    }
)
_LINE_ITEM_PARAMS = frozenset({"price_data", "quantity"})
_PRICE_DATA_PARAMS = frozenset({"currency", "product_data", "unit_amount"})
_PRODUCT_DATA_PARAMS = frozenset({"description", "name"})


def session_spec(params: Params, now: int) -> NewSession:
    _reject_unknown(params, _CREATE_SESSION_PARAMS)
    mode = _opt_string(params, "mode")
    if mode is None:
        raise _missing("mode")
    if mode != "payment":
        raise ParamError(
            f"Invalid mode: the Stripe simulator supports only mode=payment, not {mode}.",
            param="mode",
        )
    pm_types = params.get("payment_method_types")
    if pm_types is not None and _array(pm_types, "payment_method_types") != ["card"]:
        raise ParamError(
            "The Stripe simulator supports only payment_method_types[0]=card.",
            param="payment_method_types",
        )
    success_url = _url(params, "success_url", required=True)
    assert success_url is not None
    items, currency = _line_items(params.get("line_items"))
    # Stripe accepts a top-level currency too; price_data currencies must agree with it.
    top_currency = _opt_string(params, "currency")
    if top_currency is not None and top_currency.lower() != currency:
        raise ParamError(
            f"The currency ({top_currency.lower()}) does not match the currency of the line "
            f"items ({currency}).",
            param="currency",
        )
    expires_at = now + MAX_EXPIRY_SECONDS
    if params.get("expires_at") not in (None, ""):
        expires_at = _integer(params["expires_at"], "expires_at")
        if expires_at < now + MIN_EXPIRY_SECONDS - EXPIRY_SKEW_SECONDS:
            raise ParamError(
                "The expires_at timestamp must be at least 30 minutes from Checkout Session "
                "creation.",
                param="expires_at",
            )
        if expires_at > now + MAX_EXPIRY_SECONDS:
            raise ParamError(
                "The expires_at timestamp must be less than 24 hours from Checkout Session "
                "creation.",
                param="expires_at",
            )
    email = _opt_string(params, "customer_email", max_length=800)
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise ParamError(
            f"Invalid email address: {email}", param="customer_email", code="email_invalid"
        )
    return NewSession(
        currency=currency,
        line_items=items,
        success_url=success_url,
        cancel_url=_url(params, "cancel_url", required=False),
        client_reference_id=_opt_string(params, "client_reference_id", max_length=200),
        customer_email=email,
        metadata=_metadata(params),
        expires_at=expires_at,
    )


def _line_items(raw: Any) -> tuple[tuple[LineItem, ...], str]:
    if raw is None or raw == "" or raw == []:
        raise _missing("line_items")
    items: list[LineItem] = []
    currency: str | None = None
    for i, entry in enumerate(_array(raw, "line_items")):
        p = f"line_items[{i}]"
        li = _hash(entry, p)
        _reject_unknown(li, _LINE_ITEM_PARAMS, p)
        if "price_data" not in li:
            raise _missing(f"{p}[price_data]")
        if "quantity" not in li:
            raise _missing(f"{p}[quantity]")
        price = _hash(li["price_data"], f"{p}[price_data]")
        _reject_unknown(price, _PRICE_DATA_PARAMS, f"{p}[price_data]")
        for key in ("currency", "unit_amount", "product_data"):
            if key not in price:
                raise _missing(f"{p}[price_data][{key}]")
        cur = _string(price["currency"], f"{p}[price_data][currency]").lower()
        if not re.fullmatch(r"[a-z]{3}", cur):
            raise ParamError(f"Invalid currency: {cur}", param=f"{p}[price_data][currency]")
        if currency is not None and cur != currency:
            raise ParamError(
                "All line items must use the same currency.",
                param=f"{p}[price_data][currency]",
            )
        currency = cur
        product = _hash(price["product_data"], f"{p}[price_data][product_data]")
        _reject_unknown(product, _PRODUCT_DATA_PARAMS, f"{p}[price_data][product_data]")
        if product.get("name") in (None, ""):
            raise _missing(f"{p}[price_data][product_data][name]")
        items.append(
            LineItem(
                name=_string(product["name"], f"{p}[price_data][product_data][name]"),
                unit_amount=_integer(
                    price["unit_amount"], f"{p}[price_data][unit_amount]", minimum=0
                ),
                quantity=_integer(li["quantity"], f"{p}[quantity]", minimum=1),
            )
        )
    assert currency is not None
    return tuple(items), currency


@dataclass(frozen=True)
class ListArgs:
    limit: int
    starting_after: str | None
    ending_before: str | None


def list_args(params: Params) -> ListArgs:
    limit = 10
    if params.get("limit") not in (None, ""):
        limit = _integer(params["limit"], "limit", minimum=1)
        if limit > 100:
            raise ParamError(
                "This value must be less than or equal to 100.",
                param="limit",
                code="parameter_invalid_integer",
            )
    starting_after = _opt_string(params, "starting_after")
    ending_before = _opt_string(params, "ending_before")
    if starting_after is not None and ending_before is not None:
        raise ParamError(
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="ending_before",
        )
    return ListArgs(limit, starting_after, ending_before)


def _filters(params: Params, keys: tuple[str, ...]) -> ListFilter:
    equals = {}
    for key in keys:
        value = _opt_string(params, key)
        if value is not None:
            equals[key] = value
    return ListFilter(equals)


_REFUND_PARAMS = frozenset({"amount", "metadata", "payment_intent", "reason"})
_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
_LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "expand"})


# --- webhook delivery ----------------------------------------------------------


class WebhookDispatcher:
    """Delivers each event in its own background task, with bounded retries.

    Like Stripe: the exact signed bytes are sent, a fresh signature per attempt,
    redirects are not followed, and any non-2xx counts as a failure.
    """

    def __init__(self, config: SimConfig, store: SimStore) -> None:
        self._config = config
        self._store = store
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self._config.webhook_timeout_seconds, follow_redirects=False
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def submit(self, event: StripeObject) -> None:
        if self._config.webhook_url is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: StripeObject) -> None:
        url = self._config.webhook_url
        assert url is not None and self._client is not None
        # Stripe sends pretty-printed JSON; receivers must verify these exact bytes.
        payload = json.dumps(event, indent=2).encode("utf-8")
        attempts = self._config.webhook_max_attempts
        for attempt in range(attempts):
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": signature_header(payload, self._config.webhook_secret),
            }
            try:
                response = await self._client.post(url, content=payload, headers=headers)
                if 200 <= response.status_code < 300:
                    await self._store.mark_delivered(event["id"])
                    return
                outcome = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            log.warning(
                "webhook %s (%s) attempt %d/%d failed: %s",
                event["id"],
                event["type"],
                attempt + 1,
                attempts,
                outcome,
            )
            if attempt + 1 < attempts:
                delay = self._config.webhook_backoff_base_seconds * 2**attempt
                await asyncio.sleep(min(delay, self._config.webhook_backoff_cap_seconds))
        log.error(
            "webhook %s (%s) given up after %d attempts", event["id"], event["type"], attempts
        )


# --- responses --------------------------------------------------------------------


def _json_bytes(obj: StripeObject) -> bytes:
    return json.dumps(obj, indent=2).encode("utf-8")


def _auth_error(message: str) -> StripeApiError:
    return StripeApiError(401, message)


def _check_api_key(request: Request, expected: str) -> None:
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


Handler = Callable[[Params, RequestContext], Awaitable[StripeObject]]


class StripeApi:
    """Runs a v1 endpoint the way Stripe's edge does: auth, decoding, idempotency, errors."""

    def __init__(self, config: SimConfig, store: SimStore) -> None:
        self._config = config
        self._store = store

    async def call(self, request: Request, handler: Handler, status: int = 200) -> Response:
        request_id = objects.new_id("req_", 14)
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": request.headers.get("stripe-version", self._config.api_version),
        }
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        if key:
            headers["Idempotency-Key"] = key
        try:
            _check_api_key(request, self._config.api_key)
            params = await _request_params(request)
        except StripeApiError as exc:
            return _error_response(exc, headers)
        if not key:
            outcome = await self._run(handler, params, RequestContext(request_id), status)
            return Response(outcome.body, outcome.status, headers, media_type="application/json")
        try:
            replay = await self._store.idempotency_begin(
                key, request.method, request.url.path, params
            )
        except StripeApiError as exc:
            return _error_response(exc, headers)
        if replay is not None:
            headers["Idempotent-Replayed"] = "true"
            if replay.original_request_id:
                headers["Original-Request"] = replay.original_request_id
            return Response(replay.body, replay.status, headers, media_type="application/json")
        try:
            outcome = await self._run(handler, params, RequestContext(request_id, key), status)
        except BaseException:
            await self._store.idempotency_abort(key)
            raise
        if outcome.stored:
            await self._store.idempotency_finish(key, outcome.status, outcome.body, request_id)
        else:
            await self._store.idempotency_abort(key)
        return Response(outcome.body, outcome.status, headers, media_type="application/json")

    @staticmethod
    async def _run(handler: Handler, params: Params, ctx: RequestContext, status: int) -> _Outcome:
        try:
            return _Outcome(status, _json_bytes(await handler(params, ctx)), stored=True)
        except ParamError as exc:
            # Stripe stores no idempotent result for requests that failed validation.
            return _Outcome(exc.status, _json_bytes(exc.to_body()), stored=False)
        except StripeApiError as exc:
            return _Outcome(exc.status, _json_bytes(exc.to_body()), stored=True)
        except Exception:
            # Stripe replays even its 500s for the same key, so this is stored too.
            log.exception("stripe_sim handler failed")
            err = StripeApiError(
                500, "An unknown error occurred in the Stripe simulator.", type_="api_error"
            )
            return _Outcome(500, _json_bytes(err.to_body()), stored=True)


@dataclass(frozen=True)
class _Outcome:
    status: int
    body: bytes
    stored: bool  # whether an idempotency key keeps this result for replays


async def _request_params(request: Request) -> Params:
    if request.method == "GET":
        return parse_params(list(request.query_params.multi_items()))
    return await _form_params(request)


async def _form_params(request: Request) -> Params:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamError("Request body is not valid UTF-8.") from None
    return parse_params(parse_qsl(text, keep_blank_values=True))


def _error_response(exc: StripeApiError, headers: dict[str, str] | None = None) -> Response:
    all_headers = dict(headers or {})
    if exc.status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="Stripe"'
    return Response(
        _json_bytes(exc.to_body()), exc.status, all_headers, media_type="application/json"
    )


# --- application ----------------------------------------------------------------------


def create_app(config: SimConfig, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """The simulator app; ``clock`` lets tests move time forward to reach ``expires_at``."""
    store = SimStore(
        public_url=config.public_url,
        api_version=config.api_version,
        webhooks_enabled=config.webhook_url is not None,
        clock=clock,
    )
    dispatcher = WebhookDispatcher(config, store)
    store.add_event_sink(dispatcher.submit)
    api = StripeApi(config, store)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        dispatcher.start()
        sweeper = asyncio.create_task(_sweep_expired(store, config.expiry_sweep_seconds))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await dispatcher.aclose()

    app = FastAPI(
        title="Stripe simulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.store = store
    app.state.config = config

    @app.exception_handler(StarletteHTTPException)
    async def unknown_route(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            return _error_response(
                StripeApiError(
                    404,
                    f"Unrecognized request URL ({request.method}: {request.url.path}).",
                )
            )
        return JSONResponse({"detail": exc.detail}, exc.status_code)

    _add_api_routes(app, api, store)
    _add_page_routes(app, store)
    _add_sim_routes(app, store)
    return app


async def _sweep_expired(store: SimStore, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await store.expire_due()
        except Exception:
            log.exception("expiry sweep failed")


def _add_api_routes(app: FastAPI, api: StripeApi, store: SimStore) -> None:
    @app.post("/v1/checkout/sessions")
    async def create_session(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            expand = _expand(params)
            check_session_expand(expand)  # before creating: a rejected request must change nothing
            created = await store.create_session(session_spec(params, store.now()))
            return await store.get_session(created["id"], expand) if expand else created

        return await api.call(request, handler)

    @app.get("/v1/checkout/sessions")
    async def list_sessions(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, _LIST_PARAMS | {"payment_intent", "status"})
            args = list_args(params)
            status = _opt_string(params, "status")
            if status is not None and status not in ("open", "complete", "expired"):
                raise ParamError(f"Invalid status: {status}", param="status")
            page = await store.list_sessions(
                limit=args.limit,
                starting_after=args.starting_after,
                ending_before=args.ending_before,
                filters=_filters(params, ("payment_intent", "status")),
                expand=_list_expand(params),
            )
            return objects.list_object("/v1/checkout/sessions", page.data, page.has_more)

        return await api.call(request, handler)

    @app.get("/v1/checkout/sessions/{session_id}")
    async def retrieve_session(request: Request, session_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, frozenset({"expand"}))
            return await store.get_session(session_id, _expand(params))

        return await api.call(request, handler)

    @app.post("/v1/checkout/sessions/{session_id}/expire")
    async def expire_session(request: Request, session_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, frozenset({"expand"}))
            return await store.expire_session(session_id, ctx, _expand(params))

        return await api.call(request, handler)

    @app.get("/v1/payment_intents/{pi_id}")
    async def retrieve_payment_intent(request: Request, pi_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, frozenset())
            return await store.get_payment_intent(pi_id)

        return await api.call(request, handler)

    @app.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, _REFUND_PARAMS)
            pi_id = _opt_string(params, "payment_intent")
            if pi_id is None:
                # Stripe also accepts `charge`; the simulator refunds by payment intent only.
                raise _missing("payment_intent")
            amount = None
            if params.get("amount") not in (None, ""):
                amount = _integer(params["amount"], "amount", minimum=1)
            reason = _opt_string(params, "reason")
            if reason is not None and reason not in _REFUND_REASONS:
                raise ParamError(f"Invalid reason: {reason}", param="reason")
            return await store.create_refund(
                pi_id=pi_id, amount=amount, reason=reason, metadata=_metadata(params), ctx=ctx
            )

        return await api.call(request, handler)

    @app.get("/v1/refunds/{refund_id}")
    async def retrieve_refund(request: Request, refund_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, frozenset())
            return await store.get_refund(refund_id)

        return await api.call(request, handler)

    @app.get("/v1/events")
    async def list_events(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, _LIST_PARAMS - {"expand"} | {"type"})
            args = list_args(params)
            page = await store.list_events(
                limit=args.limit,
                starting_after=args.starting_after,
                ending_before=args.ending_before,
                filters=_filters(params, ("type",)),
            )
            return objects.list_object("/v1/events", page.data, page.has_more)

        return await api.call(request, handler)

    @app.get("/v1/events/{event_id}")
    async def retrieve_event(request: Request, event_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            _reject_unknown(params, frozenset())
            return await store.get_event(event_id)

        return await api.call(request, handler)


def _add_page_routes(app: FastAPI, store: SimStore) -> None:
    @app.get("/pay/{session_id}", response_class=HTMLResponse)
    async def show_pay_page(session_id: str) -> Response:
        try:
            session, items = await store.session_for_page(session_id)
        except StripeApiError as exc:
            return HTMLResponse(pay_page.message_page("Not found", exc.message), exc.status)
        if session["status"] != "open":
            return HTMLResponse(
                pay_page.message_page(
                    "Checkout Session not available",
                    f"This Checkout Session is {session['status']} and can no longer be paid.",
                )
            )
        rows = [(li.name, li.unit_amount, li.quantity) for li in items]
        return HTMLResponse(pay_page.checkout_page(session, rows))

    @app.post("/pay/{session_id}")
    async def submit_pay_page(request: Request, session_id: str) -> Response:
        try:
            outcome = (await _form_params(request)).get("outcome")
            session, _ = await store.session_for_page(session_id)
            if outcome == "pay":
                await store.complete_session(session_id, NO_REQUEST)
        except StripeApiError as exc:
            return HTMLResponse(
                pay_page.message_page("Payment not possible", exc.message), exc.status
            )
        if outcome == "pay":
            target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
            return RedirectResponse(target, status_code=303)
        if outcome == "fail":
            # In real Checkout a declined card is shown to the buyer, who may retry:
            # the session stays open and no event is sent.
            return HTMLResponse(
                pay_page.message_page(
                    "Your card was declined",
                    "The payment failed; the Checkout Session is still open and can be retried.",
                )
            )
        if outcome == "abandon":
            if session["cancel_url"]:
                return RedirectResponse(session["cancel_url"], status_code=303)
            return HTMLResponse(
                pay_page.message_page(
                    "Checkout abandoned", "The Checkout Session will expire at its expires_at."
                )
            )
        return HTMLResponse(
            pay_page.message_page(
                "Unknown outcome", f"outcome must be one of {', '.join(pay_page.OUTCOMES)}."
            ),
            400,
        )


def _add_sim_routes(app: FastAPI, store: SimStore) -> None:
    """Test/automation controls; not part of Stripe's API, hence no API key."""

    @app.get("/_sim/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/_sim/sessions/{session_id}/pay")
    async def sim_pay(session_id: str) -> Response:
        try:
            return JSONResponse(await store.complete_session(session_id, NO_REQUEST))
        except StripeApiError as exc:
            return _error_response(exc)

    @app.post("/_sim/sessions/{session_id}/expire_now")
    async def sim_expire_now(session_id: str) -> Response:
        try:
            return JSONResponse(await store.force_expire(session_id))
        except StripeApiError as exc:
            return _error_response(exc)
