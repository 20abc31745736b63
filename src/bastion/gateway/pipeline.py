"""The gateway's request pipeline, free of any web framework: the FastAPI app and tests call the same code.

    authenticate -> quarantine check -> burst limit -> parse and validate -> input budget -> model(s)
      -> monitors -> threat level -> postprocess (per scope and level) -> audit event -> response

The monitors run before postprocessing so that a request which trips an alert is already answered at the new
level. Every request, refused or answered, writes exactly one audit event, committed before the caller gets the
answer; if that write fails the request is refused (503) rather than answered unaudited.

The steps are written once, as a generator (``_predict_steps``) that yields its arithmetic (``NumericJob``: the
networks, which run in onnxruntime without the GIL) and is resumed with the result: :meth:`Gateway.predict` runs it
in the calling thread, :meth:`Gateway.predict_async` on a worker thread (``bastion.gateway.batching``), so the HTTP
app's event loop serves other requests meanwhile. A request cancelled while it waits is audited too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import itertools
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import torch
from sqlalchemy.exc import SQLAlchemyError

from bastion.defenses.ensemble import Ensemble
from bastion.defenses.postprocessing import Chain, Release, create_chain
from bastion.detectors.screen import Screen
from bastion.gateway.audit import AuditLog, input_hash
from bastion.gateway.auth import AuthError, KeyManager, Principal, Scope
from bastion.gateway.batching import NumericJob, NumericResult, NumericWorker
from bastion.gateway.config import GatewayConfig, LevelPolicy
from bastion.gateway.errors import GatewayError
from bastion.gateway.group_commit import AuditWriter
from bastion.gateway.incidents import IncidentManager
from bastion.gateway.intel import ClientWatch, IntelWatch, bundle_summary, carries_fingerprints, known_inputs
from bastion.gateway.metrics import GatewayMetrics
from bastion.gateway.ratelimit import AuthFailureLimiter, RateLimiter
from bastion.gateway.spool import Spool
from bastion.gateway.store.base import AuditEvent, IntelRecord, LevelChange, Store
from bastion.gateway.validation import parse_body, to_batch
from bastion.monitors.base import Alert, Monitor, QueryEvent
from bastion.monitors.known_inputs import KnownInputsMonitor
from bastion.monitors.threat import LevelTransition, ThreatLevel, ThreatSettings, ThreatTracker

T = TypeVar("T")
CANCELLED_STATUS = 499  # no answer was sent: the request was cancelled while it waited (nginx's "client closed")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictRequest:
    token: str | None
    model: str
    body: bytes
    content_type: str | None
    client: str | None = None
    principal: Principal | None = None  # already authenticated from the headers (the body was read after)


@dataclass(frozen=True)
class PredictReply:
    request_id: str
    model: str
    labels: list[int]
    release: str
    threat_level: str
    scores: list[list[float]] | None = None
    top_k: list[list[dict[str, float | int]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "model": self.model,
            "labels": self.labels,
            "release": self.release,
            "threat_level": self.threat_level,
        }
        if self.scores is not None:
            out["scores"] = self.scores
        if self.top_k is not None:
            out["top_k"] = self.top_k
        return out


@dataclass
class _Trace:
    """What the audit event of one request will say; filled in as the request moves through the pipeline."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    key_id: str | None = None
    model: str | None = None
    n_inputs: int = 0
    input_hash: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    body: bytes | None = None


def _compile_for_serving(
    models: dict[str, Ensemble], screens: dict[str, Screen], monitors: dict[str, list[Any]], threads: int
) -> None:
    """Move every gradient-free network of the request path to onnxruntime (``bastion.models.runtime``): the served
    torch members (with the layers Mahalanobis reads as extra outputs), the detectors' own networks and the probing
    monitor's similarity encoder, then each screen with its model and the monitors' features as one graph (one call
    per request). Whatever does not export stays on PyTorch or on separate calls (logged)."""
    from bastion.detectors.input import Mahalanobis
    from bastion.models.torch import TorchClassifier

    for name, model in models.items():
        detectors = screens[name].detectors if name in screens else ()
        for member in model.members:
            if isinstance(member, TorchClassifier):
                taps = [d.tap.target for d in detectors if isinstance(d, Mahalanobis) and d.model is member]
                member.compile_inference(taps, threads=threads)
        for obj in (*detectors, *(getattr(m, "embed", None) for m in monitors.get(name, []))):
            compile_inference = getattr(obj, "compile_inference", None)
            if callable(compile_inference):
                compile_inference(threads=threads)
        riders = _riders(monitors.get(name, []), model.spec.input_shape)
        if name in screens and (len(screens[name]) or riders):  # last: checked against the paths compiled above
            screens[name].compile_inference(model, threads=threads, riders=riders)


def _riders(monitors: list[Any], input_shape: tuple[int, ...]) -> dict[str, torch.nn.Module]:
    """The monitors' ``prepare`` as traceable modules, by monitor name: the screen's graph computes them with the
    model, one call for all (measured on the gateway's path: the encoder and the fingerprint in separate calls took
    about 0.5 ms a request)."""
    out = {}
    for m in monitors:
        make = getattr(m, "prepare_module", None)
        module = make(tuple(input_shape)) if callable(make) else None
        if module is not None:
            out[m.name] = module
    return out


def _calibrate(
    config: GatewayConfig, models: dict[str, Ensemble], sources: dict[str, list[Any]]
) -> tuple[dict[str, list[Monitor]], dict[str, Screen]]:
    """Monitors and input detectors for ``models``, calibrated on clean inputs (when any is enabled)."""
    from pathlib import Path

    from bastion.gateway.monitoring import build_monitors, clean_inputs
    from bastion.gateway.screening import build_screen
    from bastion.monitors import MONITORS

    needed = config.detectors.enabled or any(config.monitors.settings(m).enabled for m in MONITORS.names())
    clean = (
        {
            name: clean_inputs(config, name, model, Path(sources[name][0].path) if sources.get(name) else None)
            for name, model in models.items()
        }
        if needed
        else {}
    )
    built = build_monitors(config, models, clean)
    screens = {name: build_screen(config.detectors, name, models[name], x) for name, x in clean.items()}
    return built, screens


def record_refused_start(config: GatewayConfig, name: str, exc: Any) -> None:
    """Log, audit and open an incident for a served model refused at start (the store is opened for that)."""
    from bastion.gateway.admin import open_admin
    from bastion.gateway.artifacts import artifact_alert

    problems = list(exc.problems) or [exc.message]
    log.error("refusing to start: model %s: %s: %s", name, exc.message, "; ".join(problems))
    now = time.time()
    handle = open_admin(config)
    try:
        handle.audit.record_system(
            "refused:model_refused",
            {"model": name, "problems": problems, "when": "start"},
            now=now,
            status=409,
            model=name,
        )
        handle.incidents.record_alert(artifact_alert(name, exc.message, problems, now))
    finally:
        handle.close()


