"""Fuzz the DIMSE command set decoder (PS3.7 §6.3.1, Annex E).

Contract under test (appliance/dimse/command.py): ``decode_command_set`` returns elements or
raises ``CommandSetError``, nothing else, and so does ``has_data_set`` on what it returned.
When ``encode_command_set`` accepts the decoded elements, decoding its output gives them back
(the group length (0000,0000) aside, which the encoder recomputes). Anything else escaping
``check`` is a crash.

    python tests/fuzz/fuzz_command.py -max_total_time=60 tests/fuzz/corpus/command
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make ``tests.fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._harness import fuzz, instrumented

with instrumented(__name__ == "__main__", ["appliance"]):
    from appliance.dimse.command import (
        CommandSetError,
        decode_command_set,
        encode_command_set,
        has_data_set,
    )


def check(data: bytes) -> None:
    """Decode ``data`` as a command set; re-encode what decoded and compare. (Pinned so far:
    crashes/command/crash-5626df0c..., a UI with bytes outside ASCII re-encoded as ``?``;
    crash-2bf68f4c..., an Error Comment over 64 characters cut on re-encode.)"""
    try:
        elements = decode_command_set(data)
    except CommandSetError:
        return
    try:
        has_data_set(elements)
    except CommandSetError:
        pass
    body = {tag: value for tag, value in elements.items() if tag != 0}
    try:
        encoded = encode_command_set(body)
    except ValueError:
        return  # e.g. an odd-length raw value: decodable, but not something we would send
    again = decode_command_set(encoded)
    again.pop(0, None)
    if again != body:
        raise AssertionError(f"decode(encode(x)) != x: {body!r} -> {again!r}")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer/atheris expects
    check(data)


if __name__ == "__main__":
    fuzz(TestOneInput)
