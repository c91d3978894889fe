"""The audit trail: who did what, one JSON object per line, for shipping to a SIEM.

THEORY OF OPERATION
-------------------
Every event names the DICOM audit message it corresponds to (PS3.15 A.5.3; Event ID codes
from CID 400, event types from CID 401-404, scheme DCM) with the PS3.15 A.5.1 Event Action
Code and Event Outcome Indicator, so a collector can turn a line into an RFC 3881 / DICOM
audit message without guessing. The line format is ours (flat JSON), not the XML schema.

Each process calls ``configure()`` after fork (and again on SIGHUP); ``emit()`` is then one
``os.write()`` of one line to a descriptor opened with ``O_APPEND``. The kernel appends each
such write whole at the end of the file (no interleaving between the arbiter, the acceptor,
the workers and the index writer writing the same file), and nothing is buffered in the
process, so a line is in the file (page cache) when ``emit()`` returns and a crash loses no
event already emitted. ``configure()`` opens the new destination before closing the old one,
which is also how a rotated file is reopened: rotate, then SIGHUP (`systemctl reload`).

Patient-level values (Patient ID, Patient's Name, patient query keys) are left out unless
``[audit] patient_values = true``; UIDs, AE titles and addresses are always recorded.

Which event maps to which message (the association mapping is ours: DICOM has no message
for an association, and its Calling AE Title is the only identity the Upper Layer carries):

  APPLICATION_START / _STOP      Application Activity (110100), Application Start/Stop
  ASSOCIATION_ACCEPTED / _CLOSED User Authentication (110114), Login (110122) / Logout
  ASSOCIATION_REJECTED           Security Alert (110113), Node Authentication (110126)
  TLS_HANDSHAKE_FAILED           Security Alert (110113), Node Authentication (110126): a
                                 certificate refused (either side) or no common TLS version
  CONFIG_RELOADED                Security Alert (110113), Network Configuration (110128)
  ACCESS_DENIED                  Security Alert (110113), Use of Restricted Function (110132):
                                 an [access] rule refused a peer, an operation or a C-MOVE
                                 destination (appliance/access.py)
  INSTANCES_STORED               DICOM Instances Transferred (110104), action C (U: replaced)
  BEGIN_TRANSFERRING             Begin Transferring DICOM Instances (110102) (C-MOVE/C-GET)
  INSTANCES_SENT                 DICOM Instances Transferred (110104), action R
  QUERY                          Query (110112)
  WORKLIST_CHANGED / MPPS_CHANGED  Procedure Record (110111), action C/U/D
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from appliance.config import Config, audit_path

# PS3.15 A.5.1 Event Outcome Indicator
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12


@dataclass(frozen=True, slots=True)
class AuditMessage:
    """Our event name and its PS3.15 A.5.3 message: Event ID (CID 400), action, optional
    Event Type Code."""

    name: str
    message: str
    event_id: str
    action: str  # PS3.15 A.5.1 EventActionCode: C R U D E
    event_type: tuple[str, str] | None = None  # (code, meaning), scheme DCM


class AuditEvent(Enum):
    # member = AuditMessage(our event name, PS3.15 A.5.3 message, Event ID, action, type)
    APPLICATION_START = AuditMessage("application.started", "Application Activity", "110100",
                                     "E", ("110120", "Application Start"))
    APPLICATION_STOP = AuditMessage("application.stopped", "Application Activity", "110100",
                                    "E", ("110121", "Application Stop"))
    ASSOCIATION_ACCEPTED = AuditMessage("association.accepted", "User Authentication",
                                        "110114", "E", ("110122", "Login"))
    ASSOCIATION_CLOSED = AuditMessage("association.closed", "User Authentication", "110114",
                                      "E", ("110123", "Logout"))
    ASSOCIATION_REJECTED = AuditMessage("association.rejected", "Security Alert", "110113",
                                        "E", ("110126", "Node Authentication"))
    TLS_HANDSHAKE_FAILED = AuditMessage("tls.handshake_failed", "Security Alert", "110113",
                                        "E", ("110126", "Node Authentication"))
    CONFIG_RELOADED = AuditMessage("config.reloaded", "Security Alert", "110113", "E",
                                   ("110128", "Network Configuration"))
    ACCESS_DENIED = AuditMessage("access.denied", "Security Alert", "110113", "E",
                                 ("110132", "Use of Restricted Function"))
    INSTANCES_STORED = AuditMessage("instances.stored", "DICOM Instances Transferred",
                                    "110104", "C")
    BEGIN_TRANSFERRING = AuditMessage("retrieve.started", "Begin Transferring DICOM Instances",
                                      "110102", "E")
    INSTANCES_SENT = AuditMessage("instances.sent", "DICOM Instances Transferred", "110104",
                                  "R")
    QUERY = AuditMessage("query.received", "Query", "110112", "E")
    WORKLIST_CHANGED = AuditMessage("worklist.changed", "Procedure Record", "110111", "U")
    MPPS_CHANGED = AuditMessage("mpps.changed", "Procedure Record", "110111", "U")

    @property
    def event_name(self) -> str:
        """The ``event`` field: ``component.past_tense`` like the log events."""
        return self.value.name


# Attributes whose values are patient data (PS3.3 C.7.1.1 Patient Module and the Patient
# level keys of PS3.4 C.6.1.1.2): recorded only with patient_values = true.
PATIENT_KEYWORDS = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "EthnicGroup", "PatientComments",
    "PatientBirthName", "MilitaryRank", "MedicalRecordLocator", "PatientInsurancePlanCodeSequence",
    "ResponsiblePerson", "PatientSpeciesDescription", "PatientBreedDescription",
})


class _Sink:
    """One open destination: a file descriptor written with one write() per line."""

    def __init__(self, fd: int, path: str, owned: bool) -> None:
        self.fd, self.path, self.owned = fd, path, owned

    def write(self, line: bytes) -> None:
        n = os.write(self.fd, line)  # a regular file takes it whole
        if n < len(line):  # a pipe (stdout) may want a loop
            view = memoryview(line)[n:]
            while view:
                view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(OSError):
                os.close(self.fd)


class AuditLog:
    """The process's audit trail; the module functions use one instance (``LOG``)."""

    def __init__(self) -> None:
        self._sink: _Sink | None = None
        self.patient_values = False
        self.role = "main"
        self.node = socket.gethostname()
        self.dropped = 0  # events that could not be written (disk full, closed pipe)
        # The fields every line of one (event, action, outcome) shares, serialised once:
        # ``emit`` runs per commit in the index writer (profiled: json.dumps of the whole
        # record, with a new encoder per call, was most of its cost). Rebuilt after a fork
        # (they hold the pid), noticed without a getpid() syscall per line.
        self._heads: dict[tuple[AuditEvent, str, int], str] = {}
        self._heads_forks = -1

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    @property
    def path(self) -> str:
        return self._sink.path if self._sink is not None else ""

    def configure(self, cfg: Config, role: str | None = None) -> None:
        """Open the destination of ``cfg`` (after fork; again on SIGHUP). Raises OSError when
        the file cannot be opened; the previous destination then stays in use."""
        if role is not None:
            self.role = role
            self._heads.clear()
        self.patient_values = cfg.audit.patient_values
        path = audit_path(cfg)
        new: _Sink | None
        if not path:
            new = None
        elif path == "-":
            new = _Sink(sys.stdout.fileno(), "-", owned=False)
        elif path == "stderr":
            new = _Sink(sys.stderr.fileno(), "stderr", owned=False)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            new = _Sink(fd, path, owned=True)
        old, self._sink = self._sink, new
        if old is not None:
            old.close()

    def close(self) -> None:
        old, self._sink = self._sink, None
        if old is not None:
            old.close()

    def emit(self, event: AuditEvent, outcome: int = SUCCESS, *,
             patient: Mapping[str, Any] | None = None, action: str | None = None,
             **fields: Any) -> None:
        """Write one event. ``patient`` values are kept only with ``patient_values``;
        ``action`` overrides the message's Event Action Code (e.g. "U" for a replacement)."""
        sink = self._sink
        if sink is None:
            return
        if patient and self.patient_values:
            fields["patient"] = dict(patient)  # last, as in the record: ``fields`` is ours
        action = action or event.value.action
        if _HEAD_KEYS.isdisjoint(fields):
            body = _encode(fields)
            line = (f'{{"ts":"{_timestamp()}",{self._head(event, action, outcome)}'
                    f'{"}" if len(body) == 2 else "," + body[1:]}')
        else:  # a field overrides a common one in place: the general (slower) form
            record = self._common(event, action, outcome)
            record["ts"] = _timestamp()
            record.update(fields)
            line = _encode(record)
        try:
            sink.write((line + "\n").encode("utf-8", "replace"))
        except OSError:
            self.dropped += 1  # never let auditing break a store; counted, visible in tests

    def _head(self, event: AuditEvent, action: str, outcome: int) -> str:
        """The common fields after ``ts`` as JSON members (no braces), cached."""
        if self._heads_forks != _forks:
            self._heads.clear()
            self._heads_forks = _forks
        head = self._heads.get((event, action, outcome))
        if head is None:
            common = self._common(event, action, outcome)
            del common["ts"]
            head = self._heads[(event, action, outcome)] = _encode(common)[1:-1]
        return head

    def _common(self, event: AuditEvent, action: str, outcome: int) -> dict[str, Any]:
        msg = event.value
        record: dict[str, Any] = {
            "ts": "",
            "event": event.event_name,
            "audit_message": msg.message,
            "event_id": {"code": msg.event_id, "scheme": "DCM", "meaning": msg.message},
            "action": action,
            "outcome": outcome,
            "node": self.node,
            "role": self.role,
            "pid": os.getpid(),
        }
        if msg.event_type is not None:
            code, meaning = msg.event_type
            record["event_type"] = {"code": code, "scheme": "DCM", "meaning": meaning}
        return record

    def query_fields(self, level: str, identifier: Mapping[str, Any],
                     patient_keywords: Iterable[str] = PATIENT_KEYWORDS) -> dict[str, Any]:
        """Fields for a QUERY event from a C-FIND identifier (keyword -> value): every key,
        the values of non-patient keys, patient values only when configured."""
        patient_set = frozenset(patient_keywords)
        values = {k: v for k, v in identifier.items()
                  if v not in (None, "", b"") and k not in patient_set}
        out: dict[str, Any] = {"level": level, "keys": sorted(identifier), "values": values}
        if self.patient_values:
            pv = {k: v for k, v in identifier.items()
                  if k in patient_set and v not in (None, "", b"")}
            if pv:
                out["patient"] = pv
        return out


