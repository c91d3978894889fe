"""DIMSE status codes (PS3.7 Annex C) and their categories: the single place status numbers live.

Service-specific codes come from PS3.4: Storage (B.2.3) and Query/Retrieve (C.4.1.1.4,
C.4.2.1.5, C.4.3.1.4). Several services reuse one number with a different meaning (0xA700 is
"out of resources" for both Storage and Q/R, 0xB000 is "coercion of data elements" for
Storage but "sub-operations complete, one or more failures" for C-MOVE/C-GET); those are
aliases of one ``Status`` member, so ``Status(0xB000)`` returns the first name declared.
Ranges such as "A7xx" are represented by their base value; ``category`` classifies any
16-bit number, whether or not it has a name here.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class Status(IntEnum):
    """PS3.7 Annex C general statuses and the PS3.4 service-specific ones we answer with."""

    # ---- PS3.7 C.1 success ----
    SUCCESS = 0x0000

    # ---- PS3.7 C.4 general warnings ----
    ATTRIBUTE_LIST_ERROR = 0x0107
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116

    # ---- PS3.7 C.5 general failures ----
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    NO_SUCH_EVENT_TYPE = 0x0113
    NO_SUCH_ARGUMENT = 0x0114
    INVALID_ARGUMENT_VALUE = 0x0115
    INVALID_OBJECT_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NO_SUCH_ACTION_TYPE = 0x0123
    NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    RESOURCE_LIMITATION = 0x0213

    # ---- PS3.7 C.3 cancel, C.2 pending ----
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01  # Q/R C-FIND: optional keys not supported (PS3.4 C.4.1.1.4)

    # ---- PS3.4 B.2.3 Storage service ----
    OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources (A7xx)
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error (A9xx)
    CANNOT_UNDERSTAND = 0xC000  # Error (Cxxx)
    COERCION_OF_DATA_ELEMENTS = 0xB000  # Warning
    ELEMENTS_DISCARDED = 0xB006  # Warning
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007  # Warning

    # ---- PS3.4 C.4 Query/Retrieve service ----
    OUT_OF_RESOURCES_UNABLE_TO_CALCULATE_MATCHES = 0xA701
    OUT_OF_RESOURCES_UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # alias of DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    UNABLE_TO_PROCESS = 0xC000  # alias of CANNOT_UNDERSTAND
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000  # alias of COERCION_OF_DATA_ELEMENTS


class StatusCategory(Enum):
    """PS3.7 C.1-C.4 status types."""

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"
    CANCEL = "cancel"
    PENDING = "pending"


# PS3.7 C.4: the general warnings are exactly these; every other 0x01xx/0x02xx is a failure.
_GENERAL_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})


def category(status: int) -> StatusCategory:
    """Classify a status number (PS3.7 Annex C).

    0x0000 success; 0xFF00/0xFF01 pending; 0xFE00 cancel; 0x0001, 0x0107, 0x0116 and 0xBxxx
    warning; everything else (0x01xx, 0x02xx, 0xAxxx, 0xCxxx and numbers no service defines)
    is a failure, because treating an unknown code as success could acknowledge an object
    that was not stored.
    """
    if status == Status.SUCCESS:
        return StatusCategory.SUCCESS
    if status in (Status.PENDING, Status.PENDING_WARNING):
        return StatusCategory.PENDING
    if status == Status.CANCEL:
        return StatusCategory.CANCEL
    if status in _GENERAL_WARNINGS or 0xB000 <= status <= 0xBFFF:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


__all__ = ["Status", "StatusCategory", "category"]
