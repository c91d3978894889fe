"""Per-object metrics at the cost of a dict update: tallies flushed into Prometheus in batches.

Why: in multiprocess mode (the appliance's), every prometheus-client ``inc`` takes a lock,
checks the pid (a getpid syscall) and writes an mmap'd file; ``labels()`` validates and
looks the child up under another lock. Measured on this 2-core VM: ``Histogram.observe``
≈20 µs, ``labels(...).inc()`` ≈20 µs, ``Counter.inc`` ≈5 µs. A C-STORE touched about ten of
them per object in the worker alone (profiled: ~150 µs of a ~450 µs object).

THEORY OF OPERATION
-------------------
``counter(metric, *labels)`` / ``histogram(metric, *labels)`` return a cached local tally for
one labelled child (cache keyed by the metric object and the label values, so a label lookup
is one dict get). ``inc``/``observe`` only add to Python numbers and mark the tally dirty.
``flush()`` moves what accumulated into the real Prometheus values: one ``inc`` per counter,
and for a histogram one ``inc`` of its sum and one per bucket that got observations (the same
non-cumulative per-bucket values ``Histogram.observe`` writes). Every process that uses
tallies must flush: the worker and index writer loops flush before they block in poll() and at
least every ``FLUSH_INTERVAL_S`` while busy; the acceptor flushes from a timer. So /metrics
lags by at most that interval, and nothing is lost while the process lives (a process killed
with -9 loses at most one interval of tallies, like any in-memory counter).

Label values must come from closed sets (STYLE 2.9), as for the metrics themselves.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

FLUSH_INTERVAL_S = 0.25

__all__ = ["FLUSH_INTERVAL_S", "Spread", "Tally", "counter", "flush", "histogram", "pending"]


class Tally:
    """A counter child's increments since the last flush."""

    __slots__ = ("child", "amount")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.amount = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if not self.amount:
            _dirty.append(self)
        self.amount += amount

    def _flush(self) -> None:
        amount, self.amount = self.amount, 0.0
        if amount:
            self.child.inc(amount)


class Spread:
    """A histogram child's observations since the last flush: per-bucket counts and the sum."""

    __slots__ = ("child", "bounds", "counts", "total", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)  # ends with +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.n = 0

    def observe(self, amount: float) -> None:
        if not self.n:
            _dirty.append(self)
        self.n += 1
        self.total += amount
        # First bucket whose upper bound is >= amount, as Histogram.observe picks it.
        self.counts[bisect_left(self.bounds, amount)] += 1

    def _flush(self) -> None:
        if not self.n:
            return
        child, counts = self.child, self.counts
        child._sum.inc(self.total)
        buckets = child._buckets
        for i, c in enumerate(counts):
            if c:
                buckets[i].inc(c)
                counts[i] = 0
        self.total = 0.0
        self.n = 0


_tallies: dict[tuple[int, tuple[str, ...]], Tally] = {}
_spreads: dict[tuple[int, tuple[str, ...]], Spread] = {}
_dirty: list[Tally | Spread] = []


def counter(metric: Any, *labels: str) -> Tally:
    """The tally of ``metric`` (a Counter) with ``labels`` (none for an unlabelled one)."""
    key = (id(metric), labels)
    t = _tallies.get(key)
    if t is None:
        t = _tallies[key] = Tally(metric.labels(*labels) if labels else metric)
    return t


def histogram(metric: Any, *labels: str) -> Spread:
    """The tally of ``metric`` (a Histogram) with ``labels``."""
    key = (id(metric), labels)
    s = _spreads.get(key)
    if s is None:
        s = _spreads[key] = Spread(metric.labels(*labels) if labels else metric)
    return s


def pending() -> bool:
    """True when some tally has something to flush."""
    return bool(_dirty)


def flush() -> None:
    """Move every pending tally into its Prometheus value (cheap when nothing is pending)."""
    while _dirty:
        _dirty.pop()._flush()
