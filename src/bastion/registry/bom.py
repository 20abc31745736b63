"""A CycloneDX 1.6 ML bill of materials for a registered model, built with ``cyclonedx-python-lib``.

The BOM's subject (``metadata.component``) is the model, typed ``machine-learning-model``, with the sha256 of each of
its files. Its components are what it was made from and runs on: every ancestor in its lineage (datasets as
``data``, parent models as ``machine-learning-model``, each with its registry id and digests), its files, and the
Python packages the transformation recorded (``pkg:pypi`` URLs). Dependencies join them. The model card (approach,
task, datasets, the assessment's clean accuracy and verdict, the DP budget) is written in CycloneDX's ``modelCard``
field; ``cyclonedx-python-lib`` does not model that field yet, so it is added to the serialized document and the
whole is then validated against the CycloneDX 1.6 JSON schema (strict), so a BOM Bastion writes is always valid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion._version import __version__
from bastion.errors import ArtifactError
from bastion.registry.manifest import Manifest
from bastion.registry.registry import LineageNode, Registry


def _hashes(manifest: Manifest) -> list[Any]:
    from cyclonedx.model import HashAlgorithm, HashType

    return [HashType(alg=HashAlgorithm.SHA_256, content=f.sha256) for f in manifest.files]


def _props(pairs: dict[str, Any]) -> list[Any]:
    from cyclonedx.model import Property

    return [Property(name=f"bastion:{k}", value=str(v)) for k, v in pairs.items() if v not in (None, "", {}, [])]


def _component(registry: Registry, node: LineageNode) -> Any:
    from cyclonedx.model.component import Component, ComponentType

    m = registry.manifest(node.row)
    kind = {
        "model": ComponentType.MACHINE_LEARNING_MODEL,
        "dataset": ComponentType.DATA,
        "report": ComponentType.FILE,
    }[m.kind]
    return Component(
        name=m.name,
        version=str(m.version),
        type=kind,
        bom_ref=f"bastion:{m.id}",
        hashes=_hashes(m),
        description=f"{m.kind} {m.name}@{m.version} ({m.transformation.name}); {node.role} of its child",
        properties=_props(
            {
                "artifact-id": m.id,
                "role": node.role,
                "format": m.format,
                "transformation": m.transformation.name,
                "dataset-digest": m.dataset_digest,
                "signer": node.row.signer,
            }
        ),
    )


def _walk(node: LineageNode) -> list[LineageNode]:
    out = []
    for p in node.parents:
        out.append(p)
        out += _walk(p)
    return out


def model_bom(registry: Registry, ref: str) -> dict[str, Any]:
    """The ML-BOM of model ``ref`` as a JSON-ready dict (validated against the CycloneDX 1.6 schema)."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output import make_outputter
    from cyclonedx.output.json import OutputFormat
    from cyclonedx.schema import SchemaVersion
    from packageurl import PackageURL

    row = registry.resolve(ref, "model")
    manifest = registry.manifest(row)
    tree = registry.lineage(row.id)
    subject = Component(
        name=manifest.name,
        version=str(manifest.version),
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=f"bastion:{manifest.id}",
        hashes=_hashes(manifest),
        description=f"model {manifest.name}@{manifest.version}, registered in a Bastion registry",
        properties=_props(
            {
                "artifact-id": manifest.id,
                "format": manifest.format,
                "transformation": manifest.transformation.name,
                "dataset-digest": manifest.dataset_digest,
                "signer": row.signer,
                "signature-format": "OpenSSF model signing (Sigstore bundle)" if row.signer else None,
                "assessment-verdict": (manifest.assessment or {}).get("verdict"),
            }
        ),
    )
    bom = Bom()
    bom.metadata.component = subject
    from cyclonedx.contrib.this.builders import this_component

    bom.metadata.tools.components.add(this_component())
    bom.metadata.tools.components.add(Component(name="bastion-ml", version=__version__, type=ComponentType.APPLICATION))
    ancestors = {n.row.id: n for n in _walk(tree)}
    comps = {aid: _component(registry, node) for aid, node in ancestors.items()}
    for c in comps.values():
        bom.components.add(c)
    files = []
    for f in manifest.files:
        from cyclonedx.model import HashAlgorithm, HashType

        fc = Component(
            name=f.path,
            type=ComponentType.FILE,
            bom_ref=f"bastion:{manifest.id}:{f.path}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=f.sha256)],
            properties=_props({"size": f.size}),
        )
        bom.components.add(fc)
        files.append(fc)
    libs = []
    for lib, version in sorted(manifest.transformation.versions.items()):
        if lib == "python":
            continue
        pypi = "bastion-ml" if lib == "bastion" else lib
        lc = Component(
            name=pypi,
            version=version,
            type=ComponentType.LIBRARY,
            bom_ref=f"pypi:{pypi}@{version}",
            purl=PackageURL(type="pypi", name=pypi, version=version.split("+")[0]),
        )
        bom.components.add(lc)
        libs.append(lc)
    direct = [comps[p.row.id] for p in tree.parents if p.row.id in comps]
    bom.register_dependency(subject, [*direct, *files, *libs])
    for aid, node in ancestors.items():
        deps = [comps[p.row.id] for p in node.parents if p.row.id in comps]
        if deps:
            bom.register_dependency(comps[aid], deps)
    doc = json.loads(make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_6).output_as_string())
    doc["metadata"]["component"]["modelCard"] = _model_card(manifest, ancestors)
    problems = validate_bom(doc)
    if problems:
        raise ArtifactError("the ML-BOM does not validate against the CycloneDX 1.6 schema", problems=problems)
    return doc


