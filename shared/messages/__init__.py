"""Message envelope and versioned contracts shared by every service."""

from shared.messages.envelope import Command, Contract, Envelope, Event
from shared.messages.registry import MalformedMessage, UnknownMessage, decode, payload_of

__all__ = [
    "Command",
    "Contract",
    "Envelope",
    "Event",
    "MalformedMessage",
    "UnknownMessage",
    "decode",
    "payload_of",
]
