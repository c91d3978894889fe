"""Workflow services against clients nobody here wrote: DCMTK `findscu -W` on the Modality
Worklist, pynetdicom as MPPS SCU (create, complete, invalid transitions) and as Storage
Commitment SCU (report on the same association, and on a new association to a pynetdicom
listener, also across an appliance restart). PS3.4 Annexes K, F and J.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.conftest import PYTHON, REPO, Appliance, dcmtk_env, free_port, require_tool, run_tool

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, build_role, evt  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    CTImageStorage,
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
    Verification,
)

pytestmark = pytest.mark.interop

COMMIT_INSTANCE = "1.2.840.10008.1.20.1.1"
ITEMS = [
    {"patientId": "WL001", "patientName": "DOE^JOHN", "patientBirthDate": "19800101",
     "patientSex": "M", "studyInstanceUid": "1.2.826.0.1.3680043.8.498.100",
     "accessionNumber": "ACC001", "scheduledStationAeTitle": "CT_01",
     "scheduledProcedureStepStartDate": "20241220", "scheduledProcedureStepStartTime": "100000",
     "modality": "CT", "scheduledProcedureStepId": "SPS001",
     "scheduledProcedureStepDescription": "CT Abdomen"},
    {"patientId": "WL002", "patientName": "ROE^JANE", "patientBirthDate": "19900505",
     "patientSex": "F", "studyInstanceUid": "1.2.826.0.1.3680043.8.498.200",
     "accessionNumber": "ACC002", "scheduledStationAeTitle": "MR_01",
     "scheduledProcedureStepStartDate": "20241221", "scheduledProcedureStepStartTime": "083000",
     "modality": "MR", "scheduledProcedureStepId": "SPS002",
     "scheduledProcedureStepDescription": "MR Knee"},
    {"patientId": "WL003", "patientName": "DOEMAN^ALEX", "patientBirthDate": "19700707",
     "patientSex": "O", "studyInstanceUid": "1.2.826.0.1.3680043.8.498.300",
     "accessionNumber": "ACC003", "scheduledStationAeTitle": "CT_01",
     "scheduledProcedureStepStartDate": "20250103", "scheduledProcedureStepStartTime": "140000",
     "modality": "CT", "scheduledProcedureStepId": "SPS003",
     "scheduledProcedureStepDescription": "CT Head"},
]


def _pacs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "appliance", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def listen_port() -> int:
    return free_port()


def _config(listen_port: int, grace_s: float) -> str:
    return (f'[ae_table.LISTENER]\nhost = "127.0.0.1"\nport = {listen_port}\n'
            f"[workflow]\ncommitment_grace_s = {grace_s}\ncommitment_retry_s = 0.5\n")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, listen_port: int) -> Iterator[Appliance]:
    root = tmp_path_factory.mktemp("workflow")
    items = root / "worklist.json"
    items.write_text(json.dumps(ITEMS))
    done = _pacs("worklist", "add", str(items), "--data", str(root / "data"))
    assert done.returncode == 0, done.stderr
    appliance = Appliance(root, workers=2, config=_config(listen_port, 1.0)).start()
    yield appliance
    appliance.stop()


def findscu_w(app: Appliance, out: Path, keys: list[str]) -> list[Dataset]:
    tool = require_tool("findscu")
    out.mkdir(parents=True, exist_ok=True)
    args = [tool, "-W", "-aec", app.ae_title, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    done = run_tool([*args, "127.0.0.1", str(app.port)], timeout_s=60, env=dcmtk_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return [pydicom.dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


SPS = "ScheduledProcedureStepSequence"
RETURN = ["PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
          f"{SPS}[0].ScheduledStationAETitle", f"{SPS}[0].ScheduledProcedureStepStartDate",
          f"{SPS}[0].ScheduledProcedureStepID", f"{SPS}[0].Modality"]


def _ids(got: list[Dataset]) -> set[str]:
    return {str(d.PatientID) for d in got}


def test_worklist_unfiltered_returns_every_item(app: Appliance, tmp_path: Path) -> None:
    got = findscu_w(app, tmp_path, RETURN)
    assert _ids(got) == {"WL001", "WL002", "WL003"}
    first = next(d for d in got if d.PatientID == "WL001")
    step = first[SPS][0]
    assert step.ScheduledStationAETitle == "CT_01" and step.Modality == "CT"
    assert step.ScheduledProcedureStepID == "SPS001"
    assert first.StudyInstanceUID == ITEMS[0]["studyInstanceUid"]


@pytest.mark.parametrize(("filters", "expected"), [
    ([f"{SPS}[0].Modality=CT"], {"WL001", "WL003"}),
    ([f"{SPS}[0].ScheduledStationAETitle=MR_01"], {"WL002"}),
    ([f"{SPS}[0].ScheduledProcedureStepStartDate=20241220-20241231"], {"WL001", "WL002"}),
    ([f"{SPS}[0].ScheduledProcedureStepStartDate=20250101-"], {"WL003"}),
    (["PatientName=DOE*"], {"WL001", "WL003"}),
    (["PatientName=doe^j*"], {"WL001"}),
    (["AccessionNumber=ACC00?"], {"WL001", "WL002", "WL003"}),
    ([f"{SPS}[0].Modality=CT", "PatientID=WL003"], {"WL003"}),
])
def test_worklist_filters(app: Appliance, tmp_path: Path, filters: list[str],
                          expected: set[str]) -> None:
    keys = [k for k in RETURN if k.split("=")[0] not in {f.split("=")[0] for f in filters}]
    assert _ids(findscu_w(app, tmp_path, keys + filters)) == expected


# ------------------------------------------------------------------------------------ MPPS


def _mpps_create_ds(step_id: str, study_uid: str, patient_id: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.ReferencedPatientSequence = []
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedStudySequence = []
    item.AccessionNumber = ""
    item.RequestedProcedureID = ""
    item.RequestedProcedureDescription = ""
    item.ScheduledProcedureStepID = step_id
    item.ScheduledProcedureStepDescription = ""
    item.ScheduledProtocolCodeSequence = []
    ds.ScheduledStepAttributesSequence = [item]
    ds.PerformedProcedureStepID = "PPS-" + step_id
    ds.PerformedStationAETitle = "CT_01"
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20241220"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = ""
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def _final_ds(status: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20241220"
    ds.PerformedProcedureStepEndTime = "103000"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.PerformingPhysicianName = ""
    series.ProtocolName = "ABD"
    series.OperatorsName = ""
    series.SeriesDescription = ""
    series.RetrieveAETitle = ""
    series.ReferencedImageSequence = []
    series.ReferencedNonImageCompositeSOPInstanceSequence = []
    ds.PerformedSeriesSequence = [series]
    return ds


def _mpps_assoc(app: Appliance) -> Any:
    ae = AE(ae_title="CT_01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title)
    assert assoc.is_established
    return assoc


def test_mpps_create_complete_then_refuse_changes(app: Appliance, tmp_path: Path) -> None:
    uid = generate_uid()
    assoc = _mpps_assoc(app)
    try:
        status, _ = assoc.send_n_create(_mpps_create_ds("SPS001", ITEMS[0]["studyInstanceUid"],
                                                        "WL001"),
                                        ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        again, _ = assoc.send_n_create(_mpps_create_ds("SPS001", ITEMS[0]["studyInstanceUid"],
                                                       "WL001"),
                                       ModalityPerformedProcedureStep, uid)
        assert again.Status == 0x0111  # Duplicate SOP Instance
        status, _ = assoc.send_n_set(_final_ds("COMPLETED"), ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(_final_ds("DISCONTINUED"), ModalityPerformedProcedureStep,
                                     uid)
        # PS3.4 F.7.2.2.3: 0x0110 Processing failure, Error ID A710 "Performed Procedure
        # Step Object may no longer be updated"
        assert status.Status == 0x0110 and status.ErrorID == 0xA710
        missing, _ = assoc.send_n_set(_final_ds("COMPLETED"), ModalityPerformedProcedureStep,
                                      generate_uid())
        assert missing.Status == 0x0112  # No Such Object Instance
    finally:
        assoc.release()
    # the completed step leaves the worklist
    assert _ids(findscu_w(app, tmp_path, RETURN)) == {"WL002", "WL003"}
    shown = _pacs("mpps", "show", uid, "--data", str(app.data))
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout, shown.stderr


def test_mpps_create_must_start_in_progress(app: Appliance) -> None:
    ds = _mpps_create_ds("SPS002", ITEMS[1]["studyInstanceUid"], "WL002")
    ds.PerformedProcedureStepStatus = "COMPLETED"
    assoc = _mpps_assoc(app)
    try:
        status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, generate_uid())
    finally:
        assoc.release()
    assert status.Status not in (0x0000, 0xFF00)


# ------------------------------------------------------------------- Storage Commitment


@pytest.fixture(scope="module")
def stored(app: Appliance, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """Two CT objects stored in the archive: (SOP Class, SOP Instance)."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title)
    assert assoc.is_established
    refs = []
    try:
        for _ in range(2):
            ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
            ds.SOPInstanceUID = generate_uid()
            assert assoc.send_c_store(ds).Status == 0x0000
            refs.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    finally:
        assoc.release()
    return refs


