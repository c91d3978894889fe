"""Every tool verb is reachable through `pacs` itself (appliance.cli), not only through the
tool modules' own parsers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from appliance.cli import build_parser, main

VERBS = ["serve", "ingest", "db", "echo", "store", "find", "move", "get", "dump", "info",
         "modify", "to-json", "from-json", "to-xml", "from-xml", "anonymize", "dir", "extract",
         "img2dcm", "worklist", "mpps", "commit", "convert"]


@pytest.mark.parametrize("verb", VERBS)
def test_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([verb, "--help"])
    assert info.value.code == 0
    assert "usage: pacs" in capsys.readouterr().out


def test_tools_run_through_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = str(get_testdata_file("CT_small.dcm"))
    assert main(["dump", src]) == 0
    assert "PatientName" in capsys.readouterr().out
    out = tmp_path / "ct.json"
    assert main(["to-json", src, "-o", str(out)]) == 0
    assert main(["from-json", str(out), "-o", str(tmp_path / "back.dcm")]) == 0
    assert main(["dump", str(tmp_path / "missing.dcm")]) == 3  # not found
