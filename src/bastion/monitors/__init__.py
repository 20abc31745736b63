"""Streaming monitors over a service's traffic: confidence, query patterns (extraction, probing), threat level."""

from __future__ import annotations

from bastion.monitors.base import Alert, Monitor, QueryEvent, Severity

__all__ = ["Alert", "Monitor", "QueryEvent", "Severity"]
