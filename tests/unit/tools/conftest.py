"""Shared helpers for the file-tool tests: pydicom's bundled files and a `pacs` parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from appliance.tools import file_cli

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def bundled_file(name: str) -> Path:
    """A bundled pydicom test file (present in the installed package, not fetched)."""
    path = TEST_FILES / name
    if not path.exists():
        pytest.fail(f"pydicom test file {name} missing from {TEST_FILES}")
    return path


def run_pacs(*argv: str) -> int:
    """Parse argv with a parser built by `file_cli.register` and run the handler."""
    parser = argparse.ArgumentParser(prog="pacs")
    file_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


@pytest.fixture
def pacs() -> Callable[..., int]:
    return run_pacs
