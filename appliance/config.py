"""Configuration: frozen dataclasses loaded from a TOML file, then environment, then flags.

The Config object is passed explicitly to every role; nothing reads a global. Every field
here does something: a setting that does nothing is a defect (DEVELOPERS.md).

Precedence (lowest first): built-in defaults, the TOML file, ``PACS_*`` environment variables
(``ENV_VARS``: the common settings only, for containers and systemd drop-ins), command-line
flags. A ``ConfigSource`` remembers all three so SIGHUP can load the same way again.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliance.access import AccessConfig
from appliance.access import from_toml as access_from_toml
from appliance.access import to_toml as access_to_toml
from appliance.errors import ConfigError


class Durability(StrEnum):
    """When a Success C-STORE-RSP may go out (DESIGN "Durability contract")."""

    FSYNC = "fsync"  # file + directory fsync'd, index committed with sync, per object
    BATCH = "batch"  # group commit: one syncfs + one synced index commit per batch
    OS = "os"  # page cache only: survives our crash, not power loss


class DuplicatePolicy(StrEnum):
    KEEP = "keep"  # keep the first copy, answer Success
    OVERWRITE = "overwrite"  # replace the stored copy
    REJECT = "reject"  # answer 0x0111 Duplicate SOP Instance


class CompressOnIngest(StrEnum):
    """``[storage] compress_on_ingest`` (workers/compress.py)."""

    NONE = "none"  # store every object as received
    RLE = "rle"  # uncompressed images as RLE Lossless when smaller; restored on retrieve


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    host: str = "0.0.0.0"
    port: int = 11112
    ae_title: str = "PACS"
    # PS3.8 limits
    max_pdu_bytes: int = 1_048_576  # advertised Maximum Length; largest P-DATA-TF we accept
    max_presentation_contexts: int = 128
    max_command_bytes: int = 65_536
    max_dataset_bytes: int = 0  # 0 = unlimited (streamed to disk)
    artim_timeout_s: float = 30.0
    idle_timeout_s: float = 600.0  # network idle timeout of an established association
    dimse_timeout_s: float = 60.0  # peer silent in the middle of a message; 0 = idle_timeout_s
    max_pending_operations: int = 16  # requests outstanding on one association; 0 = no limit
    # negotiation policy
    require_called_ae: bool = False
    allowed_calling_aes: tuple[str, ...] = ()  # empty = any
    promiscuous: bool = False  # accept storage of SOP classes not in the standard's registry
    transfer_syntax_preference: tuple[str, ...] = ()  # empty = built-in order
    # capacity
    max_associations: int = 256
    max_associations_per_ae: int = 64
    max_pending_connections: int = 256  # awaiting their A-ASSOCIATE-RQ; one more evicts the oldest
    socket_buffer_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StorageConfig:
    data_dir: Path = Path("data")
    durability: Durability = Durability.BATCH
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP
    # Group commit: the index writer commits whatever arrived; it waits up to this long for
    # more only when fewer than batch_max are pending (0 = never wait: the time one sync
    # takes is the natural batching window).
    batch_window_ms: float = 0.0
    batch_max: int = 512
    index_map_size_bytes: int = 64 * 1024**3  # sparse; grown on MapFullError
    # Free-space floor of the data volume: below it new C-STOREs get 0xA700 and /readyz
    # fails; queries go on. The floor is the larger of the two (0 and 0.0 = no floor).
    min_free_bytes: int = 512 * 1024**2
    min_free_percent: float = 0.0
    compress_on_ingest: CompressOnIngest = CompressOnIngest.NONE
    # Objects of 128 KiB and more are written with O_DIRECT, past the page cache (workers/
    # spool.py): on this kind of VM that saves ~1 ms of kernel CPU per 0.5 MB object.
    direct_io: bool = True


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    workers: int = 0  # 0 = one per CPU this process may run on, less one (at least 1);
    # `pacs ingest`, which has no acceptor, takes one per CPU (appliance/ingest_driver.py)
    graceful_timeout_s: float = 20.0
    heartbeat_timeout_s: float = 30.0
    # acceptor -> worker ring, per worker, pre-faulted. 32 MiB stores 105 MB objects on one
    # association as fast as 64 MiB did (16 MiB: 15-45% slower, the acceptor pausing reads
    # while O_DIRECT writes drain the ring), at half the RAM.
    ring_bytes: int = 32 * 1024 * 1024
    reply_ring_bytes: int = 8 * 1024 * 1024
    # Workers commit their own index records instead of sending them through the index
    # writer process (workers/inline_index.py) when there is one worker, or with `os`
    # durability; with several workers and `batch`/`fsync` the writer groups their records
    # under one flush (Config.inline_index_for).
    inline_index: bool = True
    # The acceptor or index writer dying restarts acceptor, workers and index writer in
    # place; more than core_restart_limit such restarts within the window halt (exit 1).
    core_restart_limit: int = 5  # 0 = halt at once, for systemd to restart everything
    core_restart_window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 9112


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """Query/Retrieve SCP (PS3.4 Annex C)."""

    max_results: int = 0  # C-FIND matches per query; 0 = unlimited. Hit: 0xA700 (C.4.1.1.4)
    relational: bool = True  # grant relational queries asked for by extended negotiation
    move_pending_interval_s: float = 1.0  # C-MOVE/C-GET pending responses at most this often
    move_connect_timeout_s: float = 10.0  # sub-association to a C-MOVE destination


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """The audit trail (appliance/audit.py): one JSON object per line, per PS3.15 A.5."""

    # "" = off; "-" = stdout; "stderr"; else a file, relative paths under [storage] data_dir
    path: str = "audit.jsonl"
    patient_values: bool = False  # include Patient ID/Name and patient query values


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry traces (metrics/tracing.py); off by default."""

    enabled: bool = False
    exporter: str = "otlp"  # otlp (OTLP/HTTP protobuf) | console (JSON on stderr)
    endpoint: str = ""  # "" = $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or http://localhost:4318
    sample_ratio: float = 1.0  # of new traces (parent-based: a sampled parent wins)
    service_name: str = "pacs-appliance"


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    """Modality Worklist, MPPS and Storage Commitment (PS3.4 K, F, J);
    workers.workflow.WorkflowSettings is built from it field by field."""

    hide_completed: bool = True  # steps an MPPS completed or discontinued leave the worklist
    combined_datetime: bool = True  # SPS Start Date + Time matched as one range (C.2.2.2.5.1)
    worklist_dir: str = ""  # watched folder of worklist JSON files; "" = none
    watch_interval_s: float = 5.0  # how often the watched folder is scanned
    watch_settle_s: float = 1.0  # a file must be this old (mtime) before it is imported
    commitment_grace_s: float = 10.0  # a report unacknowledged this long goes out anew
    commitment_retry_s: float = 30.0  # between delivery passes for pending reports
    commitment_timeout_s: float = 30.0  # connect / response timeout of a delivery


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """DICOM over TLS on a second port (PS3.15 B.9; appliance/tls.py); off by default."""

    enabled: bool = False
    port: int = 2762  # IANA "dicom-tls"; the plain [network] port serves too unless plain = false
    certificate: str = ""  # PEM certificate (chain) of the appliance
    private_key: str = ""  # PEM private key of that certificate, unencrypted
    ca_file: str = ""  # PEM CA certificates that client and peer certificates chain to
    verify_client: bool = False  # true: a client certificate is required (mutual TLS)
    plain: bool = True  # false (with enabled): TLS only, the plain [network] port is not bound
    # As a TLS client (ae_table peers with tls = true): "" = present certificate/private_key
    client_certificate: str = ""
    client_private_key: str = ""
    check_hostname: bool = False  # true: a peer's certificate must name its ae_table host


