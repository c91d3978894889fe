"""Tracing on (console exporter): one trace per association, with the acceptor's
dicom.association span as the parent of its dicom.c_echo and of the worker's dicom.c_store
(and its ingest.index child) and dicom.c_find spans: the context crosses the process
boundary in the OPEN record."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from tests.conftest import Appliance

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

pytestmark = pytest.mark.system


def _spans(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(errors="replace")
    decoder = json.JSONDecoder()
    out, i = [], 0
    while (i := text.find("{\n", i)) >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        if isinstance(obj, dict) and "context" in obj and "name" in obj:
            out.append(obj)
        i = end
    return out


def test_spans_link_acceptor_and_worker(appliance_factory: Callable[..., Appliance]) -> None:
    app = appliance_factory(workers=1, config='[tracing]\nenabled = true\nexporter = "console"\n')
    app.start()
    ae = AE(ae_title="TRACER")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert assoc.send_c_store(ds).Status == 0
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    statuses = [int(st.Status) for st, _ in assoc.send_c_find(
        query, StudyRootQueryRetrieveInformationModelFind)]
    assert statuses[-1] == 0
    assoc.release()
    app.stop()  # the exporters flush at shutdown
    spans = _spans(app.stderr_path) + _spans(app.stdout_path)
    by_name = {s["name"]: s for s in spans}
    assert {"dicom.association", "dicom.c_echo", "dicom.c_store", "ingest.index",
            "dicom.c_find"} <= set(by_name)
    root = by_name["dicom.association"]
    trace = root["context"]["trace_id"]
    for name in ("dicom.c_echo", "dicom.c_store", "dicom.c_find"):
        assert by_name[name]["context"]["trace_id"] == trace
        assert by_name[name]["parent_id"] == root["context"]["span_id"]
    assert by_name["ingest.index"]["parent_id"] == by_name["dicom.c_store"]["context"]["span_id"]
