"""A lone worker's own group commits (workers/inline_index.py) and the commit steps both the
index writer process and the worker share (workers/group_commit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import DuplicatePolicy, load
from workers import group_commit
from workers.group_commit import INDEX_FAILED, INDEX_OUT_OF_RESOURCES, GroupCommit
from workers.index.reader import IndexReader
from workers.index.schema import Outcome, pack_record
from workers.index.writer import IndexWriter
from workers.inline_index import InlineIndex

from .test_indexer import record


def test_results_follow_the_records_including_the_unusable_ones(tmp_path: Path) -> None:
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "os"}})
    inline = InlineIndex(cfg)
    inline.add(1, record("1.1"), DuplicatePolicy.KEEP)
    inline.add(2, record("1.1"), DuplicatePolicy.KEEP)  # same SOP Instance UID: kept
    inline.add(3, record("", study=""), DuplicatePolicy.KEEP)  # no UIDs
    inline.add(4, record("1.1"), DuplicatePolicy.REJECT)
    inline.add(5, record("1.2"), DuplicatePolicy.OVERWRITE)
    done = inline.commit()
    assert [(t, c) for t, c, _ in done] == [
        (1, Outcome.STORED), (2, Outcome.DUPLICATE_KEPT), (3, INDEX_FAILED),
        (4, Outcome.REJECTED), (5, Outcome.STORED)]
    assert done[1][2] == "objects/1.1.dcm"  # the kept copy's path: the worker removes the new
    assert inline.pending == [] and inline.commit() == []
    # The worker's reader shares the environment and sees the commit at once.
    assert inline.reader().get_instance("1.2") is not None
    inline.close()
    assert IndexReader(tmp_path / "index").stats().instances == 2


def test_batch_max_bounds_each_transaction(tmp_path: Path) -> None:
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "os",
                                  "batch_max": 2}})
    inline = InlineIndex(cfg)
    for i in range(5):
        inline.add(i, record(f"1.{i}"), DuplicatePolicy.KEEP)
    assert [t for t, _, _ in inline.commit()] == [0, 1, 2, 3, 4]
    assert inline.group.commits == 3
    inline.close()


def test_batch_mode_flushes_the_files_before_the_records_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "batch"}})
    writer = IndexWriter(tmp_path / "index")
    steps: list[str] = []
    apply = writer.apply_batch
    monkeypatch.setattr(group_commit, "syncfs", lambda _d: steps.append("syncfs"))
    monkeypatch.setattr(writer, "apply_batch",
                        lambda *a: (steps.append("commit"), apply(*a))[1])
    group = GroupCommit(cfg, writer)
    rec = record("1.1")
    assert group.commit([(0, pack_record(rec), rec)]) == [(Outcome.STORED, "")]
    assert steps == ["syncfs", "commit"]

    def fail(_d: Path) -> None:
        raise OSError(5, "writeback error")

    monkeypatch.setattr(group_commit, "syncfs", fail)
    monkeypatch.setattr(group_commit, "report_disk_full", lambda *_a: None)
    rec = record("1.2")
    got = group.commit([(0, pack_record(rec), rec), (0, b"\x93junk", None)])
    assert [code for code, _ in got] == [INDEX_OUT_OF_RESOURCES] * 2
    assert steps == ["syncfs", "commit"]  # nothing indexed after a failed flush
    assert IndexReader.sharing(writer.index).get_instance("1.2") is None
    writer.close()


def test_os_mode_does_not_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "os"}})
    monkeypatch.setattr(group_commit, "syncfs", lambda _d: pytest.fail("syncfs in os mode"))
    inline = InlineIndex(cfg)
    inline.add(1, record("1.1"), DuplicatePolicy.KEEP)
    assert inline.commit() == [(1, Outcome.STORED, "")]
    inline.close()
