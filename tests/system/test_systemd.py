"""The appliance under systemd's protocols, without a running systemd:

- ``systemd-analyze verify`` on the installed units (ExecStart pointing at this venv's pacs);
- sd_notify: the test listens on a unix datagram socket (NOTIFY_SOCKET) and sees READY=1 with
  STATUS=, WATCHDOG=1 at WatchdogSec/2, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1;
- socket activation: a socket bound and listening in the test is handed over as fd 3 with
  LISTEN_FDS/LISTEN_PID (a launcher execs the appliance: the pid is the announced one); the
  appliance serves on it, binds nothing itself, and stores what arrives through it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.cli import main as pacs_main
from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu import SCU, ProposedContext
from tests.conftest import (
    PYTHON,
    READY_TIMEOUT_S,
    REPO,
    Appliance,
    free_port,
    require_tool,
    run_tool,
)
from tests.fixtures.make_datasets import write_ct_corpus

pytestmark = pytest.mark.system

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    pacs = Path(PYTHON).parent / "pacs"
    if not pacs.exists():
        pytest.fail(f"{pacs} missing: the venv has no pacs entry point")
    assert pacs_main(["install-systemd", "--prefix", str(tmp_path), "--exec", str(pacs)]) == 0
    units = tmp_path / "etc" / "systemd" / "system"
    cp = run_tool([analyze, "verify", "pacs-appliance.service", "pacs-appliance.socket"],
                  timeout_s=60, cwd=units)
    # verify exits 0 on mere warnings ("Unknown key", "Failed to parse"): any output fails
    assert cp.returncode == 0 and cp.stderr.strip() == "" and cp.stdout.strip() == "", (
        cp.stdout + cp.stderr)
    bad = units / "pacs-appliance-bad.service"
    bad.write_text((units / "pacs-appliance.service").read_text()
                   .replace("ProtectSystem=strict", "ProtectSystem=sometimes"))
    cp = run_tool([analyze, "verify", bad.name], timeout_s=60, cwd=units)
    assert "protect system value" in cp.stderr  # so the check above can fail


class _NotifyListener:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def collect(self, until: Callable[[list[str]], bool], timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while not until(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"sd_notify messages so far: {self.messages}")
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages


@pytest.fixture
def notify_listener(tmp_path: Path) -> Iterator[_NotifyListener]:
    listener = _NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


def _has(prefix: str) -> Callable[[list[str]], bool]:
    return lambda msgs: any(m.startswith(prefix) for m in msgs)


def test_sd_notify_ready_watchdog_reload_stopping(
    appliance_factory: Callable[..., Appliance], notify_listener: _NotifyListener,
) -> None:
    app = appliance_factory(workers=1, config='log_level = "info"\n', env={
        "NOTIFY_SOCKET": str(notify_listener.path), "WATCHDOG_USEC": "1000000"}).start()
    msgs = notify_listener.collect(_has("READY=1"), READY_TIMEOUT_S)
    ready = next(m for m in msgs if m.startswith("READY=1"))
    assert f"STATUS=accepting associations on port {app.port} as PACS, 1 workers" in ready
    assert msgs[0].startswith("STATUS=starting")
    # WatchdogSec=1 s: a ping every 0.5 s while healthy
    t0 = time.monotonic()
    notify_listener.collect(lambda m: sum(x == "WATCHDOG=1" for x in m) >= 3, 10)
    assert time.monotonic() - t0 < 5
    app.signal(signal.SIGHUP)
    msgs = notify_listener.collect(
        lambda m: any(x.startswith("RELOADING=1") for x in m)
        and m[-1].startswith("READY=1") and len([x for x in m if x.startswith("READY")]) == 2,
        10)
    reloading = next(m for m in msgs if m.startswith("RELOADING=1"))
    assert "MONOTONIC_USEC=" in reloading
    app.stop()
    notify_listener.collect(_has("STOPPING=1"), 5)


# What systemd does before exec: the socket at fd 3 (SD_LISTEN_FDS_START), LISTEN_PID = the
# pid that will run the service (exec keeps it), LISTEN_FDS = how many.
_EXEC_ACTIVATED = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.close(int(sys.argv[1]))
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"""


class _ActivatedAppliance(Appliance):
    """An appliance whose listening socket is passed in, as systemd's socket activation does."""

    def __init__(self, root: Path, listener: socket.socket, **kwargs: object) -> None:
        super().__init__(root, **kwargs)  # type: ignore[arg-type]
        self.listener = listener

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> Appliance:
        self.port = free_port()  # given as --port, and must stay unused
        self.http_port = free_port()
        prom = self.root / "prometheus"
        prom.mkdir(exist_ok=True)
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(prom))
        fd = self.listener.fileno()
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-c", _EXEC_ACTIVATED, str(fd), *self.command()], stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, cwd=REPO, env=env, pass_fds=(fd,),
                start_new_session=True)
        self.wait_ready(timeout_s)
        return self


def test_socket_activation_serves_on_the_passed_socket(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    paths = write_ct_corpus(tmp_path / "corpus", seed=9, patients=1, studies_per_patient=1,
                            series_per_study=1, instances_per_series=2)
    app = _ActivatedAppliance(tmp_path / "app", listener, workers=1)
    try:
        app.start()
        listener.close()  # only the appliance holds it now
        contexts = [ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),
                    ProposedContext(CT_IMAGE_STORAGE, (EXPLICIT_VR_LE,))]
        with SCU("127.0.0.1", port, calling_ae="ACTIVATED", called_ae="PACS",
                 contexts=contexts) as scu:
            assert scu.echo() == 0x0000
            for path in paths:
                assert scu.store_file(path).status == 0x0000
        assert app.stats()["instances"] == 2
        with pytest.raises(ConnectionRefusedError):  # --port was not bound
            socket.create_connection(("127.0.0.1", app.port), timeout=2).close()
        assert '"arbiter.socket_activated"' in app.stdout_path.read_text()
        app.stop()
    finally:
        if app.running():
            app.kill_group()
        print(app.logs(80))
