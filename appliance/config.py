"""Configuration: frozen dataclasses loaded once from a TOML file, then CLI flags on top.

The Config object is passed explicitly to every role; nothing reads a global. Every field
here does something: a setting that does nothing is a defect (DEVELOPERS.md).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

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
    # negotiation policy
    require_called_ae: bool = False
    allowed_calling_aes: tuple[str, ...] = ()  # empty = any
    promiscuous: bool = False  # accept storage of SOP classes not in the standard's registry
    transfer_syntax_preference: tuple[str, ...] = ()  # empty = built-in order
    # capacity
    max_associations: int = 256
    max_associations_per_ae: int = 64
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


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    workers: int = 0  # 0 = number of CPUs
    graceful_timeout_s: float = 20.0
    heartbeat_timeout_s: float = 30.0
    ring_bytes: int = 64 * 1024 * 1024  # acceptor -> worker ring, per worker, pre-faulted
    reply_ring_bytes: int = 8 * 1024 * 1024


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
class RemoteAE:
    """A known peer (C-MOVE destination, later storage commitment requester)."""

    ae_title: str
    host: str
    port: int
    tls: bool = False  # not served yet: refused by validate() until the TLS issue lands


@dataclass(frozen=True, slots=True)
class Config:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    processes: ProcessConfig = field(default_factory=ProcessConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    ae_table: tuple[RemoteAE, ...] = ()
    log_level: str = "info"

    def remote_ae(self, ae_title: str) -> RemoteAE | None:
        """The AE table entry for ``ae_title`` (compared without padding spaces)."""
        wanted = ae_title.strip()
        return next((ae for ae in self.ae_table if ae.ae_title == wanted), None)

    @property
    def worker_count(self) -> int:
        return self.processes.workers or (os.cpu_count() or 1)


_SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "storage": StorageConfig,
    "processes": ProcessConfig,
    "http": HttpConfig,
    "query": QueryConfig,
}


def _coerce(section: str, name: str, value: Any, target: Any) -> Any:
    """Convert a TOML value to the type of the default it replaces."""
    where = f"[{section}] {name}"
    try:
        return _convert(value, target)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid value {value!r}") from exc


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


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load ``path`` (TOML, optional) then apply ``overrides`` (same shape)."""
    cfg = Config()
    if path is not None:
        try:
            with open(path, "rb") as fh:
                cfg = from_mapping(tomllib.load(fh), cfg)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    if overrides:
        cfg = from_mapping(overrides, cfg)
    return cfg


def validate(cfg: Config) -> None:
    net = cfg.network
    if not 0 <= net.port <= 65535:
        raise ConfigError("[network] port must be 0-65535")
    if not 1 <= len(net.ae_title.strip()) <= 16:
        raise ConfigError("[network] ae_title must be 1-16 characters")
    if net.max_pdu_bytes and net.max_pdu_bytes < 4096:
        raise ConfigError("[network] max_pdu_bytes must be 0 or >= 4096")
    if net.max_pdu_bytes * 2 + 4096 > cfg.processes.ring_bytes and net.max_pdu_bytes:
        raise ConfigError("[processes] ring_bytes must exceed twice [network] max_pdu_bytes")
    if cfg.processes.workers < 0:
        raise ConfigError("[processes] workers must be >= 0")
    if cfg.storage.batch_max < 1:
        raise ConfigError("[storage] batch_max must be >= 1")
    if cfg.query.max_results < 0:
        raise ConfigError("[query] max_results must be >= 0")
    for ae in cfg.ae_table:
        if not 1 <= len(ae.ae_title) <= 16:
            raise ConfigError(f"[ae_table.{ae.ae_title}] AE titles are 1-16 characters")
        if ae.tls:
            raise ConfigError(f"[ae_table.{ae.ae_title}] tls: TLS is not supported yet")


def as_dict(obj: Any) -> Any:
    """A JSON-friendly view of a Config (for logs and `/status`)."""
    if is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    return obj