@dataclass(frozen=True, slots=True)
class RemoteAE:
    """A known peer (C-MOVE destination, later storage commitment requester)."""

    ae_title: str
    host: str
    port: int
    tls: bool = False  # connect with TLS (appliance.tls.scu_context: [tls] CA and identity)


@dataclass(frozen=True, slots=True)
class Config:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    processes: ProcessConfig = field(default_factory=ProcessConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    workflow: WorkflowConfig = field(default_factory=WorkflowConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    access: AccessConfig = field(default_factory=AccessConfig)  # [access]: appliance/access.py
    ae_table: tuple[RemoteAE, ...] = ()
    log_level: str = "info"

    def remote_ae(self, ae_title: str) -> RemoteAE | None:
        """The AE table entry for ``ae_title`` (compared without padding spaces)."""
        wanted = ae_title.strip()
        return next((ae for ae in self.ae_table if ae.ae_title == wanted), None)

    @property
    def worker_count(self) -> int:
        """``[processes] workers``, or by default one per CPU less one: the acceptor and the
        index writer together keep about one core busy at full ingest, and on 2 cores one
        worker stored as many objects per second as two with 10-20% less CPU per object
        (README "Scaling")."""
        return self.processes.workers or max(1, len(os.sched_getaffinity(0)) - 1)

    def inline_index_for(self, workers: int) -> bool:
        """Whether each of ``workers`` workers commits its own index records
        (workers/inline_index.py): with one worker there is no one to share a commit with;
        with `os` durability there is no flush to share, and the index-writer round trip
        only costs (2 workers on 2 cores: 2.2-3.0k -> 3.2-3.5k small objects/s). With several
        workers in `batch` or `fsync` mode one syncfs or synced commit for all of them is
        cheaper than one each (1.1-1.6k -> 1.2k small objects/s inline), so the index writer
        process does it."""
        return self.processes.inline_index and (
            workers == 1 or self.storage.durability is Durability.OS)


_SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "storage": StorageConfig,
    "processes": ProcessConfig,
    "http": HttpConfig,
    "query": QueryConfig,
    "audit": AuditConfig,
    "tracing": TracingConfig,
    "workflow": WorkflowConfig,
    "tls": TlsConfig,
}


def _coerce(section: str, name: str, value: Any, target: Any) -> Any:
    """Convert a TOML value to the type of the default it replaces."""
    where = f"[{section}] {name}"
    try:
        return _convert(value, target)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid value {value!r}, expected "
                          f"{_expected(target)}") from exc


