"""The gateway's YAML configuration, validated strictly (a typo is an error, not an ignored setting).

See docs/gateway.example.yaml for every setting with its default and meaning. Relative paths are resolved against the
directory of the configuration file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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

    paths: list[Path] = Field(default_factory=list)
    artifacts: list[str] = Field(
        default_factory=list,
        description="registry artifacts to serve (NAME for its newest version, NAME@VERSION or an id); each is "
        "verified against registry.trust before it loads, at start and on every reload",
    )
    input_shape: list[int] | None = None
    bounds: tuple[float, float] | None = None
    class_names: list[str] | None = None
    arch: str | None = None
    trust: list[str] = Field(default_factory=list)
    serve_encrypted: bool = Field(
        False,
        description="answer /predict-encrypted for this model. Off by default: the gateway cannot see encrypted "
        "inputs, so no monitor watches that channel (31 queries recover a 30-feature linear model exactly, with no "
        "alert; docs/encrypted-inference.md); turn it on for models whose extraction you accept",
    )
    encrypted: Path | None = Field(
        None,
        description="what /predict-encrypted evaluates: the output of `bastion encrypt-model` for this model (needed "
        "for a polynomial MLP; a linear model is read from the served file when this is not set)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if bool(self.paths) == bool(self.artifacts):
            raise ValueError("give a model either paths (files) or artifacts (registry references), not both or none")
        if self.encrypted is not None and not self.serve_encrypted:
            raise ValueError(
                "encrypted names a converted model but serve_encrypted is false: set serve_encrypted: true"
            )
        return self


class RegistryConfig(_Strict):
    """Serve only verified registry artifacts: every model must name ``artifacts``, each verified (files, manifest,
    lineage and an OpenSSF model-signing signature by one of ``trust``) at start and on reload."""

    path: Path
    trust: list[Path] = Field(default_factory=list, description="trusted signers: PEM public keys, or folders of them")
    trust_chain: list[Path] = Field(
        default_factory=list, description="certificate mode: PEM root/intermediate certificates signers chain to"
    )

    @model_validator(mode="after")
    def _someone(self) -> RegistryConfig:
        if not self.trust and not self.trust_chain:
            raise ValueError("registry needs trusted signers: trust (public keys) or trust_chain (certificates)")
        return self


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(8_388_608, ge=256)
    max_batch: int = Field(256, ge=1)
    max_encrypted_bytes: int = Field(
        167_772_160,
        ge=65_536,
        description="largest encrypted body (a public context, or a query of ciphertexts: 4,096 inputs of 784 "
        "features take about 103 MB)",
    )
    auth_failures_per_minute: int = Field(30, ge=1, description="failed authentications an address may make")


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
    service_distinct_clients: int = Field(
        1, ge=1, description="client addresses the keys under attack must come from to raise the service level"
    )


class MonitorsConfig(BaseModel):
    """``baseline`` (what clean inputs look like) and one entry per registered monitor (``bastion.monitors.MONITORS``),
    each validated by that monitor's own settings model; a name no monitor is registered under is an error."""

    model_config = ConfigDict(extra="allow", frozen=True)
    baseline: str | None = Field(None, description="dataset (name or file) to calibrate the monitors on")

    @model_validator(mode="before")
    @classmethod
    def _from_registry(cls, data: Any) -> Any:
        from bastion.monitors import MONITORS

        if not isinstance(data, dict):
            return data
        unknown = sorted(set(data) - {"baseline"} - set(MONITORS.names()))
        if unknown:
            raise ValueError(f"unknown monitor(s) {unknown}; registered: {', '.join(MONITORS.names())}")
        out: dict[str, Any] = {"baseline": data.get("baseline")}
        for name in MONITORS.names():
            given = data.get(name, {})
            if isinstance(given, BaseModel):
                given = given.model_dump()
            try:
                out[name] = MONITORS.get(name).settings.model_validate(given or {})
            except ValidationError as e:
                raise ValueError(f"{name}: " + "; ".join(pydantic_problems(e))) from None
        return out

    def settings(self, name: str) -> Any:
        """The validated settings of monitor ``name``."""
        return getattr(self, name)


class MahalanobisConfig(_Strict):
    """Mahalanobis distance over the penultimate features of the model's first torch member."""

    enabled: bool = True
    layer: str | None = Field(None, description="module whose input are the features (default: the last Linear)")
    shrinkage: float = Field(1e-3, ge=0)


class SqueezingConfig(_Strict):
    """Feature squeezing: change of the model's probabilities under bit-depth reduction (and a median filter)."""

    enabled: bool = True
    bit_depth: int | None = Field(None, ge=1, le=8, description="None: 4, or 2 for images under 16 px")
    median: int = Field(
        0,
        ge=0,
        description="median-filter window for images; 0: off (it lowered detection on Fashion-MNIST, bench/RESULTS.md)",
    )


class ReconstructionConfig(_Strict):
    """MagNet's autoencoder reconstruction error (trained at startup on the baseline, then cached)."""

    enabled: bool = True
    epochs: int = Field(10, ge=1, le=1000)


class DetectorsConfig(_Strict):
    """Input detectors in front of each served model: every detector's scores go into the audit event, the
    ``adversarial_inputs`` monitor turns an unusual share of a key's flagged inputs into an alert, and ``reject``
    refuses any request with a flagged input (422)."""

    enabled: bool = True
    fpr: float = Field(0.05, gt=0, lt=0.5, description="false-positive rate each detector's threshold is set at")
    reject: bool = False
    mahalanobis: MahalanobisConfig = MahalanobisConfig()
    squeezing: SqueezingConfig = SqueezingConfig()
    reconstruction: ReconstructionConfig = ReconstructionConfig()


