"""Hypothesis properties of the PS3.8 PDU codec and the receive buffer (STYLE 2.10)."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import RemoteULError
from appliance.ul.buffer import PduBuffer
from appliance.ul.pdu import (
    PDU,
    PDV,
    AbortPDU,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    ItemType,
    MaximumLength,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    ReleaseRP,
    ReleaseRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    decode_pdu,
    encode_pdu,
)
from tests.fixtures import pdus

EXAMPLES = settings(max_examples=200, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
small_bytes = st.binary(max_size=40)
# Decoding strips trailing NUL/space padding, so generated values never end with them.
uids = st.text(alphabet="0123456789.", max_size=64)
ae_titles = st.text(alphabet=string.ascii_uppercase + string.digits + "-_ ", max_size=16).map(
    str.strip
)
names = st.text(alphabet=string.ascii_letters + string.digits + "_.-", max_size=16)
known_item_types = {int(t) for t in ItemType}

sub_items = st.one_of(
    st.builds(MaximumLength, u32),
    st.builds(ImplementationClassUID, uids),
    st.builds(ImplementationVersionName, names),
    st.builds(AsynchronousOperationsWindow, u16, u16),
    st.builds(RoleSelection, uids, st.booleans(), st.booleans()),
    st.builds(SOPClassExtendedNegotiation, uids, small_bytes),
    st.builds(SOPClassCommonExtendedNegotiation, uids, uids, st.lists(uids, max_size=3).map(tuple)),
    st.builds(UserIdentityRQ, u8, st.booleans(), small_bytes, small_bytes),
    st.builds(UserIdentityAC, small_bytes),
    st.builds(UnknownItem, u8.filter(lambda t: not 0x51 <= t <= 0x59), small_bytes),
)
user_information = st.lists(sub_items, max_size=6).map(lambda xs: UserInformation(tuple(xs)))
# Unknown items are re-emitted in increasing item-type order (PS3.8 §9.3.1), so generate
# them that way for the round trip.
unknown_items = st.lists(
    st.builds(UnknownItem, u8.filter(lambda t: t not in known_item_types), small_bytes),
    max_size=2,
).map(lambda xs: tuple(sorted(xs, key=lambda u: u.item_type)))

contexts_rq = st.lists(
    st.builds(PresentationContextRQ, u8, uids, st.lists(uids, min_size=1, max_size=3).map(tuple)),
    min_size=1,
    max_size=4,
).map(tuple)
contexts_ac = st.lists(st.builds(PresentationContextAC, u8, u8, uids), min_size=1, max_size=4).map(
    tuple
)
associate_fields = {
    "called_ae": ae_titles,
    "calling_ae": ae_titles,
    "user_information": user_information,
    "application_context": uids,
    "protocol_version": u16,
    "unknown_items": unknown_items,
}
pdvs = st.builds(PDV, u8, st.booleans(), st.booleans(), st.binary(max_size=64))

valid_pdus: st.SearchStrategy[PDU] = st.one_of(
    st.builds(AssociateRQ, presentation_contexts=contexts_rq, **associate_fields),
    st.builds(AssociateAC, presentation_contexts=contexts_ac, **associate_fields),
    st.builds(AssociateRJ, u8, u8, u8),
    st.builds(PDataTF, st.lists(pdvs, min_size=1, max_size=4).map(tuple)),
    st.just(ReleaseRQ()),
    st.just(ReleaseRP()),
    st.builds(AbortPDU, u8, u8),
)


def decode_raw(raw: bytes) -> PDU:
    return decode_pdu(raw[0], memoryview(raw)[6:])


def decode_stream(chunks: list[bytes]) -> list[PDU]:
    buf = PduBuffer(max_pdata_bytes=0)
    out: list[PDU] = []
    for chunk in chunks:
        buf.feed(chunk)
        while (got := buf.next_pdu()) is not None:
            out.append(decode_pdu(*got))
    assert buf.buffered_bytes == 0
    return out


@EXAMPLES
@given(valid_pdus)
def test_round_trip(pdu: PDU) -> None:
    raw = encode_pdu(pdu)
    assert int.from_bytes(raw[2:6], "big") == len(raw) - 6
    assert decode_raw(raw) == pdu


@EXAMPLES
@given(u8, st.binary(max_size=300))
def test_arbitrary_bodies_give_a_pdu_or_remote_ul_error(pdu_type: int, body: bytes) -> None:
    try:
        decode_pdu(pdu_type, memoryview(body))
    except RemoteULError as exc:
        assert exc.abort_reason in (1, 4, 5, 6)


fixtures = st.sampled_from(list(pdus.ALL_PDUS.values())) | valid_pdus.map(encode_pdu)


@EXAMPLES
@given(fixtures, st.data())
def test_mutated_pdus_give_a_pdu_or_remote_ul_error(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        width = data.draw(st.sampled_from([1, 2, 4]))  # a type byte, an item or PDU length
        value = data.draw(st.integers(0, 256**width - 1))
        mutated[at : at + width] = value.to_bytes(width, "big")[: len(mutated) - at]
    if data.draw(st.booleans()):
        mutated = mutated[: data.draw(st.integers(0, len(mutated)))]
    buf = PduBuffer(max_pdata_bytes=1 << 16, max_other_pdu_bytes=1 << 16)
    buf.feed(bytes(mutated))
    try:
        while (got := buf.next_pdu()) is not None:
            decode_pdu(*got)
    except RemoteULError as exc:
        assert exc.abort_reason in (1, 4, 5, 6)


@EXAMPLES
@given(st.lists(valid_pdus, min_size=1, max_size=5), st.lists(st.integers(0, 10_000)))
def test_chunking_invariance(stream_pdus: list[PDU], cuts: list[int]) -> None:
    stream = b"".join(encode_pdu(p) for p in stream_pdus)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    random_split = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    whole = decode_stream([stream])
    assert whole == stream_pdus
    assert decode_stream(bytewise) == whole
    assert decode_stream(random_split) == whole
