"""Status categories follow PS3.7 C.1-C.4 ranges."""

from __future__ import annotations

import pytest

from appliance.dimse.status import Status, StatusCategory, category


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0x0000, StatusCategory.SUCCESS),
        (0xFF00, StatusCategory.PENDING),
        (0xFF01, StatusCategory.PENDING),
        (0xFE00, StatusCategory.CANCEL),
        (0x0001, StatusCategory.WARNING),
        (0x0107, StatusCategory.WARNING),
        (0x0116, StatusCategory.WARNING),
        (0xB000, StatusCategory.WARNING),
        (0xB007, StatusCategory.WARNING),
        (0xBFFF, StatusCategory.WARNING),
        (0x0110, StatusCategory.FAILURE),
        (0x0122, StatusCategory.FAILURE),
        (0x0211, StatusCategory.FAILURE),
        (0xA700, StatusCategory.FAILURE),
        (0xA7FF, StatusCategory.FAILURE),
        (0xA900, StatusCategory.FAILURE),
        (0xC123, StatusCategory.FAILURE),
        (0x1234, StatusCategory.FAILURE),  # undefined: never mistaken for success
    ],
)
def test_category(status: int, expected: StatusCategory) -> None:
    assert category(status) is expected


def test_shared_numbers_are_aliases() -> None:
    assert Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES is Status.COERCION_OF_DATA_ELEMENTS
    assert Status.UNABLE_TO_PROCESS == 0xC000
    assert Status.SOP_CLASS_NOT_SUPPORTED == 0x0122
    assert Status.UNRECOGNIZED_OPERATION == 0x0211
    assert Status.OUT_OF_RESOURCES == 0xA700
