"""Tell a model file's format from its content, never from its name: a pickle renamed ``.onnx`` is still a pickle."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Literal

from bastion.errors import ArtifactError

Format = Literal["safetensors", "onnx", "torch-export", "torchscript", "skops", "pickle", "unknown"]

_PICKLE_EXTENSIONS = {".pkl", ".pickle", ".joblib", ".pth", ".ckpt", ".bin", ".dill", ".sav"}


def detect_format(path: Path) -> Format:
    """The format of ``path`` judged by its bytes (the extension only breaks a tie for unreadable files)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ArtifactError(f"cannot read model file {path}: {e.strerror}") from None
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{" and _safetensors_header(path, n):
            return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return _zip_format(path)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:1] in (b"(", b"c", b"]", b"}") and path.suffix.lower() in _PICKLE_EXTENSIONS:
        return "pickle"  # protocol 0/1 pickles have no magic number
    if head[:1] == b"\x08" and _is_onnx(path):
        return "onnx"
    if path.suffix.lower() in _PICKLE_EXTENSIONS:
        return "pickle"  # compressed joblib files and the like: refuse rather than guess
    return "unknown"


def _safetensors_header(path: Path, n: int) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(8)
            json.loads(f.read(n))
        return True
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def _zip_format(path: Path) -> Format:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return "unknown"
    if "schema.json" in names:
        return "skops"
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if any(t.startswith("models/") and t.endswith(".json") for t in tails) and "archive_format" in tails:
        return "torch-export"
    if "serialized_exported_program.json" in tails:
        return "torch-export"
    if any(t.startswith("code/") for t in tails) and ("data.pkl" in tails or "constants.pkl" in tails):
        return "torchscript"
    if "data.pkl" in tails:
        return "pickle"  # a torch.save checkpoint: a zip around a pickle
    return "unknown"


def _is_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # onnx raises DecodeError and others for non-ONNX bytes
        return False
    return len(model.graph.node) > 0 or len(model.graph.input) > 0
