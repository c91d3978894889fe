"""``appliance.workflow_scu`` and the ``worklist query`` / ``mpps`` / ``commit`` verbs against
peers nobody here wrote: DCMTK ``wlmscpfs`` serving a folder of ``.wl`` files built with
``dump2dcm``, and pynetdicom as MPPS SCP and as Storage Commitment SCP, reporting on the same
association and on a new one to our ``CommitmentListener``.

The worklist is synthetic (no PHI): three scheduled steps on two stations, two modalities
and three dates, so filters, date ranges and wildcards each have a known answer.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import AE, build_role, evt

from appliance.tools import workflow_net_cli
from appliance.workflow_scu import (
    MODALITY_PERFORMED_PROCEDURE_STEP,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentListener,
    CommitmentOutcome,
    FailedSOP,
    SOPRef,
    WorkflowSCU,
)
from tests.conftest import free_port, require_tool, run_tool

pytestmark = pytest.mark.interop

WLM_AE = "WLM"
# (accession, patient name, patient id, study uid, modality, station, date, time, sps id)
ITEMS = [
    ("ACC001", "DOE^JOHN", "PID001", "1.2.826.0.1.3680043.9.7.1", "CT", "CT_01", "20241220",
     "100000", "SPS001"),
    ("ACC002", "DOE^JANE", "PID002", "1.2.826.0.1.3680043.9.7.2", "MR", "MR_01", "20241221",
     "113000", "SPS002"),
    ("ACC003", "SMITH^ANNA", "PID003", "1.2.826.0.1.3680043.9.7.3", "CT", "CT_02", "20250105",
     "080000", "SPS003"),
]  # fmt: skip


# ---------------------------------------------------------------------------- wlmscpfs


def _wl_dump(acc: str, name: str, pid: str, study: str, modality: str, station: str,
             date: str, tm: str, sps: str) -> str:  # fmt: skip
    return "\n".join([
        f"(0008,0050) SH  [{acc}]", f"(0010,0010) PN  [{name}]", f"(0010,0020) LO  [{pid}]",
        "(0010,0030) DA  [19800101]", "(0010,0040) CS  [O]", f"(0020,000d) UI  [{study}]",
        "(0032,1060) LO  [Scheduled exam]", "(0040,0100) SQ", "(fffe,e000) -",
        f"(0008,0060) CS  [{modality}]", f"(0040,0001) AE  [{station}]",
        f"(0040,0002) DA  [{date}]", f"(0040,0003) TM  [{tm}]", "(0040,0006) PN  [WHO^DR]",
        f"(0040,0007) LO  [{modality} exam]", f"(0040,0009) SH  [{sps}]", "(fffe,e00d) -",
        "(fffe,e0dd) -", f"(0040,1001) SH  [RP{sps[3:]}]", "",
    ])  # fmt: skip


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"peer exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def wlmscpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tool = require_tool("wlmscpfs")
    dump2dcm = require_tool("dump2dcm")
    root = tmp_path_factory.mktemp("wlm")
    db = root / WLM_AE
    db.mkdir()
    (db / "lockfile").touch()
    for n, item in enumerate(ITEMS):
        dump = root / f"item{n}.dump"
        dump.write_text(_wl_dump(*item))
        cp = run_tool([dump2dcm, "-g", str(dump), str(db / f"item{n}.wl")], timeout_s=30)
        assert cp.returncode == 0, cp.stderr
    port = free_port()
    proc = subprocess.Popen([tool, "-dfp", str(root), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _query(port: int, **filters: str) -> list[Dataset]:
    args = argparse.Namespace(patient_id=None, patient_name=None, accession=None, modality=None,
                              station=None, date=None, key=[])  # fmt: skip
    for k, v in filters.items():
        setattr(args, k, v)
    ident = workflow_net_cli.worklist_identifier(args)
    with WorkflowSCU("127.0.0.1", port, called_ae=WLM_AE, timeout_s=10) as scu:
        responses = list(scu.find_worklist(ident))
    assert responses[-1].status == 0 and all(r.status == 0xFF00 for r in responses[:-1])
    return [ds for _, ds in responses if ds is not None]


def _accessions(found: list[Dataset]) -> list[str]:
    return sorted(str(ds.AccessionNumber) for ds in found)


def test_worklist_without_filters_returns_every_item_with_its_step(wlmscpfs: int) -> None:
    found = _query(wlmscpfs)
    assert _accessions(found) == ["ACC001", "ACC002", "ACC003"]
    john = next(ds for ds in found if ds.AccessionNumber == "ACC001")
    assert (str(john.PatientName), john.PatientID, john.StudyInstanceUID) == (
        "DOE^JOHN", "PID001", ITEMS[0][3])  # fmt: skip
    sps = john.ScheduledProcedureStepSequence[0]
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartDate,
            sps.ScheduledProcedureStepID) == ("CT", "CT_01", "20241220", "SPS001")  # fmt: skip


@pytest.mark.parametrize(("filters", "expected"), [
    ({"modality": "CT"}, ["ACC001", "ACC003"]),
    ({"station": "CT_01"}, ["ACC001"]),
    ({"date": "20241220-20241231"}, ["ACC001", "ACC002"]),
    ({"date": "20250101-"}, ["ACC003"]),
    ({"patient_name": "DOE*"}, ["ACC001", "ACC002"]),
    ({"patient_name": "?MITH^ANNA"}, ["ACC003"]),
    ({"patient_id": "PID002"}, ["ACC002"]),
    ({"modality": "CT", "date": "20241201-20241231"}, ["ACC001"]),
    ({"modality": "US"}, []),
])  # fmt: skip
def test_worklist_filters(wlmscpfs: int, filters: dict[str, str], expected: list[str]) -> None:
    assert _accessions(_query(wlmscpfs, **filters)) == expected


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pacs")
    workflow_net_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_worklist_query_verb_table_json_csv(
    wlmscpfs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["worklist", "query", "-aec", WLM_AE, "127.0.0.1", str(wlmscpfs)]
    assert _cli([*base, "-m", "CT", "--format", "json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert sorted(i["00080050"]["Value"][0] for i in items) == ["ACC001", "ACC003"]
    assert _cli([*base, "-d", "20241221", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    assert len(lines) == 2 and "ScheduledStationAETitle" in header
    row = dict(zip(header, lines[1].split(","), strict=True))
    assert (row["PatientID"], row["ScheduledStationAETitle"], row["Modality"]) == (
        "PID002", "MR_01", "MR")  # fmt: skip
    assert _cli([*base, "--patient-name", "SMITH*"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("PatientName") and "SMITH^ANNA" in table[1] and len(table) == 2
    assert _cli([*base, "-d", "yesterday"]) == 2
    assert "bad date" in capsys.readouterr().err
    # Exit codes as net_cli: nothing listening is 3.
    assert _cli(["worklist", "query", "127.0.0.1", str(free_port())]) == 3


# ---------------------------------------------------------------------------- pynetdicom SCPs


@dataclass
class Scp:
    port: int
    created: dict[str, Dataset] = field(default_factory=dict)
    sets: list[tuple[str, Dataset]] = field(default_factory=list)
    actions: list[Dataset] = field(default_factory=list)
    report_statuses: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def _mpps_handlers(scp: Scp) -> list[tuple[Any, Callable[..., Any]]]:
    def on_create(event: Any) -> tuple[int, Dataset | None]:
        ds = event.attribute_list
        uid = event.request.AffectedSOPInstanceUID
        reply = Dataset()
        if uid is None:
            uid = f"1.2.826.0.1.3680043.9.8.{len(scp.created) + 1}"
            reply.AffectedSOPInstanceUID = uid  # pynetdicom moves it into the response
        if uid in scp.created:
            return 0x0111, None  # Duplicate SOP Instance
        if ds.get("PerformedProcedureStepStatus") != "IN PROGRESS":
            return 0x0106, None  # Invalid attribute value
        scp.created[uid] = ds
        reply.PerformedProcedureStepStatus = "IN PROGRESS"
        return 0x0000, reply

    def on_set(event: Any) -> tuple[int, Dataset | None]:
        uid = event.request.RequestedSOPInstanceUID
        mod = event.modification_list
        current = scp.created.get(uid)
        if current is None:
            return 0x0112, None  # No such object instance
        if current.PerformedProcedureStepStatus != "IN PROGRESS":
            return 0xC310, None  # PS3.4 F.7.2.2.2: no longer IN PROGRESS
        current.update(mod)
        scp.sets.append((uid, mod))
        return 0x0000, None

    return [(evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set)]


@pytest.fixture
def pynetdicom_scp() -> Iterator[Callable[..., Scp]]:
    servers: list[Any] = []

    def start(handlers: Callable[[Scp], list[tuple[Any, Callable[..., Any]]]]) -> Scp:
        ae = AE(ae_title="ARCHIVE")
        ae.add_supported_context(MODALITY_PERFORMED_PROCEDURE_STEP)
        ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        scp = Scp(0)
        events: list[Any] = handlers(scp)
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=events)
        assert server is not None
        servers.append(server)
        scp.port = int(server.server_address[1])
        return scp

    yield start
    for server in servers:
        server.shutdown()


def _create_ds(status: str = "IN PROGRESS") -> Dataset:
    args = argparse.Namespace(patient_name="DOE^JOHN", patient_id="PID001", patient_birth_date=None,
                              patient_sex=None, study_uid=ITEMS[0][3], accession="ACC001",
                              sps_id="SPS001", requested_procedure_id="RP001", modality="CT",
                              pps_id=None, station_ae=None, calling_ae="CT_01",
                              description=None)  # fmt: skip
    ds = workflow_net_cli.mpps_create_dataset(args, None)
    ds.PerformedProcedureStepStatus = status
    return ds


def test_mpps_create_set_and_refused_transitions(pynetdicom_scp: Callable[..., Scp]) -> None:
    scp = pynetdicom_scp(_mpps_handlers)
    final = Dataset()
    final.PerformedProcedureStepStatus = "COMPLETED"
    final.PerformedProcedureStepEndDate = "20241220"
    final.PerformedProcedureStepEndTime = "103000"
    with WorkflowSCU("127.0.0.1", scp.port, called_ae="ARCHIVE", timeout_s=10) as scu:
        ours = scu.mpps_create(_create_ds(), "1.2.826.0.1.3680043.9.9.1")
        theirs = scu.mpps_create(_create_ds())
        assert scu.last_attribute_list is not None
        assert scu.last_attribute_list.PerformedProcedureStepStatus == "IN PROGRESS"
        duplicate = scu.mpps_create(_create_ds(), "1.2.826.0.1.3680043.9.9.1")
        bad = scu.mpps_create(_create_ds("COMPLETED"))
        done = scu.mpps_set(ours.sop_instance_uid or "", final)
        again = scu.mpps_set(ours.sop_instance_uid or "", final)
        unknown = scu.mpps_set("1.2.826.0.1.3680043.9.9.404", final)
    assert (ours.status, ours.sop_instance_uid) == (0, "1.2.826.0.1.3680043.9.9.1")
    assert (theirs.status, theirs.sop_instance_uid) == (0, "1.2.826.0.1.3680043.9.8.2")
    assert (duplicate.status, bad.status) == (0x0111, 0x0106)
    assert (done.status, again.status, unknown.status) == (0, 0xC310, 0x0112)
    created = scp.created["1.2.826.0.1.3680043.9.9.1"]
    step = created.ScheduledStepAttributesSequence[0]
    assert (step.StudyInstanceUID, step.ScheduledProcedureStepID) == (ITEMS[0][3], "SPS001")
    assert created.PerformedStationAETitle == "CT_01" and created.Modality == "CT"
    assert scp.sets[0][1] == final


def test_mpps_verbs_from_a_worklist_json_item(
    pynetdicom_scp: Callable[..., Scp], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scp = pynetdicom_scp(_mpps_handlers)
    item = tmp_path / "item.json"
    item.write_text(json.dumps({
        "patientId": "12345", "patientName": "DOE^JOHN", "patientBirthDate": "19800101",
        "patientSex": "M", "studyInstanceUid": "1.2.3.4.5.6.7.8.9", "accessionNumber": "ACC001",
        "scheduledStationAeTitle": "CT_01", "scheduledProcedureStepStartDate": "20241220",
        "scheduledProcedureStepStartTime": "100000", "modality": "CT",
        "scheduledProcedureStepId": "SPS001", "scheduledProcedureStepDescription": "CT Abdomen",
    }))  # fmt: skip
    net = ["-aec", "ARCHIVE", "-aet", "CT_01", "127.0.0.1", str(scp.port)]
    assert _cli(["mpps", "create", "-f", str(item), *net]) == 0
    uid = capsys.readouterr().out.strip()
    created = scp.created[uid]
    assert created.PatientID == "12345" and created.Modality == "CT"
    step = created.ScheduledStepAttributesSequence[0]
    assert (step.StudyInstanceUID, step.AccessionNumber, step.ScheduledProcedureStepID,
            step.ScheduledProcedureStepDescription) == ("1.2.3.4.5.6.7.8.9", "ACC001", "SPS001",
                                                        "CT Abdomen")  # fmt: skip
    ct = str(get_testdata_file("CT_small.dcm"))
    assert Path(ct).is_file()
    assert _cli(["mpps", "set", "--status", "COMPLETED", "--from-files", ct, *net, uid]) == 0
    (set_uid, mod), = scp.sets
    series = mod.PerformedSeriesSequence[0]
    image = dcmread(ct, stop_before_pixels=True)
    assert set_uid == uid and mod.PerformedProcedureStepStatus == "COMPLETED"
    assert mod.PerformedProcedureStepEndDate and series.SeriesInstanceUID == image.SeriesInstanceUID
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    # A second COMPLETED is refused by the SCP: exit 1 and the status on stderr.
    assert _cli(["mpps", "set", "--status", "DISCONTINUED", *net, uid]) == 1
    assert "0xC310" in capsys.readouterr().err
    assert _cli(["mpps", "set", "--status", "COMPLETED", *net, uid]) == 2  # no series given


# ---------------------------------------------------------------------------- commitment


def _commitment_handlers(mode: str, listener_port: int = 0, missing: str = "") -> Callable[
        [Scp], list[tuple[Any, Callable[..., Any]]]]:  # fmt: skip
    """An SCP that commits everything except ``missing`` and reports ``mode``: "same" on the
    requesting association, "new" on a new one to ``listener_port`` (SCP role proposed)."""

    def handlers(scp: Scp) -> list[tuple[Any, Callable[..., Any]]]:
        def report(assoc: Any, info: Dataset) -> None:
            try:
                ds = Dataset()
                ds.TransactionUID = info.TransactionUID
                ok = [i for i in info.ReferencedSOPSequence
                      if i.ReferencedSOPInstanceUID != missing]  # fmt: skip
                bad = [i for i in info.ReferencedSOPSequence if i not in ok]
                ds.ReferencedSOPSequence = DicomSequence(ok)
                for i in bad:
                    i.FailureReason = 0x0112
                if bad:
                    ds.FailedSOPSequence = DicomSequence(bad)
                event_type = 2 if bad else 1
                time.sleep(0.2)  # after the N-ACTION-RSP has gone out
                if mode == "new":
                    ae = AE(ae_title="ARCHIVE")
                    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
                    role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scp_role=True)
                    assoc = ae.associate("127.0.0.1", listener_port, ae_title="MODALITY",
                                         ext_neg=[role])  # fmt: skip
                    assert assoc.is_established
                status, _ = assoc.send_n_event_report(ds, event_type, STORAGE_COMMITMENT_PUSH_MODEL,
                                                      STORAGE_COMMITMENT_INSTANCE)  # fmt: skip
                scp.report_statuses.append(int(status.Status))
                if mode == "new":
                    assoc.release()
            except BaseException as exc:  # noqa: BLE001 - checked by the test
                scp.errors.append(exc)

        def on_action(event: Any) -> tuple[int, Dataset | None]:
            info = event.action_information
            scp.actions.append(info)
            threading.Thread(target=report, args=(event.assoc, info), daemon=True).start()
            return 0x0000, None

        return [(evt.EVT_N_ACTION, on_action)]

    return handlers


REFS = [("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.9.10.1"),
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.9.10.2")]  # fmt: skip


def test_commitment_report_on_the_same_association(pynetdicom_scp: Callable[..., Scp]) -> None:
    scp = pynetdicom_scp(_commitment_handlers("same", missing=REFS[1][1]))
    with WorkflowSCU("127.0.0.1", scp.port, called_ae="ARCHIVE", timeout_s=10) as scu:
        result = scu.request_commitment(REFS, "1.2.826.0.1.3680043.9.11.1", wait_s=10)
    assert not scp.errors, scp.errors
    assert result.outcome is CommitmentOutcome.REPORTED and result.report is not None
    assert result.report.same_association and result.report.event_type_id == 2
    assert result.committed == (SOPRef(*REFS[0]),)
    assert result.failed == (FailedSOP(*REFS[1], 0x0112),) and not result.all_committed
    assert scp.report_statuses == [0]  # our N-EVENT-REPORT-RSP: Success
    info = scp.actions[0]
    assert info.TransactionUID == "1.2.826.0.1.3680043.9.11.1"
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in info.ReferencedSOPSequence] == REFS  # fmt: skip


def test_commitment_report_on_a_new_association_to_the_listener(
    pynetdicom_scp: Callable[..., Scp],
) -> None:
    with CommitmentListener(0, "127.0.0.1", ae_title="MODALITY", timeout_s=10) as listener:
        scp = pynetdicom_scp(_commitment_handlers("new", listener.port))
        with WorkflowSCU("127.0.0.1", scp.port, called_ae="ARCHIVE", timeout_s=10) as scu:
            result = scu.request_commitment(REFS, wait_s=10, listener=listener)
        # Released first, report collected afterwards: the other way round works too.
        with WorkflowSCU("127.0.0.1", scp.port, called_ae="ARCHIVE", timeout_s=10) as scu:
            early = scu.request_commitment(REFS, wait_s=0)
        late = listener.wait_for(early.transaction_uid, 10)
        assert listener.errors == []
    assert not scp.errors, scp.errors
    assert result.outcome is CommitmentOutcome.REPORTED and result.all_committed
    assert result.report is not None and not result.report.same_association
    assert result.report.calling_ae == "ARCHIVE"
    assert early.outcome is CommitmentOutcome.TIMED_OUT
    assert late is not None and late.event_type_id == 1 and len(late.committed) == 2
    assert scp.report_statuses == [0, 0]


def test_commit_verb_with_listen(
    pynetdicom_scp: Callable[..., Scp], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = str(get_testdata_file("CT_small.dcm"))
    assert Path(ct).is_file()
    image = dcmread(ct, stop_before_pixels=True)
    (tmp_path / "notes.txt").write_text("not DICOM")  # skipped inside a folder
    (tmp_path / "ct.dcm").write_bytes(Path(ct).read_bytes())
    listen = free_port()
    scp = pynetdicom_scp(_commitment_handlers("new", listen))
    net = ["-aec", "ARCHIVE", "-aet", "MODALITY", "127.0.0.1", str(scp.port)]
    assert _cli(["commit", "--listen", str(listen), "--format", "json", *net, str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["committed"] == [str(image.SOPInstanceUID)] and out["failed"] == []
    assert out["outcome"] == "reported" and out["same_association"] is False
    scp2 = pynetdicom_scp(_commitment_handlers("same", missing=str(image.SOPInstanceUID)))
    net2 = ["-aec", "ARCHIVE", "127.0.0.1", str(scp2.port)]
    assert _cli(["commit", *net2, str(tmp_path / "ct.dcm")]) == 1
    captured = capsys.readouterr()
    assert f"failed      {image.SOPInstanceUID}  0x0112 no such object instance" in captured.out
    assert "0 committed, 1 failed" in captured.err
    assert _cli(["commit", *net2, str(tmp_path / "notes.txt")]) == 2
