"""The data directory: its layout on disk and the index it must hold before anything forks."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from appliance.config import Config


def prepare_data_dir(data: Path) -> None:
    """Create the layout and remove the spool files a crash left behind.

    Spool files are named ``<pid>-<n>.part`` by the worker writing them. Only those whose
    writer is gone are removed: `pacs ingest` may start next to a running `pacs serve` (or the
    other way round), and must not pull the floor from under the other's transfers. Nothing in
    tmp/ was ever acknowledged, so removing a dead writer's file loses nothing."""
    for sub in ("objects", "tmp", "index"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    for leftover in (data / "tmp").glob("*.part"):
        if _writer_alive(leftover.name):
            continue
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _writer_alive(name: str) -> bool:
    pid_text = name.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid_text) != os.getpid()


def ensure_index(cfg: Config) -> None:
    """Open (creating or checking the schema of) the index once, and close it, before forking:
    LMDB environments must not cross a fork."""
    from workers.index.writer import IndexWriter

    w = IndexWriter(cfg.storage.data_dir / "index", map_size=cfg.storage.index_map_size_bytes,
                    sync=True)
    w.close()
