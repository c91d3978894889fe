"""A child that cannot boot (STYLE 2.5, 2.10): the arbiter respawns it after 0.5, 1 and 2 s
and halts with exit code 3 after the fourth failure in a row; a fault that goes away during
the backoff costs a few seconds, not an outage.

The fault here is a real one: a regular file where the worker's workflow store
(``data/workflow``, an LMDB directory) must be, so the worker exits with EXIT_BOOT_FAILED.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import Appliance, wait_until
from tests.system.test_crash import assert_new_association_works

pytestmark = pytest.mark.system


def _events(app: Appliance, name: str) -> list[str]:
    return [line for line in app.stdout_path.read_text().splitlines()
            if f'"event": "{name}"' in line]


def test_a_lasting_boot_failure_halts_with_exit_3_after_backing_off(
        appliance_factory: Callable[..., Appliance]) -> None:
    app = appliance_factory(workers=1)
    app.data.mkdir(parents=True)
    (app.data / "workflow").write_text("in the way")
    t0 = time.monotonic()
    app.start(wait=False)
    rc = app.wait_exit(60)
    took = time.monotonic() - t0
    assert rc == 3, f"exit {rc}\n{app.logs()}"
    retries = _events(app, "arbiter.boot_retry")
    assert [r.split('"retry_in_s": ')[1].split(",")[0] for r in retries] == ["0.5", "1.0", "2.0"]
    assert len(_events(app, "worker.boot_failed")) == 4
    assert "worker failed to boot 4 times in a row" in _events(app, "arbiter.halting")[0]
    assert took >= 3.5  # it waited between the attempts


def test_a_boot_failure_that_clears_during_the_backoff_recovers(
        appliance_factory: Callable[..., Appliance]) -> None:
    app = appliance_factory(workers=1)
    app.data.mkdir(parents=True)
    obstacle = app.data / "workflow"
    obstacle.write_text("in the way")
    app.start(wait=False)
    wait_until(lambda: bool(_events(app, "arbiter.boot_retry")), 60, "a boot retry")
    obstacle.unlink()  # the operator fixes it
    app.wait_ready(60)
    assert_new_association_works(app)  # echo and a store, on disk and indexed
    app.stop()
    assert len(_events(app, "worker.boot_failed")) >= 1
