"""SIGHUP applies a new C-MOVE destination: before the reload a move to it is refused 0xA801
(Move Destination unknown), after it the study arrives at DCMTK's storescp."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.conftest import (
    PYTHON,
    REPO,
    Appliance,
    dcmtk_env,
    free_port,
    require_tool,
    run_tool,
    wait_until,
)
from tests.fixtures.qr_corpus import write_qr_corpus

pytestmark = [pytest.mark.system, pytest.mark.interop]


def _move(app: Appliance, study_uid: str) -> str:
    done = run_tool([require_tool("movescu"), "-S", "-v", "-aec", app.ae_title, "-aem", "LATE",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                     "127.0.0.1", str(app.port)], timeout_s=60, env=dcmtk_env())
    return done.stdout + done.stderr


def test_sighup_adds_a_move_destination(appliance_factory: Callable[..., Appliance],
                                        tmp_path: Path) -> None:
    corpus = write_qr_corpus(tmp_path / "corpus")
    _, study = corpus.studies[0]
    app = appliance_factory(workers=1, config='log_level = "info"\n')
    done = subprocess.run([PYTHON, "-m", "appliance", "ingest", "--data", str(app.data),
                           "--workers", "1", "--no-progress", str(tmp_path / "corpus")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    app.start()
    assert "Refused: MoveDestinationUnknown" in _move(app, study.uid)

    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen([require_tool("storescp"), "-aet", "LATE", "-od", str(out), "+xa",
                            str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        (app.root / "appliance.toml").write_text(
            f'log_level = "info"\n[ae_table.LATE]\nhost = "127.0.0.1"\nport = {port}\n')
        app.signal(signal.SIGHUP)
        wait_until(lambda: "config.reloaded" in app.stdout_path.read_text(errors="replace"),
                   20, "the reload")
        time.sleep(0.5)  # every child handles its SIGHUP
        text = _move(app, study.uid)
        want = {i.sop_uid for se in study.series for i in se.instances}
        wait_until(lambda: {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.iterdir()}
                   == want, 10, "the study at the new destination")
        assert "MoveDestinationUnknown" not in text
    finally:
        scp.terminate()
        scp.wait(10)
