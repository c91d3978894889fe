"""Every Prometheus metric of the appliance, in one place (STYLE 2.9).

Metrics are aggregated across processes with prometheus-client's multiprocess mode: each
process writes its samples to files in $PROMETHEUS_MULTIPROC_DIR, the exporter merges them.
The variable must be set before this module is imported (the arbiter does it, before it
forks); children import this lazily, after the fork. Label values come from closed sets only:
never UIDs, never patient data, AE titles never.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0)
_FAST_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
                 0.1, 0.25, 1.0)

BUILD_INFO = Gauge("pacs_build_info", "Build information (value is always 1)",
                   ["version"], multiprocess_mode="max")

# ---- acceptor ------------------------------------------------------------------------------
ASSOCIATIONS_ACTIVE = Gauge("pacs_associations_active", "Associations currently established",
                            multiprocess_mode="livesum")
# outcome: accepted, rejected, released, aborted_by_us, aborted_by_peer, peer_closed
ASSOCIATIONS = Counter("pacs_associations_total",
                       "Associations by how they ended or were refused", ["outcome"])
REJECTIONS = Counter("pacs_associations_rejected_total", "A-ASSOCIATE-RJ sent, by reason",
                     ["reason"])  # congestion, limit, called_ae, calling_ae, context, protocol
# [access] refusals (appliance/access.py Refusal): unknown_peer, peer_mismatch, operation,
# move_destination; counted in the acceptor, move_destination in the workers
ACCESS_DENIED = Counter("pacs_access_denied_total", "Refusals by the [access] rules, by reason",
                        ["reason"])
UL_ABORTS = Counter("pacs_ul_aborts_total", "A-ABORT PDUs sent or received",
                    ["direction", "reason"])
RECEIVED_BYTES = Counter("pacs_received_bytes_total", "Bytes read from DICOM peers")
SENT_BYTES = Counter("pacs_sent_bytes_total", "Bytes written to DICOM peers")
READ_PAUSED = Counter("pacs_read_paused_seconds_total",
                      "Time associations spent with reading paused (backpressure)")

# ---- workers -------------------------------------------------------------------------------
DIMSE_OPERATIONS = Counter("pacs_dimse_operations_total", "DIMSE requests answered",
                           ["command", "status_class"])
INSTANCES = Counter("pacs_instances_total", "Objects received (network or ingest) by result",
                    ["result", "source"])  # result: stored, duplicate, failed
# reason: refused, mismatch, cannot_understand, out_of_resources, duplicate, other
STORE_FAILURES = Counter("pacs_store_failures_total", "Failed stores by reason", ["reason"])
INGEST_LATENCY = Histogram("pacs_ingest_latency_seconds",
                           "Last data set fragment received -> response emitted",
                           buckets=_LATENCY_BUCKETS)
STAGE_SECONDS = Histogram("pacs_ingest_stage_seconds", "Time in each ingest stage",
                          ["stage"], buckets=_FAST_BUCKETS)  # parse, write, index
# Part 10 bytes of stored objects as received vs as written: they differ only with
# [storage] compress_on_ingest (workers/compress.py); the difference is the disk saved.
STORE_RECEIVED_BYTES = Counter("pacs_store_received_bytes_total",
                               "Part 10 bytes of stored objects, as received")
STORE_WRITTEN_BYTES = Counter("pacs_store_written_bytes_total",
                              "Part 10 bytes of stored objects, as written to disk")
# outcome: compressed, not_smaller, unsupported, not_restorable (workers.compress.Decision)
STORE_COMPRESSION = Counter("pacs_store_compression_total",
                            "Compression on ingest decisions, by outcome", ["outcome"])
# ---- index writer --------------------------------------------------------------------------
INDEX_COMMIT = Histogram("pacs_index_commit_seconds",
                         "Group commit: syncfs (batch mode) + LMDB transaction",
                         buckets=_FAST_BUCKETS)
INDEX_BATCH = Histogram("pacs_index_batch_records", "Records per index transaction",
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
INDEX_RECORDS = Counter("pacs_index_records_total", "Records committed, by outcome",
                        ["outcome"])
# ---- arbiter / exporter --------------------------------------------------------------------
WORKER_RESTARTS = Counter("pacs_worker_restarts_total", "Workers replaced, by cause", ["cause"])
CORE_RESTARTS = Counter("pacs_core_restarts_total",
                        "Acceptor, workers and index writer restarted together in place, "
                        "by the role whose death caused it", ["role"])
DISK_FREE = Gauge("pacs_disk_free_bytes", "Free bytes on the data volume",
                  multiprocess_mode="max")
INDEX_SIZE = Gauge("pacs_index_size_bytes", "Size of the LMDB data file",
                   multiprocess_mode="max")
READY = Gauge("pacs_ready", "1 when /readyz would answer 200", multiprocess_mode="max")


def status_class(status: int) -> str:
    """PS3.7 Annex C categories as a closed label set."""
    if status == 0:
        return "success"
    if status in (0xFF00, 0xFF01):
        return "pending"
    if status == 0xFE00:
        return "cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