def _action_ds(tx: str, refs: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = tx
    items = []
    for cls, inst in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = inst
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def _report_summary(ds: Dataset) -> tuple[set[str], dict[str, int]]:
    ok = {str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", [])}
    failed = {str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
              for i in ds.get("FailedSOPSequence", [])}
    return ok, failed


def test_commitment_report_on_the_same_association(app: Appliance,
                                                   stored: list[tuple[str, str]]) -> None:
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((int(event.event_type), event.event_information))
        got.set()
        return 0x0000, None

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    bogus = ("1.2.840.10008.5.1.4.1.1.2", generate_uid())
    wrong_class = ("1.2.840.10008.5.1.4.1.1.4", stored[1][1])  # stored as CT, claimed MR
    tx = generate_uid()
    try:
        status, _ = assoc.send_n_action(_action_ds(tx, [stored[0], bogus, wrong_class]), 1,
                                        StorageCommitmentPushModel, COMMIT_INSTANCE)
        assert status.Status == 0x0000
        assert got.wait(10), "no N-EVENT-REPORT on the same association"
    finally:
        assoc.release()
    [(event_type, info)] = reports
    assert event_type == 2  # failures present (PS3.4 J.3.3)
    assert info.TransactionUID == tx
    ok, failed = _report_summary(info)
    assert ok == {stored[0][1]}
    assert failed == {bogus[1]: 0x0112, wrong_class[1]: 0x0119}


class Listener:
    """A pynetdicom Storage Commitment SCU waiting for reports on new associations."""

    def __init__(self, port: int) -> None:
        self.reports: list[tuple[int, Dataset, str]] = []
        self.got = threading.Event()
        ae = AE(ae_title="LISTENER")
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        ae.add_supported_context(Verification)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.on_report)])

    def on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((int(event.event_type), event.event_information,
                             event.assoc.requestor.ae_title))
        self.got.set()
        return 0x0000, None

    def close(self) -> None:
        self.server.shutdown()


