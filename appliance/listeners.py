"""The DICOM listening sockets, created by the arbiter before any fork and inherited by the
acceptor (and by every acceptor of a core restart: connections wait in the backlog meanwhile).
"""

from __future__ import annotations

import os
import socket

from appliance import systemd
from metrics.logging import get_logger

log = get_logger("arbiter")


def bind_listener(host: str, port: int) -> socket.socket:
    """The DICOM listening socket: the first one systemd passed (socket activation; then
    [network] host/port are not used), else bound here."""
    fds = systemd.listen_fds()
    if fds:
        sock = socket.socket(fileno=fds[0])
        for extra in fds[1:]:  # one DICOM port; close what we do not serve
            os.close(extra)
        log.info("arbiter.socket_activated", fds=len(fds), address=str(sock.getsockname()))
    else:
        sock = _bind(host, port)
    return _for_the_acceptor(sock)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def bind_tls_listener(host: str, port: int) -> socket.socket:
    """The DICOM-over-TLS listening socket ([tls] port on [network] host), always bound here:
    a socket-activated appliance still binds its TLS port itself."""
    return _for_the_acceptor(_bind(host, port))


def _for_the_acceptor(sock: socket.socket) -> socket.socket:
    """Accepted connections inherit TCP_NODELAY; the acceptor's event loop needs it
    non-blocking; it survives the fork into the acceptor."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock
