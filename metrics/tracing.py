"""OpenTelemetry traces (STYLE 2.9): set up after fork in each process, off by default.

THEORY OF OPERATION
-------------------
OTel carries traces only; Prometheus carries metrics. Nothing here is imported from
opentelemetry until ``configure(enabled=True, ...)``: with tracing off, ``span()`` returns a
shared no-op context manager and the hot path pays one global lookup.

Spans: ``dicom.association`` (acceptor, from A-ASSOCIATE-AC to close), one span per DIMSE
operation in the worker (``dicom.c_store``, ``dicom.c_find`` ...), and below a C-STORE the
ingest stages ``ingest.parse``, ``ingest.store`` (workers/store.py) and ``ingest.index``
(request to the index writer until its acknowledgement). Never a span per PDU.

Across the process boundary the context travels as a W3C ``traceparent`` string
(``00-<trace id>-<span id>-<flags>``, 55 bytes): the acceptor puts it in the OPEN record of an
association (a msgpack map, key ``"traceparent"``) and the worker parents its operation spans
on it. Sampling is parent-based over a trace-id ratio, so a whole association is sampled or
not. The provider is this module's own (not the global one): every process configures its own
after fork, and tests can configure several in turn with an in-memory exporter.

Exporters: ``otlp`` (OTLP/HTTP protobuf, package opentelemetry-exporter-otlp-proto-http, in a
BatchSpanProcessor: a background thread, started after fork) or ``console`` (JSON on stderr,
synchronous, for debugging). ``shutdown()`` flushes; the arbiter calls it before a child exits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import structlog

log = structlog.get_logger(component="tracing")

SpanContext = contextlib.AbstractContextManager[Any]
_NOOP: SpanContext = contextlib.nullcontext()


class _State:
    """The process's tracer; ``tracer is None`` means tracing is off."""

    def __init__(self) -> None:
        self.tracer: Any = None
        self.provider: Any = None


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def configure(*, enabled: bool, exporter: str = "otlp", endpoint: str = "",
              sample_ratio: float = 1.0, service_name: str = "pacs-appliance",
              role: str = "main", span_exporter: Any = None) -> bool:
    """Set up (or turn off) tracing in this process; call after fork. ``span_exporter``
    (e.g. an InMemorySpanExporter) replaces the configured exporter, for tests. Returns
    whether tracing is on (False too when the exporter cannot be loaded: logged)."""
    shutdown()
    if not enabled:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    processor: Any
    if span_exporter is not None:
        processor = SimpleSpanProcessor(span_exporter)
    elif exporter == "console":
        import sys

        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        processor = SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            log.warning("tracing.disabled", reason=f"OTLP exporter not installed: {exc}")
            return False
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(endpoint)))
    resource = Resource.create({"service.name": service_name, "pacs.role": role,
                                "process.pid": os.getpid()})
    provider = TracerProvider(resource=resource,
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    provider.add_span_processor(processor)
    _state.provider = provider
    _state.tracer = provider.get_tracer("pacs-appliance")
    return True


def _traces_url(endpoint: str) -> str | None:
    """A base URL gets OTLP/HTTP's ``/v1/traces``; "" leaves it to the OTEL_* variables."""
    if not endpoint:
        return None
    return endpoint if endpoint.rstrip("/").endswith("/v1/traces") else (
        endpoint.rstrip("/") + "/v1/traces")


def configure_from(settings: Any, role: str) -> bool:
    """``configure`` from a ``[tracing]`` section (appliance.config.TracingConfig)."""
    return configure(enabled=settings.enabled, exporter=settings.exporter,
                     endpoint=settings.endpoint, sample_ratio=settings.sample_ratio,
                     service_name=settings.service_name, role=role)


def shutdown() -> None:
    """Flush and stop this process's exporter (before exit; idempotent)."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def _context(parent: Any) -> Any:
    """An OTel Context from a traceparent string or a Span; None = the current context."""
    if parent is None or parent == "":
        return None
    from opentelemetry import trace
    if isinstance(parent, str):
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        return TraceContextTextMapPropagator().extract({"traceparent": parent})
    return trace.set_span_in_context(parent)


def span(name: str, parent: Any = None, **attributes: Any) -> SpanContext:
    """``with span("ingest.parse"):`` a child of the current span, or of ``parent`` (a
    traceparent string or a Span); the span is current inside. A no-op when tracing is off."""
    tracer = _state.tracer
    if tracer is None:
        return _NOOP
    cm: SpanContext = tracer.start_as_current_span(
        name, context=_context(parent), attributes=_attrs(attributes))
    return cm


def start_span(name: str, parent: Any = None, **attributes: Any) -> Any:
    """A span that outlives one call (an association, a C-STORE across its fragments): end it
    with ``end_span``; make it current for a while with ``use``. None when tracing is off."""
    tracer = _state.tracer
    if tracer is None:
        return None
    return tracer.start_span(name, context=_context(parent), attributes=_attrs(attributes))


def end_span(sp: Any, error: str | None = None, **attributes: Any) -> None:
    """End ``sp`` (None is ignored), marking it failed with ``error``."""
    if sp is None:
        return
    if attributes:
        sp.set_attributes(_attrs(attributes))
    if error:
        from opentelemetry.trace import Status, StatusCode
        sp.set_status(Status(StatusCode.ERROR, error))
    sp.end()


@contextlib.contextmanager
def use(sp: Any) -> Iterator[Any]:
    """Make ``sp`` the current span inside the block (without ending it)."""
    if sp is None:
        yield None
        return
    from opentelemetry import trace
    with trace.use_span(sp, end_on_exit=False):
        yield sp


def traceparent(sp: Any = None) -> str:
    """The W3C traceparent of ``sp`` (or of the current span); "" when there is none."""
    if _state.tracer is None:
        return ""
    from opentelemetry import trace
    ctx = sp.get_span_context() if sp is not None else trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _attrs(attributes: dict[str, Any]) -> dict[str, Any]:
    """OTel takes str/bool/int/float (and sequences of them); anything else as str."""
    return {k: v if isinstance(v, str | bool | int | float) else str(v)
            for k, v in attributes.items() if v is not None}
