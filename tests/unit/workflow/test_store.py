"""The workflow LMDB environment: persistence across reopen, schema version, one handle per
process, fork safety, map growth, and two processes writing at once."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import lmdb
import pytest

from tests.unit.workflow.conftest import item
from tests.unit.workflow.test_mpps import create_ds, final_ds
from workers.workflow.mpps import MppsError
from workers.workflow.store import WorkflowSchemaError, WorkflowStore

FORK = mp.get_context("fork")


def test_everything_survives_reopen(tmp_path: Path) -> None:
    with WorkflowStore(tmp_path) as store:
        store.put_items([item(), item(scheduledProcedureStepId="SPS002")])
        store.create_mpps("1.2.3.1", create_ds(), "CT_01")
        store.set_mpps("1.2.3.1", final_ds())
    assert (tmp_path / "workflow" / "data.mdb").exists()
    with WorkflowStore(tmp_path) as store:
        assert [i.key for i in store.items()] == ["1.2.3.4.5.6.7.8.9/SPS001",
                                                  "1.2.3.4.5.6.7.8.9/SPS002"]
        assert [i.status for i in store.items()] == ["COMPLETED", "SCHEDULED"]
        rec = store.get_mpps("1.2.3.1")
        assert rec is not None and rec.status == "COMPLETED" and rec.calling_ae == "CT_01"
        with pytest.raises(MppsError):
            store.set_mpps("1.2.3.1", final_ds())  # still final after the restart


def test_remove_by_key_and_by_study(store: Any) -> None:
    store.put_items([item(), item(scheduledProcedureStepId="SPS002"),
                     item(studyInstanceUid="1.2.3.4.5.6.7.8", scheduledProcedureStepId="X")])
    assert store.remove_items(["1.2.3.4.5.6.7.8.9/SPS002", "1.2.3.4.5.6.7.8.9/NOPE"]) == 1
    # a bare Study UID removes its steps only, not those of a study whose UID it prefixes
    store.put_items([item(scheduledProcedureStepId="SPS003")])
    assert store.remove_items(["1.2.3.4.5.6.7.8.9"]) == 2
    assert [i.key for i in store.items()] == ["1.2.3.4.5.6.7.8/X"]
    assert store.remove_items(["1.2.3.4.5.6.7.8"]) == 1
    assert list(store.items()) == []


def test_schema_version_is_checked(tmp_path: Path) -> None:
    WorkflowStore(tmp_path).close()
    env = lmdb.open(str(tmp_path / "workflow"), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", b"99", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(WorkflowSchemaError, match="schema version 99"):
        WorkflowStore(tmp_path)


def test_stores_on_one_path_share_one_handle(tmp_path: Path) -> None:
    a = WorkflowStore(tmp_path)
    b = WorkflowStore(tmp_path / "." )
    a.put_items([item()])
    assert [i.key for i in b.items()] == [item().key]
    a.close()
    assert len(list(b.items())) == 1  # still open for b
    b.close()
    with pytest.raises(ValueError, match="closed"):
        list(b.items())
    b.close()  # twice is fine


def test_map_grows_when_full(tmp_path: Path) -> None:
    with WorkflowStore(tmp_path, map_size=64 << 10, sync=False) as store:
        store.put_items([item(scheduledProcedureStepId=f"S{n:04d}") for n in range(300)])
        assert len(list(store.items())) == 300


# ---- processes --------------------------------------------------------------------------


def _child_after_fork(store: WorkflowStore, out: Any) -> None:
    try:
        store.put_items([item(scheduledProcedureStepId="CHILD")])
        out.put(sorted(i.sps_id for i in store.items()))
    except BaseException as exc:  # report, don't hang the parent
        out.put(repr(exc))


def test_store_opened_before_fork_works_in_the_child(tmp_path: Path) -> None:
    store = WorkflowStore(tmp_path, sync=False)
    store.put_items([item()])
    out = FORK.Queue()
    child = FORK.Process(target=_child_after_fork, args=(store, out))
    child.start()
    result = out.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0 and result == ["CHILD", "SPS001"]
    # the parent's handle is untouched by the child's
    assert sorted(i.sps_id for i in store.items()) == ["CHILD", "SPS001"]
    store.close()


def _writer(data: str, name: str, start: Any, out: Any) -> None:
    counts = {"created": 0, "duplicate": 0, "set": 0, "refused_set": 0}
    try:
        store = WorkflowStore(data)
        start.wait(30)
        for n in range(25):
            store.put_items([item(scheduledProcedureStepId=f"{name}{n}")])
            store.create_mpps(f"1.2.{os.getpid()}.{n}", create_ds(), name)
        for n in range(10):  # both processes race on these
            try:
                store.create_mpps(f"1.3.{n}", create_ds(), name)
                counts["created"] += 1
            except MppsError as exc:
                assert exc.status == 0x0111
                counts["duplicate"] += 1
            try:
                store.set_mpps(f"1.3.{n}", final_ds())
                counts["set"] += 1
            except MppsError as exc:
                assert exc.status == 0x0110
                counts["refused_set"] += 1
        store.close()
        out.put(counts)
    except BaseException as exc:
        out.put(repr(exc))


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    WorkflowStore(tmp_path).close()
    start, out = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_writer, args=(str(tmp_path), name, start, out))
             for name in ("A", "B")]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(isinstance(r, dict) for r in results), results
    total = {k: sum(r[k] for r in results) for k in results[0]}
    # each contested create and each contested N-SET succeeded exactly once
    assert total == {"created": 10, "duplicate": 10, "set": 10, "refused_set": 10}
    with WorkflowStore(tmp_path) as store:
        assert len(list(store.items())) == 50
        records = list(store.list_mpps())
        assert len(records) == 60
        assert sum(r.status == "COMPLETED" for r in records) == 10
