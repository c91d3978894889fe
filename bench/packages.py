"""Find a program the harness needs, installing its Debian package when it is missing.

The harness "installs or locates" what it compares against: DCMTK (``storescu`` is the one
client every receiver gets, ``storescp`` a receiver) and Orthanc. Installing needs root and
apt-get; otherwise, or with ``--no-install``, the caller is told why not, in words it prints.

DCMTK's tools are looked up by ``dcmtk(name)``, not by PATH alone: pynetdicom installs Python
console scripts with the same names (``PYNETDICOM_APPS``), and in an activated virtualenv
those come first on PATH, so a
"side by side against DCMTK" would quietly measure pynetdicom's client. DCMTK's are native
executables (ELF); a script of that name is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence

_APT_TIMEOUT_S = 900
_ELF_MAGIC = b"\x7fELF"
_dcmtk_found: dict[str, str] = {}
PYNETDICOM_APPS = frozenset(
    {"echoscp", "echoscu", "findscu", "getscu", "movescu", "qrscp", "storescp", "storescu"}
)


def find(candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` (names on PATH or absolute paths) that exists."""
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _native(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == _ELF_MAGIC
    except OSError:
        return False


def find_dcmtk(name: str) -> str | None:
    """Absolute path of DCMTK's ``name``: the first native executable of that name on PATH."""
    if name in _dcmtk_found:
        return _dcmtk_found[name]
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK) and _native(path):
            _dcmtk_found[name] = path = os.path.abspath(path)
            return path
    return None


def dcmtk(name: str) -> str:
    """What to run for DCMTK's ``name``: its absolute path, or ``name`` itself when it is not
    installed (the harness checked with ``require_dcmtk`` first; a run then fails saying so)."""
    return find_dcmtk(name) or name


def which(name: str) -> str | None:
    """``shutil.which``, except that a name pynetdicom also installs means DCMTK's tool."""
    return find_dcmtk(name) if name in PYNETDICOM_APPS else shutil.which(name)


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(["apt-get", "-q", "-y", *args], capture_output=True, text=True,
                          env=env, timeout=_APT_TIMEOUT_S, check=False)


def locate(package: str, candidates: Sequence[str], *, install: bool,
           finder: Callable[[Sequence[str]], str | None] = find) -> tuple[str | None, str]:
    """(path of the first of ``candidates`` or None, what happened / why not), running
    ``apt-get install package`` first when none exists and ``install`` allows it."""
    found = finder(candidates)
    if found:
        return found, f"found {found}"
    what = f"{candidates[0]} (Debian package {package})"
    if not install:
        return None, f"{what} not installed and installing was not allowed (--no-install)"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, f"{what} not installed; installing it needs root and apt-get"
    print(f"bench: installing {package} (apt-get install {package}) ...", flush=True)
    cp = _apt("install", "--no-install-recommends", package)
    if cp.returncode != 0:  # a stale package list is the usual cause
        _apt("update")
        cp = _apt("install", "--no-install-recommends", package)
    found = finder(candidates)
    if cp.returncode != 0 or not found:
        tail = (cp.stderr or cp.stdout).strip().splitlines()[-3:]
        return None, f"apt-get install {package} failed ({cp.returncode}): {' | '.join(tail)}"
    return found, f"installed the Debian package {package}, {found}"


def _first_dcmtk(names: Sequence[str]) -> str | None:
    return next((p for p in map(find_dcmtk, names) if p), None)


def require_dcmtk(tools: Sequence[str], *, install: bool) -> None:
    """Every one of DCMTK's ``tools``, installing the package if one is missing; SystemExit
    saying which are missing and why otherwise (the harness cannot run without them)."""
    missing = [t for t in tools if find_dcmtk(t) is None]
    if not missing:
        return
    _, why = locate("dcmtk", missing, install=install, finder=_first_dcmtk)
    still = [t for t in tools if find_dcmtk(t) is None]
    if still:
        raise SystemExit(f"bench: DCMTK's {', '.join(still)} missing: {why}")
