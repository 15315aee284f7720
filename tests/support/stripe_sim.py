"""The Stripe simulator in tests: served on a loopback port by uvicorn on a thread, a webhook
receiver standing where a service's endpoint would be, a clock the test can push forward, and
Stripe's own signing for events a test writes itself. Used by the simulator's tests and by the
payments tests that talk to Stripe."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import stripe

from simulators.stripe.app import create_app
from simulators.stripe.config import DEFAULT_API_VERSION, SimConfig
from tests.support.serving import loopback_socket, serving, url_of
from tests.support.waiting import eventually

T = TypeVar("T")

API_KEY = "sk_test_sim_unit"
WEBHOOK_SECRET = "whsec_unit_test_secret"
# Stripe's example objects, the field sets every simulated object is held against.
FIXTURES_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "stripe" / "fixtures3.json"


def stripe_fixtures() -> dict[str, Any]:
    """Stripe's example object of each type, by type (`checkout.session`, `event`, ...)."""
    resources: dict[str, Any] = json.loads(FIXTURES_PATH.read_text(encoding="utf-8"))["resources"]
    return resources


class Clock:
    """Wall clock plus an offset the test can push forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class Delivery:
    """One webhook request as it arrived: the exact bytes and the (lower-cased) headers."""

    body: bytes
    headers: dict[str, str]

    @property
    def signature(self) -> str:
        return self.headers.get("stripe-signature", "")

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


class Receiver:
    """Stands where a service's webhook endpoint would be (an ASGI app): keeps every request,
    answering HTTP 500 to the next `fail_next` ones so tests can exercise Stripe's retries."""

    def __init__(self) -> None:
        self.url = ""  # set once it is served
        self.fail_next = 0
        self._lock = threading.Lock()  # the app runs on the server's thread, tests on theirs
        self._received: list[Delivery] = []
        self._arrivals: queue.Queue[Delivery] = queue.Queue()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        delivery = Delivery(body, {k.decode().lower(): v.decode() for k, v in scope["headers"]})
        with self._lock:
            self._received.append(delivery)
            status = 500 if self.fail_next > 0 else 200
            self.fail_next = max(self.fail_next - 1, 0)
        self._arrivals.put(delivery)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def next(self, timeout: float = 5.0) -> Delivery:
        """The next request in order of arrival (`queue.Empty` if none comes in time)."""
        return self._arrivals.get(timeout=timeout)

    def drain(self) -> None:
        while not self._arrivals.empty():
            self._arrivals.get_nowait()

    def received(self) -> list[Delivery]:
        """Every request so far, oldest first."""
        with self._lock:
            return list(self._received)

    def for_object(self, event_type: str, object_id: str) -> list[Delivery]:
        return [
            delivery
            for delivery in self.received()
            if (event := delivery.event)["type"] == event_type
            and event["data"]["object"]["id"] == object_id
        ]


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with serving(receiver, lifespan="off") as url:
        receiver.url = f"{url}/webhooks/stripe"
        yield receiver


@dataclass
class Sim:
    url: str
    config: SimConfig
    clock: Clock
    # Where its webhooks go, when the test started it with a receiver.
    receiver: Receiver | None = None

    def client(self, api_key: str = API_KEY, **kwargs: Any) -> stripe.StripeClient:
        return stripe.StripeClient(api_key, base_addresses={"api": self.url}, **kwargs)

    async def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POSTs to the simulator's /_sim/ controls; the JSON answer."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(f"{self.url}/_sim/{path}", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())


@contextmanager
def running_sim(*, receiver: Receiver | None = None, **overrides: Any) -> Iterator[Sim]:
    """The simulator with the harness's key and secret, fast webhook retries and expiry sweeps;
    `overrides` are SimConfig fields (`webhook_url` for receivers of the test's own)."""
    sock = loopback_socket()
    url = url_of(sock)
    settings: dict[str, Any] = {
        "api_key": API_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "public_url": url,
        "webhook_url": receiver.url if receiver is not None else None,
        "webhook_backoff_base_seconds": 0.05,
        "expiry_sweep_seconds": 0.05,
        **overrides,
    }
    config = SimConfig(**settings)
    clock = Clock()
    with serving(create_app(config, clock=clock), sock=sock, lifespan="on"):
        yield Sim(url, config, clock, receiver)


