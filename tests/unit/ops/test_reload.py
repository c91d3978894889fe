"""SIGHUP reload inside one process: what is merged, what needs a restart, hooks, bad files."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import reload
from appliance.config import Config, ConfigSource, RemoteAE, load


@pytest.fixture
def restore_sighup() -> Iterator[None]:
    old = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, old)


def test_merge_keeps_only_reloadable_settings(tmp_path: Path) -> None:
    old = Config()
    conf = tmp_path / "c.toml"
    conf.write_text('log_level = "debug"\n[network]\nport = 1\n[processes]\nworkers = 9\n'
                    '[storage]\nmin_free_bytes = 7\n[audit]\npath = "-"\n'
                    '[ae_table.VIEWER]\nhost = "h"\nport = 104\n')
    merged, restart = reload.merge(old, load(conf))
    assert merged.log_level == "debug" and merged.audit.path == "-"
    assert merged.ae_table == (RemoteAE("VIEWER", "h", 104),)
    assert merged.storage.min_free_bytes == 7
    assert merged.network.port == old.network.port  # not live: kept
    assert merged.processes.workers == old.processes.workers
    assert restart == ["network.port", "processes.workers"]


def test_reload_runs_hooks_and_ignores_a_bad_file(tmp_path: Path,
                                                  restore_sighup: None) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('log_level = "info"\n')
    source = ConfigSource(conf)
    reload.install(source, source.load(), "test")
    seen: list[str] = []

    def broken(_cfg: Config) -> None:
        raise RuntimeError("hook bug")

    reload.on_reload(broken)  # one failing hook does not stop the others
    reload.on_reload(lambda cfg: seen.append(cfg.log_level))
    conf.write_text('log_level = "warning"\n')
    os.kill(os.getpid(), signal.SIGHUP)  # the handler runs before kill() returns to us
    assert seen == ["warning"] and reload.generation() == 1
    conf.write_text('log_level = "warning"\n[network]\nport = "x"\n')
    assert reload.reload_from() is None  # logged, nothing applied
    assert seen == ["warning"] and reload.generation() == 1
    current = reload.current()
    assert current is not None and current.log_level == "warning"


def test_install_without_source_changes_nothing(restore_sighup: None) -> None:
    reload.install(None, Config(), "test")
    seen: list[Config] = []
    reload.on_reload(seen.append)
    os.kill(os.getpid(), signal.SIGHUP)
    assert seen == [] and reload.generation() == 0


def test_query_and_workflow_settings_reload() -> None:
    from dataclasses import replace as _replace

    from appliance.config import Config
    from appliance.reload import merge as _merge

    old = Config()
    new = _replace(old, query=_replace(old.query, max_results=7),
                   workflow=_replace(old.workflow, hide_completed=False))
    merged, needs_restart = _merge(old, new)
    assert merged.query.max_results == 7 and merged.workflow.hide_completed is False
    assert needs_restart == []
