"""The free-space floor on a running appliance. The floor is moved (SIGHUP) above the real
free space rather than filling the disk: new C-STOREs get 0xA700 and nothing is written,
/readyz fails naming the check, C-ECHO and C-FIND keep working; a lower floor recovers."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu import SCU, ProposedContext
from tests.conftest import PYTHON, REPO, Appliance, run_tool, temp_files, wait_until
from tests.fixtures.make_datasets import write_ct_corpus

pytestmark = pytest.mark.system

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
OUT_OF_RESOURCES = 0xA700


def _readyz(app: Appliance) -> tuple[int, dict[str, Any]]:
    code, body = app.get("/readyz")
    return code, json.loads(body) if body else {}


def _find(app: Appliance) -> list[str]:
    cp = run_tool([PYTHON, "-m", "appliance", "find", "-aec", "PACS", "-S", "-L", "STUDY",
                   "-k", "StudyInstanceUID", "--format", "json", "127.0.0.1", str(app.port)],
                  timeout_s=60, cwd=REPO)
    assert cp.returncode == 0, cp.stderr
    return [m["0020000D"]["Value"][0] for m in json.loads(cp.stdout)]


def test_below_the_floor_stores_are_refused_and_queries_go_on(
    appliance_factory: Callable[..., Appliance], tmp_path: Path,
) -> None:
    paths = write_ct_corpus(tmp_path / "corpus", seed=5, patients=1, studies_per_patient=1,
                            series_per_study=1, instances_per_series=3)
    app = appliance_factory(workers=1, config="[storage]\nmin_free_bytes = 1\n").start()
    conf = app.root / "appliance.toml"
    contexts = [ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),
                ProposedContext(CT_IMAGE_STORAGE, (EXPLICIT_VR_LE,))]
    with SCU("127.0.0.1", app.port, calling_ae="FLOOR", called_ae="PACS",
             contexts=contexts) as scu:
        assert scu.store_file(paths[0]).status == 0x0000
    studies = _find(app)
    assert len(studies) == 1

    st = os.statvfs(app.data)
    far_above = st.f_bavail * st.f_frsize * 8 + 1024**4
    conf.write_text(f"[storage]\nmin_free_bytes = {far_above}\n")
    app.signal(signal.SIGHUP)
    wait_until(lambda: _readyz(app)[0] == 503, 10, "/readyz to fail below the floor")
    code, body = _readyz(app)
    assert body["failed"] == ["disk_space"]
    assert body["disk"]["floor_bytes"] == far_above
    assert 0 < body["disk"]["free_bytes"] < far_above
    before = sorted(p.relative_to(app.data) for p in (app.data / "objects").rglob("*.dcm"))
    with SCU("127.0.0.1", app.port, calling_ae="FLOOR", called_ae="PACS",
             contexts=contexts) as scu:
        assert scu.echo() == 0x0000
        refused = scu.store_file(paths[1])
        assert refused.status == OUT_OF_RESOURCES, refused
        assert "free-space floor" in (refused.error_comment or "")
    assert _find(app) == studies  # queries keep working
    after = sorted(p.relative_to(app.data) for p in (app.data / "objects").rglob("*.dcm"))
    assert after == before and temp_files(app.data) == []  # nothing written
    metrics = app.get("/metrics")[1].decode()
    assert "pacs_ready 0.0" in metrics

    conf.write_text("[storage]\nmin_free_bytes = 1\n")  # space "returns"
    app.signal(signal.SIGHUP)
    wait_until(lambda: _readyz(app)[0] == 200, 10, "/readyz to recover")
    with SCU("127.0.0.1", app.port, calling_ae="FLOOR", called_ae="PACS",
             contexts=contexts) as scu:
        assert scu.store_file(paths[1]).status == 0x0000
        assert scu.store_file(paths[2]).status == 0x0000
    assert app.stats()["instances"] == 3
    log = app.stdout_path.read_text()
    assert '"disk.below_floor"' in log and '"disk.floor_recovered"' in log
