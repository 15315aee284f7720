"""Looks up the contract class for an envelope and validates its payload."""

from __future__ import annotations

from pydantic import ValidationError

from shared.messages import contracts
from shared.messages.envelope import Contract, Envelope


class UnknownMessage(Exception):
    """No contract exists for this (type, version)."""


class MalformedMessage(Exception):
    """The bytes are not an envelope, or the payload does not fit its contract."""


def _collect() -> dict[tuple[str, int], type[Contract]]:
    found: dict[tuple[str, int], type[Contract]] = {}
    for value in vars(contracts).values():
        if isinstance(value, type) and issubclass(value, Contract) and "TYPE" in vars(value):
            key = (value.TYPE, value.VERSION)
            if key in found:
                raise RuntimeError(f"two contracts claim {key}")
            found[key] = value
    return found


CONTRACTS: dict[tuple[str, int], type[Contract]] = _collect()


def decode(body: bytes) -> Envelope:
    try:
        return Envelope.from_bytes(body)
    except ValidationError as exc:
        raise MalformedMessage(f"not an envelope: {exc.errors()[:3]}") from exc


def contract_for(envelope: Envelope) -> type[Contract]:
    try:
        return CONTRACTS[(envelope.type, envelope.version)]
    except KeyError:
        raise UnknownMessage(f"no contract {envelope.type} v{envelope.version}") from None


def payload_of(envelope: Envelope) -> Contract:
    cls = contract_for(envelope)
    try:
        return cls.model_validate(envelope.payload)
    except ValidationError as exc:
        raise MalformedMessage(
            f"payload of {envelope.type} v{envelope.version} invalid: {exc.errors()[:3]}"
        ) from exc
