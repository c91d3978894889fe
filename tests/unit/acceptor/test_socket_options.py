"""Socket options go through the protocol's own duplicate of the connection's socket.

uvloop's transport socket (a PseudoSocket) builds a new socket object, with a getsockname,
on every setsockopt; the quick-ACK re-arm after each read made that 9% of the acceptor's CPU.
The protocol keeps one duplicate per connection for its options and closes it at the end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.acceptor.protocol import TCP_QUICKACK, DicomProtocol
from tests.unit.acceptor.test_limits import make_env
from tests.unit.acceptor.test_protocol import CT, Env, MockTransport, associate_rq


class _PseudoSocket:
    """Stands in for uvloop's: its fd is real, calling setsockopt on it is the slow path."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def setsockopt(self, *args: Any) -> None:
        raise AssertionError("setsockopt on the transport's socket (a new object per call)")


class _Transport(MockTransport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.pseudo = _PseudoSocket(sock)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.pseudo if name == "socket" else super().get_extra_info(name, default)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield server, client
    server.close()
    client.close()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_options_set_on_the_connection_through_one_duplicate_closed_at_the_end(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _client = tcp_pair
    env: Env = make_env()
    try:
        proto = DicomProtocol(env.server)
        tr = _Transport(server)
        proto.connection_made(tr)
        own = proto.sock
        assert own is not None and own.fileno() != server.fileno()
        dup_fd = own.fileno()
        # TCP_NODELAY set through the duplicate is the connection's own.
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        proto.data_received(associate_rq([(1, CT)]))  # a read: quick ACKs re-armed
        assert [p for p, _ in tr.take_pdus()] == [0x02]
        assert server.getsockopt(socket.IPPROTO_TCP, TCP_QUICKACK) == 1
        proto.connection_lost(None)
        assert proto.sock is None
        assert not _is_open(dup_fd)  # the duplicate is closed; the connection's fd is not
        assert _is_open(server.fileno())
    finally:
        env.close()


def test_no_socket_means_no_options_and_no_error() -> None:
    env = make_env()
    try:
        proto, tr = env.connect()  # MockTransport: no "socket" extra info
        assert proto.sock is None
        proto.data_received(associate_rq([(1, CT)]))
        assert [p for p, _ in tr.take_pdus()] == [0x02]
        proto.connection_lost(None)
    finally:
        env.close()
