"""Orthanc (the Debian package ``orthanc``) as a benchmarked receiver.

Run as its users get it: default SQLite index, no storage compression, no plugins, with a
JSON configuration generated per run (free DICOM and HTTP ports, storage and index in the
run's store folder, HTTP on localhost without authentication, any Called AE accepted).
Arrived = ``CountInstances`` of its REST ``/statistics``.

``modalities`` (name -> AE title, host, port) fills ``DicomModalities``: the peers Orthanc
lets query and retrieve (C-FIND/C-GET/C-MOVE from an unknown AE are refused by default) and
the C-MOVE destinations it can send to (``python -m bench retrieve``). Empty by default.

``locate(install=True)`` finds the ``Orthanc`` binary, installing the package with apt-get
when it is missing and we are root. Where a service manager runs, installing the package may
also start the packaged ``orthanc`` service (its own ports: it does not disturb the runs, but
it is one more idle process on the machine); we report that, we do not stop it.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

from bench import packages
from bench.receivers.base import Receiver, echo_ok, free_port

_CANDIDATES = ("Orthanc", "/usr/sbin/Orthanc", "/usr/bin/Orthanc")


def find_binary() -> str | None:
    return packages.find(_CANDIDATES)


def locate(*, install: bool) -> tuple[str | None, str]:
    """(path of the Orthanc binary or None, what happened / why not)."""
    return packages.locate("orthanc", _CANDIDATES, install=install)


def version(binary: str) -> str:
    try:
        cp = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                            check=False)
    except OSError:
        return "unknown"
    lines = cp.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


class OrthancReceiver(Receiver):
    family = "orthanc"

    def __init__(self, name: str, binary: str | None, why_not: str = "") -> None:
        super().__init__(name)
        self.binary = binary
        self.why_not = why_not
        self.http_port = 0
        self.modalities: dict[str, tuple[str, str, int]] = {}

    def available(self) -> str | None:
        return None if self.binary else self.why_not or "Orthanc not found"

    def prepare(self) -> None:
        self.port, self.http_port = free_port(), free_port()
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.store / "storage"),
            "IndexDirectory": str(self.store / "index"),
            "StorageCompression": False,
            "MaximumStorageSize": 0,
            "MaximumPatientCount": 0,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.called_ae,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomModalities": {name: list(m) for name, m in self.modalities.items()},
            "SaveJobs": False,
        }
        (self.run_dir / "orthanc.json").write_text(json.dumps(config, indent=2))

    def command(self) -> list[str]:
        assert self.binary is not None
        return [self.binary, str(self.run_dir / "orthanc.json")]

    def _statistics(self) -> dict[str, object] | None:
        try:
            url = f"http://127.0.0.1:{self.http_port}/statistics"
            with urllib.request.urlopen(url, timeout=10) as rsp:
                stats: dict[str, object] = json.loads(rsp.read())
                return stats
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        return self._statistics() is not None and echo_ok(self.port, self.called_ae)

    def count(self) -> int:
        stats = self._statistics()
        value = stats.get("CountInstances") if stats else None
        return int(value) if isinstance(value, int | str) else -1

    def describe(self) -> dict[str, object]:
        return {"family": self.family, "binary": self.binary,
                "version": version(self.binary) if self.binary else None,
                "index": "SQLite (default)"}

