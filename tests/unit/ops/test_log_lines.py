"""Every log line reaches the stream in one write: the appliance's processes share stdout
(journald's pipe, a file), and a line written in pieces can be glued to another process's."""

from __future__ import annotations

import json

import structlog

from metrics import logging as applog


class _Writes:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_each_event_is_one_write_of_one_whole_line() -> None:
    out = _Writes()
    try:
        applog.configure("info", role="worker", stream=out)
        log = structlog.get_logger(component="test")
        log.info("test.one", n=1)
        log.warning("test.two", text="line\nbreak")
    finally:
        applog.configure("info")
    assert len(out.calls) == 2
    for call in out.calls:
        assert call.endswith("\n") and call.count("\n") == 1
        assert json.loads(call)["role"] == "worker"
