"""C-MOVE to a destination whose A-ASSOCIATE-AC advertises a Maximum Length too small to
carry a PDV (PS3.8 D.1): the appliance's sub-operation SCU aborts that association at once
(A-ABORT, no P-DATA), every sub-operation fails, the final C-MOVE-RSP says so, and the worker
logs one line naming the length.

Regression: Maximum Length 1..6 made the SCU's fragmenting raise ValueError inside the first
C-STORE sub-operation ("peer maximum PDU length cannot hold a PDV with data").
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from appliance.negotiation.qr_classes import STUDY_ROOT_MOVE
from appliance.qr_scu import QRSCU, qr_contexts
from appliance.scu import SCU, contexts_for_files
from tests.conftest import Appliance, wait_until
from tests.helpers.fake_scp import A_ABORT, FakeSCP

pytestmark = pytest.mark.system

_OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # PS3.4 C.4.2.1.5


def test_move_to_destination_with_tiny_max_pdu_fails_cleanly(
    appliance_factory: Callable[..., Appliance],
) -> None:
    scp = FakeSCP(6)
    try:
        config = (f'[ae_table.TINY]\nhost = "127.0.0.1"\nport = {scp.port}\n'
                  "[query]\nmove_pending_interval_s = 0.0\n")
        app = appliance_factory(config=config, workers=1).start()
        source = get_testdata_file("CT_small.dcm")
        assert isinstance(source, str)
        ds = dcmread(source)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = app.root / "ct.dcm"
        ds.save_as(path)
        with SCU("127.0.0.1", app.port, contexts=contexts_for_files([path]),
                 timeout_s=30) as scu:  # fmt: skip
            assert scu.store_file(path).status == 0
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ds.StudyInstanceUID
        with QRSCU("127.0.0.1", app.port, contexts=qr_contexts([STUDY_ROOT_MOVE]),
                   timeout_s=30) as qr:  # fmt: skip
            final = list(qr.move(STUDY_ROOT_MOVE, "TINY", query))[-1]
        assert final.status == _OUT_OF_RESOURCES_SUB_OPERATIONS, final
        assert (final.completed or 0, final.failed) == (0, 1), final
        assert final.failed_sop_instance_uids == (ds.SOPInstanceUID,)
        wait_until(lambda: "peer maximum PDU length 6 is too small" in app.logs(400), 10,
                   "the worker's log line")  # fmt: skip
        logs = app.logs(400)
        assert "ValueError" not in logs and "qr.move_failed" not in logs, logs
    except BaseException:
        scp.listener.close()  # don't let close() wait for a connection that never comes
        raise
    scp.close()
    assert [t for t, _ in scp.pdus()] == [A_ABORT]  # no P-DATA-TF ever went out
