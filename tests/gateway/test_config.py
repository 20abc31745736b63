"""Gateway configuration: the documented example is valid and complete; mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bastion.errors import ConfigError
from bastion.gateway.config import GatewayConfig, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "gateway.example.yaml"


def test_the_documented_example_parses_and_states_the_defaults(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.models["digits"].paths[0] == EXAMPLE.parent / "digits.safetensors"
    minimal = parse_config({"models": {"digits": {"paths": ["digits.safetensors"]}}}, base=EXAMPLE.parent)
    strip = {"models", "database", "secret_file"}
    assert cfg.model_dump(exclude=strip) == minimal.model_dump(exclude=strip)  # the example shows the defaults
    documented = yaml.safe_load(EXAMPLE.read_text())
    assert set(GatewayConfig.model_fields) - {"secret_file"} <= set(documented)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "models"),
        ({"models": {"d": {"paths": []}}}, "paths"),
        ({"models": {"d/x": {"paths": ["a"]}}}, "model names"),
        ({"models": {"d": {"paths": ["a"]}}, "rate": {"requests_per_second": 0}}, "requests_per_second"),
        (
            {"models": {"d": {"paths": ["a"]}}, "levels": {"elevated": {"postprocess": ["blur"]}}},
            "unknown postprocessor",
        ),
        ({"models": {"d": {"paths": ["a"]}}, "levels": {"normal": {"rate_factor": 2}}}, "rate_factor"),
        ({"models": {"d": {"paths": ["a"]}}, "colour": "red"}, "colour"),
        ({"models": {"d": {"paths": ["a"]}}, "database": "postgresql://h/db"}, "secret_file"),
        ({"models": {"d": {"paths": ["a"], "encrypted": "he.safetensors"}}}, "serve_encrypted"),
        ({"models": {"d": {"paths": ["a"]}}, "database_failure": {"mode": "open"}}, "mode"),
        ({"models": {"d": {"paths": ["a"]}}, "database_failure": {"key_grace_s": 0}}, "key_grace_s"),
        ([1], "mapping"),
    ],
)
def test_bad_configurations_are_named(data: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, base=tmp_path)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
