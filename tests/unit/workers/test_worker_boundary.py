"""The worker's per-job boundary (STYLE 2.5): a bug in one record's handler is logged and the
loop goes on; an error that leaves LMDB or a ring in doubt ends the process with
EXIT_STATE_CORRUPT for the arbiter to replace it, instead of carrying on with it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from appliance import reload
from appliance.config import Config, load
from appliance.datadir import ensure_index, prepare_data_dir
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.kinds import Kind
from appliance.ipc.ring import Ring
from workers import kernels, process
from workers.service import Services


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "os"}})
    prepare_data_dir(tmp_path)
    ensure_index(cfg)
    monkeypatch.setattr(kernels, "warm_up", lambda _k: None)  # not what is tested here
    monkeypatch.setattr(kernels, "page_out_compiler", lambda: None)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    callbacks = list(reload._reg.callbacks)
    yield cfg
    for s, handler in saved.items():
        signal.signal(s, handler)
    reload._reg.callbacks[:] = callbacks


def _run_with_one_command(cfg: Config, monkeypatch: pytest.MonkeyPatch,
                          error: BaseException) -> tuple[int, int]:
    """run_worker with one COMMAND record whose handler raises ``error``: (exit code, calls)."""
    calls = []

    def command(self: Services, assoc_id: int, context_id: int, payload: memoryview) -> None:
        calls.append(assoc_id)
        raise error

    monkeypatch.setattr(Services, "command", command)
    ch, rings = WorkerChannels.create(0, 1, 1 << 20, 1 << 20)
    jobs = Ring.attach(ch.jobs)  # the acceptor's end
    assert jobs.try_put(Kind.COMMAND, 7, 1, 0, 1, b"\x00" * 8)
    try:
        code = process.run_worker(cfg, ch, process.WorkerHooks(
            ready=lambda: None, heartbeat=lambda _n: None, should_exit=lambda: bool(calls)))
    finally:
        jobs.close()
        for r in rings:
            r.close()
    return code, len(calls)


def test_a_bug_in_a_handler_is_logged_and_the_worker_goes_on(
        cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run_with_one_command(cfg, monkeypatch, ValueError("a bug")) == (process.EXIT_OK, 1)


@pytest.mark.parametrize("error", [lmdb.CorruptedError("damaged"), lmdb.PanicError("panic")])
def test_a_damaged_index_ends_the_worker_with_exit_state_corrupt(
        cfg: Config, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    code, calls = _run_with_one_command(cfg, monkeypatch, error)
    assert (code, calls) == (process.EXIT_STATE_CORRUPT, 1)
