"""Query/Retrieve against DCMTK clients: findscu (patient and study root, every level, every
matching kind), movescu to a DCMTK storescp destination, getscu (PS3.4 Annex C).

The archive is a small known corpus (tests/fixtures/qr_corpus.py) ingested once per module;
every expected answer is computed from that corpus description, never from our index.
findscu's responses are extracted to files (``-X``) and read back with pydicom.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from tests.conftest import (
    PYTHON,
    REPO,
    Appliance,
    dcmtk_env,
    free_port,
    index_get_many,
    require_tool,
    run_tool,
    wait_until,
)
from tests.fixtures.qr_corpus import Corpus, write_qr_corpus

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_qr_corpus(tmp_path_factory.mktemp("qr_corpus"))


@pytest.fixture(scope="module")
def dest_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus,
            dest_port: int) -> Iterator[Appliance]:
    root = tmp_path_factory.mktemp("qr_archive")
    data = root / "data"
    folder = corpus.instances[0].path.parent
    done = subprocess.run([PYTHON, "-m", "appliance", "ingest", "--data", str(data),
                           "--workers", "1", "--no-progress", str(folder)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    config = (f'[ae_table.STORESCP]\nhost = "127.0.0.1"\nport = {dest_port}\n'
              '[ae_table.NOBODY]\nhost = "127.0.0.1"\nport = 9\n'
              "[query]\nmove_pending_interval_s = 0.0\n")
    app = Appliance(root, data=data, workers=2, config=config).start()
    yield app
    app.stop()


def _values(value: object) -> set[str]:
    return {str(v) for v in value} if isinstance(value, MultiValue) else {str(value)}


def findscu(app: Appliance, out: Path, model: str, keys: Sequence[str | bytes],
            extra: Sequence[str] = ()) -> list[Dataset]:
    """Run findscu with ``-X``; the identifiers of the pending responses, in order."""
    tool = require_tool("findscu")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args: list[str | bytes] = [tool, model, "-aet", "FINDSCU", "-aec", app.ae_title, "-X",
                               "-od", str(out), *extra]
    for k in keys:
        args += ["-k", k]
    done = run_tool([*args, "127.0.0.1", str(app.port)], timeout_s=60, env=dcmtk_env())
    assert done.returncode == 0, done.stderr
    return [pydicom.dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


def test_patient_root_patient_level_wildcard(archive: Appliance, corpus: Corpus,
                                              tmp_path: Path) -> None:
    got = findscu(archive, tmp_path, "-P", ["QueryRetrieveLevel=PATIENT", "PatientName=SM*",
                                            "PatientID", "NumberOfPatientRelatedStudies",
                                            "NumberOfPatientRelatedInstances"])
    # PN matching is case-insensitive here (PS3.4 C.2.2.2.1 allows it for PN): SMITH and Smythe
    expected = {p.patient_id: p for p in corpus.patients if p.name.upper().startswith("SM")}
    assert {d.PatientID for d in got} == set(expected)
    for d in got:
        p = expected[d.PatientID]
        assert d.QueryRetrieveLevel == "PATIENT"
        assert int(d.NumberOfPatientRelatedStudies) == len(p.studies)
        assert int(d.NumberOfPatientRelatedInstances) == sum(s.instance_count for s in p.studies)
        assert str(d.PatientName) == p.name


def test_study_root_date_range_and_derived_keys(archive: Appliance, corpus: Corpus,
                                                tmp_path: Path) -> None:
    got = findscu(archive, tmp_path, "-S", [
        "QueryRetrieveLevel=STUDY", "StudyDate=20240101-20240131", "StudyInstanceUID",
        "PatientID", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances", "AccessionNumber", "RetrieveAETitle",
        "StudyDescription", "InstitutionName"])
    expected = {st.uid: st for _, st in corpus.studies if "20240101" <= st.date <= "20240131"}
    assert {d.StudyInstanceUID for d in got} == set(expected)
    for d in got:
        st = expected[d.StudyInstanceUID]
        assert _values(d.ModalitiesInStudy) == st.modalities
        assert int(d.NumberOfStudyRelatedSeries) == len(st.series)
        assert int(d.NumberOfStudyRelatedInstances) == st.instance_count
        assert d.AccessionNumber == st.accession
        assert d.RetrieveAETitle == archive.ae_title
        assert d.StudyDescription == st.description
        assert "InstitutionName" in d and d.InstitutionName in ("", None)  # unknown: empty


@pytest.mark.parametrize(("date_key", "test"), [
    ("20240201-", lambda d: d >= "20240201"),
    ("-20231231", lambda d: d <= "20231231"),
    ("20240117", lambda d: d == "20240117"),
])
def test_open_ranges_and_single_date(archive: Appliance, corpus: Corpus, tmp_path: Path,
                                     date_key: str, test: object) -> None:
    got = findscu(archive, tmp_path, "-S", ["QueryRetrieveLevel=STUDY",
                                            f"StudyDate={date_key}", "StudyInstanceUID"])
    want = {st.uid for _, st in corpus.studies if test(st.date)}  # type: ignore[operator]
    assert {d.StudyInstanceUID for d in got} == want


def test_question_mark_wildcard_and_accession(archive: Appliance, corpus: Corpus,
                                              tmp_path: Path) -> None:
    got = findscu(archive, tmp_path, "-S", ["QueryRetrieveLevel=STUDY",
                                            "AccessionNumber=ACC00?", "StudyInstanceUID"])
    want = {st.uid for _, st in corpus.studies if st.accession.startswith("ACC00")}
    assert {d.StudyInstanceUID for d in got} == want


def test_series_level_by_study_uid(archive: Appliance, corpus: Corpus, tmp_path: Path) -> None:
    _, study = corpus.studies[0]
    got = findscu(archive, tmp_path, "-S", [
        "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study.uid}", "SeriesInstanceUID",
        "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"])
    assert {d.SeriesInstanceUID for d in got} == {s.uid for s in study.series}
    for d in got:
        se = next(s for s in study.series if s.uid == d.SeriesInstanceUID)
        assert d.Modality == se.modality
        assert int(d.SeriesNumber) == se.number
        assert int(d.NumberOfSeriesRelatedInstances) == len(se.instances)
        assert d.QueryRetrieveLevel == "SERIES"


def test_image_level_uid_list(archive: Appliance, corpus: Corpus, tmp_path: Path) -> None:
    _, study = corpus.studies[0]
    series = study.series[0]
    wanted = [i.sop_uid for i in series.instances[:2]]
    got = findscu(archive, tmp_path, "-P", [
        "QueryRetrieveLevel=IMAGE", f"PatientID={corpus.patients[0].patient_id}",
        f"StudyInstanceUID={study.uid}", f"SeriesInstanceUID={series.uid}",
        "SOPInstanceUID=" + "\\".join(wanted), "SOPClassUID", "InstanceNumber"])
    assert sorted(d.SOPInstanceUID for d in got) == sorted(wanted)
    assert all(d.SOPClassUID == series.instances[0].sop_class for d in got)


def test_hierarchical_query_without_upper_unique_key_fails(archive: Appliance,
                                                           tmp_path: Path) -> None:
    """SERIES level in Study Root without StudyInstanceUID: not a valid hierarchical query
    (PS3.4 C.4.1.3.1), answered with a failure status, no matches."""
    tool = require_tool("findscu")
    done = run_tool([tool, "-S", "-v", "-aec", archive.ae_title,
                     "-k", "QueryRetrieveLevel=SERIES",
                     "-k", "Modality=CT", "127.0.0.1", str(archive.port)],
                    timeout_s=60, env=dcmtk_env())
    text = done.stdout + done.stderr
    assert "Find Response" in text and "Pending" not in text, text
    assert "Success" not in text.split("Find Response")[-1], text


def test_specific_character_set_round_trip(archive: Appliance, corpus: Corpus,
                                           tmp_path: Path) -> None:
    """A Latin-1 query value matches a Latin-1 name; a UTF-8 name comes back with a
    character set that can carry it."""
    # The key goes on findscu's command line as Latin-1 bytes, as a Latin-1 terminal would.
    got = findscu(archive, tmp_path, "-P", [
        "QueryRetrieveLevel=PATIENT", "SpecificCharacterSet=ISO_IR 100",
        "PatientName=MÜLLER*".encode("latin-1"), "PatientID"])  # type: ignore[list-item]
    assert [d.PatientID for d in got] == ["P003"]
    assert str(got[0].PatientName) == "MÜLLER^Jürgen"
    got = findscu(archive, tmp_path / "b", "-P", ["QueryRetrieveLevel=PATIENT",
                                                  "PatientID=P004", "PatientName"])
    assert [str(d.PatientName) for d in got] == ["山田^太郎"]
    assert "ISO_IR 192" in str(got[0].SpecificCharacterSet)


def test_cancel_after_two_responses(archive: Appliance, tmp_path: Path) -> None:
    tool = require_tool("findscu")
    done = run_tool([tool, "-S", "-v", "-aec", archive.ae_title, "--cancel", "2",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                     "127.0.0.1", str(archive.port)], timeout_s=60, env=dcmtk_env())
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert "Cancel" in text, text


# ---------------------------------------------------------------------------- retrieve


@pytest.fixture
def storescp(tmp_path: Path, dest_port: int) -> Iterator[Path]:
    tool = require_tool("storescp")
    out = tmp_path / "received"
    out.mkdir()
    proc = subprocess.Popen([tool, "-aet", "STORESCP", "-od", str(out), "+xa",
                             str(dest_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        yield out
    finally:
        proc.terminate()
        proc.wait(10)


def _received_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in folder.iterdir() if p.is_file()}


def test_movescu_study_to_storescp(archive: Appliance, corpus: Corpus,
                                   storescp: Path) -> None:
    tool = require_tool("movescu")
    _, study = corpus.studies[0]
    done = run_tool([tool, "-S", "-v", "-aet", "MOVESCU", "-aec", archive.ae_title,
                     "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={study.uid}", "127.0.0.1", str(archive.port)],
                    timeout_s=60, env=dcmtk_env())
    assert done.returncode == 0, done.stderr
    want = {i.sop_uid for se in study.series for i in se.instances}
    wait_until(lambda: _received_uids(storescp) == want, 10, "the study at storescp")
    text = done.stdout + done.stderr
    assert "Pending" in text  # counts reported as sub-operations complete


def test_movescu_patient_root_series(archive: Appliance, corpus: Corpus,
                                     storescp: Path) -> None:
    tool = require_tool("movescu")
    patient, study = corpus.studies[0]
    series = study.series[1]
    done = run_tool([tool, "-P", "-aec", archive.ae_title, "-aem", "STORESCP",
                     "-k", "QueryRetrieveLevel=SERIES", "-k", f"PatientID={patient.patient_id}",
                     "-k", f"StudyInstanceUID={study.uid}",
                     "-k", f"SeriesInstanceUID={series.uid}", "127.0.0.1", str(archive.port)],
                    timeout_s=60, env=dcmtk_env())
    assert done.returncode == 0, done.stderr
    want = {i.sop_uid for i in series.instances}
    wait_until(lambda: _received_uids(storescp) == want, 10, "the series at storescp")


def test_move_to_unknown_destination_is_a801(archive: Appliance, corpus: Corpus) -> None:
    tool = require_tool("movescu")
    _, study = corpus.studies[0]
    done = run_tool([tool, "-S", "-v", "-aec", archive.ae_title, "-aem", "WHOISTHAT",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}",
                     "127.0.0.1", str(archive.port)], timeout_s=60, env=dcmtk_env())
    text = done.stdout + done.stderr
    assert "Refused: MoveDestinationUnknown" in text, text  # 0xA801


def test_move_to_unreachable_destination_fails_every_suboperation(
        archive: Appliance, corpus: Corpus) -> None:
    tool = require_tool("movescu")
    _, study = corpus.studies[1]
    done = run_tool([tool, "-S", "-v", "-aec", archive.ae_title, "-aem", "NOBODY",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}",
                     "127.0.0.1", str(archive.port)], timeout_s=60, env=dcmtk_env())
    text = done.stdout + done.stderr
    assert "Refused: OutOfResourcesSubOperations" in text, text  # 0xA702


def test_getscu_series(archive: Appliance, corpus: Corpus, tmp_path: Path) -> None:
    tool = require_tool("getscu")
    _, study = corpus.studies[2]
    out = tmp_path / "got"
    out.mkdir()
    done = run_tool([tool, "-S", "-v", "-aet", "GETSCU", "-aec", archive.ae_title,
                     "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={study.uid}", "127.0.0.1", str(archive.port)],
                    timeout_s=60, env=dcmtk_env())
    assert done.returncode == 0, done.stdout + done.stderr
    want = {i.sop_uid for se in study.series for i in se.instances}
    assert _received_uids(out) == want, done.stdout + done.stderr
    for p in out.iterdir():
        got = pydicom.dcmread(p)
        orig = pydicom.dcmread(next(i.path for se in study.series for i in se.instances
                                    if i.sop_uid == got.SOPInstanceUID))
        assert got.PixelData == orig.PixelData


# ------------------------------------------------------ our own clients against the archive


def _pacs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "appliance", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def test_pacs_find_get_move_against_the_archive(archive: Appliance, corpus: Corpus,
                                                storescp: Path, tmp_path: Path) -> None:
    """`pacs find|get|move` (our SCU core) against our own SCP, checked against the corpus."""
    peer = ("127.0.0.1", str(archive.port))
    done = _pacs("find", "-aec", archive.ae_title, "-S", "-L", "STUDY", "-k", "PatientID=P001",
                 "-k", "StudyInstanceUID", "--format", "json", *peer)
    assert done.returncode == 0, done.stderr
    found = {r["0020000D"]["Value"][0] for r in json.loads(done.stdout)}
    assert found == {st.uid for p, st in corpus.studies if p.patient_id == "P001"}

    _, study = corpus.studies[1]
    out = tmp_path / "got"
    done = _pacs("get", "-aec", archive.ae_title, "-L", "STUDY", "-k",
                 f"StudyInstanceUID={study.uid}", "-od", str(out), *peer)
    assert done.returncode == 0, done.stderr
    want = {i.sop_uid for se in study.series for i in se.instances}
    assert _received_uids(out) == want

    done = _pacs("move", "-aec", archive.ae_title, "-aem", "STORESCP", "-L", "STUDY", "-k",
                 f"StudyInstanceUID={study.uid}", *peer)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: _received_uids(storescp) == want, 10, "the study at storescp")


def test_move_with_an_unreadable_object_fails_only_that_one(
        archive: Appliance, corpus: Corpus, storescp: Path) -> None:
    """A sub-operation whose file is gone counts as failed, and the others still go: the
    next object is read while the destination stores the current one (workers/qr/move.py),
    so a failure found ahead must land on the right sub-operation. Runs last: it deletes a
    file of the module's archive."""
    tool = require_tool("movescu")
    _, study = corpus.studies[-1]
    series = max(study.series, key=lambda se: len(se.instances))
    uids = [i.sop_uid for i in series.instances]
    assert len(uids) >= 3
    gone = uids[len(uids) // 2]
    record = index_get_many(archive.data, [gone])[gone]
    assert record is not None
    (archive.data / record.relpath).unlink()
    done = run_tool([tool, "-S", "-v", "-aec", archive.ae_title, "-aem", "STORESCP",
                     "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study.uid}",
                     "-k", f"SeriesInstanceUID={series.uid}", "127.0.0.1", str(archive.port)],
                    timeout_s=60, env=dcmtk_env())
    text = done.stdout + done.stderr
    want = set(uids) - {gone}
    wait_until(lambda: _received_uids(storescp) == want, 10, "every other object at storescp")
    # 0xB000: complete, one or more failed (PS3.4 C.4.2.1.5), and exactly the others arrived
    assert "Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in text, text
