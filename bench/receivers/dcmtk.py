"""DCMTK ``storescp`` as a benchmarked receiver, single-process or ``--fork`` (one child
process per association). Default options otherwise: that is what people run, and it never
fsyncs (compare with the appliance's ``os`` mode). Arrived = files in its output folder.
"""

from __future__ import annotations

import subprocess

from bench.packages import dcmtk, find_dcmtk
from bench.receivers.base import Receiver


def tool_version(tool: str) -> str:
    """First line of ``tool --version`` (DCMTK prints ``$dcmtk: storescp v3.6.7 ... $``)."""
    try:
        cp = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10,
                            check=False)
    except OSError:
        return "unknown"
    lines = (cp.stdout or cp.stderr).strip().splitlines()
    return lines[0].strip("$ ") if lines else "unknown"


class StorescpReceiver(Receiver):
    family = "storescp"

    def __init__(self, name: str, *, fork: bool) -> None:
        super().__init__(name)
        self.fork = fork

    def available(self) -> str | None:
        if find_dcmtk("storescp") is None:
            return "DCMTK's storescp not on PATH (apt-get install dcmtk)"
        return None

    def command(self) -> list[str]:
        fork = ["--fork"] if self.fork else []
        return [dcmtk("storescp"), *fork, "-aet", self.called_ae, "-od", str(self.store),
                str(self.port)]

    def describe(self) -> dict[str, object]:
        return {"family": self.family, "fork": self.fork,
                "version": tool_version(dcmtk("storescp"))}
