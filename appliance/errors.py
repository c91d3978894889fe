"""The appliance's exception hierarchy (STYLE 2.5).

Each class maps to one observable outcome for the peer: an A-ABORT reason, a DIMSE status,
or an association rejection. Convert with ``raise New(...) from old``.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ULProtocolError(ApplianceError):
    """A PS3.8 Upper Layer violation. ``abort_reason`` is the A-ABORT reason (PS3.8 §9.3.8)."""

    abort_source: int = 2  # service-provider initiated
    abort_reason: int = 0

    def __init__(self, message: str, abort_reason: int = 0) -> None:
        super().__init__(message)
        self.abort_reason = abort_reason


class LocalULError(ULProtocolError):
    """We asked the core for something illegal in the current state: a bug of ours."""


class RemoteULError(ULProtocolError):
    """The peer broke PS3.8 (malformed or unexpected PDU)."""


class DimseError(ApplianceError):
    """A DIMSE-level failure answered with ``status`` (PS3.7 Annex C)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class IngestError(ApplianceError):
    """A C-STORE / ingest failure answered with ``status`` and an Error Comment."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Overloaded(ApplianceError):
    """No capacity right now (rings full, association limit)."""


class ConfigError(ApplianceError):
    """The configuration file or flags are invalid."""


class IndexSchemaError(ApplianceError):
    """The LMDB index has a schema version this build does not understand."""


class HaltAppliance(BaseException):  # noqa: N818 - arbiter control flow, not an error
    """Raised in the arbiter only, to stop with ``exit_code``."""

    def __init__(self, exit_code: int, reason: str = "") -> None:
        super().__init__(reason)
        self.exit_code = exit_code
