"""``pacs echo|store|find|move|get`` (appliance.tools.net_cli) against DCMTK servers nobody here
wrote (``dcmqrscp`` with a small archive, ``storescp``) and against our own appliance.

The verbs run in-process through a parser built with ``net_cli.register`` (the lead wires it
into ``appliance.cli``); stdout/stderr are captured, so every check is on what a user sees:
the exit code, the one-line error, the table/JSON/CSV output, the files written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance.tools import net_cli
from tests.conftest import Appliance, free_port, require_tool
from tests.interop.test_qr_scu_dcmqrscp import (
    ARCHIVE_AE,
    DEST_AE,
    Archive,
    _dataset_bytes,
    archive,  # noqa: F401 - the module-scoped fixture
    make_objects,
    stop,
    wait_listening,
)

pytestmark = pytest.mark.interop

Run = Callable[..., tuple[int, str, str]]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pacs")
    net_cli.register(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def go(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        args = parser().parse_args(list(argv))
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    return go


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Path]]]:
    """Start DCMTK storescp instances with extra flags: returns (port, output dir)."""
    exe = require_tool("storescp")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> tuple[int, Path]:
        out = tmp_path / f"storescp{len(procs)}"
        out.mkdir()
        port = free_port()
        proc = subprocess.Popen([exe, "-aet", "STORESCP", "-od", str(out), *flags, str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        procs.append(proc)
        wait_listening(proc, port, "storescp")
        return port, out

    yield start
    for proc in procs:
        stop(proc)


def archive_args(archive: Archive) -> list[str]:  # noqa: F811
    return ["-aec", ARCHIVE_AE, "-to", "20", "127.0.0.1", str(archive.port)]


# ---------------------------------------------------------------------------- help, echo


@pytest.mark.parametrize("verb", ["echo", "store", "find", "move", "get"])
def test_every_verb_has_help_with_an_example_and_exit_codes(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args([verb, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"pacs {verb} " in text and "example:" in text and "exit codes:" in text


def test_echo_success_repeat_and_failures(run: Run, archive: Archive) -> None:  # noqa: F811
    code, out, err = run("echo", "-r", "2", "-v", *archive_args(archive))
    assert code == 0 and out.count("0x0000 (success)") == 2 and " ms" in out and err == ""
    code, out, err = run("echo", "-q", *archive_args(archive))
    assert (code, out, err) == (0, "", "")
    # Nobody listening: one line, exit 3.
    code, out, err = run("echo", "-aec", ARCHIVE_AE, "127.0.0.1", str(free_port()))
    assert code == net_cli.EXIT_UNREACHABLE and out == ""
    assert err.count("\n") == 1 and err.startswith("pacs echo: cannot connect to 127.0.0.1:")
    # dcmqrscp rejects a Called AE Title it does not serve (PS3.8 Table 9-21 reason 7).
    code, _, err = run("echo", "-aec", "NOBODY", "127.0.0.1", str(archive.port))
    assert code == net_cli.EXIT_REJECTED
    assert err == "pacs echo: association rejected (permanent): called AE title not recognized\n"
    # A peer that accepts TCP then closes at once: aborted, exit 5.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        import threading

        def slam() -> None:
            conn, _ = listener.accept()
            conn.close()

        t = threading.Thread(target=slam)
        t.start()
        code, _, err = run("echo", "-to", "5", "127.0.0.1", str(listener.getsockname()[1]))
        t.join()
    assert code == net_cli.EXIT_ABORTED and err.startswith("pacs echo: association aborted")


# ---------------------------------------------------------------------------- store


def test_store_folder_in_parallel_with_report(
    run: Run, storescp: Callable[..., tuple[int, Path]], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_objects(src / "nested")
    (src / "README.txt").write_text("not DICOM")
    port, out = storescp("+B")
    report = tmp_path / "report.json"
    code, stdout, err = run("store", "-aec", "STORESCP", "-j", "3", "--progress",
                            "--report-file", str(report), "127.0.0.1", str(port), str(src))
    assert code == 0, err
    assert f"{len(files)} stored, 0 with warnings, 0 failed, 1 skipped" in stdout
    assert "\rstore: " in err and f"{len(files)}/{len(files)} files" in err  # progress line
    received = {dcmread(p).SOPInstanceUID: p for p in out.iterdir()}
    assert set(received) == set(files)
    for uid, path in received.items():
        assert _dataset_bytes(path) == _dataset_bytes(files[uid])  # sent as-is
    data = json.loads(report.read_text())
    assert data["summary"]["stored"] == len(files) and data["summary"]["skipped"] == 1
    assert {r["sop_instance_uid"] for r in data["files"] if r["result"] == "stored"} == set(files)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_store_proposed_transfer_syntaxes_and_conversion(
    run: Run, storescp: Callable[..., tuple[int, Path]], tmp_path: Path
) -> None:
    files = make_objects(tmp_path / "src")  # Explicit VR LE files
    one = next(iter(files.values()))
    port, out = storescp("+xi")  # storescp accepts Implicit VR LE only
    code, _, err = run("store", "-aec", "STORESCP", "127.0.0.1", str(port), str(one))
    assert code == net_cli.EXIT_FAILED
    assert "failed" in err and "no accepted presentation context" in err
    assert list(out.iterdir()) == []
    code, _, err = run("store", "-aec", "STORESCP", "-x", "uncompressed", "127.0.0.1",
                       str(port), str(one))  # fmt: skip
    assert code == 0, err
    (written,) = out.iterdir()
    stored, original = dcmread(written), dcmread(one)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert original.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.SOPInstanceUID == original.SOPInstanceUID
    assert stored.PixelData == original.PixelData and stored.PatientName == original.PatientName


def test_store_bad_input_and_unreachable(run: Run, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, _, err = run("store", "127.0.0.1", "104", str(tmp_path / "missing.dcm"))
    assert code == net_cli.EXIT_USAGE and "no such file or directory" in err
    files = make_objects(tmp_path / "src")
    code, out, err = run("store", "--report-file", str(report), "127.0.0.1", str(free_port()),
                         str(next(iter(files.values()))))  # fmt: skip
    assert code == net_cli.EXIT_UNREACHABLE and out == "" and err.count("\n") == 1
    assert not report.exists() and list(tmp_path.glob(".*part")) == []


def test_store_and_echo_against_our_appliance(
    run: Run, appliance: Appliance, tmp_path: Path
) -> None:
    files = make_objects(tmp_path / "src")
    code, _, err = run("echo", "-aec", "PACS", "127.0.0.1", str(appliance.port))
    assert code == 0, err
    code, out, err = run("store", "-aec", "PACS", "-j", "2", "127.0.0.1", str(appliance.port),
                         str(tmp_path / "src"))  # fmt: skip
    assert code == 0, err
    assert all(appliance.get_instance(uid) is not None for uid in files)


# ---------------------------------------------------------------------------- find


def test_find_table_json_csv_and_key_syntaxes(
    run: Run, archive: Archive, tmp_path: Path  # noqa: F811
) -> None:
    base = archive_args(archive)
    code, out, err = run("find", "-P", "-L", "PATIENT", "-k", "0010,0010=DOE*", "-k",
                         "PatientID", *base)  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["PatientName", "PatientID"] and lines[1].split() == [
        "DOE^JOHN", "PID001"] and len(lines) == 2  # fmt: skip
    code, out, _ = run("find", "-S", "-L", "STUDY", "-k", "(0008,0020)=20240101-20241231",
                       "-k", "StudyInstanceUID", "-k", "PatientName", "--format", "json",
                       *base)  # fmt: skip
    assert code == 0
    found = json.loads(out)
    assert sorted(d["00080020"]["Value"][0] for d in found) == ["20240105", "20240215"]
    assert all(d["00080052"] == {"vr": "CS", "Value": ["STUDY"]} for d in found)  # PS3.18 F
    keys = tmp_path / "keys.txt"
    keys.write_text("# study-level query from a file\nQueryRetrieveLevel=SERIES\nModality=MR\n"
                    "SeriesInstanceUID\nStudyInstanceUID\n")  # fmt: skip
    code, out, _ = run("find", "-f", str(keys), "--format", "csv", *base)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 3 and {r["Modality"] for r in rows} == {"MR"}
    # No keys at all: the level's default display keys.
    code, out, _ = run("find", "-L", "STUDY", *base)
    assert code == 0 and "StudyInstanceUID" in out.splitlines()[0] and len(out.splitlines()) == 5
    # --cancel 1 stops after the first match (C-CANCEL, final status Cancel or Success).
    code, out, err = run("find", "-L", "STUDY", "-k", "StudyInstanceUID", "--cancel", "1",
                         "--format", "json", *base)  # fmt: skip
    assert code == 0 and len(json.loads(out)) == 1, err


def test_find_bad_input(run: Run, archive: Archive) -> None:  # noqa: F811
    base = archive_args(archive)
    code, out, err = run("find", "-W", *base)  # a worklist query needs keys
    assert code == net_cli.EXIT_USAGE and "worklist keys" in err and out == ""
    code, _, err = run("find", "-k", "PatientName=X", *base)
    assert code == net_cli.EXIT_USAGE and "-L PATIENT|STUDY|SERIES|IMAGE" in err
    code, _, err = run("find", "-L", "STUDY", "-k", "NoSuchKeyword=1", *base)
    assert code == net_cli.EXIT_USAGE and "unknown keyword" in err


# ---------------------------------------------------------------------------- move, get


def test_move_with_progress_and_unknown_destination(run: Run, archive: Archive) -> None:  # noqa: F811
    study = next(d for d in archive.datasets.values() if d.StudyID == "S2").StudyInstanceUID
    before = set(archive.dest_dir.iterdir())
    code, out, err = run("move", "-aem", DEST_AE, "--progress", "-L", "STUDY", "-k",
                         f"StudyInstanceUID={study}", *archive_args(archive))  # fmt: skip
    assert code == 0, err
    assert "completed 1, failed 0, warning 0" in out and "0x0000 (success)" in out
    new = set(archive.dest_dir.iterdir()) - before
    assert {dcmread(p).SOPInstanceUID for p in new} == archive.instances_of_study(study)
    code, out, err = run("move", "-aem", "NOWHERE", "-P", "-L", "PATIENT", "-k",
                         "PatientID=PID002", *archive_args(archive))  # fmt: skip
    assert code == net_cli.EXIT_FAILED and "0xA801" in err


def test_get_writes_part10_files(run: Run, archive: Archive, tmp_path: Path) -> None:  # noqa: F811
    od = tmp_path / "got"
    code, out, err = run("get", "-od", str(od), "--progress", "-P", "-L", "PATIENT", "-k",
                         "PatientID=PID001", *archive_args(archive))  # fmt: skip
    assert code == 0, err
    expected = {u for u, d in archive.datasets.items() if d.PatientID == "PID001"}
    assert "\rget: " in err and f"completed {len(expected)}, failed 0" in out
    written = {p.name: p for p in od.iterdir()}
    assert set(written) == {f"{u}.dcm" for u in expected}  # nothing partial or spooled
    for uid in expected:
        ds = dcmread(written[f"{uid}.dcm"])
        assert ds.file_meta.MediaStorageSOPInstanceUID == uid == ds.SOPInstanceUID
        assert _dataset_bytes(written[f"{uid}.dcm"]) == _dataset_bytes(archive.files[uid])


def test_get_unreachable_leaves_nothing(run: Run, tmp_path: Path) -> None:
    od = tmp_path / "got"
    code, out, err = run("get", "-od", str(od), "-L", "STUDY", "-k", "StudyInstanceUID=1.2.3",
                         "127.0.0.1", str(free_port()))  # fmt: skip
    assert code == net_cli.EXIT_UNREACHABLE and out == "" and err.count("\n") == 1
    assert list(od.iterdir()) == []
