"""Configuration for operators: PACS_* environment overrides (file < env < flags), the new
sections validated by name, `pacs config check|show`, and a TOML dump that loads back."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from appliance.cli import build_parser, main, overrides
from appliance.config import (
    Config,
    ConfigSource,
    RemoteAE,
    as_dict,
    env_overrides,
    from_mapping,
    load,
    to_toml,
)
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_env_sits_between_file_and_flags(tmp_path: Path) -> None:
    conf = _file(tmp_path, '[network]\nport = 2000\nae_title = "FILE"\n[processes]\nworkers = 1\n')
    env = {"PACS_PORT": "3000", "PACS_AE_TITLE": "ENV", "PACS_HTTP": "0.0.0.0:9200",
           "PACS_DATA_DIR": str(tmp_path / "d"), "PACS_LOG_LEVEL": "debug",
           "PACS_TRACING_ENABLED": "yes", "PACS_MIN_FREE_BYTES": "5",
           "PACS_REQUIRE_INTEROP": "1", "PACS_LOCUST_FIND": "1"}  # not settings: ignored
    args = build_parser().parse_args(["serve", "--config", str(conf), "--port", "4000"])
    cfg = load(args.config, overrides(args), env)
    assert cfg.network.port == 4000  # flag beats env
    assert cfg.network.ae_title == "ENV"  # env beats file
    assert cfg.processes.workers == 1  # file beats default
    assert (cfg.http.host, cfg.http.port) == ("0.0.0.0", 9200)
    assert cfg.storage.data_dir == tmp_path / "d" and cfg.log_level == "debug"
    assert cfg.tracing.enabled and cfg.storage.min_free_bytes == 5
    assert load(conf).network.ae_title == "FILE"  # no environ given: no env applied
    assert env_overrides({"PACS_HTTP": ":9", "PACS_WORKERS": " 2 "}) == {
        "http": {"host": "127.0.0.1", "port": 9}, "processes": {"workers": 2}}


@pytest.mark.parametrize(("env", "message"), [
    ({"PACS_PORT": "eleven"}, "$PACS_PORT: expected an integer"),
    ({"PACS_HTTP": "9112"}, "$PACS_HTTP: expected HOST:PORT"),
    ({"PACS_TRACING_ENABLED": "maybe"}, "$PACS_TRACING_ENABLED: expected true or false"),
    ({"PACS_DURABILITY": "sometimes"}, "[storage] durability"),
    ({"PACS_LOG_LEVEL": "loud"}, "log_level: expected one of"),
])
def test_bad_environment_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, None, env)
    assert message in str(err.value)


@pytest.mark.parametrize(("toml", "message"), [
    ('[audit]\npath = 3\n', "[audit] path: invalid value 3, expected a string"),
    ("[audit]\nkeep = true\n", "[audit] unknown setting 'keep'"),
    ('[tracing]\nexporter = "zipkin"\n', "[tracing] exporter: expected otlp or console"),
    ("[tracing]\nsample_ratio = 2.0\n", "[tracing] sample_ratio"),
    ("[storage]\nmin_free_bytes = -1\n", "[storage] min_free_bytes"),
    ("[storage]\nmin_free_percent = 100\n", "[storage] min_free_percent"),
    ('[storage]\nmin_free_bytes = "1G"\n', "expected an integer"),
])
def test_new_settings_are_validated_by_name(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(tomllib.loads(toml))
    assert message in str(err.value)


def test_toml_dump_loads_back_to_the_same_config(tmp_path: Path) -> None:
    cfg = from_mapping({
        "log_level": "warning",
        "network": {"ae_title": 'Q"T\\', "allowed_calling_aes": ["A", "B"]},
        "storage": {"data_dir": str(tmp_path), "min_free_percent": 2.5},
        "audit": {"path": "-", "patient_values": True},
        "ae_table": {"VIEWER": {"host": "10.0.0.5", "port": 104},
                     "MY AE": {"host": "h", "port": 1}},
    })
    assert cfg.ae_table[1] == RemoteAE("MY AE", "h", 1)
    assert load(_file(tmp_path, to_toml(cfg))) == cfg
    assert load(_file(tmp_path, to_toml(Config()))) == Config()


def test_config_source_loads_again(tmp_path: Path) -> None:
    conf = _file(tmp_path, 'log_level = "info"\n')
    source = ConfigSource(conf, {"network": {"port": 5}}, {"PACS_AE_TITLE": "E"})
    assert source.load().log_level == "info"
    conf.write_text('log_level = "error"\n')
    again = source.load()
    assert (again.log_level, again.network.port, again.network.ae_title) == ("error", 5, "E")


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PACS_PORT", "PACS_LOG_LEVEL", "PACS_AE_TITLE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["config", "check", str(ROOT / "systemd" / "pacs-appliance.toml")]) == 0
    assert "OK" in capsys.readouterr().out
    bad = _file(tmp_path, "[network]\nport = \"x\"\n")
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "[network] port" in err and "expected an integer" in err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read config" in capsys.readouterr().err
    assert main(["config", "check", str(_file(tmp_path, "[network\n"))]) == 1
    monkeypatch.setenv("PACS_PORT", "x")
    assert main(["config", "check", str(ROOT / "systemd" / "pacs-appliance.toml")]) == 1
    assert "$PACS_PORT" in capsys.readouterr().err


def test_config_show_is_the_effective_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_WORKERS", "7")
    monkeypatch.delenv("PACS_PORT", raising=False)
    conf = _file(tmp_path, '[network]\nport = 104\n[ae_table.VIEWER]\nhost = "v"\nport = 11\n')
    assert main(["config", "show", "--config", str(conf), "--ae-title", "FLAG"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["network"]["port"] == 104 and shown["network"]["ae_title"] == "FLAG"
    assert shown["processes"]["workers"] == 7
    assert shown["ae_table"]["VIEWER"] == {"host": "v", "port": 11, "tls": False}
    assert main(["config", "show", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["processes"]["workers"] == 7
    assert data["audit"] == as_dict(Config().audit)


def test_systemd_example_enables_the_production_settings() -> None:
    cfg = load(ROOT / "systemd" / "pacs-appliance.toml")
    assert cfg.audit.path.startswith("/var/log/pacs-appliance/")
    assert str(cfg.storage.data_dir) == "/var/lib/pacs-appliance"
    assert cfg.storage.min_free_bytes >= 1024**3 and not cfg.tracing.enabled