def _expected(target: Any) -> str:
    if isinstance(target, bool):
        return "true or false"
    if isinstance(target, StrEnum):
        return "one of " + ", ".join(repr(m.value) for m in type(target))
    if isinstance(target, Path | str):
        return "a string"
    if isinstance(target, tuple):
        return "a list of strings"
    if isinstance(target, float):
        return "a number"
    return "an integer"


def _convert(value: Any, target: Any) -> Any:
    if isinstance(target, bool):
        if not isinstance(value, bool):
            raise TypeError
        return value
    if isinstance(target, StrEnum):
        return type(target)(value)
    if isinstance(target, Path):
        return Path(value)
    if isinstance(target, tuple):
        if not isinstance(value, list | tuple):
            raise TypeError
        return tuple(str(v) for v in value)
    if isinstance(target, float):
        return float(value)
    if isinstance(target, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if isinstance(target, str):
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError("unsupported setting")


def _apply(obj: Any, section: str, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"[{section}] unknown setting {key!r}")
        changes[key] = _coerce(section, key, value, getattr(obj, key))
    return replace(obj, **changes)


def from_mapping(data: dict[str, Any], base: Config | None = None) -> Config:
    """Build a Config from a parsed TOML mapping (sections as in the README example)."""
    cfg = base or Config()
    parts: dict[str, Any] = {}
    for key, value in data.items():
        if key == "log_level":
            if not isinstance(value, str):
                raise ConfigError("log_level must be a string")
            parts["log_level"] = value
        elif key == "ae_table":
            parts["ae_table"] = _ae_table(value)
        elif key == "access":
            parts["access"] = access_from_toml(value)
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            parts[key] = _apply(getattr(cfg, key), key, value)
        else:
            raise ConfigError(f"unknown section {key!r}")
    cfg = replace(cfg, **parts)
    validate(cfg)
    return cfg


def _ae_table(value: Any) -> tuple[RemoteAE, ...]:
    """``[ae_table.TITLE]`` tables with host, port and optionally tls."""
    if not isinstance(value, dict):
        raise ConfigError("[ae_table] must be a table of AE titles")
    entries = []
    for title, spec in value.items():
        where = f"[ae_table.{title}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table with host and port")
        unknown = set(spec) - {"host", "port", "tls"}
        if unknown:
            raise ConfigError(f"{where} unknown setting {sorted(unknown)[0]!r}")
        host, port, tls = spec.get("host"), spec.get("port"), spec.get("tls", False)
        if not isinstance(host, str) or not host:
            raise ConfigError(f"{where} host: expected a host name or address")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise ConfigError(f"{where} port: expected 1-65535, got {port!r}")
        if not isinstance(tls, bool):
            raise ConfigError(f"{where} tls: expected true or false")
        entries.append(RemoteAE(str(title).strip(), host, port, tls))
    return tuple(entries)


