"""Shared fixtures for the workflow tests: a store in tmp, the issue's example item."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.workflow.store import WorkflowStore
from workers.workflow.worklist import WorklistItem, parse_items

EXAMPLE: dict[str, Any] = {
    "patientId": "12345", "patientName": "DOE^JOHN", "patientBirthDate": "19800101",
    "patientSex": "M", "studyInstanceUid": "1.2.3.4.5.6.7.8.9", "accessionNumber": "ACC001",
    "scheduledStationAeTitle": "CT_01", "scheduledProcedureStepStartDate": "20241220",
    "scheduledProcedureStepStartTime": "100000", "modality": "CT",
    "scheduledProcedureStepId": "SPS001", "scheduledProcedureStepDescription": "CT Abdomen",
}


def example(**changes: Any) -> dict[str, Any]:
    """The issue's example item with some fields changed (None removes one)."""
    out = dict(EXAMPLE)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def item(**changes: Any) -> WorklistItem:
    (one,) = parse_items(example(**changes), "test.json")
    return one


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WorkflowStore]:
    s = WorkflowStore(tmp_path, sync=False)
    yield s
    s.close()
