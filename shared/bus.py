"""The message bus: the Bus protocol every service codes against, and its RabbitMQ implementation.

This is the only module that imports aio-pika. Topology per namespace: a topic exchange for events
(routing key = message type), a direct exchange for commands (routing key = owning service), one
durable quorum queue per service bound to both, and a dead-letter exchange feeding `<svc>.dlq`.
A consuming service also has one delayed-retry queue per backoff delay (`<svc>.retry.<ms>ms`),
whose expired messages dead-letter back through the commands exchange into the service's queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from shared.delivery import (
    ATTEMPTS_HEADER,
    FIRST_FAILURE_HEADER,
    DeadLetter,
    MessageCallback,
    Outcome,
    RetryPlan,
    RetryPolicy,
    deliver,
    horizon_reason,
)
from shared.logging import log_fields
from shared.messages import Envelope, MalformedMessage, decode
from shared.topology import SERVICES, Names, event_types

log = logging.getLogger("shared.bus")

REASON_HEADER = "x-dead-letter-reason"


class Bus(Protocol):
    async def start(self) -> None: ...

    async def publish(self, envelope: Envelope) -> None: ...

    async def subscribe(self, service: str, callback: MessageCallback) -> None: ...

    async def dead_letters(self, service: str, limit: int = 100) -> list[DeadLetter]: ...

    async def replay_dead_letters(self, service: str) -> int: ...

    async def backlog(self, services: Sequence[str]) -> int:
        """Messages waiting (ready, not yet delivered) in these services' queues."""
        ...

    async def close(self) -> None: ...

    def is_connected(self) -> bool: ...


# Dead-lettering by the broker (a delivery limit, a retry queue's TTL) is at-most-once by default:
# the message is dropped if the target queue does not confirm. At-least-once keeps it in the
# source queue until the target has it; RabbitMQ requires reject-publish overflow for it (>= 3.10).
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
# Headers the broker sets per delivery or per dead-lettering; a parked copy starts without them.
_BROKER_HEADERS = (
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
)


