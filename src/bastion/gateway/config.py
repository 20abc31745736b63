"""The gateway's YAML configuration, validated strictly (a typo is an error, not an ignored setting).

See docs/gateway.example.yaml for every setting with its default and meaning. Relative paths are resolved against the
directory of the configuration file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bastion._validate import pydantic_problems
from bastion.defenses.postprocessing import create_chain
from bastion.errors import BastionError, ConfigError

PostprocessSpec = str | dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    """One served name: a single model, or several (an ensemble answering with their mean probabilities).

    Paths may be any model file Bastion loads (safetensors with a card or ``arch``, ONNX, torch.export, TorchScript,
    skops); formats may be mixed in one ensemble. ``input_shape`` and ``bounds`` are needed where the file does not
    state them (TorchScript, bare safetensors); ``trust`` lists skops types to trust beyond skops' defaults.
    """

    paths: list[Path] = Field(min_length=1)
    input_shape: list[int] | None = None
    bounds: tuple[float, float] | None = None
    class_names: list[str] | None = None
    arch: str | None = None
    trust: list[str] = Field(default_factory=list)


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(8_388_608, ge=256)
    max_batch: int = Field(256, ge=1)


class AssessmentRateConfig(_Strict):
    """Limits for assessment (red-team) keys: a robustness assessment sends many queries on purpose."""

    requests_per_second: int = Field(200, ge=1)
    inputs_per_minute: int = Field(600_000, ge=1)
    inputs_per_day: int = Field(20_000_000, ge=1)


class RateConfig(_Strict):
    requests_per_second: int = Field(20, ge=1)
    inputs_per_minute: int = Field(6_000, ge=1)
    inputs_per_day: int = Field(200_000, ge=1)
    storage: str = "memory://"
    assessment: AssessmentRateConfig = AssessmentRateConfig()


class LevelPolicy(_Strict):
    """What a key at one threat level gets: its output chain (for keys allowed scores), its rate, or nothing."""

    postprocess: list[PostprocessSpec] = Field(default_factory=list)
    rate_factor: float = Field(1.0, gt=0, le=1)
    quarantine: bool = False

    @field_validator("postprocess")
    @classmethod
    def _chain_builds(cls, v: list[PostprocessSpec]) -> list[PostprocessSpec]:
        try:
            create_chain(v)
        except BastionError as exc:
            raise ValueError(str(exc)) from None
        return v


class LevelsConfig(_Strict):
    normal: LevelPolicy = LevelPolicy()
    elevated: LevelPolicy = LevelPolicy(postprocess=[{"name": "round", "decimals": 2}], rate_factor=0.5)
    under_attack: LevelPolicy = LevelPolicy(postprocess=["label_only"], rate_factor=0.1)


class ThreatConfig(_Strict):
    """How alerts move a key's threat level, and how it decays."""

    window_s: float = Field(600.0, gt=0)
    elevated_after: int = Field(1, ge=1, description="warnings within the window that make a key elevated")
    under_attack_after: int = Field(3, ge=1, description="warnings within the window that make it under attack")
    quiet_period_s: float = Field(900.0, gt=0, description="a level drops one step after this long without alerts")
    service_elevated_keys: int = Field(1, ge=1, description="keys under attack that make the service elevated")
    service_under_attack_keys: int = Field(3, ge=1, description="keys under attack that put the service under attack")


class ConfidenceConfig(_Strict):
    enabled: bool = True
    window: int = Field(200, ge=20)
    min_queries: int = Field(100, ge=20)
    p_value: float = Field(1e-6, gt=0, lt=1)


class ExtractionConfig(_Strict):
    enabled: bool = True
    min_queries: int = Field(100, ge=20)
    threshold: float = Field(0.85, gt=0, lt=1)
    max_history: int = Field(5_000, ge=100)


class ProbingConfig(_Strict):
    enabled: bool = True
    k: int = Field(5, ge=1)
    history: int = Field(1_000, ge=10)
    percentile: float = Field(0.1, gt=0, lt=50)
    hits: int = Field(10, ge=1, description="near-duplicate queries within the history that raise an alert")


class MonitorsConfig(_Strict):
    baseline: str | None = Field(None, description="dataset (its test split) to calibrate the monitors on")
    confidence: ConfidenceConfig = ConfidenceConfig()
    extraction: ExtractionConfig = ExtractionConfig()
    probing: ProbingConfig = ProbingConfig()


class AuditConfig(_Strict):
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"


class GatewayConfig(_Strict):
    models: dict[str, ModelEntry] = Field(min_length=1)
    database: str = "bastion-gateway.db"
    secret_file: Path | None = None
    threads: int = Field(1, ge=1, le=64)
    limits: LimitsConfig = LimitsConfig()
    rate: RateConfig = RateConfig()
    levels: LevelsConfig = LevelsConfig()
    threat: ThreatConfig = ThreatConfig()
    monitors: MonitorsConfig = MonitorsConfig()
    audit: AuditConfig = AuditConfig()

    @field_validator("models")
    @classmethod
    def _names(cls, v: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        import re

        bad = [n for n in v if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", n)]
        if bad:
            raise ValueError(f"model names must be 1-64 of letters, digits, '_', '.', '-', got {bad}")
        return v

    def resolved(self, base: Path) -> GatewayConfig:
        """Paths made absolute against ``base`` (the configuration file's directory)."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        models = {k: e.model_copy(update={"paths": [fix(p) for p in e.paths]}) for k, e in self.models.items()}
        database = self.database if "://" in self.database else str(fix(Path(self.database)))
        secret = fix(self.secret_file) if self.secret_file is not None else Path(database + ".secret")
        if "://" in self.database and self.secret_file is None:
            raise ConfigError("with a database URL, set secret_file (where the server's key-hashing secret lives)")
        monitors = self.monitors
        base_data = monitors.baseline
        if base_data is not None and not Path(base_data).is_absolute() and (base / base_data).exists():
            monitors = monitors.model_copy(update={"baseline": str((base / base_data).resolve())})
        return self.model_copy(
            update={"models": models, "database": database, "secret_file": secret, "monitors": monitors}
        )


def parse_config(data: Any, *, base: Path, source: str = "gateway configuration") -> GatewayConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping at its top level, got {type(data).__name__}")
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source} is not valid", problems=pydantic_problems(e)) from None
    if not math.isfinite(cfg.threat.window_s):
        raise ConfigError(f"{source}: threat.window_s must be finite")
    return cfg.resolved(base)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"gateway configuration {p} does not exist (see docs/gateway.example.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"gateway configuration {p} is not valid YAML: {e}") from None
    return parse_config(data, base=p.parent.resolve(), source=f"gateway configuration {p}")
