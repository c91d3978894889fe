"""Shared fixtures for the interop and system tests: a real appliance in a subprocess.

The ``Appliance`` helper starts ``python -m appliance serve`` on free ports with a data dir in
pytest's tmp, waits for ``/readyz`` (boot includes numba warm-up), and stops it with SIGTERM,
asserting a clean exit. The appliance's stdout/stderr go to files next to the data dir; their
tail is printed at teardown, which pytest shows only for failing tests.

Everything that touches the index goes through ``index_get`` / ``index_stats`` so that a change
of the reader API is a one-line fix here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from pydicom import dcmread

from bench import packages

# A shared 2-core machine is noisy: hypothesis's per-example deadline would turn a scheduling
# hiccup into a failure. Example counts stay bounded by each test's own settings.
hypothesis_settings.register_profile("pacs", deadline=None)
hypothesis_settings.load_profile("pacs")

REPO = Path(__file__).resolve().parent.parent
_VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable

READY_TIMEOUT_S = 30.0  # boot includes the numba warm-up
STOP_TIMEOUT_S = 30.0  # > graceful_timeout_s default (20 s)


# --------------------------------------------------------------------------- tools and ports


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it, or fail when PACS_REQUIRE_INTEROP=1 (CI).
    For a name pynetdicom's console scripts also carry, DCMTK's native tool (bench.packages:
    in an activated virtualenv the scripts come first on PATH)."""
    path = packages.which(name)
    if path is None:
        dcmtk = " (DCMTK's)" if name in packages.PYNETDICOM_APPS else ""
        msg = f"{name} not found on PATH{dcmtk}"
        if os.environ.get("PACS_REQUIRE_INTEROP") == "1":
            pytest.fail(f"{msg} (PACS_REQUIRE_INTEROP=1)")
        pytest.skip(msg)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll ``predicate`` (for external processes only) until true or fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(interval_s)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<{path} unreadable>"
    return "\n".join(text.splitlines()[-lines:])


