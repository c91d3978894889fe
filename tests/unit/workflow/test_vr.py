"""Value-form checks shared by the worklist importer and the MPPS rules (PS3.5 §6.2)."""

from __future__ import annotations

import pytest

from workers.workflow.vr import problem


@pytest.mark.parametrize(("vr", "value", "ok"), [
    ("DA", "20241220", True), ("DA", "20240229", True), ("DA", "20230229", False),
    ("DA", "2024122", False), ("DA", "2024-12-20", False), ("DA", "", True),
    ("TM", "10", True), ("TM", "1030", True), ("TM", "103000.123456", True),
    ("TM", "103000.1234567", False), ("TM", "2400", False), ("TM", "1060", False),
    ("TM", "10:30", False),
    ("DT", "20241220103000", True), ("DT", "20241220103000.5+0100", True),
    ("DT", "20241320", False),
    ("UI", "1.2.840.10008.1.2", True), ("UI", "1.2.0.3", True), ("UI", "1.02", False),
    ("UI", "1..2", False), ("UI", "1.2.", False), ("UI", "1." + "1" * 63, False),
    ("AE", "CT_01", True), ("AE", "   ", False), ("AE", "X" * 17, False),
    ("CS", "CT", True), ("CS", "IN PROGRESS", True), ("CS", "ct", False),
    ("CS", "CT\\MR", True), ("CS", "CT\\mr", False),
    ("PN", "DOE^JOHN", True), ("PN", "A^B^C^D^E^F", False), ("PN", "a=b=c=d", False),
    ("IS", "42", True), ("IS", "4.2", False), ("DS", "72.5", True), ("DS", "1e3", True),
    ("DS", "abc", False), ("LO", "x" * 64, True), ("LO", "x" * 65, False),
    ("LO", "tab\there", False), ("LT", "line\nbreaks are fine", True),
    ("SH", "x" * 17, False), ("OB", "anything", True),
])
def test_problem(vr: str, value: str, ok: bool) -> None:
    assert (problem(vr, value) is None) is ok, problem(vr, value)