def load(
    path: Path | None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load ``path`` (TOML, optional), then ``environ``'s ``PACS_*`` settings (when given),
    then ``overrides`` (the flags, same shape as the file)."""
    cfg = Config()
    if path is not None:
        try:
            with open(path, "rb") as fh:
                cfg = from_mapping(tomllib.load(fh), cfg)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    if environ is not None:
        env = env_overrides(environ)
        if env:
            cfg = from_mapping(env, cfg)
    if overrides:
        cfg = from_mapping(overrides, cfg)
    return cfg


# ---- environment ------------------------------------------------------------------------

# variable -> (section or "" for top level, key, kind); kind converts the string
ENV_VARS: dict[str, tuple[str, str, str]] = {
    "PACS_HOST": ("network", "host", "str"),
    "PACS_PORT": ("network", "port", "int"),
    "PACS_AE_TITLE": ("network", "ae_title", "str"),
    "PACS_DATA_DIR": ("storage", "data_dir", "str"),
    "PACS_DURABILITY": ("storage", "durability", "str"),
    "PACS_MIN_FREE_BYTES": ("storage", "min_free_bytes", "int"),
    "PACS_WORKERS": ("processes", "workers", "int"),
    "PACS_HTTP": ("http", "", "hostport"),
    "PACS_LOG_LEVEL": ("", "log_level", "str"),
    "PACS_AUDIT_PATH": ("audit", "path", "str"),
    "PACS_TRACING_ENABLED": ("tracing", "enabled", "bool"),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``PACS_*`` variables of ``environ`` in the shape of the TOML file. Other
    ``PACS_*`` names (test and bench switches) are not settings and are ignored."""
    out: dict[str, Any] = {}
    for var, (section, key, kind) in ENV_VARS.items():
        raw = environ.get(var)
        if raw is None:
            continue
        value = _env_value(var, raw.strip(), kind)
        target = out.setdefault(section, {}) if section else out
        if kind == "hostport":
            target["host"], target["port"] = value
        else:
            target[key] = value
    return out


def _env_value(var: str, raw: str, kind: str) -> Any:
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"${var}: expected an integer, got {raw!r}") from None
    if kind == "bool":
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"${var}: expected true or false, got {raw!r}")
    if kind == "hostport":
        host, sep, port = raw.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"${var}: expected HOST:PORT, got {raw!r}")
        return host or "127.0.0.1", int(port)
    return raw


@dataclass(frozen=True)
class ConfigSource:
    """Where a Config came from, so that SIGHUP can load it again the same way."""

    path: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None

    def load(self) -> Config:
        return load(self.path, self.flags, self.environ)


# Numeric settings and the range that makes sense: (section, key, lowest, highest or None,
# lowest excluded). Where 0 means "none" or "unlimited" it is in range; elsewhere zero and
# negative values would stall, flood or disable the appliance instead of configuring it.
_RANGES: tuple[tuple[str, str, float, float | None, bool], ...] = (
    ("network", "port", 0, 65535, False),
    # PS3.8 D.1 lets a Maximum Length of 0 mean "unlimited", but we would then buffer any
    # PDU a peer announces (a "4 GB" one included): a bound is required.
    ("network", "max_pdu_bytes", 4096, None, False),
    ("network", "max_presentation_contexts", 1, 128, False),  # odd IDs 1-255 (PS3.8 9.3.2.2)
    ("network", "max_command_bytes", 128, None, False),  # below any real command set
    ("network", "max_dataset_bytes", 0, None, False),  # 0 = unlimited
    ("network", "artim_timeout_s", 0, None, True),  # 0 would close every connection at once
    ("network", "idle_timeout_s", 0, None, False),  # 0 = none
    ("network", "dimse_timeout_s", 0, None, False),  # 0 = idle_timeout_s
    ("network", "max_pending_operations", 0, None, False),  # 0 = no limit
    ("network", "max_associations", 1, None, False),
    ("network", "max_associations_per_ae", 1, None, False),
    ("network", "max_pending_connections", 0, None, False),  # 0 = no limit
    ("network", "socket_buffer_bytes", 4096, None, False),
    ("storage", "batch_window_ms", 0, None, False),
    ("storage", "batch_max", 1, None, False),
    ("storage", "index_map_size_bytes", 65536, None, False),  # grown when full, from here
    ("storage", "min_free_bytes", 0, None, False),
    ("processes", "workers", 0, None, False),  # 0 = CPUs less one
    ("processes", "graceful_timeout_s", 0, None, False),
    ("processes", "heartbeat_timeout_s", 1.0, None, False),  # children beat at least every 0.5 s
    ("processes", "ring_bytes", 1024 * 1024, None, False),
    ("processes", "reply_ring_bytes", 1024 * 1024, None, False),
    ("processes", "core_restart_limit", 0, None, False),  # 0 = halt at the first death
    ("processes", "core_restart_window_s", 0, None, True),
    ("http", "port", 0, 65535, False),
    ("query", "max_results", 0, None, False),  # 0 = unlimited
    ("query", "move_pending_interval_s", 0, None, False),
    ("query", "move_connect_timeout_s", 0, None, True),
    ("workflow", "watch_interval_s", 0, None, True),
    ("workflow", "watch_settle_s", 0, None, False),
    ("workflow", "commitment_grace_s", 0, None, False),
    ("workflow", "commitment_retry_s", 0, None, True),
    ("workflow", "commitment_timeout_s", 0, None, True),
)


