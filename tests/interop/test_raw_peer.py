"""A raw-socket peer sends crafted bytes; the appliance answers per STYLE 2.5 / PS3.8.

A-ABORT PDU (PS3.8 §9.3.8): 07 00 | length 00 00 00 04 | 00 00 | source | reason.
Source 2 = service provider; reasons: 1 unrecognized PDU, 2 unexpected PDU, 6 invalid PDU
parameter value. After sending it the acceptor waits in Sta13 for the peer to close until ARTIM
expires, then closes; ARTIM is shortened here so that the close can be observed quickly.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import Appliance, require_tool, run_tool

pytestmark = pytest.mark.interop

ARTIM_S = 3.0


@pytest.fixture(scope="module")
def raw_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    app = Appliance(
        tmp_path_factory.mktemp("raw-peer"),
        config=f"[network]\nartim_timeout_s = {ARTIM_S}\n",
    )
    try:
        yield app.start()
    finally:
        if app.running():
            app.stop()
        print(app.logs(120))


@dataclass
class Reply:
    data: bytes  # everything received before the connection closed or the deadline
    closed: bool  # the appliance closed the connection (EOF or RST)
    elapsed_s: float  # from the last send to close (or the deadline)


def exchange(app: Appliance, payload: bytes, timeout_s: float) -> Reply:
    """Connect, send ``payload``, then read until the peer closes or ``timeout_s`` passes."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(payload)
        start = time.monotonic()
        deadline = start + timeout_s
        data = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Reply(data, False, time.monotonic() - start)
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return Reply(data, False, time.monotonic() - start)
            except ConnectionResetError:
                return Reply(data, True, time.monotonic() - start)
            if not chunk:
                return Reply(data, True, time.monotonic() - start)
            data += chunk


def abort_pdu(source: int, reason: int) -> bytes:
    return bytes([0x07, 0x00, 0, 0, 0, 4, 0, 0, source, reason])


def assert_abort_then_close(reply: Reply, reason: int) -> None:
    assert reply.data[:10] == abort_pdu(2, reason), (
        f"expected A-ABORT source 2 reason {reason}, got {reply.data[:64].hex(' ')}"
    )
    assert reply.data[10:] == b"", f"bytes after the A-ABORT: {reply.data[10:64].hex(' ')}"
    assert reply.closed, f"connection still open {reply.elapsed_s:.1f} s after the A-ABORT"


def associate_rq_header(length: int) -> bytes:
    """A-ASSOCIATE-RQ PDU header and fixed fields (PS3.8 §9.3.2), no variable items."""
    fixed = (
        struct.pack(">HH", 1, 0)  # protocol version 1, reserved
        + b"PACS".ljust(16)  # called AE
        + b"RAWPEER".ljust(16)  # calling AE
        + bytes(32)
    )
    return struct.pack(">BBI", 0x01, 0x00, length) + fixed


def test_garbage_first_byte_is_unrecognized_pdu(raw_app: Appliance) -> None:
    # PDU type 0xFF does not exist (PS3.8 Table 9-10 note: unrecognized PDU -> AA-1/AA-8).
    reply = exchange(raw_app, bytes.fromhex("ff 00 00 00 00 04 de ad be ef"), ARTIM_S + 5)
    assert_abort_then_close(reply, reason=1)


def test_pdata_before_association_is_unexpected_pdu(raw_app: Appliance) -> None:
    # A well-formed P-DATA-TF (PS3.8 §9.3.5) with one 2-byte PDV for context 1, sent in Sta2.
    pdv = struct.pack(">IBB", 4, 1, 0x03) + b"\x00\x00"
    pdata = struct.pack(">BBI", 0x04, 0x00, len(pdv)) + pdv
    reply = exchange(raw_app, pdata, ARTIM_S + 5)
    assert_abort_then_close(reply, reason=2)


def test_associate_rq_announcing_4gb_is_refused(raw_app: Appliance) -> None:
    # The header claims 0xFFFFFFFF bytes follow. The acceptor must not try to buffer them: it
    # answers A-ABORT reason 6 (invalid PDU parameter value; STYLE 2.5) or drops the
    # connection, and it does so on reading the header, well before ARTIM would fire.
    reply = exchange(raw_app, associate_rq_header(0xFFFF_FFFF), ARTIM_S + 5)
    assert reply.closed, f"connection still open after {reply.elapsed_s:.1f} s"
    if reply.data:
        assert_abort_then_close(reply, reason=6)
    assert reply.elapsed_s < ARTIM_S / 2, (
        f"closed only after {reply.elapsed_s:.1f} s: that is ARTIM expiring, not a refusal"
    )


def test_appliance_still_serves_after_garbage(raw_app: Appliance) -> None:
    """The abuse above must not have hurt the listener: a normal C-ECHO still works."""
    echoscu = require_tool("echoscu")
    exchange(raw_app, b"\x00" * 7, 0.5)
    cp = run_tool([echoscu, "-aec", raw_app.ae_title, "127.0.0.1", str(raw_app.port)], timeout_s=30)
    assert cp.returncode == 0, cp.stderr
    code, _ = raw_app.get("/readyz")
    assert code == 200