def _receiver_of(sim: Sim) -> Receiver:
    assert sim.receiver is not None, "this simulator was started without a receiver"
    return sim.receiver


async def webhooks_of(
    sim: Sim, event_type: str, object_id: str, *, at_least: int = 1
) -> list[Delivery]:
    """The deliveries of `event_type` for `object_id`, once at least `at_least` have arrived
    (several events of one type, e.g. a refund's `refund.updated` to succeeded, then failed)."""
    for _ in range(200):
        if len(found := _receiver_of(sim).for_object(event_type, object_id)) >= at_least:
            return found
        await asyncio.sleep(0.025)
    raise AssertionError(f"the simulator never sent {event_type} for {object_id}")


def sent_events(sim: Sim, event_type: str) -> list[dict[str, Any]]:
    """Every distinct event of this type the simulator delivered, oldest first."""
    seen: dict[str, dict[str, Any]] = {}
    for delivery in _receiver_of(sim).received():
        event = delivery.event
        if event["type"] == event_type:
            seen.setdefault(event["id"], event)
    return list(seen.values())


async def retrieve(sim: Sim, session_id: str) -> stripe.checkout.Session:
    """The session as Stripe holds it, read with a client of the test's own."""
    http = stripe.HTTPXClient()
    try:
        return await sim.client(http_client=http).v1.checkout.sessions.retrieve_async(session_id)
    finally:
        await http.close_async()


async def with_answer_held(
    sim: Sim,
    work: Coroutine[Any, Any, T],
    *,
    method: str,
    path_prefix: str,
    seconds: float = 1.0,
) -> asyncio.Task[T]:
    """Starts `work` with the simulator's answer to its next matching request held for
    `seconds` after the simulator acted on it; returns (the task) once that answer is in
    flight, so the test can change what Stripe holds before the caller reads the stale answer."""
    rule = {"method": method, "path_prefix": path_prefix, "delay_seconds": seconds}
    await sim.control("faults", {"timeout_after_commit": [rule]})
    task = asyncio.create_task(work)

    async def caught() -> bool:
        return not (await sim.control("faults", {}))["timeout_after_commit"]

    await eventually(caught, within=5.0)
    return task


def session_params(**overrides: Any) -> Any:
    """Checkout Session create parameters: two lines, EUR 34.99 in all, for order-123."""
    # Any, not the SDK's SessionCreateParams TypedDict: tests mutate and extend these freely.
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 1500,
                    "product_data": {"name": "Credits pack"},
                },
                "quantity": 2,
            },
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 499,
                    "product_data": {"name": "Session package"},
                },
                "quantity": 1,
            },
        ],
        "client_reference_id": "order-123",
        "metadata": {"order_id": "order-123"},
        "success_url": "https://shop.example/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.example/cancel",
    }
    params.update(overrides)
    return params


async def paid_intent(sim: Sim, *, payment_method: str = "card") -> str:
    """A Checkout Session (`session_params`, EUR 34.99) made with the SDK and paid at the
    simulator with `payment_method` (a simulator kind: `card`, `card_refund_fails`, ...); the
    id of its payment intent."""
    http = stripe.HTTPXClient()
    try:
        client = sim.client(http_client=http)
        session = await client.v1.checkout.sessions.create_async(session_params())
    finally:
        await http.close_async()
    paid = await sim.control(f"sessions/{session.id}/pay", {"payment_method": payment_method})
    return str(paid["data"]["object"]["payment_intent"])


def raw_json(obj: stripe.StripeObject) -> dict[str, Any]:
    """The object exactly as the simulator answered it, before the SDK parsed it."""
    assert obj.last_response is not None
    data: dict[str, Any] = json.loads(obj.last_response.body)
    return data


# --- events a test writes itself ---------------------------------------------------------


def signed(body: bytes, secret: str = WEBHOOK_SECRET, *, at: int | None = None) -> str:
    """A Stripe-Signature header made the way Stripe makes it."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def stripe_event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> bytes:
    """The body of a Stripe event about `obj`, as Stripe would POST it."""
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": DEFAULT_API_VERSION,
        "created": int(time.time()),
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }
    return json.dumps(event).encode()
