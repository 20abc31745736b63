"""Prometheus metrics of one gateway, in its own registry (several gateways in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bastion_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"], registry=self.registry
        )
        self.inputs = Counter("bastion_inputs", "Inputs answered, by model", ["model"], registry=self.registry)
        self.latency = Histogram(
            "bastion_request_seconds",
            "Time in the pipeline per predict request",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.alerts = Counter("bastion_alerts", "Monitor alerts by kind", ["kind"], registry=self.registry)
        self.flagged = Counter(
            "bastion_inputs_flagged", "Inputs any input detector flagged, by model", ["model"], registry=self.registry
        )
        self.service_level = Gauge(
            "bastion_service_threat_level", "0 normal, 1 elevated, 2 under attack", registry=self.registry
        )
        self.keys_under_attack = Gauge(
            "bastion_keys_above_normal", "Keys at a threat level above normal", registry=self.registry
        )
        self.degraded = Gauge(
            "bastion_degraded",
            "1 while a shared component is unavailable and this replica runs on local state",
            ["component"],
            registry=self.registry,
        )
        self.disagreement = Histogram(
            "bastion_ensemble_disagreement",
            "Fraction of ensemble members disagreeing with the ensemble, per input",
            buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
