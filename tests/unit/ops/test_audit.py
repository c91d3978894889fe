"""The audit trail: PS3.15 A.5 message names and codes on every line, patient values only
when configured, whole lines from several processes appending to one file, reopen on reload."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from appliance import audit
from appliance.audit import AuditEvent, AuditLog
from appliance.config import AuditConfig, Config, StorageConfig

# PS3.16 CID 400 (Audit Event ID) and the event types we use (CID 401, 403)
EXPECTED = {
    AuditEvent.APPLICATION_START: ("Application Activity", "110100", "110120"),
    AuditEvent.APPLICATION_STOP: ("Application Activity", "110100", "110121"),
    AuditEvent.ASSOCIATION_ACCEPTED: ("User Authentication", "110114", "110122"),
    AuditEvent.ASSOCIATION_CLOSED: ("User Authentication", "110114", "110123"),
    AuditEvent.ASSOCIATION_REJECTED: ("Security Alert", "110113", "110126"),
    AuditEvent.INSTANCES_STORED: ("DICOM Instances Transferred", "110104", None),
    AuditEvent.BEGIN_TRANSFERRING: ("Begin Transferring DICOM Instances", "110102", None),
    AuditEvent.QUERY: ("Query", "110112", None),
}


def _cfg(tmp_path: Path, path: str = "audit.jsonl", patient_values: bool = False) -> Config:
    return Config(storage=StorageConfig(data_dir=tmp_path),
                  audit=AuditConfig(path=path, patient_values=patient_values))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_event_names_its_dicom_audit_message(tmp_path: Path) -> None:
    log = AuditLog()
    log.configure(_cfg(tmp_path), "worker")
    for event in EXPECTED:
        log.emit(event, peer="10.0.0.1:1234")
    got = _lines(tmp_path / "audit.jsonl")
    assert len(got) == len(EXPECTED)
    for line, (event, (message, code, type_code)) in zip(got, EXPECTED.items(), strict=True):
        assert line["event"] == event.event_name
        assert line["audit_message"] == message
        assert line["event_id"] == {"code": code, "scheme": "DCM", "meaning": message}
        assert line.get("event_type", {}).get("code") == type_code
        assert line["action"] in "CRUDE" and line["outcome"] == 0
        assert line["role"] == "worker" and line["pid"] == os.getpid()
        assert line["peer"] == "10.0.0.1:1234"
        assert line["ts"].endswith("+00:00")
    # member values are distinct: no enum aliasing of two events onto one
    assert len({e.event_name for e in AuditEvent}) == len(AuditEvent)


def test_patient_values_only_when_configured(tmp_path: Path) -> None:
    ident = {"PatientName": "DOE^JANE", "PatientID": "P1", "StudyDate": "20240101",
             "StudyInstanceUID": ""}
    for allowed in (False, True):
        log = AuditLog()
        log.configure(_cfg(tmp_path, f"a-{allowed}.jsonl", patient_values=allowed))
        log.emit(AuditEvent.QUERY, **log.query_fields("STUDY", ident))
        log.emit(AuditEvent.INSTANCES_STORED, patient={"PatientID": "P1"}, instances=3)
        text = (tmp_path / f"a-{allowed}.jsonl").read_text()
        query, stored = (json.loads(line) for line in text.splitlines())
        assert query["level"] == "STUDY"
        assert query["keys"] == sorted(ident)  # every key is recorded, values or not
        assert query["values"] == {"StudyDate": "20240101"}  # non-patient values only
        assert ("DOE^JANE" in text) is allowed and ("P1" in text) is allowed
        assert ("patient" in stored) is allowed


def test_override_of_action_and_outcome(tmp_path: Path) -> None:
    log = AuditLog()
    log.configure(_cfg(tmp_path))
    log.emit(AuditEvent.INSTANCES_STORED, audit.MINOR_FAILURE, action="U")
    (line,) = _lines(tmp_path / "audit.jsonl")
    assert (line["action"], line["outcome"]) == ("U", 4)


def _writer(path: str, tag: int, n: int) -> None:
    log = AuditLog()
    log.configure(Config(audit=AuditConfig(path=path)), f"p{tag}")
    for i in range(n):
        # long enough that a torn write would show: > 4 KiB lines
        log.emit(AuditEvent.QUERY, seq=i, tag=tag, pad="x" * (4096 + tag))


def test_several_processes_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), t, 300)) for t in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = _lines(path)  # every line parses: none torn or interleaved
    assert len(lines) == 4 * 300
    for t in range(4):
        seqs = [ln["seq"] for ln in lines if ln["tag"] == t]
        assert seqs == list(range(300))  # each writer's lines in its order, none lost
        assert all(len(ln["pad"]) == 4096 + t for ln in lines if ln["tag"] == t)


def test_reconfigure_reopens_a_rotated_file(tmp_path: Path) -> None:
    log = AuditLog()
    cfg = _cfg(tmp_path)
    log.configure(cfg)
    log.emit(AuditEvent.APPLICATION_START)
    os.rename(tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1")  # logrotate
    log.emit(AuditEvent.QUERY)  # still the old file until the reload
    log.configure(cfg)  # SIGHUP
    log.emit(AuditEvent.APPLICATION_STOP)
    assert [ln["event"] for ln in _lines(tmp_path / "audit.jsonl.1")] == [
        "application.started", "query.received"]
    assert [ln["event"] for ln in _lines(tmp_path / "audit.jsonl")] == ["application.stopped"]


def test_off_stdout_and_unopenable(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = AuditLog()
    log.configure(_cfg(tmp_path, ""))
    assert not log.enabled
    log.emit(AuditEvent.QUERY)  # a no-op
    assert not (tmp_path / "audit.jsonl").exists()
    log.configure(_cfg(tmp_path, "-"))
    log.emit(AuditEvent.QUERY, n=1)
    assert json.loads(capfd.readouterr().out)["n"] == 1
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(OSError):
            log.configure(_cfg(tmp_path / "ro", "x/audit.jsonl"))
        assert log.path == "-"  # the previous destination stays in use
    log.close()


def test_relative_path_is_under_the_data_dir(tmp_path: Path) -> None:
    audit.configure(_cfg(tmp_path, "sub/trail.jsonl"), "arbiter")
    try:
        audit.emit(AuditEvent.APPLICATION_START)
        assert _lines(tmp_path / "sub" / "trail.jsonl")[0]["role"] == "arbiter"
    finally:
        audit.close()
