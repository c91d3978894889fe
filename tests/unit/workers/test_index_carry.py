"""IndexWriter's records carried between transactions (writer.py "Between transactions") and
the index writer storing the packed records it receives: counts stay exact when another
writer commits in between, after a failed transaction, after a commit that wrote nothing,
and the stored instance values are exactly ``pack_record``'s."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from appliance.config import load
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.kinds import Kind
from appliance.ipc.ring import Ring
from workers.header import IndexAttributes
from workers.index import writer as writer_module
from workers.index.reader import IndexReader
from workers.index.schema import (
    DuplicatePolicy,
    InstanceRecord,
    Outcome,
    is_current_record,
    key,
    pack_record,
    unpack_record,
)
from workers.index.writer import _CARRY_MAX, IndexWriter
from workers.indexer import IndexWriterProcess

KEEP = DuplicatePolicy.KEEP

# Another process's writer (``pacs db repair`` is one) adds an instance to series S1.
OTHER_WRITER = """
import sys
from tests.unit.workers.test_index_carry import rec
from workers.index.writer import IndexWriter
from workers.index.schema import DuplicatePolicy
w = IndexWriter(sys.argv[1], map_size=64 * 1024 * 1024, sync=False)
w.apply_batch([rec(sys.argv[2])], DuplicatePolicy.KEEP)
w.close()
"""


def rec(sop: str, series: str = "S1", study: str = "T1", size: int = 100) -> InstanceRecord:
    attrs = IndexAttributes(sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop,
                            study_instance_uid=study, series_instance_uid=series,
                            patient_id="P1", patient_name="Doe^Jane", modality="CT")
    return InstanceRecord.from_attributes(attrs, relpath=f"objects/{sop}.dcm", size_bytes=size,
                                          transfer_syntax_uid="1.2.840.10008.1.2.1",
                                          received_at=1700000000.5, calling_ae="MOD")


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[IndexWriter]:
    w = IndexWriter(tmp_path / "index", map_size=64 * 1024 * 1024, sync=False)
    yield w
    w.close()


def other_writer_adds(path: Path, sop: str) -> None:
    cp = subprocess.run([sys.executable, "-c", OTHER_WRITER, str(path), sop],
                        capture_output=True, text=True, timeout=60, check=False,
                        cwd=Path(__file__).parents[3])
    assert cp.returncode == 0, cp.stderr


def series_counts(w: IndexWriter) -> tuple[int, int, int, int]:
    """S1's instances, T1's instances, P1's instances, stored bytes: as committed."""
    r = IndexReader.sharing(w.index)
    series, study, patient = r.get_series("S1"), r.get_study("T1"), r.get_patient("P1")
    assert series is not None and study is not None and patient is not None
    return (series.number_of_series_related_instances, study.number_of_study_related_instances,
            patient.number_of_patient_related_instances, r.stats().stored_bytes)


def test_another_writers_commit_makes_the_carry_stale(writer: IndexWriter,
                                                      tmp_path: Path) -> None:
    writer.apply_batch([rec("a")], KEEP)
    other_writer_adds(tmp_path / "index", "b")  # S1 now has 2 instances we did not write
    writer.apply_batch([rec("c")], KEEP)
    assert series_counts(writer) == (3, 3, 3, 300)


def test_a_commit_that_wrote_nothing_keeps_track_of_the_txn_ids(writer: IndexWriter,
                                                                tmp_path: Path) -> None:
    """A duplicate-only batch commits no transaction (its id is not used): the carry must
    still see the other writer's commit that takes that id as a change."""
    writer.apply_batch([rec("a")], KEEP)
    [res] = writer.apply_batch([rec("a")], KEEP)
    assert res.outcome is Outcome.DUPLICATE_KEPT
    other_writer_adds(tmp_path / "index", "b")
    writer.apply_batch([rec("c")], KEEP)
    assert series_counts(writer) == (3, 3, 3, 300)


def test_a_failed_transaction_leaves_the_carry_as_committed(
        writer: IndexWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failed batch had counted its instance on the carried records, in place."""
    writer.apply_batch([rec("a")], KEEP)

    def broken(_obj: object) -> bytes:
        raise RuntimeError("injected failure while writing back")

    monkeypatch.setattr(writer_module, "pack", broken)
    with pytest.raises(RuntimeError):
        writer.apply_batch([rec("b")], KEEP)
    monkeypatch.undo()
    writer.apply_batch([rec("c")], KEEP)
    assert series_counts(writer) == (2, 2, 2, 200)
    assert IndexReader.sharing(writer.index).get_instance("b") is None


def test_the_carry_is_bounded_and_counts_stay_exact(writer: IndexWriter) -> None:
    n = _CARRY_MAX + 20
    for i in range(n):  # one series each, then a second instance in every one
        writer.apply_batch([rec(f"a{i}", series=f"S{i}")], KEEP)
    for i in range(n):
        writer.apply_batch([rec(f"b{i}", series=f"S{i}")], KEEP)
    carry = writer._carry
    assert len(carry.series) <= _CARRY_MAX and len(carry.patients) == 1
    r = IndexReader.sharing(writer.index)
    for i in range(n):
        series = r.get_series(f"S{i}")
        assert series is not None and series.number_of_series_related_instances == 2
    study = r.get_study("T1")
    assert study is not None and study.number_of_study_related_series == n
    assert study.number_of_study_related_instances == 2 * n


def test_index_writer_stores_what_pack_record_makes(tmp_path: Path) -> None:
    """The payload a worker sent is stored as it is; a record of the older, shorter schema
    is stored in the current form, as before."""
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "os"},
                      "audit": {"path": ""}})
    ch, rings = WorkerChannels.create(0, 1, 1 << 20, 1 << 20)
    proc = IndexWriterProcess(cfg, [(0, 1, ch.index, ch.acks)], None, lambda _n: None)
    index = Ring.attach(ch.index)
    new = replace(rec("new"), received_transfer_syntax_uid="1.2.840.10008.1.2",
                  received_size_bytes=300)
    old_form = msgpack.packb(msgpack.unpackb(pack_record(rec("old")))[:-2], use_bin_type=True)
    assert is_current_record(pack_record(new)) and not is_current_record(old_form)
    index.try_put(Kind.INDEX, 0, 1, 0, 0, pack_record(new))
    index.try_put(Kind.INDEX, 0, 2, 0, 0, old_form)
    proc._cycle()
    with proc.writer.env.begin() as txn:
        instances = proc.writer.index.dbs["instances"]
        assert txn.get(key("new"), db=instances) == pack_record(new)
        assert txn.get(key("old"), db=instances) == pack_record(unpack_record(old_form))
    proc.writer.close()
    index.close()
    for r in rings:
        r.close()
