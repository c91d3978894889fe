"""Every cell of PS3.8 Table 9-10 against an independent transcription.

The literal below was typed row by row from the standard's table (columns Sta1..Sta13, "."
for an empty cell); next states come from the action definitions of PS3.8 §9.2.2 Tables
9-6..9-9, also typed separately. A typo in either this file or ``appliance.ul.fsm`` fails a cell.
"""

from __future__ import annotations

import pytest

from appliance.ul.fsm import INVALID, TRANSITIONS, Evt, State, transition

#     Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
TABLE_9_10 = """
Evt1  AE-1  .     .     .     .     .     .     .     .     .     .     .     .
Evt2  .     .     .     AE-2  .     .     .     .     .     .     .     .     .
Evt3  .     AA-1  AA-8  .     AE-3  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt4  .     AA-1  AA-8  .     AE-4  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt5  AE-5  .     .     .     .     .     .     .     .     .     .     .     .
Evt6  .     AE-6  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
Evt7  .     .     AE-7  .     .     .     .     .     .     .     .     .     .
Evt8  .     .     AE-8  .     .     .     .     .     .     .     .     .     .
Evt9  .     .     .     .     .     DT-1  .     AR-7  .     .     .     .     .
Evt10 .     AA-1  AA-8  .     AA-8  DT-2  AR-6  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt11 .     .     .     .     .     AR-1  .     .     .     .     .     .     .
Evt12 .     AA-1  AA-8  .     AA-8  AR-2  AR-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt13 .     AA-1  AA-8  .     AA-8  AA-8  AR-3  AA-8  AA-8  AR-10 AR-3  AA-8  AA-6
Evt14 .     .     .     .     .     .     .     AR-4  AR-9  .     .     AR-4  .
Evt15 .     .     AA-1  AA-2  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  .
Evt16 .     AA-2  AA-3  .     AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-2
Evt17 .     AA-5  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AR-5
Evt18 .     AA-2  .     .     .     .     .     .     .     .     .     .     AA-2
Evt19 .     AA-1  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
"""

# PS3.8 §9.2.2: "Next state is StaN" of each action. AA-6 ("ignore PDU") stays in Sta13.
NEXT_STATE = {
    "AE-1": 4, "AE-2": 5, "AE-3": 6, "AE-4": 1, "AE-5": 2, "AE-6": 3, "AE-7": 6, "AE-8": 13,
    "DT-1": 6, "DT-2": 6,
    "AR-1": 7, "AR-2": 8, "AR-3": 1, "AR-4": 13, "AR-5": 1, "AR-6": 7, "AR-7": 8,
    "AR-9": 11, "AR-10": 12,
    "AA-1": 13, "AA-2": 1, "AA-3": 1, "AA-4": 1, "AA-5": 1, "AA-6": 13, "AA-7": 13, "AA-8": 13,
}  # fmt: skip


def _parse() -> dict[tuple[int, int], str]:
    cells: dict[tuple[int, int], str] = {}
    for line in TABLE_9_10.strip().splitlines():
        evt, *cols = line.split()
        assert len(cols) == 13, line
        for sta, action in enumerate(cols, start=1):
            cells[sta, int(evt.removeprefix("Evt"))] = action
    return cells


CELLS = _parse()


def _expected(sta: int, evt: int, requestor: bool) -> tuple[str, int]:
    action = CELLS[sta, evt]
    if action == ".":
        return INVALID, sta
    if action == "AR-8":  # Table 9-8: requestor -> Sta9, acceptor -> Sta10
        return action, 9 if requestor else 10
    return action, NEXT_STATE[action]


def test_transcription_covers_every_cell() -> None:
    assert len(CELLS) == 13 * 19
    assert len(State) == 13 and len(Evt) == 19


@pytest.mark.parametrize("requestor", [True, False], ids=["requestor", "acceptor"])
@pytest.mark.parametrize("evt", list(Evt), ids=lambda e: f"Evt{e.value}")
@pytest.mark.parametrize("state", list(State), ids=lambda s: f"Sta{s.value}")
def test_cell(state: State, evt: Evt, requestor: bool) -> None:
    action, nxt = _expected(state.value, evt.value, requestor)
    assert transition(state, evt, requestor=requestor) == (action, State(nxt))
    # The raw table holds exactly the non-empty cells (requestor branch for AR-8).
    if action == INVALID:
        assert (state, evt) not in TRANSITIONS
    elif requestor:
        assert TRANSITIONS[state, evt] == (action, State(nxt))


def test_enum_names_follow_the_standard_numbering() -> None:
    for s in State:
        assert s.name.startswith(f"STA{s.value}_")
    for e in Evt:
        assert e.name.startswith(f"EVT{e.value}_")