def run_tool(
    args: Sequence[str],
    *,
    timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run an external tool, failing the test (not hanging) when it overruns."""
    try:
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{args[0]} did not finish within {timeout_s} s: {exc.stderr!r}")


def dcmtk_env(*, nodelay: bool | None = True) -> dict[str, str]:
    """Environment for DCMTK clients; ``nodelay=None`` leaves TCP_NODELAY unset (Nagle on)."""
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if nodelay is not None:
        env["TCP_NODELAY"] = "1" if nodelay else "0"
    return env


# --------------------------------------------------------------------------- index access


def _open_index(data: Path) -> Any:
    # Imported late: the reader is built in parallel with these tests and must not break
    # collection of the whole suite while it is missing.
    reader_mod = importlib.import_module("workers.index.reader")
    return reader_mod.IndexReader(data / "index")


def _close_index(reader: Any) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()


def index_get(data: Path, sop_uid: str) -> Any | None:
    """The index record of one instance (``.relpath``, ``.size_bytes``, ...) or None."""
    reader = _open_index(data)
    try:
        return reader.get_instance(sop_uid)
    finally:
        _close_index(reader)


def index_get_many(data: Path, sop_uids: Sequence[str]) -> dict[str, Any | None]:
    reader = _open_index(data)
    try:
        return {uid: reader.get_instance(uid) for uid in sop_uids}
    finally:
        _close_index(reader)


def index_stats(data: Path) -> dict[str, int]:
    """``{"patients", "studies", "series", "instances", "stored_bytes"}`` via the CLI."""
    cp = run_tool(
        [PYTHON, "-m", "appliance", "db", "stats", "--data", str(data), "--json"],
        timeout_s=60,
        cwd=REPO,
    )
    assert cp.returncode == 0, f"db stats failed ({cp.returncode}): {cp.stderr}"
    line = [ln for ln in cp.stdout.splitlines() if ln.strip().startswith("{")][-1]
    stats: dict[str, int] = json.loads(line)
    return stats


def temp_files(data: Path) -> list[Path]:
    """Files that are not finished objects or index files: spool/temp leftovers."""
    found: list[Path] = []
    tmp = data / "tmp"
    if tmp.exists():
        found += [p for p in tmp.rglob("*") if p.is_file()]
    objects = data / "objects"
    if objects.exists():
        found += [
            p
            for p in objects.rglob("*")
            if p.is_file() and (p.suffix in (".part", ".tmp") or p.name.startswith("."))
        ]
    return found


# --------------------------------------------------------------------------- the appliance


class Appliance:
    """One ``python -m appliance serve`` subprocess on free ports (see module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        workers: int = 2,
        durability: str = "batch",
        ae_title: str = "PACS",
        data: Path | None = None,
        config: str | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = data if data is not None else root / "data"
        self.ae_title = ae_title
        self.workers = workers
        self.durability = durability
        self.config = config
        self.extra_args = tuple(extra_args)
        self.extra_env = env or {}
        self.port = 0
        self.http_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stdout_path = root / "appliance.stdout"
        self.stderr_path = root / "appliance.stderr"

    # -- lifecycle

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        cmd = [PYTHON, "-m", "appliance", "serve"]
        if self.config is not None:
            cfg = self.root / "appliance.toml"
            cfg.write_text(self.config)
            cmd += ["--config", str(cfg)]
        cmd += [
            "--port", str(self.port),
            "--http", f"127.0.0.1:{self.http_port}",
            "--data", str(self.data),
            "--workers", str(self.workers),
            "--durability", self.durability,
            "--ae-title", self.ae_title,
            *self.extra_args,
        ]  # fmt: skip
        return cmd

    def start(self, timeout_s: float = READY_TIMEOUT_S, wait: bool = True) -> Appliance:
        """Start (or restart on the same data dir) and wait for /readyz (unless not ``wait``)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port, self.http_port = free_port(), free_port()
        prom = self.root / f"prometheus-{self.starts}"
        prom.mkdir(exist_ok=True)
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)  # starts empty, as systemd's would
        env.update(self.extra_env)
        self.starts += 1
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            for fh in (out, err):
                fh.write(f"\n==== start #{self.starts}: port {self.port} ====\n".encode())
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=env,
                start_new_session=True,  # its own process group: teardown can reap stragglers
            )
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"appliance exited with {rc} before ready\n{self.logs()}")
            code, _ = self.get("/readyz")
            if code == 200:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"appliance not ready after {timeout_s} s (last {code})\n{self.logs()}")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_group()
            pytest.fail(f"appliance did not exit within {timeout_s} s\n{self.logs()}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, expect: int | None = 0) -> int:
        """SIGTERM, wait, and assert the exit code (``expect=None`` to skip the check)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout_s)
        if expect is not None:
            assert rc == expect, f"appliance exit code {rc}, expected {expect}\n{self.logs()}"
        return rc

    def kill_group(self) -> None:
        """Last resort at teardown: SIGKILL the process group this helper created."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def logs(self, lines: int = 60) -> str:
        return (
            f"--- appliance stdout (tail) ---\n{tail(self.stdout_path, lines)}\n"
            f"--- appliance stderr (tail) ---\n{tail(self.stderr_path, lines)}"
        )

    # -- HTTP

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        """(status, body); status 0 when nothing answers."""
        try:
            with urllib.request.urlopen(self.http + path, timeout=timeout_s) as rsp:
                return int(rsp.status), bytes(rsp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0, b""

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, f"/status answered {code}: {body!r}\n{self.logs()}"
        parsed: dict[str, Any] = json.loads(body)
        return parsed

    def processes(self, role: str | None = None) -> list[dict[str, Any]]:
        procs: list[dict[str, Any]] = self.status()["processes"]
        return [p for p in procs if role is None or p["role"] == role]

    # -- data

    def get_instance(self, sop_uid: str) -> Any | None:
        return index_get(self.data, sop_uid)

    def stats(self) -> dict[str, int]:
        return index_stats(self.data)


def _finish(app: Appliance) -> None:
    """Teardown: stop cleanly (asserting exit 0) and print the log tail."""
    try:
        if app.running():
            app.stop()
    finally:
        if app.running():
            app.kill_group()
        print(app.logs(120))


@pytest.fixture
def appliance_factory(tmp_path: Path) -> Iterator[Callable[..., Appliance]]:
    """Build (not start) appliances in this test's tmp dir; all are stopped at teardown."""
    made: list[Appliance] = []

    def make(name: str = "app", **kwargs: Any) -> Appliance:
        app = Appliance(tmp_path / name, **kwargs)
        made.append(app)
        return app

    yield make
    errors: list[BaseException] = []
    for app in made:
        try:
            _finish(app)
        except BaseException as exc:  # noqa: BLE001 - stop every appliance, then re-raise
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def appliance(appliance_factory: Callable[..., Appliance]) -> Appliance:
    """A fresh, running appliance (2 workers, batch durability) with its own data dir."""
    return appliance_factory().start()


@pytest.fixture(scope="module")
def module_appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """One running appliance shared by a module's tests that don't interfere."""
    app = Appliance(tmp_path_factory.mktemp("module-appliance"))
    try:
        app.start()
        yield app
    finally:
        _finish(app)


# --------------------------------------------------------------------------- dataset checks

# storescu re-encodes what it reads, so a few differences between the file and what went over
# the wire are DCMTK's doing, not the receiver's (seen identically with `storescp +B`):
#  - group length elements (gggg,0000) are recomputed or dropped (they are retired anyway);
#  - Data Set Trailing Padding (FFFC,FFFC) is dropped;
#  - an encapsulated Pixel Data element read as OW goes out as OB (PS3.5 A.4 requires OB).
# So group lengths and trailing padding are not compared, and OB/OW/UN values compare as bytes.
_TRAILING_PADDING = 0xFFFCFFFC
_BYTES_VRS = {"OB", "OW", "UN", "OB or OW", "OW or OB", "OB or OW or UN"}


def _comparable(ds: Any) -> dict[int, Any]:
    return {
        int(elem.tag): elem
        for elem in ds
        if elem.tag.group != 0x0002
        and elem.tag.element != 0x0000
        and int(elem.tag) != _TRAILING_PADDING
    }


def dataset_differences(original: Any, stored: Any, where: str = "") -> list[str]:
    """Element-by-element differences (outside group 0002) between two pydicom datasets."""
    a, b = _comparable(original), _comparable(stored)
    diffs = [f"{where}({t >> 16:04X},{t & 0xFFFF:04X}) missing in stored" for t in a.keys() - b]
    diffs += [f"{where}({t >> 16:04X},{t & 0xFFFF:04X}) extra in stored" for t in b.keys() - a]
    for tag in sorted(a.keys() & b.keys()):
        ea, eb = a[tag], b[tag]
        label = f"{where}{ea.tag}"
        if ea.VR == "SQ" or eb.VR == "SQ":
            if ea.VR != eb.VR or len(ea.value) != len(eb.value):
                diffs.append(f"{label} sequence differs ({ea.VR} {len(ea.value)} items vs "
                             f"{eb.VR} {len(eb.value)} items)")  # fmt: skip
                continue
            for i, (ia, ib) in enumerate(zip(ea.value, eb.value, strict=True)):
                diffs += dataset_differences(ia, ib, f"{label}[{i}].")
        elif ea.VR in _BYTES_VRS and eb.VR in _BYTES_VRS:
            if bytes(ea.value or b"") != bytes(eb.value or b""):
                diffs.append(f"{label} {ea.VR} value bytes differ")
        elif ea.VR != eb.VR or ea.value != eb.value:
            diffs.append(f"{label} {ea.VR} {ea.value!r:.80} != {eb.VR} {eb.value!r:.80}")
    return diffs


def stored_problems(
    data: Path,
    original: Any,
    *,
    calling_ae: str,
    record: Any | None = None,
    compare: bool = True,
) -> list[str]:
    """Why the stored copy of ``original`` (a pydicom FileDataset or Dataset) is wrong, if it is.

    Checks the index record, the file on disk, its File Meta, and (``compare``) every element.
    """
    uid = str(original.SOPInstanceUID)
    ts = str(original.file_meta.TransferSyntaxUID)
    rec = record if record is not None else index_get(data, uid)
    if rec is None:
        return [f"{uid}: not in the index"]
    problems: list[str] = []
    path = data / rec.relpath
    if not path.is_file():
        return [f"{uid}: indexed at {rec.relpath} but no such file"]
    if rec.size_bytes != path.stat().st_size:
        problems.append(f"{uid}: index size {rec.size_bytes} != file size {path.stat().st_size}")
    if str(rec.transfer_syntax_uid) != ts:
        problems.append(f"{uid}: index TS {rec.transfer_syntax_uid} != sent {ts}")
    if str(rec.sop_class_uid) != str(original.SOPClassUID):
        problems.append(f"{uid}: index SOP class {rec.sop_class_uid} != {original.SOPClassUID}")
    if str(rec.calling_ae).strip() != calling_ae:
        problems.append(f"{uid}: index calling AE {rec.calling_ae!r} != {calling_ae!r}")
    try:
        stored = dcmread(path)  # no force: it must be a proper Part 10 file
    except Exception as exc:
        return [*problems, f"{uid}: stored file unreadable without force: {exc!r}"]
    meta = stored.file_meta
    expect_meta = {
        "TransferSyntaxUID": ts,
        "MediaStorageSOPClassUID": str(original.SOPClassUID),
        "MediaStorageSOPInstanceUID": uid,
        "SourceApplicationEntityTitle": calling_ae,
    }
    for keyword, expected in expect_meta.items():
        got = str(meta.get(keyword, "<absent>")).strip()
        if got != expected:
            problems.append(f"{uid}: File Meta {keyword} {got!r} != {expected!r}")
    if not str(meta.get("ImplementationClassUID", "")):
        problems.append(f"{uid}: File Meta has no ImplementationClassUID")
    if compare:
        problems += [f"{uid}: {d}" for d in dataset_differences(original, stored)]
    return problems


def storescu_config(path: Path, transfer_syntax: str, sop_classes: Sequence[str]) -> Path:
    """A storescu association profile (``-xf path P``) proposing exactly one TS per SOP class.

    storescu's ``--propose-*`` options always add the uncompressed syntaxes as well, and with
    ``-R`` they never propose a file's own compressed syntax unless the matching option is
    given; a profile is the only way to make it offer exactly the file's own syntax.
    """
    classes = sorted(set(sop_classes))
    if len(classes) > 128:
        raise ValueError("more than 128 presentation contexts")
    lines = ["[[TransferSyntaxes]]", "[TS]", f"TransferSyntax1 = {transfer_syntax}"]
    lines += ["[[PresentationContexts]]", "[PC]"]
    lines += [f"PresentationContext{i} = {uid}\\TS" for i, uid in enumerate(classes, 1)]
    lines += ["[[Profiles]]", "[P]", "PresentationContexts = PC", ""]
    path.write_text("\n".join(lines))
    return path
