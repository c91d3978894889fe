"""A large object streams through: no process of the appliance holds it in memory.

The issue's bar is a 2 GB object without 2 GB of RAM; here an 800 MB Enhanced CT is sent with
our streaming SCU and each process's peak resident set (VmHWM) must stay far below the object's
size. The per-worker shared-memory rings (32 + 8 MiB, pre-faulted) count in VmHWM by design.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.scu import SCU, ProposedContext
from tests.conftest import Appliance
from tests.fixtures.make_datasets import sha256_of_dataset, write_big_multiframe

pytestmark = [pytest.mark.system, pytest.mark.slow]
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PEAK_LIMIT_BYTES = 256 * 1024 * 1024


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_800_mb_object_with_bounded_memory(appliance: Appliance, tmp_path: Path) -> None:
    big = write_big_multiframe(tmp_path / "big.dcm", seed=5, frames=1600)
    assert big.dataset_bytes > 800 * 1000 * 1000
    with SCU("127.0.0.1", appliance.port, calling_ae="BIGTEST", called_ae=appliance.ae_title,
             contexts=[ProposedContext(ENHANCED_CT, (EXPLICIT_LE,))], timeout_s=120) as scu:
        result = scu.store_file(big.path)
    assert result.status == 0, result
    status = appliance.status()
    peaks = {f"{p['role']}:{p['pid']}": _peak_rss(int(p["pid"])) for p in status["processes"]}
    peaks[f"arbiter:{status['arbiter_pid']}"] = _peak_rss(int(status["arbiter_pid"]))
    over = {k: v // 2**20 for k, v in peaks.items() if v > PEAK_LIMIT_BYTES}
    assert not over, f"peak RSS over {PEAK_LIMIT_BYTES // 2**20} MiB: {over}"
    rec = appliance.get_instance(big.sop_instance_uid)
    assert rec is not None
    digest, size = sha256_of_dataset(appliance.data / rec.relpath)
    assert (digest, size) == (big.dataset_sha256, big.dataset_bytes)