# The members every line starts with (``AuditLog._common``); a field of that name replaces it.
_HEAD_KEYS = frozenset({"ts", "event", "audit_message", "event_id", "action", "outcome", "node",
                        "role", "pid", "event_type"})
# One encoder for every line: json.dumps with options builds a new JSONEncoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode
_ts_second = -1
_ts_prefix = ""
_forks = 0  # forks this process descends from since import (``AuditLog._head``)


def _forked() -> None:
    global _forks  # noqa: PLW0603 - counted in the child by the fork hook below
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def _timestamp() -> str:
    """Now in UTC as ``datetime.now(UTC).isoformat(timespec="milliseconds")`` writes it (both
    floor the system clock), with the formatting of the date and time done once a second."""
    global _ts_second, _ts_prefix  # noqa: PLW0603 - a one-entry cache of this process's clock
    second, ns = divmod(time.time_ns(), 1_000_000_000)
    if second != _ts_second:
        _ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _ts_second = second
    return f"{_ts_prefix}.{ns // 1_000_000:03d}+00:00"


LOG = AuditLog()


def configure(cfg: Config, role: str | None = None) -> None:
    """Set this process's audit destination from ``cfg`` (call after fork and on reload)."""
    LOG.configure(cfg, role)


def emit(event: AuditEvent, outcome: int = SUCCESS, **fields: Any) -> None:
    """``audit.emit(AuditEvent.QUERY, level="STUDY", ...)``; a no-op when auditing is off."""
    LOG.emit(event, outcome, **fields)


def query_fields(level: str, identifier: Mapping[str, Any]) -> dict[str, Any]:
    return LOG.query_fields(level, identifier)


def close() -> None:
    LOG.close()