def _request_and_leave(port: int, ae_title: str, tx: str, refs: list[tuple[str, str]]) -> None:
    """N-ACTION, refuse a report on this association (0x0110), then abort: the appliance
    must keep the request and report on a new association."""
    ae = AE(ae_title="LISTENER")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title,
                         ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True)],
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, lambda _e: (0x0110, None))])
    assert assoc.is_established
    status, _ = assoc.send_n_action(_action_ds(tx, refs), 1, StorageCommitmentPushModel,
                                    COMMIT_INSTANCE)
    assert status.Status == 0x0000
    assoc.abort()


def test_commitment_report_on_a_new_association(app: Appliance, listen_port: int,
                                                stored: list[tuple[str, str]]) -> None:
    listener = Listener(listen_port)
    try:
        tx = generate_uid()
        _request_and_leave(app.port, app.ae_title, tx, stored)
        assert listener.got.wait(30), app.logs()
    finally:
        listener.close()
    [(event_type, info, requestor)] = [r for r in listener.reports
                                       if r[1].TransactionUID == tx]
    assert event_type == 1 and requestor.strip() == app.ae_title
    assert _report_summary(info) == ({uid for _, uid in stored}, {})


def test_commitment_survives_a_restart(tmp_path: Path) -> None:
    """The request is persisted: stopped before the report could go out, the appliance sends
    it after the restart."""
    port = free_port()
    first = Appliance(tmp_path / "r", workers=1, config=_config(port, 3600.0)).start()
    try:
        tx = generate_uid()
        refs = [("1.2.840.10008.5.1.4.1.1.2", generate_uid())]  # not stored: event type 2
        _request_and_leave(first.port, first.ae_title, tx, refs)
        time.sleep(0.5)
    finally:
        first.stop()
    listener = Listener(port)
    second = Appliance(tmp_path / "r", workers=1, config=_config(port, 0.0)).start()
    try:
        assert listener.got.wait(30), second.logs()
    finally:
        second.stop()
        listener.close()
    [(event_type, info, _)] = listener.reports
    assert event_type == 2 and info.TransactionUID == tx
    assert _report_summary(info)[1] == {refs[0][1]: 0x0112}


