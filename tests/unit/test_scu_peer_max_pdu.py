"""``appliance.scu.SCU`` against an acceptor whose Maximum Length Received (PS3.8 D.1) is too
small to carry a PDV: the A-ASSOCIATE-AC is answered with an A-ABORT (source 0) and
``AssociationAborted`` naming the length, before any P-DATA goes out.

Regression: a C-MOVE destination answering with a Maximum Length of 1..6 made the SCU's
fragmenting raise ValueError deep inside ``store_file`` on the first sub-operation.
The peer is ``tests.helpers.fake_scp.FakeSCP`` (loopback socket, our own UL encoder).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import pytest

from appliance.errors import LocalULError, RemoteULError
from appliance.scu import SCU, AssociationAborted, ProposedContext
from appliance.ul.association import Association, Role, ULLimits
from appliance.ul.pdu import AbortPDU, decode_pdu
from tests.helpers.fake_scp import A_ABORT, P_DATA_TF, FakeSCP

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
CONTEXTS = (ProposedContext(VERIFICATION, (IMPLICIT_LE,)),
            ProposedContext(CT_IMAGE_STORAGE, (IMPLICIT_LE,)))  # fmt: skip


@pytest.fixture
def fake_scp() -> Iterator[Callable[[int], FakeSCP]]:
    started: list[FakeSCP] = []

    def start(max_length: int) -> FakeSCP:
        started.append(FakeSCP(max_length))
        return started[-1]

    yield start
    for scp in started:
        scp.close()


@pytest.mark.parametrize("max_length", [1, 6, 7, 1023])
def test_tiny_peer_max_pdu_is_aborted_before_any_pdata(
    fake_scp: Callable[[int], FakeSCP], max_length: int
) -> None:
    scp = fake_scp(max_length)
    scu = SCU("127.0.0.1", scp.port, contexts=CONTEXTS, timeout_s=10)
    try:
        with pytest.raises(AssociationAborted,
                           match=f"peer maximum PDU length {max_length} is too small") as info:
            scu.associate()
    finally:
        scu.abort()  # without the fix the SCU stays associated: end it so the peer stops
    assert (info.value.source, info.value.reason, info.value.by_peer) == (0, 0, False)
    assert scu.accepted == {} and scu.associate_ac is None
    with pytest.raises(LocalULError, match="not associated"):
        scu.echo()  # closed: nothing can be sent on it any more
    scp.close()
    # Exactly one PDU reached the peer after its AC: an A-ABORT from the service user
    # (PS3.8 §9.3.8: source 0, reason not significant and sent as 0). No P-DATA-TF.
    ((pdu_type, body),) = scp.pdus()
    assert pdu_type == A_ABORT
    assert decode_pdu(pdu_type, memoryview(body)) == AbortPDU(source=0, reason=0)


def test_floor_is_the_acceptors_floor(fake_scp: Callable[[int], FakeSCP]) -> None:
    # 1024 is what our acceptor requires of requestors (ULLimits.min_peer_max_pdu_bytes):
    # the same value is accepted here, and a 5000-byte data set is cut to fit it.
    assert ULLimits().min_peer_max_pdu_bytes == 1024
    scp = fake_scp(1024)
    with SCU("127.0.0.1", scp.port, contexts=CONTEXTS, timeout_s=10) as scu:
        assert scu.peer_max_pdu == 1024
        assert scu.echo() == 0
        result = scu.store(bytes(5000), CT_IMAGE_STORAGE, "1.2.3.4", IMPLICIT_LE)
    assert result.status == 0
    scp.close()
    pdus = scp.pdus()
    pdata = [body for t, body in pdus if t == P_DATA_TF]
    assert len(pdata) >= 5 and all(len(body) <= 1024 for body in pdata)
    assert A_ABORT not in [t for t, _ in pdus]


def test_unlimited_peer_max_pdu_is_accepted(fake_scp: Callable[[int], FakeSCP]) -> None:
    # PS3.8 D.1: 0 means no maximum; it must not be mistaken for "too small".
    scp = fake_scp(0)
    with SCU("127.0.0.1", scp.port, contexts=CONTEXTS, timeout_s=10) as scu:
        assert scu.peer_max_pdu == 0
        assert scu.echo() == 0
        assert scu.store(bytes(5000), CT_IMAGE_STORAGE, "1.2.3.5", IMPLICIT_LE).status == 0
    scp.close()
    types = [t for t, _ in scp.pdus()]
    assert A_ABORT not in types and P_DATA_TF in types


def test_fake_scp_core_refuses_oversized_pdata() -> None:
    # The fake SCP's receive limit is real (a P-DATA-TF over its Maximum Length is reported
    # as invalid parameter value), so the tests above would catch an SCU ignoring it.
    assoc = Association(Role.ACCEPTOR, ULLimits(max_pdu_bytes=1024))
    assoc.receive_data(struct.pack(">BxI", P_DATA_TF, 2000) + bytes(2000))
    with pytest.raises(RemoteULError) as info:
        assoc.next_event()
    assert info.value.abort_reason == 6