class ServerConfig(_Strict):
    """How connections are served: deadlines and a cap that close slow or idle clients (slowloris), and whether to
    trust a proxy's forwarded-for headers (off: the audited client address is the connecting one)."""

    header_timeout_s: float = Field(10.0, gt=0, le=600, description="to send a request's headers, from connecting")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="to send a whole body once the headers are in")
    keep_alive_s: float = Field(5.0, gt=0, le=600, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(
        200,
        ge=1,
        description="open connections (a new one included) or requests in flight at which new requests get 503",
    )
    proxy_headers: bool = Field(False, description="trust X-Forwarded-For / -Proto from forwarded_allow_ips")
    forwarded_allow_ips: list[str] = Field(default_factory=list, description="the proxies' addresses")

    @model_validator(mode="after")
    def _proxies(self) -> ServerConfig:
        if self.proxy_headers and not self.forwarded_allow_ips:
            raise ValueError("proxy_headers needs forwarded_allow_ips: the address(es) of the proxy in front")
        return self


class SyncConfig(_Strict):
    """Threat state shared by replicas over Redis pub/sub (bastion.gateway.sync); off when ``url`` is null."""

    url: str | None = Field(None, description="redis://host:6379/0: the replicas' pub/sub server")
    channel: str = Field("bastion-gateway", min_length=1, max_length=200)
    share_monitors: bool = Field(
        True,
        description="publish every served request to the other replicas' monitors, so per-key monitor state is "
        "the service's, not this replica's (costs each replica the monitoring of all traffic)",
    )


class AuditConfig(_Strict):
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"


class DatabaseFailureConfig(_Strict):
    """What a replica does while its database is down (bastion.gateway.spool)."""

    mode: Literal["refuse", "serve"] = Field(
        "refuse",
        description="refuse: answer 503 (fail-closed, the default); serve: answer keys verified within key_grace_s "
        "and keep every audit event, alert and level change in a local spool until the database is back (fail-open)",
    )
    spool_dir: Path | None = Field(None, description="serve: where the spool lives (default: beside secret_file)")
    key_grace_s: float = Field(
        600.0, gt=0, le=86_400, description="serve: how long a key verified before the outage stays accepted"
    )


class IntelConfig(_Strict):
    """Imported threat intelligence (``bastion intel import``): how often replicas look for new indicators, and what
    a match does beyond its critical alert."""

    refresh_s: float = Field(5.0, gt=0, le=3600, description="how often the store is checked for new indicators")
    reject_inputs: bool = Field(True, description="refuse an input that matches a known hostile fingerprint (422)")
    reject_clients: bool = Field(False, description="refuse requests from listed client addresses (403)")


class GatewayConfig(_Strict):
    models: dict[str, ModelEntry] = Field(min_length=1)
    database: str = "bastion-gateway.db"
    secret_file: Path | None = None
    threads: int = Field(1, ge=1, le=64)
    runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime",
        description="what runs the served torch models, the detectors and the similarity encoder without gradients: "
        "onnxruntime (exported at startup, outputs checked equal to PyTorch's; 2-3x less CPU per request for small "
        "nets) or torch; anything that does not export stays on torch with a log line",
    )
    limits: LimitsConfig = LimitsConfig()
    rate: RateConfig = RateConfig()
    levels: LevelsConfig = LevelsConfig()
    threat: ThreatConfig = ThreatConfig()
    monitors: MonitorsConfig = MonitorsConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    audit: AuditConfig = AuditConfig()
    server: ServerConfig = ServerConfig()
    registry: RegistryConfig | None = None
    sync: SyncConfig = SyncConfig()
    database_failure: DatabaseFailureConfig = DatabaseFailureConfig()
    intel: IntelConfig = IntelConfig()

    @model_validator(mode="after")
    def _sources(self) -> GatewayConfig:
        files = [n for n, e in self.models.items() if e.paths]
        artifacts = [n for n, e in self.models.items() if e.artifacts]
        if self.registry is not None and files:
            raise ValueError(
                f"with a registry configured the gateway serves only verified registry artifacts; models {files} "
                "name files: register them (`bastion registry add`) and list them under artifacts"
            )
        if self.registry is None and artifacts:
            raise ValueError(f"models {artifacts} name registry artifacts; configure registry (path and trust)")
        return self

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

        models = {
            k: e.model_copy(
                update={"paths": [fix(p) for p in e.paths], "encrypted": fix(e.encrypted) if e.encrypted else None}
            )
            for k, e in self.models.items()
        }
        database = self.database if "://" in self.database else str(fix(Path(self.database)))
        secret = fix(self.secret_file) if self.secret_file is not None else Path(database + ".secret")
        if "://" in self.database and self.secret_file is None:
            raise ConfigError("with a database URL, set secret_file (where the server's key-hashing secret lives)")
        monitors = self.monitors
        base_data = monitors.baseline
        if base_data is not None and not Path(base_data).is_absolute() and (base / base_data).exists():
            monitors = monitors.model_copy(update={"baseline": str((base / base_data).resolve())})
        registry = self.registry
        if registry is not None:
            registry = registry.model_copy(
                update={"path": fix(registry.path), "trust": [fix(p) for p in registry.trust]}
            )
        failure = self.database_failure
        spool = fix(failure.spool_dir) if failure.spool_dir is not None else secret.parent / "bastion-spool"
        return self.model_copy(
            update={
                "models": models,
                "database": database,
                "secret_file": secret,
                "monitors": monitors,
                "registry": registry,
                "database_failure": failure.model_copy(update={"spool_dir": spool}),
            }
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
