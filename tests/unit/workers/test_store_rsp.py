"""The hand-packed C-STORE-RSP (workers.service.store_rsp_command) against the generic encoder."""

from __future__ import annotations

import pytest

from appliance.dimse.messages import CStoreRSP, decode_message, encode_message
from workers.service import store_rsp_command

CT = "1.2.840.10008.5.1.4.1.1.2"  # odd length: NUL-padded
MR = "1.2.840.10008.5.1.4.1.1.4.1"  # odd too
EVEN = "1.2.840.10008.5.1.4.1.1.12"  # even length


@pytest.mark.parametrize("sop_class", [CT, MR, EVEN, ""])
@pytest.mark.parametrize("sop_instance", ["1.2.3", "1.2.34", "2.25." + "9" * 59, ""])
@pytest.mark.parametrize(("msg_id", "status"), [(1, 0x0000), (65535, 0xA700), (7, 0xB007)])
def test_same_bytes_as_the_generic_encoder(sop_class: str, sop_instance: str, msg_id: int,
                                           status: int) -> None:
    generic = encode_message(CStoreRSP(
        message_id_being_responded_to=msg_id, affected_sop_class_uid=sop_class,
        affected_sop_instance_uid=sop_instance, status=status))
    fast = store_rsp_command(msg_id, sop_class, sop_instance, status)
    assert fast == generic
    rsp = decode_message(fast)
    assert isinstance(rsp, CStoreRSP)
    assert (rsp.message_id_being_responded_to, rsp.status) == (msg_id, status)


def test_non_latin1_uid_falls_back_to_the_generic_encoder() -> None:
    assert store_rsp_command(1, CT, "1.2.\u20ac", 0) is None
