"""Encrypted prediction through a Bastion gateway over HTTP: register the public context once, send ciphertexts,
decrypt the answers. Nothing but public contexts and ciphertexts leaves the client."""

from __future__ import annotations

from typing import Any

import torch

from bastion.defenses.encrypted.client import EncryptedClient
from bastion.defenses.encrypted.wire import pack_query, unpack_answer
from bastion.errors import InputValidationError, RemoteModelError


def _raise(resp: Any, what: str) -> None:
    try:
        err = resp.json()["error"]
        message = f"{err['code']}: {err['message']}"
    except Exception:  # not the gateway's JSON error: report the status
        message = f"HTTP {resp.status_code}"
    if 400 <= resp.status_code < 500:
        raise InputValidationError(f"the gateway refused the {what} ({resp.status_code} {message})")
    raise RemoteModelError(f"the gateway failed on the {what} ({message})")


def predict_remote(
    client: EncryptedClient, url: str, model: str, key: str, x: torch.Tensor, *, timeout: float = 600.0
) -> torch.Tensor:
    """The logits of ``x`` from model ``model`` of the gateway at ``url``, computed encrypted."""
    import httpx

    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
    registered: set[str] = getattr(client, "_registered_remote", set())
    queries = client.encrypt(x)
    answers = []
    with httpx.Client(timeout=timeout) as http:
        for q in queries:
            tag = f"{base}|{model}|{q.context_id}"
            if tag not in registered:
                r = http.post(
                    f"{base}/v1/models/{model}/encrypted-contexts", content=client.public_context(q), headers=headers
                )
                if r.status_code != 200:
                    _raise(r, "context registration")
                registered.add(tag)
            r = http.post(f"{base}/v1/models/{model}/predict-encrypted", content=pack_query(q), headers=headers)
            if r.status_code != 200:
                _raise(r, "encrypted query")
            answers.append(unpack_answer(r.content))
    object.__setattr__(client, "_registered_remote", registered)
    return client.decrypt(queries, answers)
