"""structlog setup: JSON lines on stdout, key/value events named `component.past_tense`.

Configured once per process after fork (the role name is bound so journald lines say which
process spoke). Patient-level attributes are never logged; SOP Instance UIDs only at debug.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", role: str = "main", stream: Any = None) -> None:
    """(Re)configure structlog for this process."""
    out = stream or sys.stdout
    structlog.reset_defaults()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        # One write(2) per line: print() issues the message and its newline as two writes, and
        # lines of processes sharing stdout (journald, a file) came out glued together.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role, pid=os.getpid())


def set_level(level: str) -> None:
    """Change the level live (SIGHUP), keeping the process's renderer and bound context."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)))


def get_logger(component: str) -> Any:
    return structlog.get_logger(component=component)
