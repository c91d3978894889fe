"""The kernel's floor for any receiver that stores one file per object: prints one JSON object.

    python -m bench.micro.floor [--quick]

No DICOM at all: a sender process pushes N messages of S bytes over loopback TCP, one at a
time like a synchronous C-STORE (each waits for a 4-byte answer), and the receiver does the
least a per-file store can do: ``recv_into`` one reused buffer, create a temporary file,
write, close, rename, answer. Reported: the receiver's own CPU (user + sys, getrusage) per
object, for 8 KiB and 0.5 MiB objects: the network alone (no file), buffered writes, and
(0.5 MiB) ``O_DIRECT`` writes. Nothing
above that floor is protocol, parsing or indexing; it is what the kernel charges any receiver
in C or Python for the same bytes and files. Never gated on time (STYLE 2.10).

On ext4, run it where nothing was deleted in bulk in the last five minutes (``--dir``): a new
inode is not given a recently freed one's number (``recently_deleted`` in ext4's inode
allocator, 60 s, 300 s while the inode's block is dirty), and scanning past thousands of them
made an 8 KiB create cost 600-1000 µs of kernel CPU here instead of ≈30 µs (perf: ext4
``find_get_block_common``, ``recently_deleted``, ``find_inode_bit``).

Also prints, for the issue's throughput targets, the receiver CPU per object that the target
leaves on this machine once the client's own CPU is paid: at T objects/s on C cores with a
client spending c s per object, the receiver may spend at most (C - T*c) / T per object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import resource
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.micro.ring import cpu_model, git_sha

_ALIGN = 4096


def _sender(port: int, size: int, count: int) -> None:
    payload = os.urandom(size)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ack = bytearray(4)
        for _ in range(count):
            s.sendall(payload)
            view, got = memoryview(ack), 0
            while got < 4:
                n = s.recv_into(view[got:])
                if not n:
                    return
                got += n


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _receive(size: int, count: int, folder: Path, direct: bool | None) -> float:
    """Receive ``count`` objects of ``size`` bytes into files (``direct`` None: no file, the
    network's share alone); CPU seconds per object."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            lsock.close()
            _sender(port, size, count)
        except BaseException:  # noqa: BLE001 - the child must not return into the caller
            code = 1
        finally:
            os._exit(code)
    conn, _ = lsock.accept()
    lsock.close()
    buf = mmap.mmap(-1, size + _ALIGN)  # page-aligned, as O_DIRECT needs
    view = memoryview(buf)[:size]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_DIRECT if direct else 0)
    for i in range(16):
        (folder / f"{i:02x}").mkdir(exist_ok=True)
    start = _cpu()
    for i in range(count):
        got = 0
        while got < size:
            n = conn.recv_into(view[got:])
            if not n:
                raise RuntimeError("sender went away")
            got += n
        if direct is not None:
            tmp = folder / f"{i % 16:02x}" / f"{i}.tmp"
            fd = os.open(tmp, flags, 0o644)
            try:
                os.write(fd, view)
            finally:
                os.close(fd)
            os.rename(tmp, tmp.with_suffix(".dcm"))
        conn.sendall(b"\0\0\0\0")
    spent = _cpu() - start
    conn.close()
    os.waitpid(pid, 0)
    view.release()
    buf.close()
    return spent / count


def _budget(target_per_s: float, client_s: float, cores: int) -> float:
    """Receiver CPU seconds per object left at ``target_per_s`` (negative: impossible)."""
    return (cores - target_per_s * client_s) / target_per_s


# The ingest targets (4 associations): corpus -> multiple of storescp --fork's rate.
TARGETS = {"ct": 1.5, "small": 1.2}


def budgets(results: dict[str, Any], cores: int) -> dict[str, dict[str, float]]:
    """Per target: the rate it asks for, the client's CPU per object at storescp --fork (the
    same storescu either way), and the receiver CPU per object left on ``cores``."""
    from bench.report import summarize

    rows = {(r["corpus"], r["assocs"], r["receiver"]): r for r in summarize(results)["ingest"]}
    out: dict[str, dict[str, float]] = {}
    for corpus, factor in TARGETS.items():
        row = rows.get((corpus, 4, "storescp-fork"))
        if not row or not row["inst_per_s"] or not row["client_cpu_us_per_inst"]:
            continue
        rate = factor * row["inst_per_s"][0]
        client = row["client_cpu_us_per_inst"][0] / 1e6
        out[corpus] = {"target_per_s": round(rate), "client_cpu_us": round(client * 1e6, 1),
                       "receiver_budget_us": round(_budget(rate, client, cores) * 1e6, 1)}
    return out


def _latest_results() -> Path | None:
    folder = Path(__file__).resolve().parents[1] / "results"
    found = sorted(p for p in folder.glob("2*.json"))
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro.floor")
    ap.add_argument("--quick", action="store_true", help="few objects (seconds)")
    ap.add_argument("--results", type=Path, default=_latest_results(),
                    help="an ingest bench results JSON to take storescu's CPU and "
                    "storescp --fork's rate from (default: the newest in bench/results)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to write (default: a temporary folder under $TMPDIR)")
    args = ap.parse_args(argv)
    small_n, ct_n = (500, 50) if args.quick else (5000, 1000)
    out: dict[str, Any] = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                       "git_sha": git_sha()}, "floor_us_per_object": {}}
    cases: list[tuple[str, int, int, bool | None]] = [
        ("8KiB_network_only", 8192, small_n, None), ("8KiB_buffered", 8192, small_n, False),
        ("512KiB_network_only", 524288, ct_n, None),
        ("512KiB_buffered", 524288, ct_n, False), ("512KiB_direct", 524288, ct_n, True)]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="pacs-floor-") as tmp:
        for name, size, count, direct in cases:
            folder = Path(tmp) / name
            folder.mkdir()
            try:
                us = _receive(size, count, folder, direct) * 1e6
            except OSError as exc:  # e.g. O_DIRECT on tmpfs
                out["floor_us_per_object"][name] = f"not run: {exc}"
                continue
            out["floor_us_per_object"][name] = round(us, 1)
    if args.results is not None:
        out["receiver_budget"] = budgets(json.loads(args.results.read_text()),
                                         os.cpu_count() or 1)
        out["receiver_budget_from"] = str(args.results)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
