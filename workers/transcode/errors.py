"""The one exception the transcoder raises: the caller answers the retrieve with a failure."""

from __future__ import annotations


class TranscodeError(ValueError):
    """A data set cannot be converted; the message says what and why."""
