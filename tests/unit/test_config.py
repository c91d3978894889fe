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
