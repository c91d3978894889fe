"""The children's names in ps/top/perf fit Linux's 15-byte comm whole and tell roles apart."""

from __future__ import annotations

from appliance.children import comm_name
from appliance.ipc.control import Role


def test_every_role_has_a_whole_distinct_name() -> None:
    names = [comm_name(Role.ACCEPTOR, "acceptor", 0), comm_name(Role.INDEX_WRITER,
             "index_writer", 0), comm_name(Role.EXPORTER, "exporter", 0),
             *(comm_name(Role.WORKER, "worker", i) for i in range(64))]
    assert names[:3] == ["pacs-acceptor", "pacs-indexer", "pacs-exporter"]
    assert names[3] == "pacs-worker-0" and names[-1] == "pacs-worker-63"
    assert all(len(n.encode()) <= 15 for n in names)
    assert len(set(names)) == len(names)