def test_mpps_survives_a_restart(tmp_path: Path) -> None:
    """IN PROGRESS before a restart, COMPLETED after it: the record was persisted."""
    uid = generate_uid()
    first = Appliance(tmp_path / "m", workers=1).start()
    try:
        assoc = _mpps_assoc(first)
        try:
            status, _ = assoc.send_n_create(
                _mpps_create_ds("SPS009", "1.2.826.0.1.3680043.8.498.900", "WL009"),
                ModalityPerformedProcedureStep, uid)
            assert status.Status == 0x0000
        finally:
            assoc.release()
    finally:
        first.stop()
    second = Appliance(tmp_path / "m", workers=1).start()
    try:
        assoc = _mpps_assoc(second)
        try:
            status, _ = assoc.send_n_set(_final_ds("COMPLETED"), ModalityPerformedProcedureStep,
                                         uid)
            assert status.Status == 0x0000
        finally:
            assoc.release()
    finally:
        second.stop()
    shown = _pacs("mpps", "show", uid, "--data", str(tmp_path / "m" / "data"))
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout, shown.stderr


def test_watched_folder_is_imported_by_the_running_appliance(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = (f'[workflow]\nworklist_dir = "{inbox}"\nwatch_interval_s = 0.2\n'
              "watch_settle_s = 0.0\n")
    app = Appliance(tmp_path / "w", workers=1, config=config).start()
    try:
        (inbox / "bad.json").write_text(json.dumps([{**ITEMS[0], "patientBirthDate": "1980"}]))
        (inbox / "good.json").write_text(json.dumps([ITEMS[1]]))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (inbox / "imported" / "good.json").exists():
            time.sleep(0.1)
        assert (inbox / "imported" / "good.json").exists(), app.logs()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (inbox / "rejected" / "bad.json").exists():
            time.sleep(0.1)
        assert (inbox / "rejected" / "bad.json").exists()
        assert "patientBirthDate" in (inbox / "rejected" / "bad.json.error.txt").read_text()
        assert _ids(findscu_w(app, tmp_path / "q", RETURN)) == {"WL002"}
    finally:
        app.stop()


def test_pacs_find_w_against_the_appliance(app: Appliance) -> None:
    """Our own client (`pacs find -W`) on our own worklist, JSON out."""
    done = _pacs("find", "-W", "-aec", app.ae_title, "-k", "PatientID",
                 "-k", f"{SPS}[0].Modality=MR", "--format", "json", "127.0.0.1", str(app.port))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["00100020"]["Value"] for r in rows] == [["WL002"]]
