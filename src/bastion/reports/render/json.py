"""The machine-readable report (``results.json``)."""

from __future__ import annotations

import json
import math
from typing import Any

from bastion.reports.report import Report


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def render_json(report: Report) -> str:
    return json.dumps(_clean(report.to_dict()), indent=2, sort_keys=False) + "\n"
