"""Tracing: off costs nothing; on, an association span in one process parents the worker's
operation span in another (W3C traceparent, as carried in the OPEN record) and the ingest
stages of a real StoreJob are its children; sampling is parent-based."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydicom.data import get_testdata_file

from metrics import tracing
from workers.part10 import read_part10_header
from workers.store import StoreJob, StoreSettings

Row = tuple[str, int, int, int | None]  # name, trace id, span id, parent span id


@pytest.fixture(autouse=True)
def tracing_off_after() -> Iterator[None]:
    yield
    tracing.configure(enabled=False)


def _rows(exporter: InMemorySpanExporter) -> list[Row]:
    return [(s.name, s.context.trace_id, s.context.span_id,
             s.parent.span_id if s.parent is not None else None)
            for s in exporter.get_finished_spans()]


def test_off_by_default_is_a_no_op() -> None:
    assert not tracing.enabled()
    with tracing.span("ingest.parse") as sp:
        assert sp is None
    assert tracing.start_span("dicom.association") is None
    assert tracing.traceparent() == ""
    tracing.end_span(None)


def _store_one(data: Path) -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    info = read_part10_header(path)
    (data / "tmp").mkdir(parents=True, exist_ok=True)
    settings = StoreSettings(data_dir=data, fsync_each=False, max_dataset_bytes=0,
                             implementation_class_uid="1.2.3", implementation_version_name="T")
    job = StoreJob(settings, sop_class_uid=info.sop_class_uid,
                   sop_instance_uid=info.sop_instance_uid,
                   transfer_syntax_uid=info.transfer_syntax_uid, calling_ae="T")
    raw = Path(path).read_bytes()[info.dataset_offset:]
    job.feed(memoryview(raw), last=True)
    attrs, relpath = job.prepare()
    job.commit(attrs, relpath)


def _worker(traceparent: str, data: str, conn: Connection) -> None:
    """The worker side, in its own process with its own provider (configured after fork)."""
    exporter = InMemorySpanExporter()
    tracing.configure(enabled=True, role="worker", span_exporter=exporter)
    op = tracing.start_span("dicom.c_store", parent=traceparent, message_id=1)
    with tracing.use(op):
        _store_one(Path(data))
    tracing.end_span(op)
    conn.send(_rows(exporter))
    conn.close()


def test_context_crosses_the_process_boundary(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure(enabled=True, role="acceptor", span_exporter=exporter)
    assoc = tracing.start_span("dicom.association", calling_ae="SCU", peer="127.0.0.1:1")
    tp = tracing.traceparent(assoc)
    assert len(tp) == 55 and tp.startswith("00-")
    assert int(tp[-2:], 16) & 1  # the sampled flag
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(tp, str(tmp_path), there))
    proc.start()
    worker_rows: list[Row] = here.recv()
    proc.join(30)
    assert proc.exitcode == 0
    tracing.end_span(assoc)
    ((name, trace_id, assoc_id, parent),) = _rows(exporter)
    assert (name, parent) == ("dicom.association", None)
    spans = {row[0]: row for row in worker_rows}
    assert set(spans) == {"dicom.c_store", "ingest.parse", "ingest.store"}
    assert all(row[1] == trace_id for row in worker_rows)  # one trace across processes
    assert spans["dicom.c_store"][3] == assoc_id
    op_id = spans["dicom.c_store"][2]
    assert spans["ingest.parse"][3] == op_id and spans["ingest.store"][3] == op_id


def test_sampling_is_parent_based() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(enabled=True, sample_ratio=0.0, span_exporter=exporter)
    with tracing.span("dicom.association"):
        unsampled = tracing.traceparent()  # still propagated, so the worker does not sample
    assert not int(unsampled[-2:], 16) & 1
    with tracing.span("dicom.c_store", parent=unsampled):
        pass
    assert _rows(exporter) == []
    sampled_parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    with tracing.span("dicom.c_store", parent=sampled_parent):
        with tracing.span("ingest.parse"):
            pass
    rows = _rows(exporter)
    assert [r[0] for r in rows] == ["ingest.parse", "dicom.c_store"]
    assert rows[1][3] == int("cd" * 8, 16) and rows[1][1] == int("ab" * 16, 16)


def test_error_status_and_console_exporter(capfd: pytest.CaptureFixture[str]) -> None:
    assert tracing.configure(enabled=True, exporter="console", service_name="svc")
    sp = tracing.start_span("dicom.c_find", level="STUDY")
    tracing.end_span(sp, error="0xA700", status=0xA700)
    tracing.shutdown()
    err = capfd.readouterr().err
    assert '"name": "dicom.c_find"' in err and '"status_code": "ERROR"' in err
    assert '"service.name": "svc"' in err


def test_otlp_exporter_is_available() -> None:
    # [tracing] exporter = "otlp" (the default) needs opentelemetry-exporter-otlp-proto-http;
    # without it tracing turns itself off (logged) rather than failing the appliance.
    assert tracing.configure(enabled=True, exporter="otlp", endpoint="http://127.0.0.1:9")
    assert tracing._traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert tracing._traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
