"""STYLE 2.3: who may import what, checked by an AST walk over every module's top-level imports.

Imports inside functions are the sanctioned way for the arbiter and the CLI to load a role
after fork, so only module-level imports count. Deviations from STYLE's table, on purpose:
workers import the DIMSE codec (appliance.dimse.*), because they serve DIMSE; structlog is
allowed wherever metrics.* is (it is what metrics.logging configures).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pydicom", "numpy", "numba", "lmdb", "uvloop", "prometheus_client", "opentelemetry")

# package prefix -> (allowed first-party prefixes, forbidden top-level modules)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "appliance.ul": (("appliance.errors", "appliance.ul"),
                     ("asyncio", "socket", "time", "logging", "structlog", "metrics", *HEAVY)),
    "appliance.dimse": (("appliance.errors", "appliance.ul", "appliance.dimse"),
                        ("asyncio", "socket", "time", "logging", "structlog", "metrics", *HEAVY)),
    "appliance.negotiation": (("appliance.errors", "appliance.ul", "appliance.dimse",
                               "appliance.negotiation"),
                              ("asyncio", "socket", "time", "logging", "structlog", "metrics",
                               *HEAVY)),
    "appliance.ipc": (("appliance.errors", "appliance.ipc"),
                      ("metrics", "structlog", "asyncio", *HEAVY)),
    "appliance.acceptor": (("appliance.errors", "appliance.ul", "appliance.dimse",
                            "appliance.negotiation", "appliance.ipc", "appliance.config",
                            "appliance.acceptor", "metrics.logging", "metrics.registry",
                            "appliance.audit", "appliance.reload", "metrics.tracing",
                            "appliance.tls", "metrics.fast", "appliance.access"),
                           ("workers", "appliance.arbiter", "pydicom", "numpy", "numba",
                            "lmdb")),
    "workers.kernels": (("workers.kernels",), ("appliance", "workers.index", "lmdb")),
    # C-MOVE sub-operations: the worker is an SCU of its own association to the destination.
    # The workflow SCP shares the SCUs' pydicom data set codec (appliance.dataset_codec).
    "workers.workflow_scp": (("appliance.ipc", "appliance.dimse", "appliance.errors",
                              "appliance.config", "appliance.scu", "appliance.ul",
                              "appliance.dataset_codec",
                              "appliance.negotiation.qr_classes", "workers",
                              "metrics.logging", "metrics.registry", "appliance.audit",
                              "appliance.reload", "metrics.disk", "metrics.tracing",
                              "appliance.tls"),
                             ("appliance.acceptor", "appliance.arbiter", "asyncio", "uvloop")),
    "workers.qr": (("appliance.ipc", "appliance.dimse", "appliance.errors", "appliance.config",
                    "appliance.scu", "appliance.negotiation.qr_classes", "workers",
                    "metrics.logging", "metrics.registry",
                    "appliance.audit", "appliance.reload", "metrics.disk", "metrics.tracing",
                    "appliance.tls"),
                   ("appliance.acceptor", "appliance.arbiter", "asyncio", "uvloop")),
    "workers": (("appliance.ipc", "appliance.dimse", "appliance.errors", "appliance.config",
                 "workers", "metrics.logging", "metrics.registry", "appliance.audit",
                 "appliance.reload", "metrics.disk", "metrics.tracing", "metrics.fast"),
                ("appliance.acceptor", "appliance.arbiter", "asyncio", "uvloop")),
    "metrics": (("appliance.ipc.control", "metrics"), ("appliance.acceptor", "workers")),
    "appliance.arbiter": (("appliance.config", "appliance.ipc", "appliance.systemd",
                           "appliance.errors", "appliance.datadir", "metrics.logging",
                           "appliance"),
                          HEAVY),
}
FIRST_PARTY = ("appliance", "workers", "metrics")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from pkg import mod" may name a submodule: judge pkg.mod, which is what is used
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def rule_for(mod: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    best = None
    for prefix in RULES:
        if (mod == prefix or mod.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return RULES[best] if best else None


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


MODULES = sorted(p for pkg in FIRST_PARTY for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_respects_layering(path: Path) -> None:
    mod = module_name(path)
    rule = rule_for(mod)
    if rule is None:
        return
    allowed, forbidden = rule
    bad = []
    for name in top_level_imports(path):
        if _matches(name, forbidden):
            bad.append(f"{name} (forbidden)")
        elif name.split(".")[0] in FIRST_PARTY and not _matches(name, allowed):
            bad.append(f"{name} (not in the allowed layers)")
    assert not bad, f"{mod} imports {bad}"


def test_only_cli_imports_the_arbiter() -> None:
    users = [module_name(p) for p in MODULES
             if any(_matches(n, ("appliance.arbiter",)) for n in top_level_imports(p))]
    assert users == [], users  # cli imports it lazily, inside main()


def test_package_init_of_appliance_is_empty() -> None:
    # importing appliance.ipc must not drag in uvloop or anything else (STYLE 2.2)
    assert (ROOT / "appliance" / "__init__.py").read_text().strip() == ""
