"""The shared part of the atheris harnesses: instrumentation, and the libFuzzer entry point.

A harness module is importable without atheris (the regression test replays its corpus
through ``check`` under plain pytest); only when it runs as a script does it import atheris,
instrument the target packages while importing them, and hand ``TestOneInput`` to libFuzzer.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"
CRASHES_DIR = FUZZ_DIR / "crashes"


@contextlib.contextmanager
def instrumented(as_fuzzer: bool, include: list[str]) -> Iterator[None]:
    """Import the targets inside this block: under atheris their bytecode gets coverage
    counters (only modules first imported here, and only the packages in ``include``)."""
    if not as_fuzzer:
        yield
        return
    import atheris

    with atheris.instrument_imports(include=include):
        yield


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Run libFuzzer on ``test_one_input`` with the command line's libFuzzer flags."""
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
