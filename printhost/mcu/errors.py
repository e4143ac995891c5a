"""The exceptions of the MCU protocol layers.

They live apart from the encoders so every layer (integers, framing, the data
dictionary, the message codec) raises the same types without importing one another,
and callers can catch `ProtocolError` whichever layer refused the bytes.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "UnknownMessageError"]


class ProtocolError(ValueError):
    """Bytes or values that do not fit Klipper's protocol (a programming or link error)."""


class UnknownMessageError(ProtocolError):
    """A message id or name the data dictionary does not define.

    Kept separate because on a live link it usually means the host is talking to a
    different firmware build than the one whose dictionary it loaded.
    """

    def __init__(self, message: str, msgid: int | None = None) -> None:
        super().__init__(message)
        self.msgid = msgid


class LinkError(Exception):
    """The serial link to an MCU could not be set up (no such port, busy, no permission).

    Separate from `ProtocolError` because nothing is wrong with any bytes: the device
    itself is missing or unusable, which the caller reports to the user rather than
    treating as a bug. Failures after the link is up are reported through
    `SerialLink.error`, never raised, since they happen on the link's own thread.
    """


__all__.append("LinkError")
