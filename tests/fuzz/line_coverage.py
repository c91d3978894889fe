"""Line coverage of a fuzz target's modules over a corpus, with the standard library only.

libFuzzer's ``cov:`` counts atheris' bytecode edges, which says little to a reader; this
replays corpus directories (the committed seeds, a run's scratch corpus) through the harness's
``check`` under ``sys.settrace`` and prints, per target module, the lines run out of the
lines that hold function code (``co_lines`` of every function's code object).

    .venv/bin/python tests/fuzz/line_coverage.py pdu tests/fuzz/corpus/pdu /tmp/pacs-fuzz.X/pdu
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make ``tests.fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._harness import REPO_ROOT

# Harness name -> the modules whose lines count.
TARGETS: dict[str, tuple[str, ...]] = {
    "pdu": ("appliance/ul/pdu.py", "appliance/ul/items.py", "appliance/ul/user_items.py",
            "appliance/ul/buffer.py"),
    "command": ("appliance/dimse/command.py",),
    "header": ("workers/header.py",),
}


_COMPREHENSIONS = frozenset({"<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>"})


def _function_lines(code: types.CodeType, in_function: bool = False) -> Iterator[int]:
    # Module and class bodies run at import, before the replay, and so do the comprehensions
    # written in them: only function code (lambdas included) counts.
    counted = bool(code.co_flags & inspect.CO_OPTIMIZED) and (
        in_function or code.co_name not in _COMPREHENSIONS)
    if counted:
        yield from (line for _, _, line in code.co_lines() if line is not None)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _function_lines(const, counted)


def executable_lines(path: Path) -> set[int]:
    """The lines of ``path`` that hold function code (bodies, lambdas, comprehensions)."""
    return set(_function_lines(compile(path.read_text(), str(path), "exec")))


def replay(check: Callable[[bytes], None], inputs: list[Path],
           files: tuple[str, ...]) -> dict[str, set[int]]:
    """Run every input through ``check``, recording the lines run in ``files``."""
    wanted = {str(REPO_ROOT / f): f for f in files}
    hit: dict[str, set[int]] = {f: set() for f in files}

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        name = wanted.get(frame.f_code.co_filename)
        if name is None:
            return None  # do not trace inside other modules' frames
        hit[name].add(frame.f_lineno)
        return local

    def local(frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            hit[wanted[frame.f_code.co_filename]].add(frame.f_lineno)
        return local

    sys.settrace(tracer)
    try:
        for path in inputs:
            try:
                check(path.read_bytes())
            except AssertionError:
                pass  # a crash input: its coverage still counts
    finally:
        sys.settrace(None)
    return hit


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in TARGETS:
        print(f"usage: line_coverage.py {{{','.join(TARGETS)}}} CORPUS_DIR...", file=sys.stderr)
        return 2
    import importlib

    check = importlib.import_module(f"tests.fuzz.fuzz_{argv[0]}").check
    inputs = [p for d in argv[1:] for p in sorted(Path(d).iterdir()) if p.is_file()]
    files = TARGETS[argv[0]]
    hit = replay(check, inputs, files)
    print(f"{argv[0]}: {len(inputs)} inputs")
    for name in files:
        lines = executable_lines(REPO_ROOT / name)
        run = len(hit[name] & lines)
        print(f"  {name}: {run}/{len(lines)} lines ({100 * run / len(lines):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
