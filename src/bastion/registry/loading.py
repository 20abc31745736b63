"""Safe loading: a registry model is loaded only after it verifies, and a legacy checkpoint only after it is scanned.

- :func:`load_verified` verifies an artifact (files, manifest, lineage, signature) and then loads its model file with
  Bastion's format loaders, which never unpickle. A failed verification raises :class:`IntegrityError` with every
  reason; nothing is loaded.
- :func:`convert_checkpoint` turns a clean ``torch.save`` state dict into safetensors: the pickle is scanned first
  (:mod:`bastion.registry.scan`), refused unless every import is on the allowlist, and only then read, with torch's
  restricted unpickler (``weights_only=True``). The conversion is recorded (source file and sha256, scan findings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import ArtifactError, IntegrityError
from bastion.registry.digest import sha256_file
from bastion.registry.registry import Registry, Verification
from bastion.registry.scan import ScanResult, require_loadable
from bastion.registry.signing import TrustPolicy


@dataclass(frozen=True)
class VerifiedModel:
    """A model loaded from the registry after it verified, with the record of that verification."""

    loaded: Any  # bastion.models.formats.LoadedClassifier
    verification: Verification
    manifest: Any  # bastion.registry.manifest.Manifest


def load_verified(
    registry: Registry,
    ref: str,
    trust: TrustPolicy,
    *,
    hints: Any = None,
    arch: str | None = None,
    trusted_types: tuple[str, ...] = (),
    device: Any = None,
) -> VerifiedModel:
    """Verify model ``ref`` against ``trust`` and load it; raise :class:`IntegrityError` (nothing loaded) if it fails."""
    from bastion.models.formats import load_classifier

    row = registry.resolve(ref, "model")
    check = registry.verify(row.id, trust)
    if not check.ok:
        raise IntegrityError(
            f"model {row.name}@{row.version} ({row.id[:12]}…) failed verification", problems=check.problems
        )
    manifest = registry.manifest(row)
    primary = manifest.extra.get("primary")
    if not primary:
        raise ArtifactError(f"model {row.name}@{row.version} names no model file in its manifest")
    path = registry.path(row) / str(primary)
    loaded = load_classifier(
        path, hints=hints, arch=arch or manifest.extra.get("arch"), trusted_types=trusted_types, device=device
    )
    return VerifiedModel(loaded, check, manifest)


@dataclass(frozen=True)
class Conversion:
    """A legacy checkpoint converted to safetensors: where it went and what was checked on the way."""

    out: Path
    source: Path
    source_sha256: str
    scan: ScanResult
    tensors: int

    def record(self) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "source_sha256": self.source_sha256,
            "scan": self.scan.to_dict() | {"path": self.source.name},
            "loader": "torch.load(weights_only=True) after the scan passed",
            "tensors": self.tensors,
        }


def convert_checkpoint(source: str | Path, out: str | Path) -> Conversion:
    """Convert a clean ``torch.save`` checkpoint of tensors (a state dict, possibly under ``state_dict``/``model``)
    into a safetensors file ``out``. A pickle that can run code is refused before it is read."""
    import torch
    from safetensors.torch import save_file

    src, dst = Path(source), Path(out)
    if dst.suffix != ".safetensors":
        raise ArtifactError(f"the converted checkpoint is written as .safetensors; name it so (got {dst.name})")
    scan = require_loadable(src)
    if scan.verdict == "not-pickle":
        raise ArtifactError(f"{src.name} is not a pickled checkpoint ({scan.format}); register it as it is")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's restricted unpickler refuses anything but tensors and containers
        raise ArtifactError(
            f"{src.name} passed the scan but torch's weights-only loader refused it: "
            f"{str(e).splitlines()[0].split('. ')[0]}; save the checkpoint with torch.save(model.state_dict())"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(
            f"{src.name} is not a state dict of tensors (a mapping of names to tensors); save model.state_dict()"
        )
    tensors = {str(k): v.detach().cpu().clone().contiguous() for k, v in state.items()}  # clone: tied weights
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata={"format": "pt", "converted_from": src.name})
    return Conversion(dst, src, sha256_file(src), scan, len(tensors))


def import_model(
    registry: Registry,
    source: str | Path,
    *,
    convert: bool = False,
    arch: str | None = None,
    name: str | None = None,
    sign_with: Any = None,
) -> tuple[Any, ScanResult]:
    """Register a model file from elsewhere after scanning it. A pickled checkpoint is refused unless ``convert``
    is set and it scans clean; it is then converted to safetensors (the manifest records the conversion and
    ``arch``, the factory that rebuilds the module). Returns the new index row and the scan result."""
    import dataclasses
    import tempfile

    from bastion.registry.describe import describe_model
    from bastion.registry.scan import scan_file

    src = Path(source)
    scan = scan_file(src)
    if scan.verdict == "not-pickle":
        desc = describe_model(src)
        desc = dataclasses.replace(desc, extra={**desc.extra, "scan": scan.to_dict() | {"path": src.name}})
        if arch is not None:
            desc = dataclasses.replace(desc, extra={**desc.extra, "arch": arch})
        return registry.add_description(desc, name=name, sign_with=sign_with), scan
    if not scan.loadable:
        require_loadable(src)  # raises with the scanner's reasons
    if not convert:
        raise ArtifactError(
            f"{src.name} is a pickle that scans clean, but Bastion stores no pickle; add --convert to register it "
            "as safetensors (and --arch package.module:factory to load it later)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        conv = convert_checkpoint(src, Path(tmp) / f"{src.stem}.safetensors")
        if arch is not None:
            _check_arch(conv.out, arch)
        desc = describe_model(conv.out)
        desc = dataclasses.replace(
            desc,
            transformation="convert",
            settings=conv.record(),
            extra={**desc.extra, **({"arch": arch} if arch else {})},
        )
        return registry.add_description(desc, name=name or src.stem, sign_with=sign_with), conv.scan


def _check_arch(weights: Path, arch: str) -> None:
    from safetensors.torch import load_file

    from bastion.models.formats.safetensors import build_from_factory

    module = build_from_factory(arch)
    try:
        module.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as e:
        raise ArtifactError(
            f"the checkpoint's tensors do not fit the module from {arch}: {str(e).splitlines()[0]}"
        ) from None
