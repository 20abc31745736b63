"""Assess a model: run a policy's attacks and turn the figures into a pass/fail gate."""

from __future__ import annotations

from bastion.assess.policy import Policy, load_policy, parse_policy
from bastion.assess.runner import Assessment, run_assessment

__all__ = ["Assessment", "Policy", "load_policy", "parse_policy", "run_assessment"]
