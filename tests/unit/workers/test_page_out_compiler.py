"""workers.kernels.page_out_compiler: LLVM's pages go, the compiled kernels keep working.

Run in a fresh interpreter: whether pages can be reclaimed depends on which other processes
map the same library, so the test checks what the call promises (the mappings were advised,
the process's own LLVM pages did not grow, the kernels still give the right answers), and
reports the resident sizes it saw.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

_CHILD = r"""
import json, numpy as np
from workers.kernels import WORKER_KERNELS, page_out_compiler, warm_up
from workers.kernels.rle import rle_decode_frame, rle_encode_frame

def llvm_rss_kib():
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head[0]) > 8 and ":" not in head[0]:
            inside = len(head) >= 6 and "libllvmlite" in head[5]
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total

warm_up(WORKER_KERNELS)
before = llvm_rss_kib()
advised = page_out_compiler()
after = llvm_rss_kib()
frame = (np.arange(64 * 64, dtype=np.uint16) % 7).reshape(64, 64)
encoded = rle_encode_frame(frame, 16, 1)
same = bool((rle_decode_frame(encoded, 64, 64, 16, 1) == frame).all())
print(json.dumps({"advised": advised, "before": before, "after": after,
                  "again": llvm_rss_kib(), "same": same}))
"""


def test_llvm_pages_advised_and_kernels_still_work() -> None:
    cp = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                        cwd=REPO, timeout=240, check=False)
    assert cp.returncode == 0, cp.stderr[-3000:]
    got = json.loads(cp.stdout.strip().splitlines()[-1])
    print(got)
    assert got["advised"] > 10 * 2**20  # libllvmlite's mappings (≈150 MiB of address space)
    assert got["before"] > 0
    assert got["after"] <= got["before"]
    assert got["same"], "RLE round trip wrong after paging LLVM out"
    assert got["again"] <= got["before"]  # running compiled kernels does not need LLVM back
