"""Errors of the stream side: each names what was wrong, where, and what was expected.

Every error the gadget can report to Gadgetron derives from :class:`StreamError` (a
``ValueError``); its message is what Gadgetron receives in the ERROR message, so it is written
for the person reading the Gadgetron log: the setting, slice or frame concerned, the expected
and the actual value.
"""

from __future__ import annotations

__all__ = [
    "StreamError",
    "SettingsError",
    "FrameError",
    "DuplicateFrameError",
    "FrameSizeError",
    "NonFiniteFrameError",
    "IncompleteFingerprintError",
    "PendingLimitError",
    "B1Error",
    "B1MissingError",
    "DuplicateB1Error",
    "B1GeometryError",
    "ScheduleMismatchError",
    "ProtocolError",
    "StalledError",
    "PeerGoneError",
    "GadgetFailed",
]


class StreamError(ValueError):
    """Base class: the data or configuration of a stream cannot be processed."""


class SettingsError(StreamError):
    """A ``<property>`` of the gadget's configuration is unknown or has an invalid value."""


class FrameError(StreamError):
    """A frame cannot be part of a fingerprint (bad counter, channels, data type …)."""


class DuplicateFrameError(FrameError):
    """The same frame of the same slice arrived twice."""


class FrameSizeError(FrameError):
    """A frame's matrix differs from the earlier frames of its slice."""


class NonFiniteFrameError(FrameError):
    """A frame holds NaN or infinite pixels."""


class IncompleteFingerprintError(StreamError):
    """The stream ended while some slices still missed frames."""


class PendingLimitError(FrameError):
    """The frames held for slices not yet complete would exceed the memory bound."""


class B1Error(StreamError):
    """A B1 map cannot be used for its slice (bad image, implausible scale …)."""


class B1MissingError(B1Error):
    """A slice's fingerprint is complete but its B1 map never came (end of stream), or the B1 file has none for it."""


class DuplicateB1Error(B1Error):
    """A second B1 map arrived for the same slice."""


class B1GeometryError(B1Error):
    """A B1 map does not overlap its slice's frames (another slice position, or no in-plane overlap)."""


class ScheduleMismatchError(StreamError):
    """The acquisition's schedule (ISMRMRD header) is not the estimator's schedule."""


class ProtocolError(StreamError):
    """The byte stream cannot be understood (unknown message id, bad or absurd sizes …)."""


class StalledError(StreamError):
    """The peer sent nothing for longer than the idle timeout, or the connection outlived its deadline."""


class PeerGoneError(ConnectionError):
    """The other end of the socket (Gadgetron, or a client of the server) closed or reset in the
    middle of the stream."""


class GadgetFailed(RuntimeError):
    """Raised by the handler after it has reported a failure to Gadgetron (ERROR, then CLOSE).

    It makes ``python3 -m gadgetron`` exit with status 1; the message is the one sent.
    """
