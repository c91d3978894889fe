"""Workflow records: Modality Worklist items (PS3.4 K), MPPS instances (F.7) and Storage
Commitment requests (J.3), with their rules and their LMDB store. The DIMSE side lives in
``workers.workflow_scp``; the file-side CLI in ``appliance.tools.workflow_cli``.

Importing this package is cheap (no pydicom, no LMDB): the modules are imported by name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkflowSettings:
    """The ``[workflow]`` configuration section."""

    hide_completed: bool = True  # steps an MPPS completed or discontinued leave the worklist
    combined_datetime: bool = True  # SPS Start Date + Time as one range (C.2.2.2.5.1)
    worklist_dir: str = ""  # watched folder of worklist JSON files; "" = none
    watch_interval_s: float = 5.0  # how often the watched folder is scanned
    watch_settle_s: float = 1.0  # a file must be this old (mtime) before it is imported
    commitment_grace_s: float = 10.0  # a report unacknowledged this long goes out anew
    commitment_retry_s: float = 30.0  # between delivery passes for pending reports
    commitment_timeout_s: float = 30.0  # connect / response timeout of a delivery


__all__ = ["WorkflowSettings"]
