"""The secure inference gateway: a framework-free pipeline (pipeline.py) and a thin FastAPI app over it (app.py)."""

from __future__ import annotations

from bastion.gateway.app import create_app
from bastion.gateway.auth import KeyManager, Principal, Scope
from bastion.gateway.config import GatewayConfig, load_config, parse_config
from bastion.gateway.errors import GatewayError
from bastion.gateway.pipeline import Gateway, PredictReply, PredictRequest

__all__ = [
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "KeyManager",
    "PredictReply",
    "PredictRequest",
    "Principal",
    "Scope",
    "create_app",
    "load_config",
    "parse_config",
]
