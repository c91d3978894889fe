"""SIGHUP: load the configuration again and apply what can change without a restart.

THEORY OF OPERATION
-------------------
The arbiter receives SIGHUP (`systemctl reload`), loads its ``ConfigSource`` again (the same
file, environment and flags, flags still winning), and on success keeps the new values of the
``RELOADABLE`` settings only; everything else (ports, worker count, ring sizes, the data
directory) needs a restart and is logged as ignored. A file that does not load is logged and
changes nothing. The arbiter then sends SIGHUP to each child.

Each child (acceptor, workers, index writer, exporter) got ``install()`` in the arbiter's
fork path: its SIGHUP handler loads the same source, merges it the same way and runs the
callbacks registered with ``on_reload`` (log level, audit destination and disk floor are
registered by the arbiter; the worker's AE table by the worker). As in gunicorn's workers
(which reopen their log files in the USR1 handler), the callbacks run in the handler, i.e. in
the main thread between two bytecodes, so they must only swap references (a new AE table, a
new file descriptor) and never block. Children spawned later get the arbiter's merged Config.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from appliance import audit
from appliance.config import Config, ConfigSource, as_dict
from appliance.errors import ConfigError
from metrics.logging import get_logger, set_level

log = get_logger("reload")

# [tls] files: the acceptor loads them into its live context (appliance.tls.reload_server);
# the client ones are read per outgoing association anyway.
_TLS_FILES = ("certificate", "private_key", "ca_file", "client_certificate",
              "client_private_key")
# Settings a running appliance takes on at SIGHUP (top-level names or section.key).
RELOADABLE = ("log_level", "ae_table", "audit", "access", "storage.min_free_bytes",
              "storage.min_free_percent", *(f"tls.{k}" for k in _TLS_FILES), "tls.check_hostname")

Callback = Callable[[Config], None]


class _Registry:
    """The process's reload state: one per process, set up after fork."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []
        self.source: ConfigSource | None = None
        self.current: Config | None = None
        self.role = "main"
        self.generation = 0


_reg = _Registry()


def on_reload(callback: Callback) -> None:
    """Run ``callback(new_config)`` in this process after each successful reload."""
    _reg.callbacks.append(callback)


def merge(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``old`` with the RELOADABLE settings of ``new``; and the names of the other settings
    that differ (they need a restart)."""
    storage = replace(old.storage, min_free_bytes=new.storage.min_free_bytes,
                      min_free_percent=new.storage.min_free_percent)
    # [query] and [workflow] are read per request (workers' QueryRetrieve and
    # WorkflowService take the new values in their reload hooks).
    tls = replace(old.tls, check_hostname=new.tls.check_hostname,
                  **{k: getattr(new.tls, k) for k in _TLS_FILES})
    merged = replace(old, log_level=new.log_level, ae_table=new.ae_table, audit=new.audit,
                     storage=storage, query=new.query, workflow=new.workflow, tls=tls,
                     access=new.access)  # [access]: the acceptor's rules, next association
    return merged, _differences(as_dict(merged), as_dict(new))


def _differences(a: dict[str, object], b: dict[str, object], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key in a.keys() | b.keys():
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return sorted(out)


def reload_from(source: ConfigSource | None = None, current: Config | None = None,
                ) -> Config | None:
    """Load ``source`` (default: the installed one), merge it into ``current`` (default: the
    process's), run the callbacks and return the new Config; None when it does not load."""
    source = source or _reg.source
    current = current or _reg.current
    if source is None or current is None:
        return None
    try:
        new = source.load()
    except ConfigError as exc:
        log.error("config.reload_failed", error=str(exc), path=str(source.path or ""))
        return None
    merged, restart_only = merge(current, new)
    _reg.current = merged
    _reg.generation += 1
    failed = []
    for callback in _reg.callbacks:
        try:
            callback(merged)
        except Exception as exc:  # noqa: BLE001 - one bad hook must not stop the others
            failed.append(f"{getattr(callback, '__name__', callback)}: {exc}")
    log.info("config.reloaded", generation=_reg.generation, log_level=merged.log_level,
             ae_titles=[ae.ae_title for ae in merged.ae_table],
             audit=merged.audit.path, min_free_bytes=merged.storage.min_free_bytes,
             needs_restart=restart_only, failed_hooks=failed)
    return merged


def install(source: ConfigSource | None, current: Config, role: str) -> None:
    """In a forked child: remember how to reload and take SIGHUP (``source`` None: a SIGHUP
    changes nothing). Callbacks registered earlier in the parent are dropped."""
    _reg.callbacks = []
    _reg.source, _reg.current, _reg.role, _reg.generation = source, current, role, 0
    signal.signal(signal.SIGHUP, _on_hup)


def install_with_defaults(source: ConfigSource | None, current: Config, role: str) -> None:
    """``install`` plus the hooks every process has: the log level and the audit trail
    (``audit.configure`` reopens the file: rotate, then SIGHUP)."""
    install(source, current, role)
    on_reload(lambda cfg: set_level(cfg.log_level))
    on_reload(audit.configure)


def _on_hup(_signo: int, _frame: FrameType | None) -> None:
    reload_from()


def generation() -> int:
    return _reg.generation


def current() -> Config | None:
    return _reg.current
