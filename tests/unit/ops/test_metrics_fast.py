"""metrics.fast tallies: what reaches Prometheus after a flush equals direct inc/observe."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from metrics import fast


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_flushed_tallies_equal_direct_updates() -> None:
    buckets = (0.001, 0.01, 0.1, 1.0)
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    metrics = {}
    for name, reg in (("direct", direct), ("tallied", tallied)):
        metrics[name] = (
            Counter("t_ops", "ops", ["kind"], registry=reg),
            Counter("t_bytes", "bytes", registry=reg),
            Histogram("t_seconds", "seconds", ["stage"], buckets=buckets, registry=reg),
        )
    rng = random.Random(5)
    values = [rng.choice([0.0005, 0.001, 0.005, 0.01, 0.5, 1.0, 3.0]) for _ in range(200)]
    fast.flush()
    for i, v in enumerate(values):
        kind, stage = ("a", "parse") if i % 3 else ("b", "write")
        ops, nbytes, seconds = metrics["direct"]
        ops.labels(kind).inc()
        nbytes.inc(i)
        seconds.labels(stage).observe(v)
        ops, nbytes, seconds = metrics["tallied"]
        fast.counter(ops, kind).inc()
        fast.counter(nbytes).inc(i)
        fast.histogram(seconds, stage).observe(v)
        if i == 100:
            assert fast.pending()
            fast.flush()  # a flush midway changes nothing in the totals
    assert fast.pending()
    assert _samples(tallied) != _samples(direct)  # not yet flushed
    fast.flush()
    assert not fast.pending()
    assert _samples(tallied) == pytest.approx(_samples(direct))  # sums: float order only
    fast.flush()  # idempotent
    assert _samples(tallied) == pytest.approx(_samples(direct))


def test_tallies_are_cached_per_metric_and_labels() -> None:
    reg = CollectorRegistry()
    c = Counter("t_cached", "c", ["x"], registry=reg)
    assert fast.counter(c, "1") is fast.counter(c, "1")
    assert fast.counter(c, "1") is not fast.counter(c, "2")
