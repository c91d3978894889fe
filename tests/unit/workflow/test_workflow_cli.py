"""`pacs worklist add|import|list|remove` and `pacs mpps list|show`: output and exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from appliance.tools import workflow_cli
from tests.unit.workflow.conftest import example
from tests.unit.workflow.test_mpps import create_ds, final_ds
from workers.workflow.store import WorkflowStore


def pacs(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pacs")
    workflow_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def _write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def test_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    f = _write(tmp_path / "orders.json", [example(), example(scheduledProcedureStepId="SPS002",
                                                           patientName="MÜLLER^JÖRG")])
    assert pacs("worklist", "add", str(f), "--data", data) == 0
    assert capsys.readouterr().out == "imported 2 item(s)\n"
    assert pacs("worklist", "list", "--data", data) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["STATUS", "DATE", "TIME", "STATION", "MOD", "PATIENT", "ID",
                                "PATIENT", "NAME", "ACCESSION", "SPS", "ID", "DESCRIPTION",
                                "KEY"]
    assert lines[1].split()[:6] == ["SCHEDULED", "20241220", "100000", "CT_01", "CT", "12345"]
    assert "MÜLLER^JÖRG" in lines[2] and lines[2].endswith("1.2.3.4.5.6.7.8.9/SPS002")
    assert pacs("worklist", "list", "--format", "json", "--data", data) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["key"] == "1.2.3.4.5.6.7.8.9/SPS001"
    assert {k: rows[0][k] for k in example()} == example() | {
        "patientName": "DOE^JOHN"}  # every field of the example comes back as given
    assert rows[0]["scheduledProcedureStepStatus"] == "SCHEDULED"
    assert pacs("worklist", "remove", "1.2.3.4.5.6.7.8.9/SPS001", "--data", data) == 0
    assert capsys.readouterr().out == "removed 1 item(s)\n"
    assert pacs("worklist", "remove", "1.2.3.4.5.6.7.8.9/SPS001", "1.2.3.4.5.6.7.8.9",
                "--data", data) == 3
    out = capsys.readouterr()
    assert out.err == ("pacs worklist remove: 1.2.3.4.5.6.7.8.9/SPS001: no such item\n")
    assert out.out == "removed 1 item(s)\n"  # the study's remaining step
    assert pacs("worklist", "list", "--data", data) == 0
    assert capsys.readouterr().out == "(none)\n"


def test_import_is_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    folder = tmp_path / "in"
    _write(folder / "a.json", example())
    bad = _write(folder / "b.json", example(scheduledProcedureStepId="B",
                                            scheduledProcedureStepStartDate="20241232"))
    assert pacs("worklist", "import", str(folder), "--data", data) == 4
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"pacs worklist import: {bad}: item 1: scheduledProcedureStepStartDate: '20241232': "
        "not a calendar date",
        "pacs worklist import: nothing imported (1 problem(s))"]
    assert pacs("worklist", "list", "--format", "json", "--data", data) == 0
    assert json.loads(capsys.readouterr().out) == []
    bad.unlink()
    assert pacs("worklist", "import", str(folder), "--data", data) == 0


def test_add_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert pacs("worklist", "add", str(tmp_path / "absent.json"), "--data", data) == 3
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("[1, 2")
    assert pacs("worklist", "add", str(tmp_path / "junk.json"), "--data", data) == 4
    (tmp_path / "empty").mkdir()
    assert pacs("worklist", "add", str(tmp_path / "empty"), "--data", data) == 4
    assert "no items found" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing created by failed imports
    with pytest.raises(SystemExit) as info:
        pacs("worklist")
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        pacs("worklist", "add")
    assert info.value.code == 2


def test_store_failure_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    (data / "workflow").mkdir(parents=True)
    (data / "workflow" / "data.mdb").write_bytes(b"this is not an LMDB file" * 200)
    f = _write(tmp_path / "a.json", example())
    assert pacs("worklist", "add", str(f), "--data", str(data)) == 1
    err = capsys.readouterr().err
    assert err.startswith("pacs worklist add: ") and err.count("\n") == 1


def test_mpps_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert pacs("mpps", "list", "--data", str(data)) == 0
    assert capsys.readouterr().out == "(none)\n"
    assert pacs("mpps", "show", "1.2.3", "--data", str(data)) == 3
    assert capsys.readouterr().err == "pacs mpps show: 1.2.3: no such MPPS instance\n"
    with WorkflowStore(data) as store:
        store.create_mpps("1.2.3.1", create_ds(), "CT_01")
        store.create_mpps("1.2.3.2", create_ds(), "MR_01")
        store.set_mpps("1.2.3.1", final_ds())
    assert pacs("mpps", "list", "--data", str(data)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["1.2.3.1", "COMPLETED", "CT_01", lines[1].split()[3]]
    assert lines[2].split()[:3] == ["1.2.3.2", "IN", "PROGRESS"]
    assert "1.2.3.4.5.6.7.8.9/SPS001" in lines[1]
    assert pacs("mpps", "list", "--format", "json", "--data", str(data)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["sopInstanceUid"], r["status"], r["callingAe"]) for r in rows] == [
        ("1.2.3.1", "COMPLETED", "CT_01"), ("1.2.3.2", "IN PROGRESS", "MR_01")]
    assert rows[0]["seriesInstanceUids"] == ["1.2.826.0.1.3680043.9.7.2"]
    assert pacs("mpps", "show", "1.2.3.1", "--data", str(data)) == 0
    text = capsys.readouterr().out
    assert "Status:           COMPLETED" in text
    assert "Worklist steps:   1.2.3.4.5.6.7.8.9/SPS001" in text
    assert "Series:           1.2.826.0.1.3680043.9.7.2" in text
    assert "(0040,0252) Performed Procedure Step Status" in text
    assert pacs("mpps", "show", "1.2.3.1", "--format", "json", "--data", str(data)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dataset"]["00400252"]["Value"] == ["COMPLETED"]


def test_network_verbs_can_join_the_groups() -> None:
    parser = argparse.ArgumentParser(prog="pacs")
    sub = parser.add_subparsers(dest="command", required=True)
    workflow_cli.register(sub)
    query = workflow_cli.subcommands(sub.choices["worklist"]).add_parser("query")
    query.add_argument("host")
    query.add_argument("port", type=int)
    args = parser.parse_args(["worklist", "query", "localhost", "11112"])
    assert (args.command, args.worklist_verb, args.port) == ("worklist", "query", 11112)
    create = workflow_cli.subcommands(sub.choices["mpps"]).add_parser("create")
    create.add_argument("host")
    args = parser.parse_args(["mpps", "create", "pacs.local"])
    assert (args.mpps_verb, args.host) == ("create", "pacs.local")
