"""pynetdicom as the SCU for the precise cases: abort mid-dataset, tiny and unlimited maximum
PDU lengths, and the largest number of presentation contexts pynetdicom can propose (128).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, build_context
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification

from tests.conftest import Appliance, index_get, stored_problems, temp_files, wait_until
from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid

pytestmark = pytest.mark.interop

CALLING_AE = "PYNETDICOM"
TIMEOUT_S = 30


def make_ae(max_pdu: int = 16382) -> AE:
    ae = AE(ae_title=CALLING_AE)
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = TIMEOUT_S
    ae.dimse_timeout = TIMEOUT_S
    ae.network_timeout = TIMEOUT_S
    return ae


def associate(ae: AE, app: Appliance) -> Association:
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title)
    assert assoc.is_established, "association not established"
    # pynetdicom leaves Nagle on; these tests are about PDU handling, not delayed ACKs.
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def ct(seed: int, rows: int = 64, cols: int = 64) -> Dataset:
    rng = random.Random(seed)
    return make_ct(rng, Hierarchy(f"PYN{seed}", new_uid(rng), new_uid(rng)), rows=rows, cols=cols)


def store_ok(assoc: Association, ds: Dataset) -> None:
    status = assoc.send_c_store(ds)
    assert "Status" in status, "no C-STORE-RSP (timeout or abort)"
    assert status.Status == 0x0000, f"C-STORE status 0x{status.Status:04X}"


@pytest.fixture(scope="module")
def pyn_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    app = Appliance(tmp_path_factory.mktemp("pynetdicom"))
    try:
        yield app.start()
    finally:
        if app.running():
            app.stop()
        print(app.logs(120))


# --------------------------------------------------------------------------- abort mid-dataset


def test_abort_mid_dataset_leaves_nothing_behind(pyn_app: Appliance) -> None:
    ae = make_ae()
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ds = ct(1, rows=2048, cols=2048)  # 8 MiB of Pixel Data
    uid = str(ds.SOPInstanceUID)

    assoc = associate(ae, pyn_app)
    context = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CTImageStorage)
    max_pdu = assoc.acceptor.maximum_length or 1 << 20
    payload = encode(ds, is_implicit_vr=False, is_little_endian=True)
    assert payload is not None
    # Build the C-STORE-RQ as pynetdicom would, but hand only its first P-DATA-TFs (the command
    # and the beginning of the dataset) to the DUL, then abort: the dataset never completes.
    rq = C_STORE()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = CTImageStorage
    rq.AffectedSOPInstanceUID = uid
    rq.Priority = 2
    rq.DataSet = BytesIO(payload)
    msg = C_STORE_RQ()
    msg.primitive_to_message(rq)
    pdatas = msg.encode_msg(context.context_id, max_pdu)
    sent = 0
    for pdata in pdatas:
        assoc.dul.send_pdu(pdata)
        sent += sum(len(v[1]) for v in pdata.presentation_data_value_list)
        if sent >= min(len(payload) // 2, 3 * max_pdu):
            break
    assert sent < len(payload), "the whole dataset went out; nothing was cut"
    assoc.abort()  # queued behind the P-DATA-TFs, so it arrives mid-dataset
    assert assoc.is_aborted

    # The appliance is still up and serving.
    code, _ = pyn_app.get("/livez")
    assert code == 200
    ae2 = make_ae()
    ae2.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae2.add_requested_context(Verification)
    assoc2 = associate(ae2, pyn_app)
    try:
        assert assoc2.send_c_echo().Status == 0x0000
        other = ct(2)
        store_ok(assoc2, other)
    finally:
        assoc2.release()
    assert index_get(pyn_app.data, str(other.SOPInstanceUID)) is not None

    # The aborted instance left no trace: no index entry, no spool/temp file.
    wait_until(lambda: not temp_files(pyn_app.data), 10, "the aborted spool file to be removed")
    assert index_get(pyn_app.data, uid) is None
    code, _ = pyn_app.get("/readyz")
    assert code == 200


# --------------------------------------------------------------------------- PDU sizes


@pytest.fixture
def tiny_pdu_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    app = Appliance(tmp_path_factory.mktemp("tiny-pdu"), config="[network]\nmax_pdu_bytes = 4096\n")
    try:
        yield app.start()
    finally:
        if app.running():
            app.stop()
        print(app.logs(120))


def test_tiny_max_pdu_both_ways(tiny_pdu_app: Appliance) -> None:
    """Appliance advertises 4 KiB (our requests are cut to 4 KiB PDUs) and so do we."""
    ae = make_ae(max_pdu=4096)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = associate(ae, tiny_pdu_app)
    try:
        assert assoc.acceptor.maximum_length == 4096
        assert assoc.send_c_echo().Status == 0x0000
        datasets = [ct(10), ct(11, rows=512, cols=512)]  # 8 KiB and 512 KiB of pixels
        for ds in datasets:
            store_ok(assoc, ds)
    finally:
        assoc.release()
    for ds in datasets:
        assert not stored_problems(tiny_pdu_app.data, ds, calling_ae=CALLING_AE)


def test_max_pdu_zero_means_unlimited(pyn_app: Appliance) -> None:
    ae = make_ae(max_pdu=0)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = associate(ae, pyn_app)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        ds = ct(20, rows=1024, cols=1024)  # 2 MiB, more than any default PDU
        store_ok(assoc, ds)
    finally:
        assoc.release()
    assert not stored_problems(pyn_app.data, ds, calling_ae=CALLING_AE)


# --------------------------------------------------------------------------- many contexts


def test_128_presentation_contexts(pyn_app: Appliance) -> None:
    ae = make_ae()
    contexts = [build_context(Verification)]
    contexts += [build_context(c.abstract_syntax) for c in AllStoragePresentationContexts[:127]]
    ae.requested_contexts = contexts
    assert len(ae.requested_contexts) == 128
    assoc = associate(ae, pyn_app)
    try:
        accepted = assoc.accepted_contexts
        rejected = assoc.rejected_contexts
        assert len(accepted) + len(rejected) == 128
        assert len(accepted) >= 100, f"only {len(accepted)} of 128 contexts accepted"
        assert assoc.send_c_echo().Status == 0x0000
        storage = [c for c in accepted if c.abstract_syntax != Verification]
        # CT plus the two highest context IDs (odd IDs up to 255).
        chosen = [next(c for c in storage if c.abstract_syntax == CTImageStorage)]
        chosen += sorted(storage, key=lambda c: c.context_id)[-2:]
        assert max(c.context_id for c in chosen) > 200
        sent: list[Dataset] = []
        for n, context in enumerate(chosen):
            ds = ct(30 + n)
            ds.SOPClassUID = context.abstract_syntax
            ds.file_meta.MediaStorageSOPClassUID = context.abstract_syntax
            ds.file_meta.TransferSyntaxUID = UID(context.transfer_syntax[0])
            store_ok(assoc, ds)
            sent.append(ds)
    finally:
        assoc.release()
    for ds in sent:
        assert not stored_problems(pyn_app.data, ds, calling_ae=CALLING_AE)
