"""Start-up cleaning of the spool directory must spare transfers of a running neighbour."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from appliance.datadir import prepare_data_dir


def test_removes_only_dead_writers_spool_files(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = tmp_path / "tmp" / f"{dead.pid}-1.part"
        live = tmp_path / "tmp" / f"{alive.pid}-7.part"
        odd = tmp_path / "tmp" / "garbage.part"
        for f in (stale, live, odd):
            f.write_bytes(b"x")
        prepare_data_dir(tmp_path)
        assert not stale.exists() and not odd.exists()
        assert live.exists()  # another process is still writing it
        assert {p.name for p in tmp_path.iterdir()} == {"tmp", "objects", "index"}
    finally:
        alive.kill()
        alive.wait()
    assert os.path.isdir(tmp_path / "objects")
