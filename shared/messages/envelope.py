"""The envelope every message travels in, whatever bus carries it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

MessageKind = Literal["command", "event"]


class Contract(BaseModel):
    """Base of every message payload.

    `TYPE` and `VERSION` name the contract on the wire; `KIND` and `TARGET` decide routing:
    a command goes to the one service that owns it, an event to every subscriber.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[MessageKind]
    TARGET: ClassVar[str | None] = None


class Command(Contract):
    KIND: ClassVar[MessageKind] = "command"


class Event(Contract):
    KIND: ClassVar[MessageKind] = "event"


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Metadata shared by all messages; `payload` is validated against the contract on receipt."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    type: str
    version: int
    kind: MessageKind
    target: str | None = None
    correlation_id: str
    causation_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    payload: dict[str, Any]

    @classmethod
    def wrap(
        cls, message: Contract, *, correlation_id: str, causation_id: str | None = None
    ) -> Envelope:
        return cls(
            type=message.TYPE,
            version=message.VERSION,
            kind=message.KIND,
            target=message.TARGET,
            correlation_id=correlation_id,
            causation_id=causation_id,
            payload=message.model_dump(mode="json"),
        )

    @property
    def routing_key(self) -> str:
        """Commands route by owning service, events by type."""
        return self.target if self.kind == "command" and self.target else self.type

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        return cls.model_validate_json(body)
