"""Property: any interleaving of puts and gets delivers exactly once, in order, within capacity."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.ipc.ring import ALIGN, HEADER_SIZE, Ring

CAP = 8192
MAX_PAYLOAD = CAP // 2 - HEADER_SIZE

# Every op is (name, n, notify): ("put", payload size, notify?), ("get", up to n records, _),
# ("drain", _, _) = read the data doorbell.
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, MAX_PAYLOAD), st.booleans()),
        st.tuples(st.just("get"), st.integers(1, 8), st.just(False)),
        st.tuples(st.just("drain"), st.just(0), st.just(False)),
    ),
    max_size=120,
)


def body(i: int, size: int) -> bytes:
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


def bytes_needed(head: int, size: int) -> int:
    """The spec: a record takes its aligned size, plus a PAD when it would cross the end."""
    total = -(-(HEADER_SIZE + size) // ALIGN) * ALIGN
    to_end = CAP - head % CAP
    return total if total <= to_end else to_end + total


@settings(max_examples=200, deadline=None)
@given(ops)
def test_exactly_once_in_order_never_over_capacity(script: list[tuple[str, int, bool]]) -> None:
    prod = Ring.create(CAP)
    cons = Ring.attach(prod.fds)
    try:
        accepted: list[int] = []  # payload sizes try_put accepted, in order
        delivered = 0
        notified = 0  # how many accepted records a notify has covered
        for name, n, notify in script:
            if name == "put":
                head, tail = prod._head, cons._tail
                need = bytes_needed(head, n)
                i = len(accepted)
                ok = prod.try_put(5, 1, i, 0, n, body(i, n), notify=notify)
                # Accepted exactly when it fits; and it then takes exactly ``need`` bytes.
                assert ok == (need <= CAP - (head - tail))
                if ok:
                    assert prod._head == head + need
                    accepted.append(n)
                if notify or not ok:  # a refused put rings the doorbell for pending records
                    notified = len(accepted)
            elif name == "get":
                for _ in range(n):
                    got = cons.get_copy()
                    if got is None:
                        break
                    hdr, payload = got
                    assert hdr.msg_id == delivered and hdr.aux == accepted[delivered]
                    assert payload == body(delivered, hdr.aux)
                    delivered += 1
                    assert delivered <= notified  # never a record nobody notified
            else:
                cons.drain_doorbell()
            assert 0 <= prod._head - cons._tail <= CAP
        # Flush: everything accepted arrives, once, in order, and nothing more.
        prod.notify()
        cons.drain_doorbell()
        while (got := cons.get_copy()) is not None:
            assert got[0].msg_id == delivered and got[1] == body(delivered, got[0].aux)
            delivered += 1
        assert delivered == len(accepted)
        assert prod.free_bytes() == CAP
    finally:
        cons.close()
        prod.close()
