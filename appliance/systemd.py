"""The bits of the systemd protocol the arbiter speaks: sd_notify and socket activation.

No libsystemd dependency: sd_notify is one datagram to $NOTIFY_SOCKET (sd_notify(3)), and
socket activation is fd 3 onwards when $LISTEN_PID is ours (sd_listen_fds(3)).
"""

from __future__ import annotations

import os
import socket

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


def listen_fds() -> list[int]:
    """File descriptors passed by socket activation, in order (empty when none)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    n = int(os.environ.get("LISTEN_FDS", "0"))
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n))
