"""SIGHUP: every process reloads the configuration file while an association stays open; a
bad file is logged and changes nothing; the audit trail records the reload."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu import SCU, ProposedContext
from tests.conftest import Appliance, wait_until

pytestmark = pytest.mark.system

WORKERS = 2
ROLES = {"arbiter": 1, "acceptor": 1, "worker": WORKERS, "index_writer": 1, "exporter": 1}


def _events(app: Appliance, name: str) -> list[dict[str, Any]]:
    out = []
    for line in app.stdout_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


def _reloaded_roles(app: Appliance, generation: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ev in _events(app, "config.reloaded"):
        if ev["generation"] == generation:
            counts[ev["role"]] = counts.get(ev["role"], 0) + 1
    return counts


def test_sighup_reloads_every_process_without_dropping_associations(
    appliance_factory: Callable[..., Appliance],
) -> None:
    app = appliance_factory(workers=WORKERS, config='log_level = "info"\n').start()
    conf = app.root / "appliance.toml"
    contexts = [ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,))]
    with SCU("127.0.0.1", app.port, calling_ae="RELOADER", called_ae="PACS",
             contexts=contexts) as scu:
        assert scu.echo() == 0x0000
        conf.write_text('log_level = "debug"\n[processes]\nheartbeat_timeout_s = 31.0\n'
                        '[ae_table.VIEWER]\nhost = "127.0.0.1"\nport = 11113\n')
        app.signal(signal.SIGHUP)
        wait_until(lambda: _reloaded_roles(app, 1) == ROLES, 20,
                   "config.reloaded (generation 1) from every process")
        for ev in _events(app, "config.reloaded"):
            assert ev["log_level"] == "debug" and ev["ae_titles"] == ["VIEWER"]
            assert ev["needs_restart"] == ["processes.heartbeat_timeout_s"]  # kept, said so
        assert scu.echo() == 0x0000  # the association survived the reload

        conf.write_text('log_level = "error"\n[network]\nport = "not a port"\n')
        app.signal(signal.SIGHUP)
        wait_until(lambda: bool(_events(app, "config.reload_failed")), 10,
                   "the arbiter to refuse the bad file")
        (failed,) = _events(app, "config.reload_failed")
        assert failed["role"] == "arbiter" and "[network] port" in failed["error"]
        assert scu.echo() == 0x0000
    assert _reloaded_roles(app, 2) == {}  # the children were not asked to load it
    assert app.get("/readyz")[0] == 200
    assert app.running()
    app.stop()
    trail = [json.loads(ln) for ln in (app.data / "audit.jsonl").read_text().splitlines()]
    events = [(t["event"], t["outcome"]) for t in trail if t["role"] == "arbiter"]
    assert events == [("application.started", 0), ("config.reloaded", 0),
                      ("config.reloaded", 4), ("application.stopped", 0)]
    reloaded = next(t for t in trail if t["event"] == "config.reloaded")
    assert reloaded["event_id"]["code"] == "110113" and reloaded["ae_titles"] == ["VIEWER"]
    assert Path(reloaded["config"]) == conf
