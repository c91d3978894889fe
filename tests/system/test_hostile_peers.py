"""A hostile peer on the plain port, as an outsider sees the appliance: each case that once
broke something (README "Resource limits and timeouts", "Access control").

Every test ends by checking that the appliance still serves a well-behaved echo and store and
that the acceptor logged no traceback (``acceptor.internal_error``): one clear line per
attack is the contract, not an exception with a stack.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import CStoreRQ, encode_message
from appliance.negotiation.policy import (
    NegotiationPolicy,
    accepted_contexts,
    negotiate,
)
from appliance.ul.pdu import (
    AssociateAC,
    AssociateRQ,
    ImplementationClassUID,
    MaximumLength,
    PresentationContextRQ,
    UserInformation,
    encode_pdata_header,
    encode_pdu,
)
from tests.conftest import Appliance, _finish, require_tool, run_tool
from tests.interop.test_raw_peer import abort_pdu, exchange

pytestmark = pytest.mark.system

ARTIM_S = 2.0
VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"
CONFIG = f"""
[network]
artim_timeout_s = {ARTIM_S}
dimse_timeout_s = 3.0
[storage]
min_free_bytes = 0
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    appliance = Appliance(tmp_path_factory.mktemp("hostile"), config=CONFIG)
    try:
        yield appliance.start()
    finally:
        _finish(appliance)


def _rq(calling: str = "HOSTILE", max_length: int = 16384,
        contexts: tuple[tuple[int, str], ...] = ((1, VERIFICATION),)) -> bytes:
    return encode_pdu(AssociateRQ(
        "PACS", calling,
        tuple(PresentationContextRQ(i, uid, (IMPLICIT,)) for i, uid in contexts),
        UserInformation((MaximumLength(max_length), ImplementationClassUID("1.2.3.4")))))


def _pdata_command(context_id: int, command: bytes) -> bytes:
    item = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBI", 0x04, 0, len(item)) + item


def _still_serves(app: Appliance) -> None:
    """A well-behaved echo and store succeed, and no traceback was logged."""
    echo = run_tool([require_tool("echoscu"), "-aet", "GOOD", "-aec", "PACS", "127.0.0.1",
                     str(app.port)], timeout_s=30)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    path = app.root / "good.dcm"
    ds.save_as(path)
    store = run_tool([require_tool("storescu"), "-aet", "GOOD", "-aec", "PACS", "127.0.0.1",
                      str(app.port), str(path)], timeout_s=30)
    assert store.returncode == 0, store.stdout + store.stderr
    assert "internal_error" not in app.logs(400), app.logs(80)


def test_bytes_after_our_abort_do_not_raise(app: Appliance) -> None:
    """A command set we refuse (A-ABORT, then FIN), followed in the same burst by more PDUs:
    the acceptor once parsed them and wrote a second A-ABORT after write_eof(), logging a
    RuntimeError traceback per connection (PS3.8 Sta13: the rest is not read)."""
    bad_command = _pdata_command(1, bytes(20))  # (0000,0000) of length 0: not a command set
    for tail in (_rq(), bad_command, bytes(10)):
        reply = exchange(app, _rq() + bad_command + tail, timeout_s=ARTIM_S + 2)
        assert abort_pdu(2, 0) in reply.data and reply.closed
    # and bytes that arrive after the A-ABORT went out
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(_rq() + bad_command)
        time.sleep(0.3)
        sock.sendall(_rq())
        time.sleep(0.3)
    _still_serves(app)


@pytest.mark.parametrize("max_length", [1, 6, 1023])
def test_tiny_maximum_length_is_rejected(app: Appliance, max_length: int) -> None:
    """A Maximum Length no PDV fits in (1) once made the C-ECHO answer raise ValueError in the
    acceptor; a tiny one makes every response thousands of PDUs. Both are refused with
    A-ASSOCIATE-RJ permanent, ACSE provider, no-reason-given (PS3.8 Table 9-21)."""
    reply = exchange(app, _rq(max_length=max_length), timeout_s=ARTIM_S + 2)
    assert reply.data[:10] == bytes([0x03, 0, 0, 0, 0, 4, 0, 1, 2, 1]), reply.data[:16].hex()
    assert f"Maximum Length {max_length} is below 1024" in app.logs(200)
    _still_serves(app)


def test_maximum_length_zero_means_unlimited(app: Appliance) -> None:
    reply = exchange(app, _rq(max_length=0) + abort_pdu(0, 0), timeout_s=ARTIM_S + 2)
    assert reply.data[:1] == b"\x02", reply.data[:16].hex()  # A-ASSOCIATE-AC


def test_duplicate_context_id_keeps_the_accepted_abstract_syntax() -> None:
    """Two proposals under one context id: only the first can be accepted (the second is
    answered no-reason), so the acceptor must map the id to the first's abstract syntax.
    It took the last one: an echo-only peer's id 1 became CT Image Storage inside the
    acceptor (the worker's operation check still refused the C-STORE)."""
    rq = AssociateRQ("PACS", "X", (PresentationContextRQ(1, VERIFICATION, (IMPLICIT,)),
                                   PresentationContextRQ(1, CT, (IMPLICIT,))),
                     UserInformation((MaximumLength(16384),)))
    ac = negotiate(NegotiationPolicy(ae_title="PACS"), rq)
    assert isinstance(ac, AssociateAC)
    assert accepted_contexts(ac, rq)[1][0] == VERIFICATION


def _store_bytes(app: Appliance, data: bytes, sop_uid: str) -> int:
    """One C-STORE-RQ with ``data`` as its data set (Implicit VR LE); the response status."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(_rq(contexts=((1, CT),)))
        assert sock.recv(1)[:1] == b"\x02"
        sock.settimeout(10)
        for parts in fragment_message(1, encode_message(CStoreRQ(7, CT, sop_uid)), data, 16384):
            items = b"".join(parts)
            sock.sendall(encode_pdata_header(len(items)) + items)
        reply = b""
        status_tag = b"\x00\x00\x00\x09\x02\x00\x00\x00"  # (0000,0900) US, length 2
        while status_tag not in reply:
            chunk = sock.recv(65536)
            assert chunk, f"closed without a C-STORE-RSP: {reply.hex()}"
            reply += chunk
        at = reply.index(status_tag) + len(status_tag)
        status: int = struct.unpack("<H", reply[at:at + 2])[0]
        return status


def test_truncated_data_set_is_not_acknowledged(app: Appliance) -> None:
    """A data set whose Pixel Data element announces 32768 bytes but carries 131: the object
    cannot be read back, so Success (0x0000) must not be sent for it."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    bio = DicomBytesIO()
    bio.is_little_endian, bio.is_implicit_VR = True, True
    write_dataset(bio, ds)
    data = bio.getvalue()
    cut = data[:len(data) - len(ds.PixelData) + 131]
    status = _store_bytes(app, cut, ds.SOPInstanceUID)
    assert status != 0x0000, "truncated data set acknowledged"
