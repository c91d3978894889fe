"""DCMTK echoscu -> appliance: C-ECHO on one association, once and 50 times."""

from __future__ import annotations

import pytest

from tests.conftest import Appliance, dcmtk_env, require_tool, run_tool

pytestmark = pytest.mark.interop


def _echoscu(app: Appliance, *extra: str) -> tuple[int, str]:
    echoscu = require_tool("echoscu")
    cp = run_tool(
        [echoscu, "-v", "-aet", "ECHOSCU", "-aec", app.ae_title, *extra,
         "127.0.0.1", str(app.port)],
        timeout_s=60,
        env=dcmtk_env(nodelay=True),
    )  # fmt: skip
    return cp.returncode, cp.stdout + cp.stderr


def test_echoscu_once(module_appliance: Appliance) -> None:
    rc, out = _echoscu(module_appliance)
    assert rc == 0, out
    assert out.count("Received Echo Response (Success)") == 1, out
    assert "Releasing Association" in out, out


def test_echoscu_repeat_50(module_appliance: Appliance) -> None:
    rc, out = _echoscu(module_appliance, "--repeat", "50")
    assert rc == 0, out
    assert out.count("Received Echo Response (Success)") == 50, out[-2000:]
    # one association for all 50 (echoscu --repeat reuses it)
    assert out.count("Association Accepted") == 1, out[-2000:]
