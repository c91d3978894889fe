"""Audit lines built from cached parts (appliance/audit.py) are the lines the whole record
would give: same members in the same order, the same timestamp text, the child's pid after a
fork; and the index writer's INSTANCES_STORED events count per (calling AE, study)."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from appliance import audit
from appliance.audit import AuditEvent, AuditLog
from appliance.config import AuditConfig, Config, StorageConfig
from workers.group_commit import audit_batch
from workers.header import IndexAttributes
from workers.index.schema import InstanceRecord, Outcome


def _log(tmp_path: Path, patient_values: bool = False) -> AuditLog:
    log = AuditLog()
    log.configure(Config(storage=StorageConfig(data_dir=tmp_path),
                         audit=AuditConfig(path="a.jsonl", patient_values=patient_values)),
                  "index_writer")
    return log


def _lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]


def _reference(log: AuditLog, event: AuditEvent, outcome: int, action: str | None,
               fields: dict[str, Any]) -> list[tuple[str, Any]]:
    """The members in order, as the record dict was always built (ts left out)."""
    msg = event.value
    record: dict[str, Any] = {
        "event": event.event_name, "audit_message": msg.message,
        "event_id": {"code": msg.event_id, "scheme": "DCM", "meaning": msg.message},
        "action": action or msg.action, "outcome": outcome, "node": log.node,
        "role": log.role, "pid": os.getpid(),
    }
    if msg.event_type is not None:
        record["event_type"] = {"code": msg.event_type[0], "scheme": "DCM",
                                "meaning": msg.event_type[1]}
    record.update(fields)
    return list(record.items())


@pytest.mark.parametrize("fields", [
    {},
    {"peer": "10.0.0.1:104", "n": 3, "classes": {"1.2": 1}, "x": None, "quote": 'a"\\\n'},
    {"role": "replaced in place", "pid": 1, "event_type": "x"},  # override common members
])
def test_lines_equal_the_whole_record(tmp_path: Path, fields: dict[str, Any]) -> None:
    log = _log(tmp_path)
    for event in AuditEvent:
        log.emit(event, audit.MINOR_FAILURE, action="U", **fields)
        log.emit(event, **fields)  # twice more: the cached head is reused
        log.emit(event, **fields)
    got = _lines(tmp_path)
    want = [_reference(log, e, o, a, fields) for e in AuditEvent
            for o, a in ((audit.MINOR_FAILURE, "U"), (audit.SUCCESS, None), (audit.SUCCESS, None))]
    assert [list(line.items())[1:] for line in got] == want
    assert all(next(iter(line)) == "ts" for line in got)


@pytest.mark.parametrize("ns", [0, 999_999_999, 1_700_000_000_999_999_999,
                                1_700_000_001_000_500_000, 4_102_444_799_123_456_789])
def test_timestamp_is_datetimes_isoformat(ns: int) -> None:
    want = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)
            ).isoformat(timespec="milliseconds")
    with mock.patch("time.time_ns", return_value=ns):
        assert audit._timestamp() == want


def test_a_forked_child_writes_its_own_pid(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.emit(AuditEvent.QUERY, n=1)  # caches the head, with our pid
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            log.emit(AuditEvent.QUERY, n=2)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.emit(AuditEvent.QUERY, n=3)
    assert [(line["n"], line["pid"]) for line in _lines(tmp_path)] == [
        (1, os.getpid()), (2, pid), (3, os.getpid())]


def _rec(sop: str, study: str, calling_ae: str, sop_class: str = "1.2.840.10008.5.1.4.1.1.2"
         ) -> InstanceRecord:
    attrs = replace(IndexAttributes(), sop_class_uid=sop_class, sop_instance_uid=sop,
                    study_instance_uid=study, series_instance_uid=study + ".1",
                    patient_id="P1", patient_name="Doe^Jane")
    return InstanceRecord.from_attributes(attrs, relpath=f"objects/{sop}", size_bytes=1,
                                          transfer_syntax_uid="1.2.840.10008.1.2.1",
                                          received_at=0.0, calling_ae=calling_ae)


@pytest.mark.parametrize("patient_values", [False, True])
def test_audit_batch_one_event_per_calling_ae_and_study(tmp_path: Path,
                                                        patient_values: bool) -> None:
    log = _log(tmp_path, patient_values)
    mr = "1.2.840.10008.5.1.4.1.1.4"
    committed = [
        (_rec("1", "T1", "A"), Outcome.STORED), (_rec("2", "T2", "A"), Outcome.STORED),
        (_rec("3", "T1", "B", mr), Outcome.OVERWRITTEN), (_rec("4", "T1", "A"), Outcome.REJECTED),
        (_rec("5", "T1", "A", mr), Outcome.STORED), (_rec("6", "T1", "B"), Outcome.DUPLICATE_KEPT),
    ]
    with mock.patch.object(audit, "LOG", log):
        audit_batch(committed, "PACS")
    got = [{k: line[k] for k in ("action", "source_ae", "destination_ae", "study_instance_uid",
                                 "instances", "duplicates", "rejected", "replaced",
                                 "sop_classes")} for line in _lines(tmp_path)]
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert got == [
        {"action": "C", "source_ae": "A", "destination_ae": "PACS", "study_instance_uid": "T1",
         "instances": 2, "duplicates": 0, "rejected": 1, "replaced": 0,
         "sop_classes": {ct: 1, mr: 1}},
        {"action": "C", "source_ae": "A", "destination_ae": "PACS", "study_instance_uid": "T2",
         "instances": 1, "duplicates": 0, "rejected": 0, "replaced": 0, "sop_classes": {ct: 1}},
        {"action": "U", "source_ae": "B", "destination_ae": "PACS", "study_instance_uid": "T1",
         "instances": 1, "duplicates": 1, "rejected": 0, "replaced": 1, "sop_classes": {mr: 1}},
    ]
    patients = [line.get("patient") for line in _lines(tmp_path)]
    assert patients == [{"PatientID": "P1", "PatientName": "Doe^Jane"} if patient_values
                        else None] * 3
