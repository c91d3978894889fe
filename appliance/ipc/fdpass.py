"""Hand fds (e.g. a ring's three) plus a small JSON header to another process (SCM_RIGHTS).

Used when the arbiter replaces a dead worker and must give the acceptor and the index writer the
new rings. Use a ``SOCK_SEQPACKET`` pair (``channel_pair()``): one send is one message, so a
header and its fds always arrive together, and a dead peer reads as EOF. Received fds are
marked close-on-exec and belong to the receiver (close them, or hand them to
``Ring.attach(..., own=True)``).
"""

from __future__ import annotations

import array
import json
import os
import socket
from typing import Any

__all__ = ["MAX_FDS", "MAX_HEADER_BYTES", "channel_pair", "recv_with_fds", "send_with_fds"]

MAX_FDS = 16
MAX_HEADER_BYTES = 4096
_FDS = array.array("i")


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """An AF_UNIX SOCK_SEQPACKET pair; create before fork, each side closes the other end."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_with_fds(sock: socket.socket, header: dict[str, Any], fds: list[int]) -> None:
    """Send one message: ``header`` as JSON with ``fds`` attached (the sender keeps its fds).

    Blocks if the socket is blocking and full; on a non-blocking socket may raise
    BlockingIOError (nothing was sent: SEQPACKET sends are all-or-nothing).
    """
    payload = json.dumps(header, separators=(",", ":")).encode()
    if len(payload) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(payload)} bytes, max {MAX_HEADER_BYTES}")
    if len(fds) > MAX_FDS:
        raise ValueError(f"{len(fds)} fds, max {MAX_FDS}")
    sent = socket.send_fds(sock, [payload], fds)
    if sent != len(payload):  # cannot happen on SEQPACKET; would desynchronise a stream socket
        raise OSError(f"short send of an fd message ({sent}/{len(payload)} bytes)")


def recv_with_fds(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """Receive one message. None if nothing is ready (non-blocking socket); EOFError at EOF.

    A malformed or truncated message closes whatever fds came with it and raises ValueError.
    """
    try:
        # socket.recv_fds() would drop the flags argument (3.11), so no CLOEXEC: use recvmsg.
        data, ancdata, flags, _ = sock.recvmsg(
            MAX_HEADER_BYTES + 1, socket.CMSG_SPACE(MAX_FDS * _FDS.itemsize),
            socket.MSG_CMSG_CLOEXEC,
        )
    except BlockingIOError:
        return None
    fds = array.array("i")
    for level, kind, cmsg in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cmsg[: len(cmsg) - len(cmsg) % fds.itemsize])
    if not data and not fds:
        raise EOFError("fd channel closed by peer")
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_HEADER_BYTES:
            raise ValueError("fd message truncated (header or fd list too large)")
        header = json.loads(data)
        if not isinstance(header, dict):
            raise ValueError("fd message header is not a JSON object")
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise
    return header, list(fds)