def _model_card(manifest: Manifest, ancestors: dict[str, LineageNode]) -> dict[str, Any]:
    datasets = [{"ref": f"bastion:{aid}"} for aid, n in ancestors.items() if n.row.kind == "dataset"]
    training = manifest.training
    params: dict[str, Any] = {
        "approach": {"type": "supervised"},
        "task": "classification",
        "architectureFamily": str(manifest.transformation.settings.get("architecture") or manifest.format),
    }
    if datasets:
        params["datasets"] = datasets
    metrics = []
    acc = manifest.transformation.settings.get("clean_accuracy")
    if acc is not None:
        metrics.append({"type": "accuracy (clean test, at training)", "value": f"{float(acc):.4f}"})
    a = manifest.assessment or {}
    if a.get("clean_accuracy") is not None:
        metrics.append({"type": "accuracy (clean, assessment)", "value": f"{float(a['clean_accuracy']):.4f}"})
    if a.get("verdict"):
        metrics.append({"type": f"assessment gate ({a.get('policy') or 'policy'})", "value": str(a["verdict"])})
    card: dict[str, Any] = {"modelParameters": params}
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    considerations = []
    if manifest.privacy:
        p = manifest.privacy
        considerations.append(
            f"trained with DP-SGD: epsilon {p.get('epsilon')}, delta {p.get('delta')} ({p.get('accountant')} accountant)"
        )
    if training.get("method") and training.get("method") != "dp-sgd":
        considerations.append(f"adversarially trained with {training.get('method')}")
    if a.get("reasons"):
        considerations += [f"assessment: {r}" for r in a["reasons"]]
    if considerations:
        card["considerations"] = {"technicalLimitations": considerations}
    return card


def validate_bom(doc: dict[str, Any]) -> list[str]:
    """Every CycloneDX 1.6 schema violation in ``doc`` (strict validation); empty when it is valid."""
    from cyclonedx.schema import OutputFormat, SchemaVersion
    from cyclonedx.validation import make_schemabased_validator

    validator = make_schemabased_validator(OutputFormat.JSON, SchemaVersion.V1_6)
    errors = validator.validate_str(json.dumps(doc), all_errors=True)
    return [str(getattr(e, "data", e)).splitlines()[0][:300] for e in (errors or [])]


def write_bom(registry: Registry, ref: str, out: str | Path) -> Path:
    """Write the model's ML-BOM (CycloneDX 1.6 JSON) to ``out``."""
    doc = model_bom(registry, ref)
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2) + "\n")
    return p