class RabbitBus:
    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        prefetch: int = 32,
        delivery_limit: int = 20,
        retry: RetryPolicy | None = None,
        connect_within: float = 60.0,
    ) -> None:
        self.url = url
        self.connect_within = connect_within
        self.names = Names(namespace)
        self.prefetch = prefetch
        # Only a crash-loop guard (a message that kills the process before its ack): a transient
        # failure is parked in a retry queue and comes back as a new delivery, counted afresh.
        self.delivery_limit = delivery_limit
        self.retry = retry or RetryPolicy()
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._probe: AbstractChannel | None = None  # for backlog(): a failed probe closes it
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consume_channels: list[AbstractChannel] = []

    async def start(self) -> None:
        self._conn = await self._connect()
        self._pub = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        await self._declare(self._pub)

    async def _connect(self) -> AbstractRobustConnection:
        """The first connection, waited for: a service started while the broker restarts (an
        orchestrator restarting both, a broker upgrade) comes up when the broker does, instead
        of exiting and depending on a restart policy. Later losses are connect_robust's job."""
        retrying = AsyncRetrying(
            stop=stop_after_delay(self.connect_within),
            wait=wait_exponential(multiplier=0.5, max=5.0),
            retry=retry_if_exception_type((aio_pika.exceptions.AMQPConnectionError, OSError)),
            before_sleep=lambda state: log.warning(
                "broker not reachable yet (attempt %d), retrying: %s",
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": self.names.namespace}
                )
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _queue_arguments(self, service: str) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.names.dead_letters,
            "x-dead-letter-routing-key": service,
            **_AT_LEAST_ONCE,
        }

    def _retry_queue_arguments(self, service: str, delay: float) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": round(delay * 1000),
            # Back into the service's queue: it is bound to the commands exchange by its name.
            "x-dead-letter-exchange": self.names.commands,
            "x-dead-letter-routing-key": service,
            **_AT_LEAST_ONCE,
        }

    async def _declare(self, channel: AbstractChannel) -> None:
        n = self.names
        events = await channel.declare_exchange(n.events, aio_pika.ExchangeType.TOPIC, durable=True)
        commands = await channel.declare_exchange(
            n.commands, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dlx = await channel.declare_exchange(
            n.dead_letters, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._exchanges = {"event": events, "command": commands, "dead": dlx}
        for service in SERVICES:
            queue = await channel.declare_queue(
                n.queue(service), durable=True, arguments=self._queue_arguments(service)
            )
            await queue.bind(commands, routing_key=service)
            for message_type in event_types(service):
                await queue.bind(events, routing_key=message_type)
            dlq = await channel.declare_queue(
                n.dlq(service), durable=True, arguments={"x-queue-type": "quorum"}
            )
            await dlq.bind(dlx, routing_key=service)

    async def publish(self, envelope: Envelope) -> None:
        message = aio_pika.Message(
            envelope.to_bytes(),
            message_id=envelope.id,
            type=envelope.type,
            correlation_id=envelope.correlation_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        # A command nobody can receive is a bug to surface, not drop; an event may have no
        # subscriber yet.
        mandatory = envelope.kind == "command"
        await self._exchanges[envelope.kind].publish(
            message, routing_key=envelope.routing_key, mandatory=mandatory
        )

    async def subscribe(self, service: str, callback: MessageCallback) -> None:
        assert self._conn is not None, "start() first"
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        self._consume_channels.append(channel)
        queue = await channel.declare_queue(
            self.names.queue(service), durable=True, arguments=self._queue_arguments(service)
        )
        # Declared by the consumer before it can park anything there; one queue per delay, each
        # with a fixed TTL, so messages expire in the order they were parked (a per-message TTL
        # only expires at the head of the queue: a 10 min message would hold back a 1 s one).
        for delay in sorted(set(self.retry.backoff)):
            await channel.declare_queue(
                self.names.retry_queue(service, delay),
                durable=True,
                arguments=self._retry_queue_arguments(service, delay),
            )

        async def on_message(message: AbstractIncomingMessage) -> None:
            verdict = await deliver(message.body, callback)
            if verdict.outcome is Outcome.ACK:
                await message.ack()
            elif verdict.outcome is Outcome.DEAD:
                await self._dead_letter(service, message, verdict.reason)
                await message.ack()
            else:
                await self._retry_later(service, message, verdict.reason)

        await queue.consume(on_message)

    async def _retry_later(
        self, service: str, message: AbstractIncomingMessage, error: str
    ) -> None:
        """Park a transiently failed message in the retry queue for its next delay, confirmed,
        and only then ack it; past the horizon, dead-letter it."""
        headers = message.headers or {}
        plan = self.retry.plan(
            attempts=_as_int(headers.get(ATTEMPTS_HEADER)),
            first_failure=_epoch_seconds(headers.get(FIRST_FAILURE_HEADER)),
            now=time.time(),
        )
        fields = log_fields(message_id=message.message_id, attempt=plan.attempt, reason=error)
        if plan.delay is None:
            log.error("retry horizon passed, dead-lettering %s", message.type, extra=fields)
            await self._dead_letter(service, message, horizon_reason(error), plan.headers(error))
            await message.ack()
            return
        try:
            await self._park(service, message, plan, error)
        except Exception:
            # Not parked (the broker is failing too): requeue it, which the delivery limit
            # counts; after a pause, so a failing handler does not spin on one message.
            log.warning("could not park %s for retry, requeueing", message.type, exc_info=True)
            await asyncio.sleep(min(plan.delay, 1.0))
            await message.nack(requeue=True)
            return
        log.info("%s parked for %.1f s", message.type, plan.delay, extra=fields)
        await message.ack()

    async def _park(
        self, service: str, message: AbstractIncomingMessage, plan: RetryPlan, error: str
    ) -> None:
        assert self._pub is not None, "start() first"
        headers = {k: v for k, v in (message.headers or {}).items() if k not in _BROKER_HEADERS}
        headers.update(plan.headers(error))
        assert plan.delay is not None
        # On the confirming channel, mandatory: returns once the retry queue has it, raises if
        # it was not routed, so the original is acked only when its copy is safe.
        await self._pub.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                message_id=message.message_id,
                type=message.type,
                correlation_id=message.correlation_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.names.retry_queue(service, plan.delay),
            mandatory=True,
        )

    async def _dead_letter(
        self,
        service: str,
        message: AbstractIncomingMessage,
        reason: str,
        extra_headers: dict[str, int | float | str] | None = None,
    ) -> None:
        headers = dict(message.headers or {})
        headers.update(extra_headers or {})
        headers[REASON_HEADER] = reason[:1000]
        await self._exchanges["dead"].publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                message_id=message.message_id,
                type=message.type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=service,
        )

    async def dead_letters(self, service: str, limit: int = 100) -> list[DeadLetter]:
        """Peek: take up to `limit` messages and put them all back."""
        assert self._conn is not None, "start() first"
        async with self._conn.channel() as channel:
            queue = await channel.get_queue(self.names.dlq(service), ensure=False)
            taken: list[AbstractIncomingMessage] = []
            for _ in range(limit):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                taken.append(message)
            letters = [_as_dead_letter(m) for m in taken]
            for message in taken:
                await message.nack(requeue=True)
            return letters

    async def replay_dead_letters(self, service: str) -> int:
        """Republish every decodable DLQ message to its original route; the rest stay."""
        assert self._conn is not None, "start() first"
        replayed = 0
        async with self._conn.channel() as channel:
            queue = await channel.declare_queue(
                self.names.dlq(service), durable=True, arguments={"x-queue-type": "quorum"}
            )
            pending = queue.declaration_result.message_count or 0
            keep: list[AbstractIncomingMessage] = []
            for _ in range(pending):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                try:
                    envelope = decode(message.body)
                except MalformedMessage:
                    keep.append(message)
                    continue
                await self.publish(envelope)
                await message.ack()
                replayed += 1
            for message in keep:
                await message.nack(requeue=True)
        log.info("replayed dead letters", extra=log_fields(service=service, count=replayed))
        return replayed

    async def backlog(self, services: Sequence[str]) -> int:
        assert self._conn is not None, "start() first"
        if self._probe is None or self._probe.is_closed:
            self._probe = await self._conn.channel()
        # On the protocol channel: aio-pika's robust channel answers a repeated declare from
        # its own record of the queue, with the count of the first one.
        raw = await self._probe.get_underlay_channel()
        waiting = 0
        for service in services:
            # A passive declare only reads the queue's counts (and fails if it does not exist).
            declared = await raw.queue_declare(self.names.queue(service), passive=True)
            waiting += declared.message_count or 0
        return waiting

    def is_connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _as_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _epoch_seconds(milliseconds: object) -> float | None:
    if isinstance(milliseconds, int) and not isinstance(milliseconds, bool):
        return milliseconds / 1000
    return None


def _as_dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    reason = _text(headers.get(REASON_HEADER))
    if not reason:
        # Dead-lettered by the broker itself (delivery limit reached): it records why in x-death.
        deaths = headers.get("x-death") or []
        first = deaths[0] if isinstance(deaths, list) and deaths else {}
        why = first.get("reason") if isinstance(first, dict) else None
        reason = f"broker: {_text(why) or 'unknown'}"
    return DeadLetter(
        message_id=message.message_id,
        message_type=message.type,
        reason=reason,
        body=message.body,
    )
