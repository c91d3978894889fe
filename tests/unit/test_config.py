"""Configuration: the README's complete example is the defaults, flags win over the file, and
bad input is refused with a message naming the setting."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from appliance.cli import build_parser, overrides
from appliance.config import Config, Durability, as_dict, from_mapping, load
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_is_exactly_the_defaults() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("Every setting, with its default:\n\n```toml\n", 1)[1].split("```", 1)[0]
    assert as_dict(from_mapping(tomllib.loads(block))) == as_dict(Config())


def test_systemd_example_loads() -> None:
    cfg = load(ROOT / "systemd" / "pacs-appliance.toml")
    assert cfg.network.port == 104 and cfg.network.require_called_ae


def test_flags_override_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[network]\nport = 2000\nae_title = "FILE"\n[storage]\ndurability = "os"\n')
    args = build_parser().parse_args(["serve", "--config", str(conf), "--port", "3000",
                                      "--durability", "fsync", "--http", "127.0.0.1:9999",
                                      "--data", str(tmp_path / "d"), "--workers", "3"])
    cfg = load(args.config, overrides(args))
    assert cfg.network.port == 3000 and cfg.network.ae_title == "FILE"
    assert cfg.storage.durability is Durability.FSYNC
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 9999)
    assert cfg.storage.data_dir == tmp_path / "d" and cfg.worker_count == 3


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[network]\nport = "x"\n', "[network] port"),
        ("[network]\nbogus = 1\n", "unknown setting 'bogus'"),
        ("[nope]\n", "unknown section 'nope'"),
        ('[storage]\ndurability = "sometimes"\n', "[storage] durability"),
        ('[network]\nae_title = "WAY_TOO_LONG_AE_TITLE"\n', "ae_title"),
        ("[network]\nmax_pdu_bytes = 100\n", "max_pdu_bytes"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path: Path, toml: str, message: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(conf)


# Values that make no sense, each refused with a ConfigError naming "[section] key".
_REJECTED = [
    ("network", "port", -1), ("network", "port", 65536),
    ("network", "max_pdu_bytes", 0), ("network", "max_pdu_bytes", -1),
    ("network", "max_pdu_bytes", 4095),
    ("network", "max_presentation_contexts", 0), ("network", "max_presentation_contexts", 129),
    ("network", "max_command_bytes", 0), ("network", "max_command_bytes", -5),
    ("network", "max_dataset_bytes", -1),
    ("network", "artim_timeout_s", 0.0), ("network", "artim_timeout_s", -1.0),
    ("network", "idle_timeout_s", -1.0), ("network", "dimse_timeout_s", -0.5),
    ("network", "max_pending_operations", -1),
    ("network", "max_associations", 0), ("network", "max_associations_per_ae", 0),
    ("network", "max_pending_connections", -1), ("network", "socket_buffer_bytes", 0),
    ("storage", "batch_window_ms", -1.0), ("storage", "batch_max", 0),
    ("storage", "index_map_size_bytes", 0), ("storage", "min_free_bytes", -1),
    ("processes", "workers", -1), ("processes", "graceful_timeout_s", -1.0),
    ("processes", "heartbeat_timeout_s", 0.0), ("processes", "heartbeat_timeout_s", -3.0),
    ("processes", "ring_bytes", 0), ("processes", "reply_ring_bytes", 4096),
    ("processes", "core_restart_limit", -1), ("processes", "core_restart_window_s", 0.0),
    ("http", "port", 70000),
    ("query", "max_results", -1), ("query", "move_pending_interval_s", -1.0),
    ("query", "move_connect_timeout_s", 0.0),
    ("workflow", "watch_interval_s", 0.0), ("workflow", "watch_settle_s", -1.0),
    ("workflow", "commitment_grace_s", -1.0), ("workflow", "commitment_retry_s", 0.0),
    ("workflow", "commitment_timeout_s", -1.0),
    ("tls", "port", 70000),
]
# Boundary values that do make sense (0 = none / unlimited / automatic where documented).
_ACCEPTED = [
    ("network", "port", 0), ("network", "max_pdu_bytes", 4096),
    ("network", "max_presentation_contexts", 128), ("network", "max_dataset_bytes", 0),
    ("network", "idle_timeout_s", 0.0), ("network", "dimse_timeout_s", 0.0),
    ("network", "max_pending_operations", 0), ("network", "max_pending_connections", 0),
    ("storage", "batch_window_ms", 0.0), ("storage", "index_map_size_bytes", 65536),
    ("storage", "min_free_bytes", 0), ("processes", "workers", 0),
    ("processes", "graceful_timeout_s", 0.0), ("processes", "core_restart_limit", 0),
    ("query", "max_results", 0), ("query", "move_pending_interval_s", 0.0),
    ("workflow", "watch_settle_s", 0.0), ("workflow", "commitment_grace_s", 0.0),
]


@pytest.mark.parametrize(("section", "key", "value"), _REJECTED)
def test_nonsense_values_are_refused_naming_the_key(section: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({section: {key: value}})
    assert f"[{section}] {key}" in str(err.value)


@pytest.mark.parametrize(("section", "key", "value"), _ACCEPTED)
def test_boundary_values_are_accepted(section: str, key: str, value: float) -> None:
    cfg = from_mapping({section: {key: value}})
    assert getattr(getattr(cfg, section), key) == value


def test_every_numeric_setting_has_a_range() -> None:
    """A new int/float setting must get a rule in validate() (here: in the tables above)."""
    checked = {(s, k) for s, k, _ in _REJECTED}
    own_rules = {("storage", "min_free_percent"), ("tracing", "sample_ratio")}
    for section, values in as_dict(Config()).items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert (section, key) in checked | own_rules, f"[{section}] {key} unchecked"


def test_ring_must_hold_two_pdus() -> None:
    with pytest.raises(ConfigError, match=r"\[processes\] ring_bytes"):
        from_mapping({"network": {"max_pdu_bytes": 4 * 1024 * 1024},
                      "processes": {"ring_bytes": 8 * 1024 * 1024}})


@pytest.mark.parametrize(("durability", "workers", "inline"), [
    ("batch", 1, True), ("fsync", 1, True), ("os", 1, True), ("os", 4, True),
    ("batch", 2, False), ("fsync", 3, False)])
def test_which_workers_commit_their_own_index_records(
        durability: str, workers: int, inline: bool) -> None:
    cfg = load(None, {"storage": {"durability": durability}})
    assert cfg.inline_index_for(workers) is inline
    off = load(None, {"storage": {"durability": durability},
                      "processes": {"inline_index": False}})
    assert off.inline_index_for(workers) is False
