"""scikit-learn estimators saved with skops (``.skops``): loaded without pickle, every type checked first.

skops rebuilds an estimator from a JSON schema and refuses types it does not trust; Bastion lists any untrusted
type and loads only when the user has named each one with ``--trust``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bastion.errors import ArtifactError
from bastion.models.formats.base import LoadContext, LoadedClassifier, resolve_spec
from bastion.models.sklearn import SklearnClassifier
from bastion.models.zoo.card import sha256_file


def load_skops(path: Path, ctx: LoadContext) -> LoadedClassifier:
    import skops.io as sio

    source = f"scikit-learn model {path.name}"
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as e:  # skops raises several types for malformed files
        raise ArtifactError(f"cannot read {source}: {type(e).__name__}: {e}") from None
    missing = sorted(set(untrusted) - set(ctx.trusted_types))
    if missing:
        raise ArtifactError(
            f"{source} contains types skops does not trust by default: {', '.join(missing)}; if you trust the file's "
            "author, pass each with --trust TYPE"
        )
    try:
        est = sio.load(str(path), trusted=list(untrusted) or None)
    except Exception as e:
        raise ArtifactError(f"cannot load {source}: {type(e).__name__}: {e}") from None
    classes = getattr(est, "classes_", None)
    n_features = getattr(est, "n_features_in_", None)
    if classes is None or not hasattr(est, "predict_proba"):
        raise ArtifactError(f"{source} must be a fitted classifier with predict_proba (got {type(est).__name__})")
    hints = ctx.hints
    shape: tuple[int | None, ...] | None = None
    if n_features is not None:
        if hints.input_shape is not None and int(np.prod(hints.input_shape)) == int(n_features):
            shape = hints.input_shape  # e.g. images flattened by the estimator: keep the data's shape
        else:
            shape = (int(n_features),)
    names = tuple(str(c) for c in classes)
    spec = resolve_spec(hints, source=source, input_shape=shape, num_classes=len(classes), class_names=names)
    return LoadedClassifier(
        SklearnClassifier(est, spec),
        format="skops",
        access="black-box",
        path=path,
        sha256=sha256_file(path),
        name=path.stem,
        notes=(f"scikit-learn {type(est).__name__} through skops (black-box)",),
        extra={"estimator": type(est).__name__, "trusted_types": list(untrusted)},
    )
