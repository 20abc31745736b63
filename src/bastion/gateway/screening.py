"""Build each served model's input detectors (``bastion.detectors``) from the configuration, fitted on the same
clean inputs the monitors are calibrated on."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from bastion._cache import digest_path, load_or_train
from bastion.defenses.ensemble import Ensemble
from bastion.defenses.preprocessing import MedianFilter
from bastion.detectors.base import FittedThreshold
from bastion.detectors.input import FeatureSqueezing, Mahalanobis, Reconstruction
from bastion.detectors.input.squeeze import default_squeezers
from bastion.detectors.screen import Screen
from bastion.errors import ConfigError
from bastion.gateway.config import DetectorsConfig
from bastion.models.torch import TorchClassifier

log = logging.getLogger(__name__)


def _reconstruction(cfg: DetectorsConfig, clean: Tensor, bounds: tuple[float, float]) -> Reconstruction:
    """Trained once per clean data and settings, then loaded from $BASTION_CACHE_DIR (safetensors, no pickle)."""
    det = Reconstruction(fpr=cfg.fpr, bounds=bounds, epochs=cfg.reconstruction.epochs)
    path = digest_path("detectors", "reconstruction-", clean, [list(bounds), det.params()])

    def train() -> Reconstruction:
        log.warning(
            "training the reconstruction detector's autoencoder on %d clean inputs (%d epochs; once per data, then "
            "cached in %s)",
            clean.shape[0],
            det.epochs,
            path.parent,
        )
        return det.fit(clean)

    return load_or_train(path, "reconstruction detector", Reconstruction.load, train)


def build_screen(cfg: DetectorsConfig, name: str, model: Ensemble, clean: Tensor) -> Screen:
    """The detectors ``cfg`` enables for served model ``name``, fitted on ``clean`` inputs of its data.

    A detector that cannot apply to the model (Mahalanobis needs a torch member) is skipped with a log line when
    left at its default, and is a configuration error when enabled explicitly."""
    detectors: list[FittedThreshold] = []
    if not cfg.enabled:
        return Screen(())
    m = cfg.mahalanobis
    if m.enabled:
        member = next((c for c in model.members if isinstance(c, TorchClassifier)), None)
        if member is None:
            if "enabled" in m.model_fields_set:
                raise ConfigError(
                    f"detectors.mahalanobis needs a torch model to read features from; model {name!r} has none "
                    "(ONNX, scikit-learn and remote models): disable it for this gateway"
                )
            log.warning("model %r: no torch member, so no Mahalanobis detector", name)
        else:
            with torch.no_grad():
                labels = model.predict(clean).probs.argmax(1)
            # the model's own labels: a baseline without labels (a user's .npz of inputs) works the same
            detectors.append(
                Mahalanobis(fpr=cfg.fpr, model=member, layer=m.layer, shrinkage=m.shrinkage).fit(clean, labels)
            )
    s = cfg.squeezing
    if s.enabled:
        shape = model.spec.input_shape
        image = len(shape) == 3
        median = s.median
        if median and not image:
            raise ConfigError(f"detectors.squeezing.median needs image inputs; model {name!r} takes {shape}: set 0")
        squeezers = default_squeezers(shape, s.bit_depth) + ((MedianFilter(median),) if median else ())
        detectors.append(FeatureSqueezing(fpr=cfg.fpr, model=model, squeezers=squeezers).fit(clean))
    if cfg.reconstruction.enabled:
        detectors.append(_reconstruction(cfg, clean, tuple(model.spec.bounds)))  # type: ignore[arg-type]
    for d in detectors:
        log.info(
            "model %r: %s detector, threshold %.4g at %.0f%% false positives",
            name,
            d.name,
            d.threshold_,
            100 * d.clean_fpr_,
        )
    return Screen(tuple(detectors))
