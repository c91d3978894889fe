"""Quick ACKs of an association go through the protocol's own duplicate of its socket.

uvloop's transport socket (a PseudoSocket) builds a new socket object, with a getsockname,
on every setsockopt; the quick-ACK re-arm after each read made that 9% of the acceptor's CPU.
Once associated, the protocol keeps one duplicate for it and closes it at the end; a pending
connection (a flood of them) costs one descriptor, its options set on the transport's socket.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.acceptor.protocol import TCP_QUICKACK, DicomProtocol
from appliance.dimse.messages import CEchoRQ, encode_message
from appliance.ul.pdu import PDV
from tests.unit.acceptor.test_limits import make_env
from tests.unit.acceptor.test_protocol import (
    CT,
    VERIFICATION,
    Env,
    MockTransport,
    associate_rq,
    pdata,
)


class _PseudoSocket:
    """Stands in for uvloop's: its fd is real; each setsockopt (the slow path) is counted."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.calls = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def setsockopt(self, *args: Any) -> None:
        self.calls += 1
        self._sock.setsockopt(*args)


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


def _echo_rq() -> bytes:
    return pdata([PDV(1, True, True, encode_message(CEchoRQ(message_id=1)))])


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
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert proto._ack_sock is None  # pending: no second descriptor yet
        proto.data_received(associate_rq([(1, VERIFICATION), (3, CT)]))
        assert [p for p, _ in tr.take_pdus()] == [0x02]
        own = proto._ack_sock
        assert own is not None and own.fileno() != server.fileno()
        dup_fd = own.fileno()
        calls = tr.pseudo.calls
        server.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 0)
        proto.data_received(_echo_rq())  # a read while associated: quick ACKs re-armed...
        assert server.getsockopt(socket.IPPROTO_TCP, TCP_QUICKACK) == 1
        assert tr.pseudo.calls == calls  # ...through the duplicate
        proto.connection_lost(None)
        assert proto._ack_sock is None
        assert not _is_open(dup_fd)  # the duplicate is closed; the connection's fd is not
        assert _is_open(server.fileno())
    finally:
        env.close()


def test_no_socket_means_no_options_and_no_error() -> None:
    env = make_env()
    try:
        proto, tr = env.connect()  # MockTransport: no "socket" extra info
        assert proto.sock is None and proto._ack_sock is None
        proto.data_received(associate_rq([(1, CT)]))
        assert [p for p, _ in tr.take_pdus()] == [0x02]
        proto.connection_lost(None)
    finally:
        env.close()
