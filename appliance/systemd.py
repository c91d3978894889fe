"""The bits of the systemd protocol the arbiter speaks: sd_notify and socket activation.

No libsystemd dependency: sd_notify is one datagram to $NOTIFY_SOCKET (sd_notify(3)), and
socket activation is fd 3 onwards when $LISTEN_PID is ours (sd_listen_fds(3)). Also the
installer of the unit files (systemd/), used by `pacs install-systemd` and `make install`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

SD_LISTEN_FDS_START = 3


def notify(message: str) -> bool:
    """Send e.g. "READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=..."; False when not under
    systemd (no $NOTIFY_SOCKET)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(addr)
            s.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec= (the recommended ping period), or None when not enabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


def listen_fds(unset_environment: bool = True) -> list[int]:
    """File descriptors passed by socket activation, in order (empty when none). Like
    sd_listen_fds(3) the variables are removed, so nothing started later takes them."""
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS", "0")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


# ---- installing the units (`pacs install-systemd`, `make install`) -------------------------

UNIT_DIR = "etc/systemd/system"
# (file in systemd/, where it goes under the prefix); the config is never overwritten
INSTALLED = (
    ("pacs-appliance.service", f"{UNIT_DIR}/pacs-appliance.service"),
    ("pacs-appliance.socket", f"{UNIT_DIR}/pacs-appliance.socket"),
    ("pacs-appliance.sysusers.conf", "usr/lib/sysusers.d/pacs-appliance.conf"),
    ("pacs-appliance.tmpfiles.conf", "usr/lib/tmpfiles.d/pacs-appliance.conf"),
    ("pacs-appliance.toml", "etc/pacs-appliance/pacs-appliance.toml"),
)
_SHIPPED_EXEC = "/opt/pacs-appliance/bin/pacs"


def units_dir() -> Path:
    """The systemd/ directory of this checkout (units are data files next to the package)."""
    return Path(__file__).resolve().parent.parent / "systemd"


def default_exec() -> Path:
    """The ``pacs`` entry point of the running interpreter's environment."""
    return Path(sys.executable).parent / "pacs"


def install_units(prefix: Path, exec_path: Path | None = None, *,
                  socket_activation: bool = False, units: Path | None = None) -> int:
    """Copy the units and snippets under ``prefix`` with ExecStart pointing at
    ``exec_path``; on a live system (prefix /, systemd running) also create the user and
    directories and reload systemd. Returns an exit code."""
    exe = str(exec_path or default_exec())
    src = units or units_dir()
    if not (src / INSTALLED[0][0]).is_file():
        print(f"pacs install-systemd: no unit files in {src} (give --units DIR)",
              file=sys.stderr)
        return 2
    for name, rel in INSTALLED:
        dest = prefix / rel
        if name.endswith(".toml") and dest.exists():
            print(f"kept      {dest}")
            continue
        text = (src / name).read_text().replace(_SHIPPED_EXEC, exe)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o640 if name.endswith(".toml") else 0o644)
        os.replace(tmp, dest)
        print(f"installed {dest}")
    live = prefix.resolve() == Path("/") and Path("/run/systemd/system").is_dir()
    steps = [["systemd-sysusers"], ["systemd-tmpfiles", "--create"],
             ["systemctl", "daemon-reload"]]
    unit = "pacs-appliance.socket" if socket_activation else "pacs-appliance.service"
    if not live:
        print("then, on the target host: " + "; ".join(" ".join(s) for s in steps)
              + f"; systemctl enable --now {unit}")
        return 0
    for step in steps:
        if subprocess.run(step, check=False).returncode != 0:
            print(f"pacs install-systemd: {' '.join(step)} failed", file=sys.stderr)
            return 1
    print(f"next: edit /etc/pacs-appliance/pacs-appliance.toml; systemctl enable --now {unit}")
    return 0
