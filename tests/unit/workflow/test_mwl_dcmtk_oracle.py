"""Our worklist matching against DCMTK's worklist SCP (`wlmscpfs`) as an oracle: the same items
served by both, the same `findscu -W` queries, the same steps must come back.

Only the keys both implement the same way are compared (DCMTK matches Patient's Name
case-sensitively; names here are upper case). Our own matching is also checked on the
identifiers DCMTK's findscu actually put on the wire (read back from its `-X` files'
counterpart: the query is rebuilt from the keys with pydicom)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from tests.conftest import dcmtk_env, free_port, require_tool, run_tool, wait_until
from tests.unit.workflow.conftest import item
from tests.unit.workflow.test_mwl_match import WORKLIST
from workers.workflow.mwl_match import find_worklist
from workers.workflow.store import WorkflowStore

pytestmark = pytest.mark.interop
ASCII_WORKLIST = [dict(w, patientName="MUELLER^JOERG") if w["patientId"] == "444" else w
                  for w in WORKLIST]

QUERIES: list[tuple[str, list[str]]] = [
    ("no filter", []),
    ("patient id", ["PatientID=12345"]),
    ("patient id wild card", ["PatientID=*3"]),
    ("patient name wild card", ["PatientName=DOE*"]),
    ("accession", ["AccessionNumber=ACC002"]),
    ("requested procedure id", ["RequestedProcedureID=RP1"]),
    ("station", ["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT_01"]),
    ("modality", ["ScheduledProcedureStepSequence[0].Modality=MR"]),
    ("date", ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20241220"]),
    ("date range", ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate="
                    "20241220-20241221"]),
    ("open date range", ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate="
                         "20241221-"]),
    ("date and time", [
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20241220",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=1200-1500"]),
    ("date and time ranges combined", [
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20241220-20241221",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=1200-1000"]),
    ("date range and time range", [
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20241220-20241222",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=0800-1100"]),
    ("performing physician", [
        "ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName=HOUSE*"]),
    ("combination", ["PatientName=DOE*",
                     "ScheduledProcedureStepSequence[0].Modality=CT",
                     "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT_01"]),
]
RETURN_KEYS = ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
               "PatientName", "PatientID"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, WorkflowStore]]:
    wlmscpfs = require_tool("wlmscpfs")
    require_tool("findscu")
    base = tmp_path_factory.mktemp("wlm")
    ae_dir = base / "db" / "PACS"
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    items = [item(**w) for w in ASCII_WORKLIST]
    for n, it in enumerate(items):
        ds = Dataset()
        ds.update(it.dataset)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = UID("1.2.276.0.7230010.3.1.0.1")
        ds.file_meta.MediaStorageSOPInstanceUID = UID(f"1.2.3.999.{n}")
        dcmwrite(ae_dir / f"item{n}.wl", ds, enforce_file_format=True)
    store = WorkflowStore(base / "data", sync=False)
    store.put_items(items)
    port = free_port()
    log = (base / "wlmscpfs.log").open("w")
    proc = subprocess.Popen([wlmscpfs, "-dfp", str(base / "db"), str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _echo(port), 10.0, "wlmscpfs listening")
        yield port, store
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        store.close()


def _echo(port: int) -> bool:
    echoscu = require_tool("echoscu")
    return run_tool([echoscu, "-aec", "PACS", "127.0.0.1", str(port)], timeout_s=10.0,
                    env=dcmtk_env()).returncode == 0


def _dcmtk(port: int, keys: list[str], out: Path) -> list[str]:
    out.mkdir()
    args = [require_tool("findscu"), "-W", "-aec", "PACS", "-X", "-od", str(out)]
    for k in [*keys, *RETURN_KEYS]:
        args += ["-k", k]
    done = run_tool([*args, "127.0.0.1", str(port)], timeout_s=30.0, env=dcmtk_env())
    assert done.returncode == 0, done.stderr
    return sorted(str(dcmread(p).ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                  for p in out.glob("rsp*.dcm"))


def _ours(store: WorkflowStore, keys: list[str]) -> list[str]:
    q = Dataset()
    step = Dataset()
    q.ScheduledProcedureStepSequence = [step]
    for k in [*keys, *RETURN_KEYS]:
        path, _, value = k.partition("=")
        target, name = (step, path.split(".", 1)[1]) if "." in path else (q, path)
        setattr(target, name, value)
    return sorted(str(r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                  for r in find_worklist(store, q, hide_completed=True))


@pytest.mark.parametrize(("keys"), [q[1] for q in QUERIES], ids=[q[0] for q in QUERIES])
def test_same_answers_as_wlmscpfs(servers: tuple[int, WorkflowStore], keys: list[str],
                                  tmp_path: Path) -> None:
    port, store = servers
    expected = _dcmtk(port, keys, tmp_path / "rsp")
    assert _ours(store, keys) == expected
    assert expected or keys  # the no-filter query must find something


def test_oracle_is_not_vacuous(servers: tuple[int, WorkflowStore], tmp_path: Path) -> None:
    port, _ = servers
    got: Any = _dcmtk(port, [], tmp_path / "all")
    assert got == ["SPS001", "SPS002", "SPS003", "SPS004"]