class Gateway:
    """Authentication, limits, validation, models, monitors, threat levels, incidents and audit, as one object."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        models: dict[str, Ensemble],
        monitors: dict[str, list[Monitor]] | None = None,
        *,
        screens: dict[str, Screen] | None = None,
        secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.models = models
        self.monitors = {name: list((monitors or {}).get(name, [])) for name in models}
        self.screens = {name: (screens or {}).get(name, Screen(())) for name in models}
        self.clock = clock
        failure = config.database_failure
        self.spool: Spool | None = None
        if failure.mode == "serve":
            assert failure.spool_dir is not None  # resolved() sets it
            self.spool = Spool(failure.spool_dir)
        self.keys = KeyManager(store, secret, grace_s=failure.key_grace_s if self.spool is not None else None)
        r = config.rate
        self.limiter = RateLimiter(
            r.requests_per_second, r.inputs_per_minute, r.inputs_per_day, r.storage, on_change=self._degradation
        )
        a = r.assessment
        self.assessment_limiter = RateLimiter(
            a.requests_per_second, a.inputs_per_minute, a.inputs_per_day, r.storage, on_change=self._degradation
        )
        self.auth_failures = AuthFailureLimiter(config.limits.auth_failures_per_minute, r.storage)
        t = config.threat
        self.threat = ThreatTracker(
            ThreatSettings(
                t.window_s,
                t.elevated_after,
                t.under_attack_after,
                t.quiet_period_s,
                t.service_elevated_keys,
                t.service_under_attack_keys,
                t.service_distinct_clients,
            )
        )
        self.incidents = IncidentManager(store)
        self.audit = AuditLog(store, self.spool)
        self.audit.on_spooled = self._store_down
        if "://" in config.database:  # a database server: group commit (bastion.gateway.group_commit)
            self.audit.writer = AuditWriter(store)
        self.metrics = GatewayMetrics()
        self._chains: dict[ThreatLevel, Chain] = {
            level: create_chain(self._policy(level).postprocess) for level in ThreatLevel
        }
        self._labels_only = create_chain(["label_only"])
        self._monitor_lock = threading.Lock()
        self.numeric = NumericWorker(self.compute)
        self.started = clock()
        self._last_sweep = self.started
        self.sources: dict[str, list[Any]] = {}  # where each served model came from (gateway.artifacts.Source)
        self.store_failed_at: float | None = None  # when the database last failed a request (for /healthz)
        self.bus: Any = None  # the replicas' state bus (bastion.gateway.sync.StateBus), when config.sync names one
        self._encrypted: dict[str, Any] = {}  # model name -> EncryptedLinearServer, built on first use
        self._encrypted_owner: dict[str, set[str]] = {}  # context id -> the keys that registered it
        self.monitored = bool(monitors)
        self._database_down = False  # fail-open: the store failed and records wait in the spool
        self._drainer: threading.Thread | None = None
        self._closing = threading.Event()
        if self.spool is not None:
            self._drain()  # orphaned spools of replicas that died before the database came back
            self._drainer = threading.Thread(target=self._drain_loop, name="bastion-spool-drain", daemon=True)
            self._drainer.start()
        self._seq = itertools.count()  # numbers this replica's observations (alert claims name them)
        self._fingerprints: dict[str, dict[str, str]] = {}  # model -> monitor -> digest of its prepare
        self.clients = ClientWatch()  # listed client addresses (imported intelligence)
        self._intel: list[IntelRecord] = []
        self.intel_watch = IntelWatch(store, self._set_intel, config.intel.refresh_s)

    @classmethod
    def from_config(cls, config: GatewayConfig, *, monitors: bool = True) -> Gateway:
        """Open the store, the server secret and every served model named in ``config``, with calibrated monitors.

        A registry artifact that fails verification stops the start: the refusal is logged, audited and opened as
        an incident (the store is opened for that alone), and the error names every reason."""
        from bastion.errors import IntegrityError
        from bastion.gateway.artifacts import load_members

        torch.set_num_threads(config.threads)
        models, sources = {}, {}
        for name, entry in config.models.items():  # first, so a bad model leaves no database or secret file behind
            try:
                members, sources[name] = load_members(config, entry)
            except IntegrityError as exc:
                record_refused_start(config, name, exc)
                raise
            models[name] = Ensemble(members)
        built = None
        screens: dict[str, Screen] = {}
        if monitors:  # before the store too: a monitor that cannot be calibrated leaves nothing behind
            built, screens = _calibrate(config, models, sources)
        if config.runtime == "onnxruntime":
            _compile_for_serving(models, screens, built or {}, config.threads)
        from bastion.gateway.admin import open_store

        store, secret = open_store(config)
        gateway = cls(config, store, models, built, screens=screens, secret=secret)
        gateway.sources = sources
        try:
            gateway.intel_watch.start()
            gateway.start_sync()
        except BaseException:
            gateway.close()
            raise
        return gateway

    def reload_model(self, name: str) -> dict[str, Any]:
        """Load ``name`` again from its files or registry artifacts (a NAME reference picks up a newer version).

        A registry artifact is verified first; one that fails is refused, the verified model already in memory
        keeps serving, and the refusal is logged and opened as an incident (the admin request's audit event holds
        the reasons). A changed model gets freshly calibrated monitors and detectors; per-key monitor history for
        it starts again, and the reply says so."""
        from bastion.errors import BastionError, IntegrityError
        from bastion.gateway.artifacts import load_members

        entry = self.config.models.get(name)
        if entry is None:
            raise GatewayError("unknown_model", f"no model named {name!r}; served: {', '.join(self.models)}")
        try:
            members, sources = load_members(self.config, entry)
        except IntegrityError as exc:
            problems = list(exc.problems) or [exc.message]
            self._open_artifact_incident(name, exc.message, problems)
            log.error("refused to reload %s: %s", name, "; ".join(problems))
            raise GatewayError(
                "model_refused",
                f"model {name} was not reloaded: {exc.message}: {'; '.join(problems)}. The verified version loaded "
                "before keeps serving",
                audit={"model": name, "problems": problems},
            ) from None
        except BastionError as exc:
            log.error("could not reload %s: %s", name, exc.message)
            raise GatewayError(
                "model_refused",
                f"model {name} was not reloaded: {' '.join(str(exc).split())}. The version loaded before keeps serving",
                audit={"model": name, "problems": [exc.message]},
            ) from None
        old = self.sources.get(name, [])
        rollback = [
            f"{n.name} would go back from version {o.version} to {n.version}: the registry no longer lists the newer "
            "version (a rollback); pin NAME@VERSION in the configuration to serve an older one on purpose"
            for o, n in zip(old, sources, strict=False)
            if o.name is not None and o.name == n.name and (n.version or 0) < (o.version or 0)
        ]
        if rollback:
            self._open_artifact_incident(name, "reload refused: rollback to an older version", rollback)
            log.error("refused to reload %s: %s", name, "; ".join(rollback))
            raise GatewayError(
                "model_refused",
                f"model {name} was not reloaded: {'; '.join(rollback)}. The version loaded before keeps serving",
                audit={"model": name, "problems": rollback},
            )
        changed = [s.sha256 for s in sources] != [s.sha256 for s in old]
        notes = []
        if changed:
            model = Ensemble(members)
            built: dict[str, list[Monitor]] = {}
            screens: dict[str, Screen] = {}
            if self.monitored:
                built, screens = _calibrate(self.config, {name: model}, {name: sources})
            if self.config.runtime == "onnxruntime":
                _compile_for_serving({name: model}, screens, built, self.config.threads)
            with self._monitor_lock:
                self.models[name] = model
                self.screens[name] = screens.get(name, Screen(()))
                self.monitors[name] = list(built.get(name, []))
                if name in self._fingerprints:  # replicas reuse each other's prepared features only when these agree
                    self._fingerprints[name] = self._prepare_fingerprints(name)
            self._set_intel(self._intel)
            notes.append("the model changed: its monitors and detectors were calibrated again (per-key history reset)")
        self.sources[name] = sources
        return {"model": name, "changed": changed, "sources": [s.to_dict() for s in sources], "notes": notes}

    # ---- imported threat intelligence (bastion.gateway.intel)
    def _set_intel(self, records: list[IntelRecord]) -> None:
        """Hand stored indicators to every model's ``known_inputs`` monitor and the client list."""
        now = self.clock()
        inputs = known_inputs(records, now)
        self._intel = list(records)
        for monitors in self.monitors.values():
            for m in monitors:
                if isinstance(m, KnownInputsMonitor):
                    m.set_indicators(inputs)
        self.clients.set_records(records, now)

    def intel_status(self) -> dict[str, Any]:
        """What imported intelligence is in force: each bundle (who shared it, when, how many indicators of each
        kind); per model, fingerprint indicators active, narrowed or dropped against the model's clean data; and
        the listed client networks."""
        per_model = {
            name: m.summary() for name, ms in self.monitors.items() for m in ms if isinstance(m, KnownInputsMonitor)
        }
        return {"bundles": bundle_summary(self._intel), "models": per_model, "client_networks": len(self.clients)}

    # ---- encrypted inference (CKKS): the gateway computes on ciphertexts it cannot read
    def _encrypted_server(self, name: str) -> Any:
        """The encrypted evaluator of model ``name``, built on first use; a model that is not linear is refused."""
        from bastion.defenses.encrypted import EncryptedLinearServer, linear_weights
        from bastion.errors import ConfigError

        with self._monitor_lock:
            server = self._encrypted.get(name)
            if server is not None:
                return server
            model = self.models.get(name)
            if model is None:
                raise GatewayError("unknown_model", f"no model named {name!r}; served: {', '.join(self.models)}")
            if not self.config.models[name].serve_encrypted:
                raise GatewayError(
                    "encrypted_off",
                    f"model {name} is not served encrypted; the operator can enable it with serve_encrypted: true in "
                    "its entry (off by default: encrypted queries are invisible to the gateway's monitors)",
                )
            converted = self.config.models[name].encrypted
            if converted is not None:
                server = self._converted_server(name, converted, model)
                self._encrypted[name] = server
                return server
            if len(model) != 1:
                raise GatewayError(
                    "not_convertible",
                    f"model {name} is an ensemble of {len(model)}; encrypted inference serves one linear model",
                )
            try:
                weights = linear_weights(model.members[0], model.spec.input_shape)
            except ConfigError as exc:
                raise GatewayError(
                    "not_convertible", f"model {name} cannot be served encrypted: {exc.message}"
                ) from None
            server = EncryptedLinearServer(
                weights, bounds=model.spec.bounds, max_query_bytes=self.config.limits.max_encrypted_bytes
            )
            self._encrypted[name] = server
            return server

    def _converted_server(self, name: str, path: Any, model: Ensemble) -> Any:
        """The encrypted evaluator for an `encrypt-model` output, checked to be a conversion of the served file."""
        from bastion.defenses.encrypted import EncryptedLinearServer, EncryptedMLPServer, LinearWeights
        from bastion.defenses.encrypted.storage import load_converted
        from bastion.errors import ArtifactError

        try:
            weights, info = load_converted(path)
        except ArtifactError as exc:
            raise GatewayError("not_convertible", f"model {name}: {exc.message}") from None
        served = [s.sha256 for s in self.sources.get(name, [])]
        if served and info.get("sha256") not in served:
            raise GatewayError(
                "not_convertible",
                f"model {name}: {path.name} was converted from another file (sha256 {str(info.get('sha256'))[:12]}…) "
                "than the one served; run `bastion encrypt-model` on the served file again",
            )
        if weights.n_features != int(math.prod(model.spec.input_shape)) or weights.n_outputs != model.spec.num_classes:
            raise GatewayError("not_convertible", f"model {name}: {path.name} does not match the served model's shape")
        limit = self.config.limits.max_encrypted_bytes
        if isinstance(weights, LinearWeights):
            return EncryptedLinearServer(weights, bounds=model.spec.bounds, max_query_bytes=limit)
        return EncryptedMLPServer(weights, bounds=model.spec.bounds, max_query_bytes=limit)

    def _encrypted_principal(self, token: str | None, trace: _Trace) -> Principal:
        principal = self.keys.authenticate(token)
        trace.key_id = principal.key_id
        if not principal.allows(Scope.PREDICT_SCORES):
            raise GatewayError(
                "forbidden",
                "encrypted answers are the model's full logits, which only a predict:scores key may receive",
            )
        level = self.level_for(principal)
        if level is not ThreatLevel.NORMAL:
            raise GatewayError(
                "forbidden",
                f"this key's answers are degraded at threat level {level.label}, and encrypted logits cannot be "
                "rounded or cut to labels: encrypted prediction is refused until the level is normal again",
            )
        return principal

    def register_encrypted_context(
        self, token: str | None, name: str, body: bytes, client: str | None
    ) -> dict[str, Any]:
        """Register a client's public CKKS context for model ``name`` (audited; the context is tied to the key)."""
        from bastion.errors import InputValidationError

        trace = _Trace()
        trace.model = name
        trace.input_hash = hashlib.sha256(body).hexdigest()

        def run() -> dict[str, Any]:
            principal = self._encrypted_principal(token, trace)
            server = self._encrypted_server(name)
            try:
                cid = server.register(body)
            except InputValidationError as exc:
                raise GatewayError("bad_request", exc.message) from None
            self._encrypted_owner.setdefault(cid, set()).add(principal.key_id)
            trace.output = {"encrypted": {"context_id": cid, "bytes_in": len(body)}}
            return {"model": name, "context_id": cid}

        return self._audited(trace, "encrypted_context", client, run)

    def predict_encrypted(self, token: str | None, name: str, body: bytes, client: str | None) -> bytes:
        """Evaluate an encrypted query (``bastion.defenses.encrypted.wire`` bytes) and return the encrypted answer.

        Authentication, the predict:scores scope, the key's threat level, request and input rate limits apply as
        to any prediction; the audit event records the packing, sizes and timings, never anything decryptable.
        The monitors that need plaintext (confidence, drift, query patterns, detectors) cannot see these requests."""
        from bastion.defenses.encrypted.wire import pack_answer, unpack_query
        from bastion.errors import InputValidationError

        trace = _Trace()
        trace.model = name
        trace.input_hash = hashlib.sha256(body).hexdigest()

        def run() -> bytes:
            principal = self._encrypted_principal(token, trace)
            policy = self._policy(self.level_for(principal))
            limiter = self.assessment_limiter if principal.assessment else self.limiter
            decision = limiter.charge_request(principal.key_id, policy.rate_factor)
            if not decision.allowed:
                raise GatewayError("rate_limited", decision.message, headers={"Retry-After": str(decision.retry_after)})
            server = self._encrypted_server(name)
            try:
                query = unpack_query(body)
            except InputValidationError as exc:
                raise GatewayError("bad_request", exc.message) from None
            if principal.key_id not in self._encrypted_owner.get(query.context_id, set()):
                raise GatewayError(
                    "bad_request",
                    f"context {query.context_id[:12]}… was not registered by this key for {name}; POST it to "
                    f"/v1/models/{name}/encrypted-contexts first",
                )
            trace.n_inputs = query.n
            decision = limiter.charge_inputs(principal.key_id, query.n, policy.rate_factor)
            if not decision.allowed:
                headers = {} if decision.too_large else {"Retry-After": str(decision.retry_after)}
                raise GatewayError(
                    "over_budget" if decision.too_large else "rate_limited", decision.message, headers=headers
                )
            try:
                answer = server.evaluate(query)
            except InputValidationError as exc:
                raise GatewayError("bad_request", exc.message) from None
            packed = pack_answer(answer)
            trace.output = {
                "encrypted": {
                    "regime": query.regime,
                    "context_id": query.context_id,
                    "bytes_in": len(body),
                    "bytes_out": len(packed),
                    "server_ms": round(answer.seconds * 1000, 2),
                }
            }
            self.metrics.inputs.labels(name).inc(query.n)
            return packed

        return self._audited(trace, "encrypted", client, run)

    def _open_artifact_incident(self, name: str, message: str, problems: list[str]) -> None:
        from bastion.gateway.artifacts import artifact_alert

        self.incidents.record_alert(artifact_alert(name, message, problems, self.clock()))

    def close(self) -> None:
        self._closing.set()
        self.intel_watch.stop()
        if self._drainer is not None:
            self._drainer.join(timeout=5.0)
        if self.bus is not None:
            self.bus.close()
        self.numeric.close()
        if self.audit.writer is not None:
            self.audit.writer.close()
        if self.spool is not None:
            self._drain()
            self.spool.close()
        self.store.close()

    # ---- fail-open (database_failure.mode: serve): what the database missed waits in the spool
    DRAIN_EVERY_S = 2.0

    def _durably(self, kind: str, record: dict[str, Any], write: Callable[[], Any]) -> Any:
        """``write()`` to the store; fail-open, a store failure spools ``record`` instead (returns None)."""
        try:
            return write()
        except (sqlite3.Error, SQLAlchemyError):
            if self.spool is None:
                raise
            self.spool.write(kind, record)
            self._store_down()
            return None

    def _store_down(self) -> None:
        self.store_failed_at = time.monotonic()
        if not self._database_down:
            self._database_down = True
            self.metrics.degraded.labels("database").set(1)
            log.error(
                "database unavailable: serving keys verified in the last %g s, spooling to %s",
                self.config.database_failure.key_grace_s,
                self.spool.path if self.spool else None,
            )
            self.audit.record_system(
                "service:degraded",
                {"component": "database", "reason": "database unavailable; serving fail-open"},
                now=self.clock(),
            )

    def _replay(self, kind: str, record: dict[str, Any]) -> None:

        if kind == "audit":
            self.store.append(AuditEvent(**{k: v for k, v in record.items() if k != "event_id"}))
        elif kind == "alert":
            self.incidents.record_alert(Alert.from_dict(record))
        elif kind == "level":
            self.store.add_level_change(LevelChange(**record))
        elif kind == "action":
            self.incidents.add_action(record["key_id"], record["action"], record["detail"], record["time"])
        else:
            log.error("spool: unknown record kind %r skipped", kind)

    def _drain(self) -> None:
        if self.spool is None:
            return
        try:
            n = self.spool.drain(self._replay)
        except Exception as e:  # the database is still down: try again later
            if n_left := self.spool.pending():
                log.debug("spool: %d records wait for the database (%s)", n_left, e)
            return
        if self._database_down and self.spool.pending() == 0:
            self._database_down = False
            self.store_failed_at = None
            self.metrics.degraded.labels("database").set(0)
            log.warning("database back: %d spooled records replayed", n)
            self.audit.record_system("service:restored", {"component": "database", "replayed": n}, now=self.clock())

    def _drain_loop(self) -> None:
        while not self._closing.wait(self.DRAIN_EVERY_S):
            if self._database_down or (self.spool is not None and self.spool.pending()):
                self._drain()

    # ---- degraded modes: a shared component down, this replica serving on local state
    def _degradation(self, degraded: bool, reason: str) -> None:
        """A shared component failed or came back: logged, audited, in /metrics and /healthz."""
        self.metrics.degraded.labels("rate_limits").set(1 if degraded else 0)
        (log.error if degraded else log.warning)("%s", reason)
        try:
            self.audit.record_system(
                "service:degraded" if degraded else "service:restored",
                {"component": "rate_limits", "reason": reason},
                now=self.clock(),
            )
        except GatewayError:  # the audit store is down too: the log line above is what remains
            log.error("could not audit the change of degraded mode: %s", reason)

    def health(self) -> dict[str, Any]:
        """Liveness and what runs degraded (no key needed: it says which shared component is down, nothing more)."""
        degraded = [lim.degraded for lim in (self.limiter, self.assessment_limiter) if lim.degraded]
        if self._database_down and self.spool is not None:
            degraded.append(
                f"database unavailable: serving keys verified in the last {self.config.database_failure.key_grace_s:g} "
                f"s; {self.spool.pending()} records spooled until it is back"
            )
        elif self.store_failed_at is not None and time.monotonic() - self.store_failed_at < 10.0:
            degraded.append("database unavailable: requests are refused (503) rather than answered unaudited")
        if self.bus is not None and not self.bus.connected:
            degraded.append("state bus (Redis) unavailable: threat state is this replica's own")
        self.metrics.degraded.labels("state_bus").set(1 if self.bus is not None and not self.bus.connected else 0)
        return {"status": "degraded" if degraded else "ok", **({"degraded": sorted(set(degraded))} if degraded else {})}

    # ---- threat state shared with other replicas (bastion.gateway.sync)
    def start_sync(self) -> None:
        """Join the replicas' state bus named in ``config.sync`` (a no-op when it names none)."""
        if self.config.sync.url is None or self.bus is not None:
            return
        from bastion.gateway.sync import StateBus

        share = self.config.sync.share_monitors and any(self.monitors.values())
        if share:
            self._fingerprints = {name: self._prepare_fingerprints(name) for name in self.models}
        self.bus = StateBus(
            self.config.sync.url,
            self.config.sync.channel,
            self._apply_remote,
            self._observe_remote if share else None,
        )

    def _prepare_fingerprints(self, name: str) -> dict[str, str]:
        """Per monitor of ``name`` with a ``prepare``: a digest of what it makes of fixed inputs. A replica uses
        another's prepared features only when the digests agree (same encoder), else computes its own."""
        import hashlib

        spec = self.models[name].spec
        lo, hi = spec.bounds
        d = 1
        for s in spec.input_shape:
            d *= int(s)
        probe = torch.linspace(0, 1, 4 * d).reshape(4, d).mul(hi - lo).add(lo)
        out = {}
        for m in self.monitors.get(name, []):
            prepare = getattr(m, "prepare", None)
            if not callable(prepare):
                continue
            stated = getattr(m, "prepare_digest", None)  # a monitor may name its function outright
            if isinstance(stated, str):
                out[m.name] = stated
                continue
            with torch.no_grad():
                f = prepare(probe).float().mul(1e3).round()
            out[m.name] = hashlib.sha256(f.numpy().tobytes()).hexdigest()[:16]
        return out

    def _observe_remote(self, obs: Any) -> None:
        """Feed another replica's served request (``bastion.gateway.observations.Observation``) to this one's
        monitors; an alert it raises is recorded here when this replica claims it first."""
        event = obs.event
        if event.model not in self.models:
            return
        mine = self._fingerprints.get(event.model, {})
        theirs = obs.fingerprints or {}
        prepared = {k: v for k, v in event.prepared.items() if k in mine and theirs.get(k) == mine[k]}
        if prepared != event.prepared:
            event = dataclasses.replace(event, prepared=prepared)
        self._observe(event, assessment=obs.assessment, client=obs.client, event_id=obs.event_id)

    def _publish(self, event: dict[str, Any]) -> None:
        if self.bus is not None:
            self.bus.publish(event)

    def _apply_remote(self, event: dict[str, Any]) -> None:
        """Apply another replica's event to this one's threat state (that replica has recorded it already)."""

        op, now = event.get("op"), self.clock()
        with self._monitor_lock:
            if op == "alerts":
                alerts = [Alert.from_dict(a) for a in event.get("alerts", [])]
                self.threat.observe(alerts, now, event.get("client"))
            elif op == "pin":
                level = ThreatLevel.parse(str(event["level"]))
                self.threat.pin(str(event["key_id"]), level, now, str(event.get("actor")), str(event.get("reason")))
            elif op == "reset":
                self.threat.reset(str(event["key_id"]), now, str(event.get("actor")), str(event.get("reason")))
            elif op == "forget":
                self.keys.forget(str(event["key_id"]))
                for monitors in self.monitors.values():
                    for m in monitors:
                        m.forget(str(event["key_id"]))
                self.threat.forget(str(event["key_id"]), now)
        self.metrics.service_level.set(int(self.threat.service_level))

    def level_for(self, principal: Principal) -> ThreatLevel:
        """The level a key is served at: its own. The service level alerts people and tightens what keys created
        since it rose get (new clients during an attack), but never degrades established keys (issue 9: a few
        attacking keys must not degrade every paying client). Assessment keys are always served at normal."""
        if principal.assessment:
            return ThreatLevel.NORMAL
        return self.threat.serving_level(principal.key_id, principal.created_at)

    def _policy(self, level: ThreatLevel) -> LevelPolicy:
        lv = self.config.levels
        return {
            ThreatLevel.NORMAL: lv.normal,
            ThreatLevel.ELEVATED: lv.elevated,
            ThreatLevel.UNDER_ATTACK: lv.under_attack,
        }[level]

    # ---- the audit wrapper every entry point goes through
    def _audited(self, trace: _Trace, decision: str, client: str | None, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        try:
            self._refuse_blocked_address(client)
            result = fn()
        except Exception as exc:
            self._raise_audited(trace, exc, t0, client)
        self._write_audit(trace, decision, 200, t0, client)
        return result

    async def _audited_async(
        self, trace: _Trace, decision: str, client: str | None, fn: Callable[[], Awaitable[T]]
    ) -> T:
        t0 = time.perf_counter()
        try:
            self._refuse_blocked_address(client)
            result = await fn()
        except asyncio.CancelledError:  # the server cancelled the request (shutdown): still one audit event
            self._write_audit(trace, "cancelled", CANCELLED_STATUS, t0, client)
            raise
        except Exception as exc:
            refused, status, err = self._refusal(trace, exc, client)
            await self.audit.record_async(self._audit_event(trace, refused, status, t0, client))
            if err is exc:
                raise
            raise err from None
        await self.audit.record_async(self._audit_event(trace, decision, 200, t0, client))
        return result

    def _refuse_blocked_address(self, client: str | None) -> None:
        wait = self.auth_failures.blocked(client)
        if wait:
            raise GatewayError(
                "rate_limited",
                f"too many failed authentications from this address; retry after {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def _raise_audited(self, trace: _Trace, exc: Exception, t0: float, client: str | None) -> NoReturn:
        """Write the audit event of a request that failed with ``exc``, then raise what the caller should see."""
        refused, status, err = self._refusal(trace, exc, client)
        self._write_audit(trace, refused, status, t0, client)
        if err is exc:
            raise exc
        raise err from None

    def _refusal(self, trace: _Trace, exc: Exception, client: str | None) -> tuple[str, int, Exception]:
        """What a request that failed with ``exc`` is audited as (decision, status) and what the caller sees."""
        if isinstance(exc, AuthError):
            if exc.status == 401:  # a wrong, unknown, malformed, missing or revoked key: count it against the address
                self.auth_failures.failed(client)
            exc.request_id = trace.request_id
            return f"refused:{exc.code}", exc.status, exc
        if isinstance(exc, GatewayError):
            if exc.audit:
                trace.output = {**trace.output, **exc.audit}
            exc.request_id = trace.request_id
            return f"refused:{exc.code}", exc.status, exc
        if isinstance(exc, (sqlite3.Error, SQLAlchemyError)):  # the service's database failed: never the client's
            self.store_failed_at = time.monotonic()
            log.error("store failure on %s: %s", trace.request_id, exc)
            err = GatewayError("store_unavailable", "the gateway's database is unavailable; retry shortly")
            err.request_id = trace.request_id
            return "refused:store_unavailable", 503, err
        return "error", 500, exc

    def _audit_event(self, trace: _Trace, decision: str, status: int, t0: float, client: str | None) -> AuditEvent:
        if trace.input_hash is None and trace.body is not None:  # refused before validation: hash the raw body
            trace.input_hash = input_hash(trace.body)
        return AuditEvent(
            time=self.clock(),
            request_id=trace.request_id,
            key_id=trace.key_id,
            model=trace.model,
            input_hash=trace.input_hash,
            n_inputs=trace.n_inputs,
            decision=decision,
            status=status,
            latency_ms=(time.perf_counter() - t0) * 1000,
            output=trace.output,
            alerts=[a.to_dict() for a in trace.alerts],
            client=client,
        )

    def _write_audit(self, trace: _Trace, decision: str, status: int, t0: float, client: str | None) -> None:
        self.audit.record(self._audit_event(trace, decision, status, t0, client))

    # ---- predict
    def predict(self, req: PredictRequest) -> PredictReply:
        """Answer ``req`` in the calling thread, its arithmetic included."""
        trace = _Trace(model=req.model)
        t0 = time.perf_counter()
        try:
            reply = self._audited(trace, "answered", req.client, lambda: self._drive(self._predict_steps(req, trace)))
        finally:
            self.metrics.latency.observe(time.perf_counter() - t0)
        return reply

    async def predict_async(self, req: PredictRequest) -> PredictReply:
        """Answer ``req`` on the calling event loop, its arithmetic on the numeric worker (batched with other
        requests waiting there): the loop serves other requests meanwhile. Same steps and audit as :meth:`predict`."""
        trace = _Trace(model=req.model)
        t0 = time.perf_counter()
        try:
            reply = await self._audited_async(
                trace, "answered", req.client, lambda: self._drive_async(self._predict_steps(req, trace))
            )
        finally:
            self.metrics.latency.observe(time.perf_counter() - t0)
        return reply

    def _drive(self, steps: Generator[NumericJob, NumericResult, PredictReply]) -> PredictReply:
        try:
            job = next(steps)
            while True:
                job = steps.send(self.compute([job])[0])
        except StopIteration as done:
            return done.value

    async def _drive_async(self, steps: Generator[NumericJob, NumericResult, PredictReply]) -> PredictReply:
        try:
            job = next(steps)
            while True:
                job = steps.send(await self.numeric.submit(job))
        except StopIteration as done:
            return done.value

    def compute(self, jobs: Sequence[NumericJob]) -> list[NumericResult]:
        """The arithmetic of ``jobs``: per served model, one pass of the model and its screen over all their inputs
        together, and the features monitors prepare from inputs alone (``prepare``), split back per job."""
        results: list[NumericResult | None] = [None] * len(jobs)
        by_model: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_model.setdefault(job.model, []).append(i)
        for name, idx in by_model.items():
            model, screen = self.models[name], self.screens[name]
            xs = [jobs[i].x for i in idx]
            x = xs[0] if len(xs) == 1 else torch.cat(xs)
            out, detections, riders = screen.predict_with_riders(model, x)
            prepared = {}
            flat = x.flatten(1)
            for m in self.monitors.get(name, []):
                prepare = getattr(m, "prepare", None)
                if not callable(prepare):
                    continue
                raw = riders.get(m.name)  # from the screen's graph where it computed them
                finish = getattr(m, "finish_prepared", None)
                prepared[m.name] = prepare(flat) if raw is None else raw if finish is None else finish(raw, flat)
            whole = NumericResult(out, tuple(detections), prepared)
            start = 0
            for i, xi in zip(idx, xs, strict=True):
                results[i] = whole if len(idx) == 1 else whole.rows(start, start + int(xi.shape[0]))
                start += int(xi.shape[0])
        return [r for r in results if r is not None]

    def _predict_steps(self, req: PredictRequest, trace: _Trace) -> Generator[NumericJob, NumericResult, PredictReply]:
        trace.body = req.body
        principal = req.principal if req.principal is not None else self.keys.authenticate(req.token)
        trace.key_id = principal.key_id
        if not (principal.allows(Scope.PREDICT_LABELS) or principal.allows(Scope.PREDICT_SCORES)):
            raise GatewayError("forbidden", "this key lacks a predict scope (predict:labels or predict:scores)")
        level = self.level_for(principal)
        policy = self._policy(level)
        if policy.quarantine:
            raise GatewayError(
                "quarantined",
                f"this key is quarantined (threat level {level.label}); an administrator can review and reset it",
            )
        limiter = self.assessment_limiter if principal.assessment else self.limiter
        decision = limiter.charge_request(principal.key_id, policy.rate_factor)
        if not decision.allowed:
            raise GatewayError("rate_limited", decision.message, headers={"Retry-After": str(decision.retry_after)})
        model = self.models.get(req.model)
        if model is None:
            raise GatewayError("unknown_model", f"no model named {req.model!r}; served: {', '.join(self.models)}")
        limits = self.config.limits
        data = parse_body(req.body, req.content_type, limits.max_body_bytes)
        x = to_batch(data, model.spec, limits.max_batch, raw=req.body)
        trace.n_inputs = int(x.shape[0])
        trace.input_hash = input_hash(x)
        decision = limiter.charge_inputs(principal.key_id, trace.n_inputs, policy.rate_factor)
        if not decision.allowed:
            headers = {} if decision.too_large else {"Retry-After": str(decision.retry_after)}
            raise GatewayError(
                "over_budget" if decision.too_large else "rate_limited", decision.message, headers=headers
            )
        result = yield NumericJob(req.model, x)
        out, detections = result.out, result.detections
        labels = out.probs.argmax(1)
        if detections:  # every detector's scores, per input, in the request's audit event
            trace.output["detectors"] = {
                d.detector: [round(float(v), 5) for v in d.scores.tolist()] for d in detections
            }
        now = self.clock()
        event = QueryEvent(
            principal.key_id, req.model, now, x.flatten(1), out.probs, labels, detections, result.prepared
        )
        trace.alerts = self._observe(event, assessment=principal.assessment, client=req.client)
        self._sweep_revoked(now)
        self._refuse_known(trace.alerts)
        flagged = Screen.flagged(detections)
        if detections:
            n_flagged = int(flagged.sum())
            trace.output["flagged"] = flagged.nonzero().flatten().tolist()
            if n_flagged:
                self.metrics.flagged.labels(req.model).inc(n_flagged)
            if n_flagged and self.config.detectors.reject:
                raise GatewayError(
                    "input_rejected",
                    f"input(s) {trace.output['flagged'][:10]} were rejected by the service's input screening: they do "
                    "not look like the data this model serves; send unmodified inputs of the model's domain",
                )
        level = self.level_for(principal)
        chain = self._chains[level] if principal.allows(Scope.PREDICT_SCORES) else self._labels_only
        released = chain(out.probs)
        reply = self._reply(trace.request_id, req.model, labels, released, chain, level)
        trace.output = {
            **trace.output,
            "labels": reply.labels,
            "release": reply.release,
            "threat_level": reply.threat_level,
            "disagreement": round(float(out.disagreement.mean()), 4),
        }
        self.metrics.inputs.labels(req.model).inc(trace.n_inputs)
        if len(model) > 1:
            for d in out.disagreement.tolist():
                self.metrics.disagreement.observe(d)
        return reply

    def _refuse_known(self, alerts: list[Alert]) -> None:
        """Imported intelligence matched this request: refuse it where ``intel`` says so (after the alert is
        recorded and the key's level raised)."""
        intel = self.config.intel
        for a in alerts:
            if a.kind == "known_inputs" and intel.reject_inputs:
                raise GatewayError(
                    "input_rejected",
                    f"input(s) {a.evidence.get('inputs', [])[:10]} match known hostile inputs shared as threat "
                    "intelligence; send unmodified inputs of the model's domain",
                )
            if a.kind == "known_client" and intel.reject_clients:
                raise GatewayError("forbidden", "requests from this address are refused (listed as hostile)")

    @staticmethod
    def _reply(
        request_id: str, model: str, labels: torch.Tensor, released: torch.Tensor, chain: Chain, level: ThreatLevel
    ) -> PredictReply:
        rel = chain.release
        scores = top_k = None
        if rel is Release.SCORES:
            scores = [[round(float(v), 6) for v in row] for row in released.tolist()]
        elif rel is Release.TOP_K:
            k = chain.k or 1
            vals, idx = released.topk(min(k, released.shape[1]), dim=1)
            top_k = [
                [{"label": int(i), "score": round(float(v), 6)} for v, i in zip(vr, ir, strict=True)]
                for vr, ir in zip(vals.tolist(), idx.tolist(), strict=True)
            ]
        return PredictReply(request_id, model, labels.tolist(), rel.name.lower(), level.label, scores, top_k)

    def _observe(
        self,
        event: QueryEvent,
        *,
        assessment: bool = False,
        client: str | None = None,
        event_id: str | None = None,
    ) -> list[Alert]:
        """Feed the monitors; alerts open incidents and move threat levels — except an assessment key's, which are
        recorded (marked as such) but move no level, its own or the service's.

        With replicas (``sync``), an event served here (``event_id`` None) is also published to the other
        replicas' monitors, and an alert is kept only when this replica claims it first (the others drop the same
        alert at the same event; the claimer publishes it to their threat state)."""
        bus = self.bus
        with self._monitor_lock:
            seq = next(self._seq)
            alerts: list[Alert] = []
            listed = self.clients.check(event.key_id, client, event.time)
            if listed is not None:
                alerts.append(listed)
            for m in self.monitors.get(event.model, []):
                alerts.extend(m.observe(event))
            if alerts:
                self._attach_fingerprints(event, alerts)
            if alerts and bus is not None:
                eid = event_id or f"{bus.replica}:{seq}"
                alerts = [a for a in alerts if bus.claim(f"{eid}:{a.monitor}:{a.kind}:{a.key_id}")]
            transitions = [] if assessment else self.threat.observe(alerts, event.time, client)
        if event_id is None and bus is not None and bus.shares_observations:
            from bastion.gateway.observations import Observation, encode

            fingerprints = self._fingerprints.get(event.model)
            bus.publish_observation(encode(Observation(event, bus.replica, seq, assessment, client, fingerprints)))
        if alerts and not assessment:
            self._publish({"op": "alerts", "alerts": [a.to_dict() for a in alerts], "client": client})
        for a in alerts:
            if assessment:
                a.evidence["assessment_key"] = True
            self.metrics.alerts.labels(a.kind).inc()
            incident = self._durably("alert", a.to_dict(), functools.partial(self.incidents.record_alert, a))
            if incident is not None:
                a.evidence.setdefault("incident_id", incident.incident_id)
        self._apply(transitions)
        return alerts

    def _attach_fingerprints(self, event: QueryEvent, alerts: list[Alert]) -> None:
        """An evasion alert carries the fingerprints of its key's recent inputs (what ``bastion intel export``
        shares), from the model's ``known_inputs`` monitor."""
        known = next((m for m in self.monitors.get(event.model, []) if isinstance(m, KnownInputsMonitor)), None)
        if known is None or known.scheme is None:
            return
        for a in alerts:
            if carries_fingerprints(a) and a.key_id is not None:
                a.evidence["fingerprints"] = known.recent_fingerprints(a.key_id)
                a.evidence["fingerprint_scheme"] = known.scheme.to_dict()

    REVOKED_SWEEP_S = 10.0

    def _sweep_revoked(self, now: float) -> None:
        """Keys revoked outside this process (``bastion keys revoke`` on the CLI, another replica) lose their threat
        state and monitor history here, at most every REVOKED_SWEEP_S, so they stop counting towards the service
        level. Only keys above normal are looked up."""
        if now - self._last_sweep < self.REVOKED_SWEEP_S:
            return
        self._last_sweep = now
        for key_id in list(self.threat.snapshot()):
            try:
                rec = self.store.get_key(key_id)
            except (sqlite3.Error, SQLAlchemyError):
                if self.spool is None:
                    raise
                return  # fail-open with the database down: sweep again when it is back
            if rec is None or not rec.active:
                self.forget_key(key_id)

    def forget_key(self, key_id: str) -> None:
        """A revoked key: drop its threat state and monitor history, and recompute the service level without it."""
        self.keys.forget(key_id)
        self.clients.forget(key_id)
        with self._monitor_lock:
            for monitors in self.monitors.values():
                for m in monitors:
                    m.forget(key_id)
            transitions = self.threat.forget(key_id, self.clock())
        self._apply(transitions)
        self._publish({"op": "forget", "key_id": key_id})

    def _apply(self, transitions: list[LevelTransition]) -> None:
        for tr in transitions:
            if tr.key_id is not None and tr.new is ThreatLevel.NORMAL:  # decayed or reset: the monitors re-arm
                self.clients.forget(tr.key_id)
                for monitors in self.monitors.values():
                    for m in monitors:
                        m.forget(tr.key_id)
            change = LevelChange(tr.time, tr.key_id, tr.old.label, tr.new.label, tr.reason, tr.actor)
            self._durably("level", dataclasses.asdict(change), functools.partial(self.store.add_level_change, change))
            policy = self._policy(tr.new)
            detail = {
                "from": tr.old.label,
                "to": tr.new.label,
                "reason": tr.reason,
                "by": tr.actor,
                "output": [s if isinstance(s, str) else dict(s) for s in policy.postprocess] or "full scores",
                "rate_factor": policy.rate_factor,
                "quarantine": policy.quarantine,
            }
            action = {"key_id": tr.key_id, "action": "threat_level", "detail": detail, "time": tr.time}
            self._durably(
                "action",
                action,
                functools.partial(self.incidents.add_action, tr.key_id, "threat_level", detail, tr.time),
            )
        self.metrics.service_level.set(int(self.threat.service_level))
        self.metrics.keys_under_attack.set(len(self.threat.snapshot()))

    # ---- admin and other keyed actions
    def admin(self, token: str | None, action: str, fn: Callable[[Principal], T], client: str | None = None) -> T:
        """Run an admin action for a key with the admin scope; audited like any request."""
        return self.keyed(token, f"admin:{action}", fn, client, scope=Scope.ADMIN)

    def record_refusal(self, token: str | None, status: int, code: str, client: str | None) -> str:
        """Audit a request the web layer refused before reaching the pipeline (unknown route, bad admin body)."""
        trace = _Trace()
        try:
            trace.key_id = self.keys.authenticate(token).key_id
        except AuthError:
            trace.key_id = None
        self._write_audit(trace, f"refused:{code}", status, time.perf_counter(), client)
        return trace.request_id

    def keyed(
        self,
        token: str | None,
        action: str,
        fn: Callable[[Principal], T],
        client: str | None = None,
        *,
        scope: Scope | None = None,
    ) -> T:
        """Run an action for a valid key (with ``scope``, if given: metrics, the model list, the schema need none);
        audited."""
        trace = _Trace()

        def run() -> T:
            principal = self.keys.authenticate(token)
            if scope is not None:
                self.keys.require(principal, scope)
            trace.key_id = principal.key_id
            result = fn(principal)
            if scope is Scope.ADMIN and isinstance(result, dict):  # the audit event names what the action changed
                target = result.get("key_id", result.get("incident_id", result.get("model")))
                if target is not None:
                    trace.output = {"target": str(target)}
                if "sources" in result:  # a reload: which files or verified artifacts now serve
                    trace.output["sources"] = result["sources"]
            return result

        return self._audited(trace, action, client, run)

    def set_level(self, key_id: str, level: ThreatLevel | None, actor: str, reason: str) -> dict[str, Any]:
        """Pin a key's level (``None``: reset it to normal and unpin it)."""
        if self.store.get_key(key_id) is None:
            raise GatewayError("no_such_key", f"no key {key_id!r}")
        now = self.clock()
        if level is None:
            transitions = self.threat.reset(key_id, now, actor, reason or "reset by an administrator")
            self._publish({"op": "reset", "key_id": key_id, "actor": actor, "reason": reason})
        else:
            transitions = self.threat.pin(key_id, level, now, actor, reason or "set by an administrator")
            self._publish({"op": "pin", "key_id": key_id, "level": level.label, "actor": actor, "reason": reason})
        self._apply(transitions)
        return {"key_id": key_id, "level": self.threat.level(key_id).label}

    def traffic(self, minutes: int = 60, max_events: int = 10_000) -> dict[str, Any]:
        """Per-minute requests and alerts, and per-key totals, from the newest audit events of the last ``minutes``
        (at most ``max_events`` of them: the dashboard's charts)."""
        now = self.clock()
        since = now - 60 * minutes
        events = self.store.recent_events(max_events, since=since)
        start = int(since // 60)
        requests, alerts = [0] * minutes, [0] * minutes
        keys: dict[str, dict[str, Any]] = {}
        for e in events:
            bucket = min(minutes - 1, max(0, int(e.time // 60) - start - 1))
            requests[bucket] += 1
            alerts[bucket] += len(e.alerts)
            if e.key_id is None:
                continue
            k = keys.setdefault(e.key_id, {"key_id": e.key_id, "requests": 0, "inputs": 0, "refused": 0, "alerts": 0})
            k["requests"] += 1
            k["inputs"] += e.n_inputs
            k["refused"] += int(e.status >= 400)
            k["alerts"] += len(e.alerts)
        return {
            "series": {"minutes": list(range(-minutes + 1, 1)), "requests": requests, "alerts": alerts},
            "keys": sorted(keys.values(), key=lambda k: (-k["alerts"], -k["requests"])),
            "events": len(events),
        }

    def status(self) -> dict[str, Any]:
        return {
            "sync": self.bus.status() if self.bus is not None else None,
            "service_level": self.threat.service_level.label,
            "keys": self.threat.snapshot(),
            "models": {n: {"members": len(m), "input_shape": list(m.spec.input_shape)} for n, m in self.models.items()},
            "uptime_s": round(self.clock() - self.started, 1),
        }
