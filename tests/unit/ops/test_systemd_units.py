"""The systemd side, without systemd: sd_notify datagrams, LISTEN_FDS parsing, the unit files'
required directives, and `pacs install-systemd` into a staging root."""

from __future__ import annotations

import configparser
import os
import socket
from pathlib import Path

import pytest

from appliance import systemd
from appliance.cli import main

ROOT = Path(__file__).resolve().parents[3]


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "systemd" / name)
    return parser


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        if abstract:
            name = f"pacs-test-{os.getpid()}"
            srv.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            srv.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        srv.settimeout(5)
        assert systemd.notify("READY=1\nSTATUS=up")
        assert srv.recv(4096) == b"READY=1\nSTATUS=up"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify("READY=1")  # not under systemd


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert systemd.watchdog_interval_s() is None


def test_listen_fds_are_ours_only_and_consumed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert systemd.listen_fds() == [3, 4]
    assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", "1")
    assert systemd.listen_fds() == []


def test_service_unit_has_what_the_issue_asks_for() -> None:
    svc = _unit("pacs-appliance.service")["Service"]
    expect = {
        "Type": "notify", "NotifyAccess": "main", "User": "pacs-appliance",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE", "Restart": "on-failure",
        "StateDirectory": "pacs-appliance", "CacheDirectory": "pacs-appliance",
        "RuntimeDirectory": "pacs-appliance", "KillMode": "mixed",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    assert {k: svc.get(k) for k in expect} == expect
    assert int(svc["TimeoutStopSec"]) > 20 and int(svc["WatchdogSec"]) > 0
    assert "PROMETHEUS_MULTIPROC_DIR=/run/pacs-appliance/prometheus" in svc["Environment"]
    sock = _unit("pacs-appliance.socket")["Socket"]
    assert sock["ListenStream"] == "104" and sock["Service"] == "pacs-appliance.service"
    sysusers = (ROOT / "systemd" / "pacs-appliance.sysusers.conf").read_text()
    assert any(line.split()[:2] == ["u", "pacs-appliance"] for line in sysusers.splitlines())


def test_install_systemd_into_a_staging_root(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    exe = tmp_path / "venv" / "bin" / "pacs"
    assert main(["install-systemd", "--prefix", str(tmp_path), "--exec", str(exe)]) == 0
    unit = (tmp_path / "etc/systemd/system/pacs-appliance.service").read_text()
    assert f"ExecStart={exe} serve --config /etc/pacs-appliance/pacs-appliance.toml" in unit
    assert "/opt/pacs-appliance/bin/pacs" not in unit
    for rel in ("etc/systemd/system/pacs-appliance.socket",
                "usr/lib/sysusers.d/pacs-appliance.conf",
                "usr/lib/tmpfiles.d/pacs-appliance.conf"):
        assert (tmp_path / rel).is_file(), rel
    conf = tmp_path / "etc/pacs-appliance/pacs-appliance.toml"
    assert main(["config", "check", str(conf)]) == 0
    conf.write_text("# edited by the operator\n")
    assert main(["install-systemd", "--prefix", str(tmp_path), "--exec", str(exe)]) == 0
    assert conf.read_text() == "# edited by the operator\n"  # an existing config is kept
    assert "systemctl enable --now" in capsys.readouterr().out
    assert main(["install-systemd", "--prefix", str(tmp_path), "--units", str(tmp_path)]) == 2
