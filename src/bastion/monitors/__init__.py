"""Streaming monitors over a service's traffic: confidence, query patterns (extraction, probing),
detector flags, input distribution, threat level."""

from __future__ import annotations

from bastion.monitors import confidence as _confidence  # noqa: F401  (registers the monitor)
from bastion.monitors import detections as _detections  # noqa: F401
from bastion.monitors import input_distribution as _input_distribution  # noqa: F401
from bastion.monitors import known_inputs as _known_inputs  # noqa: F401
from bastion.monitors import query_patterns as _query_patterns  # noqa: F401
from bastion.monitors.base import Alert, Detection, Monitor, QueryEvent, Severity
from bastion.monitors.registry import MONITORS, MonitorKind, MonitorSettings

__all__ = ["MONITORS", "Alert", "Detection", "Monitor", "MonitorKind", "MonitorSettings", "QueryEvent", "Severity"]
