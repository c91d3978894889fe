"""A writer whose map another process grew (``pacs ingest`` beside ``pacs serve``, ``pacs db
repair``) adopts the new size and commits, instead of dying on MDB_MAP_RESIZED."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.config import DuplicatePolicy
from workers.index.reader import IndexReader
from workers.index.schema import Outcome
from workers.index.writer import IndexWriter

from .test_indexer import record

_GROW = """
import sys
from workers.index.writer import IndexWriter
w = IndexWriter(sys.argv[1], map_size=1 << 20, sync=False)
w.env.set_mapsize(64 << 20)
with w.env.begin(write=True) as txn:  # fill beyond the first writer's 1 MiB map
    txn.put(b"filler", b"x" * (3 << 20), db=w.index.dbs["meta"])
"""


def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "index"
    writer = IndexWriter(path, map_size=1 << 20, sync=False)
    assert writer.apply_batch([record("1.1")], DuplicatePolicy.KEEP)[0].outcome is Outcome.STORED
    subprocess.run([sys.executable, "-c", _GROW, str(path)], check=True,
                   cwd=Path(__file__).resolve().parents[3])
    got = writer.apply_batch([record("1.2")], DuplicatePolicy.KEEP)
    assert got[0].outcome is Outcome.STORED
    assert writer.env.info()["map_size"] >= 64 << 20
    assert IndexReader.sharing(writer.index).get_instance("1.2") is not None
    writer.close()
