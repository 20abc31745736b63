"""HttpClassifier against a real HTTP server on loopback serving the digits reference model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from bastion import ConfigError, HttpClassifier, InputValidationError, RemoteModelError
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel


@pytest.fixture(scope="module")
def server(digits_model: TrainedModel) -> Iterator[str]:
    model = digits_model.classifier
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path
            if path == "/auth" and self.headers.get("Authorization") != "Bearer sesame":
                return self._send(401, b'{"detail": "bad key"}')
            if path == "/error":
                return self._send(500, b"internal failure")
            if path == "/garbage":
                return self._send(200, b"<html>not json</html>", "text/html")
            if path == "/slow":
                time.sleep(1.5)
            x = torch.tensor(json.loads(raw)["inputs"], dtype=torch.float32)
            with lock:
                logits = model.predict_logits(x)
            if path in ("/logits", "/auth", "/slow"):
                out = {"logits": logits.tolist()}
            elif path == "/scores":
                out = {"scores": logits.softmax(1).tolist()}
            elif path == "/labels":
                out = {"labels": logits.argmax(1).tolist()}
            elif path == "/wrongshape":
                out = {"scores": logits.softmax(1)[:, :3].tolist()}
            else:
                return self._send(404, b'{"detail": "no such route"}')
            return self._send(200, json.dumps(out).encode())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_logits_scores_and_labels_agree_with_the_local_model(
    server: str, digits: Dataset, digits_model: TrainedModel
) -> None:
    x = digits.x_test[:40]
    local = digits_model.classifier.predict_logits(x)
    with HttpClassifier(f"{server}/logits", digits.spec, max_batch=16) as remote:
        got = remote.predict_logits(x)
        assert torch.allclose(got, local, atol=1e-5)
        assert remote.queries == 40 and remote.requests == 3 and remote.last_output_kind == "logits"
    with HttpClassifier(f"{server}/scores", digits.spec) as remote:
        assert torch.equal(remote.predict_logits(x).argmax(1), local.argmax(1))
        assert remote.last_output_kind == "scores"
    with HttpClassifier(f"{server}/labels", digits.spec) as remote:
        onehot = remote.predict_logits(x)
        assert torch.equal(onehot.argmax(1), local.argmax(1)) and float(onehot.sum()) == 40
        assert remote.last_output_kind == "labels"


def test_api_key_is_sent_as_bearer_token(server: str, digits: Dataset) -> None:
    with HttpClassifier(f"{server}/auth", digits.spec, api_key="sesame") as remote:
        assert remote.predict_logits(digits.x_test[:2]).shape == (2, 10)
    with (
        HttpClassifier(f"{server}/auth", digits.spec, api_key="wrong") as remote,
        pytest.raises(RemoteModelError, match="HTTP 401"),
    ):
        remote.predict_logits(digits.x_test[:2])


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/error", "answered HTTP 500: internal failure"),
        ("/garbage", "malformed JSON"),
        ("/wrongshape", r"scores of shape \(2, 3\), expected \(2, 10\)"),
        ("/missing", "HTTP 404"),
    ],
)
def test_endpoint_failures_raise_remote_model_error(server: str, digits: Dataset, route: str, message: str) -> None:
    with HttpClassifier(f"{server}{route}", digits.spec) as remote, pytest.raises(RemoteModelError, match=message):
        remote.predict_logits(digits.x_test[:2])


def test_timeout_and_unreachable_endpoint(server: str, digits: Dataset) -> None:
    with (
        HttpClassifier(f"{server}/slow", digits.spec, timeout=0.3) as remote,
        pytest.raises(RemoteModelError, match=r"did not answer within 0\.3s"),
    ):
        remote.predict_logits(digits.x_test[:1])
    with (
        HttpClassifier("http://127.0.0.1:9/none", digits.spec, timeout=1) as remote,
        pytest.raises(RemoteModelError, match="cannot reach"),
    ):
        remote.predict_logits(digits.x_test[:1])


def test_bad_settings_and_inputs(digits: Dataset) -> None:
    with pytest.raises(ConfigError) as info:
        HttpClassifier("ftp://x", digits.spec, timeout=0, max_batch=0)
    assert "url" in str(info.value) and "timeout" in str(info.value) and "max_batch" in str(info.value)
    with HttpClassifier("http://127.0.0.1:9/", digits.spec) as remote, pytest.raises(InputValidationError):
        remote.predict_logits(torch.rand(2, 64))