def _validate_ranges(cfg: Config) -> None:
    for section, key, low, high, exclusive in _RANGES:
        value = getattr(getattr(cfg, section), key)
        if (value <= low if exclusive else value < low) or (high is not None and value > high):
            limit = (f"> {low:g}" if exclusive else f">= {low:g}") if high is None else (
                f"{low:g}-{high:g}")
            raise ConfigError(f"[{section}] {key} must be {limit}, got {value!r}")


def validate(cfg: Config) -> None:
    net = cfg.network
    _validate_ranges(cfg)
    if not 1 <= len(net.ae_title.strip()) <= 16:
        raise ConfigError("[network] ae_title must be 1-16 characters")
    if net.max_pdu_bytes * 2 + 4096 > cfg.processes.ring_bytes:
        raise ConfigError("[processes] ring_bytes must exceed twice [network] max_pdu_bytes")
    _validate_ops(cfg)
    _validate_tls(cfg.tls, any(ae.tls for ae in cfg.ae_table))
    for ae in cfg.ae_table:
        if not 1 <= len(ae.ae_title) <= 16:
            raise ConfigError(f"[ae_table.{ae.ae_title}] AE titles are 1-16 characters")


def _validate_tls(tls: TlsConfig, tls_peers: bool = False) -> None:
    """An enabled [tls] names files that exist (each process reads them when it starts);
    so does a client identity, and ca_file, when an [ae_table] peer uses TLS."""
    if not 0 <= tls.port <= 65535:
        raise ConfigError("[tls] port must be 0-65535")
    if not tls.plain and not tls.enabled:
        raise ConfigError("[tls] plain = false needs enabled = true (nothing would listen)")
    if bool(tls.client_certificate) != bool(tls.client_private_key):
        raise ConfigError("[tls] client_certificate and client_private_key go together")
    client = [("client_certificate", tls.client_certificate),
              ("client_private_key", tls.client_private_key)]
    if tls_peers:
        client.append(("ca_file", tls.ca_file))
    for name, value in client:
        if value and not Path(value).is_file():
            raise ConfigError(f"[tls] {name}: no such file {value!r}")
    if not tls.enabled:
        return
    required = [("certificate", tls.certificate), ("private_key", tls.private_key)]
    if tls.verify_client or tls.ca_file:
        required.append(("ca_file", tls.ca_file))
    for name, value in required:
        if not value:
            raise ConfigError(f"[tls] {name}: required when enabled"
                              + (" with verify_client = true" if name == "ca_file" else ""))
        if not Path(value).is_file():
            raise ConfigError(f"[tls] {name}: no such file {value!r}")


_LOG_LEVELS = ("debug", "info", "warning", "error")
_EXPORTERS = ("otlp", "console")


def _validate_ops(cfg: Config) -> None:
    if cfg.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level: expected one of {', '.join(_LOG_LEVELS)}, "
                          f"got {cfg.log_level!r}")
    st = cfg.storage
    if not 0.0 <= st.min_free_percent < 100.0:
        raise ConfigError("[storage] min_free_percent must be 0 to below 100")
    tr = cfg.tracing
    if tr.exporter not in _EXPORTERS:
        raise ConfigError(f"[tracing] exporter: expected otlp or console, got {tr.exporter!r}")
    if not 0.0 <= tr.sample_ratio <= 1.0:
        raise ConfigError("[tracing] sample_ratio must be between 0.0 and 1.0")


def audit_path(cfg: Config) -> str:
    """The audit destination: "" (off), "-" (stdout), "stderr" or an absolute file path."""
    path = cfg.audit.path
    if path in ("", "-", "stderr") or Path(path).is_absolute():
        return path
    return str(Path(cfg.storage.data_dir).absolute() / path)


def as_dict(obj: Any) -> Any:
    """A JSON-friendly view of a Config (for logs and `/status`)."""
    if is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return [as_dict(v) for v in obj]
    return obj


def to_toml(cfg: Config) -> str:
    """The effective configuration as a TOML document `load` reads back to ``cfg``."""
    data = as_dict(cfg)
    lines = [f"log_level = {_toml_value(data.pop('log_level'))}"]
    ae_table = data.pop("ae_table")
    data.pop("access")  # peer tables: written by appliance.access
    for section, values in data.items():
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    for ae in ae_table:
        lines += ["", f"[ae_table.{_toml_key(ae['ae_title'])}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in ae.items() if k != "ae_title"]
    lines += ["", *access_to_toml(cfg.access)]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "-_" for c in key)
    return key if bare else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
