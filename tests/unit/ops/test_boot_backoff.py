"""The arbiter's boot-failure backoff (appliance/boot_backoff.py)."""

from __future__ import annotations

from appliance.boot_backoff import BootBackoff


def test_delays_double_then_the_retries_run_out() -> None:
    b = BootBackoff(retries=3, backoff_s=0.5)
    assert [b.failed(4, 1, lambda: None) for _ in range(4)] == [0.5, 1.0, 2.0, None]
    assert b.failed(5, 1, lambda: None) == 0.5  # counted per slot


def test_a_slot_that_booted_starts_again_from_the_first_delay() -> None:
    b = BootBackoff(retries=2, backoff_s=1.0)
    b.failed(4, 1, lambda: None)
    b.failed(4, 1, lambda: None)
    b.booted(4)
    assert b.failed(4, 1, lambda: None) == 1.0


def test_due_runs_each_retry_once_when_its_time_comes_and_drops_stale_ones() -> None:
    b = BootBackoff(retries=3, backoff_s=1.0)
    ran: list[str] = []
    b.failed(4, 1, lambda: ran.append("worker"))
    b.failed(2, 1, lambda: ran.append("writer"))
    b.failed(2, 1, lambda: ran.append("writer again"))  # due 2 s later than the first
    now = b.pending[0].at
    assert b.waiting(4) and b.waiting(2)
    assert b.due(1, now - 0.01) == []
    for respawn in b.due(1, now + 0.01):
        respawn()
    assert ran == ["worker", "writer"] and not b.waiting(4) and b.waiting(2)
    assert b.due(2, now + 10) == []  # a core restart (generation 2) forked slot 2 afresh
    assert b.pending == []
