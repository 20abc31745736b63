"""A real HTTP model server on loopback for tests: serves a classifier's logits, scores or labels.

It can be told to fail after a number of requests, to show how attacks behave when an endpoint dies mid-attack.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import torch

from bastion.models.base import Classifier


@contextmanager
def serve_model(
    model: Classifier,
    *,
    output: Literal["logits", "scores", "labels"] = "logits",
    fail_after: int | None = None,
    degrade_after: int | None = None,
    throttle_after: int | None = None,
) -> Iterator[str]:
    """Serve ``model`` at ``http://127.0.0.1:PORT/predict`` for the duration of the block; yields the URL.

    After ``fail_after`` requests it answers 503; after ``degrade_after`` labels only (as a gateway that has flagged
    the client); after ``throttle_after`` 429 with a long Retry-After (as a throttling gateway)."""
    lock = threading.Lock()
    served = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                served["requests"] += 1
                failing = fail_after is not None and served["requests"] > fail_after
                throttled = throttle_after is not None and served["requests"] > throttle_after
                degraded = degrade_after is not None and served["requests"] > degrade_after
                if not failing and not throttled:
                    x = torch.tensor(json.loads(raw)["inputs"], dtype=torch.float32)
                    logits = model.predict_logits(x)
            extra = {}
            if failing:
                body, code = b'{"detail": "service unavailable"}', 503
            elif throttled:
                body, code, extra = b'{"detail": "slow down"}', 429, {"Retry-After": "60"}
            else:
                if degraded:
                    out = {"labels": logits.argmax(1).tolist()}
                elif output == "logits":
                    out = {"logits": logits.tolist()}
                elif output == "scores":
                    out = {"scores": logits.softmax(1).tolist()}
                else:
                    out = {"labels": logits.argmax(1).tolist()}
                body, code = json.dumps(out).encode(), 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/predict"
    finally:
        httpd.shutdown()
        httpd.server_close()
