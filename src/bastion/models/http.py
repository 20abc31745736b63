"""Black-box adapter for a model behind an HTTP JSON endpoint (how attacks target a deployed gateway)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx
import torch
from torch import Tensor

from bastion._validate import raise_if, tensor_problems
from bastion.errors import ConfigError, RemoteModelError
from bastion.types import ModelSpec

OutputKind = Literal["logits", "scores", "top_k", "labels"]
_RICHNESS = {"logits": 3, "scores": 3, "top_k": 2, "labels": 1}  # how much an answer tells an attacker
_SCORE_KEYS = ("logits", "scores", "probabilities", "top_k", "labels", "predictions")


class HttpClassifier:
    """Queries ``POST url`` with ``{"inputs": [...]}`` (nested lists, one per input) and reads the answer.

    The endpoint may answer with any one of ``logits``, ``scores`` / ``probabilities`` (an ``(N, K)`` list of
    lists), ``top_k`` (per input a list of ``{"label", "score"}``; unlisted classes get score 0, as Bastion's gateway
    answers in top-k mode) or ``labels`` / ``predictions`` (N class indices). Probabilities become
    log-probabilities; labels become one-hot scores, so label-only endpoints still work with decision-based attacks.
    ``last_output_kind`` says which form the endpoint returned; ``degradations`` records each time the answers got
    less informative mid-run (a gateway that drops to labels only), which makes an assessment inconclusive. Batches larger than ``max_batch`` are split into
    several requests; when the endpoint answers 413 (body or batch too large), ``max_batch`` is halved and the
    batch resent in smaller pieces; a 429 with a short ``Retry-After`` is waited out (at most ``rate_limit_retries``
    times a request, and ``max_total_wait`` seconds over the client's life), after which ``throttled`` says so and
    the 429 is raised. Every input sent is counted in ``queries``.

    Errors (timeouts, connection failures, HTTP error statuses, malformed JSON, wrong shapes) raise
    :class:`~bastion.errors.RemoteModelError` naming the cause.
    """

    def __init__(
        self,
        url: str,
        spec: ModelSpec,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        max_batch: int = 256,
        input_field: str = "inputs",
        rate_limit_retries: int = 3,
        max_retry_wait: float = 5.0,
        max_total_wait: float | None = None,
    ) -> None:
        problems = []
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(f"url must start with http:// or https://, got {url!r}")
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            problems.append(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            problems.append(f"max_batch must be a positive int, got {max_batch!r}")
        if isinstance(rate_limit_retries, bool) or not isinstance(rate_limit_retries, int) or rate_limit_retries < 0:
            problems.append(f"rate_limit_retries must be an int >= 0, got {rate_limit_retries!r}")
        if not isinstance(max_retry_wait, (int, float)) or not math.isfinite(max_retry_wait) or max_retry_wait < 0:
            problems.append(f"max_retry_wait must be a number of seconds >= 0, got {max_retry_wait!r}")
        if max_total_wait is not None and (
            not isinstance(max_total_wait, (int, float)) or not math.isfinite(max_total_wait) or max_total_wait < 0
        ):
            problems.append(f"max_total_wait must be None or a number of seconds >= 0, got {max_total_wait!r}")
        if not isinstance(spec, ModelSpec):
            problems.append(f"spec must be a ModelSpec, got {type(spec).__name__}")
        if problems:
            raise ConfigError("invalid HttpClassifier settings", problems=problems)
        hdrs = {"Content-Type": "application/json", "Accept": "application/json", **dict(headers or {})}
        if api_key:
            hdrs["Authorization"] = f"Bearer {api_key}"
        self.url = url
        self.spec = spec
        self.timeout = float(timeout)
        self.max_batch = max_batch
        self.input_field = input_field
        self.rate_limit_retries = rate_limit_retries
        self.max_retry_wait = float(max_retry_wait)
        self.max_total_wait = None if max_total_wait is None else float(max_total_wait)
        self.waited = 0.0  # seconds spent waiting out 429s, over the client's life
        self.queries = 0
        self.requests = 0
        self.last_output_kind: OutputKind | None = None
        self.degradations: list[str] = []  # answers that got less informative mid-run (e.g. scores -> labels)
        self.throttled: str | None = None  # set once the endpoint refused with 429 beyond the retries
        self._last_level: str | None = None  # the threat level a Bastion gateway last reported for this client
        self._client = httpx.Client(headers=hdrs, timeout=self.timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict_logits(self, x: Tensor) -> Tensor:
        raise_if(tensor_problems(x, name="x", input_shape=self.spec.input_shape), "model input")
        step = self.max_batch  # fixed for this call: a 413 inside may lower max_batch for later calls
        return torch.cat([self._query(x[i : i + step]) for i in range(0, x.shape[0], step)])

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST once, or a few times when the endpoint asks to wait briefly (429 with a short Retry-After)."""
        for attempt in range(self.rate_limit_retries + 1):
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                raise RemoteModelError(f"{self.url} did not answer within {self.timeout:g}s") from None
            except httpx.HTTPError as e:
                raise RemoteModelError(f"cannot reach {self.url}: {type(e).__name__}: {e}") from None
            self.requests += 1
            if response.status_code != 429 or attempt == self.rate_limit_retries:
                return response
            try:
                wait = float(response.headers.get("Retry-After", "1"))
            except ValueError:
                return response  # an HTTP-date or garbage: do not guess, report the 429
            if not 0 <= wait <= self.max_retry_wait:
                return response
            if self.max_total_wait is not None and self.waited + wait > self.max_total_wait:
                return response  # throttled for longer than the caller will wait in all: report the 429
            time.sleep(wait)
            self.waited += wait
        return response

    def _query(self, x: Tensor) -> Tensor:
        n = int(x.shape[0])
        body = {self.input_field: x.detach().cpu().tolist()}
        response = self._post(body)
        # Every input the endpoint evaluated counts, even if the answer is unusable; 413 and 429 refusals did not
        # reach the model (a too-large batch is resent in pieces and counted then).
        if response.status_code not in (413, 429):
            self.queries += n
        if response.status_code == 413 and n > 1:  # too large for this endpoint: halve the batch and resend
            step = max(1, n // 2)
            self.max_batch = min(self.max_batch, step)  # later calls start from the size that may work
            return torch.cat([self._query(x[i : i + step]) for i in range(0, n, step)])
        if response.status_code >= 400:
            excerpt = response.text[:300].replace("\n", " ")
            if response.status_code == 429:  # refused even after waiting: the rest of a run would only crawl
                self.throttled = f"{self.url} kept answering HTTP 429 (rate limited)"
            raise RemoteModelError(f"{self.url} answered HTTP {response.status_code}: {excerpt}")
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RemoteModelError(f"{self.url} answered with malformed JSON: {response.text[:200]!r}") from None
        return self._parse(payload, n)

    def _parse_top_k(self, rows: Any, n: int, k: int) -> Tensor:
        if not isinstance(rows, list) or len(rows) != n:
            raise RemoteModelError(f"{self.url} answered a top_k field that is not a list of {n} entries")
        out = torch.zeros(n, k)
        try:
            for i, row in enumerate(rows):
                for item in row:
                    label, score = int(item["label"]), float(item["score"])
                    if not 0 <= label < k or not 0.0 <= score <= 1.0:
                        raise ValueError
                    out[i, label] = score
        except (TypeError, KeyError, ValueError):
            raise RemoteModelError(
                f"{self.url} answered a malformed top_k entry (expected {{'label': 0..{k - 1}, 'score': 0..1}})"
            ) from None
        self.last_output_kind = "top_k"
        return torch.log(out.clamp_min(1e-12))

    def _parse(self, payload: Any, n: int) -> Tensor:
        before = self.last_output_kind
        out = self._parse_payload(payload, n)
        after = self.last_output_kind
        if before is not None and after is not None and _RICHNESS[after] < _RICHNESS[before]:
            self.degradations.append(f"{self.url} answered {after} after answering {before}")
        level = payload.get("threat_level") if isinstance(payload, dict) else None
        if isinstance(level, str) and level != "normal" and level != self._last_level:
            # a Bastion gateway says when it post-processes answers (rounding, noise) for this client's level:
            # scores that look intact may not be, so the run is not a clean measurement
            self.degradations.append(f"{self.url} answered at threat level {level}")
        self._last_level = level if isinstance(level, str) else self._last_level
        return out

    def _parse_payload(self, payload: Any, n: int) -> Tensor:
        if not isinstance(payload, dict):
            raise RemoteModelError(f"{self.url} answered {type(payload).__name__}, expected a JSON object")
        key = next((k for k in _SCORE_KEYS if k in payload), None)
        if key is None:
            raise RemoteModelError(
                f"{self.url} answered without any of the fields {', '.join(_SCORE_KEYS)}; got {sorted(payload)}"
            )
        k = self.spec.num_classes
        if key == "top_k":
            return self._parse_top_k(payload[key], n, k)
        try:
            values = torch.as_tensor(payload[key], dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise RemoteModelError(f"{self.url} answered a non-numeric or ragged {key!r} field") from None
        if key in ("labels", "predictions"):
            if values.shape != (n,) or bool((values != values.round()).any()):
                raise RemoteModelError(f"{self.url} answered {key} of shape {tuple(values.shape)}, expected ({n},)")
            labels = values.long()
            if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
                raise RemoteModelError(f"{self.url} answered labels outside [0, {k - 1}]")
            self.last_output_kind = "labels"
            return torch.nn.functional.one_hot(labels, k).to(torch.float32)
        if values.shape != (n, k):
            raise RemoteModelError(f"{self.url} answered {key} of shape {tuple(values.shape)}, expected ({n}, {k})")
        if not bool(torch.isfinite(values).all()):
            raise RemoteModelError(f"{self.url} answered non-finite {key}")
        if key == "logits":
            self.last_output_kind = "logits"
            return values
        self.last_output_kind = "scores"
        if bool((values < 0).any()):
            raise RemoteModelError(f"{self.url} answered negative {key}; expected probabilities")
        return torch.log(values.clamp_min(1e-12))

    def __repr__(self) -> str:
        return f"HttpClassifier({self.url!r}, spec={self.spec}, queries={self.queries})"
