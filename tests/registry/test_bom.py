"""The CycloneDX ML-BOM validates against the schema and names what the model was made from."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.registry import model_bom, validate_bom, write_bom

from .conftest import Signed


def test_the_bom_is_schema_valid_and_complete(signed: Signed, tmp_path: Path) -> None:
    out = write_bom(signed.registry, signed.model_id, tmp_path / "bom.json")
    doc = json.loads(out.read_text())
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert validate_bom(doc) == []
    subject = doc["metadata"]["component"]
    assert subject["type"] == "machine-learning-model" and subject["bom-ref"] == f"bastion:{signed.model_id}"
    manifest = signed.registry.manifest(signed.model_id)
    assert {h["content"] for h in subject["hashes"]} == {f.sha256 for f in manifest.files}
    data = [c for c in doc["components"] if c["type"] == "data"]
    assert [c["bom-ref"] for c in data] == [f"bastion:{signed.dataset_id}"]
    libs = {c["name"] for c in doc["components"] if c["type"] == "library"}
    assert {"torch", "numpy", "bastion-ml"} <= libs
    card = subject["modelCard"]
    assert card["modelParameters"]["datasets"] == [{"ref": f"bastion:{signed.dataset_id}"}]
    assert card["quantitativeAnalysis"]["performanceMetrics"][0]["type"].startswith("accuracy")
    deps = {d["ref"]: set(d.get("dependsOn", [])) for d in doc["dependencies"]}
    assert f"bastion:{signed.dataset_id}" in deps[f"bastion:{signed.model_id}"]
    props = {p["name"]: p["value"] for p in subject["properties"]}
    assert props["bastion:signer"] == signed.registry.resolve(signed.model_id).signer


def test_the_validator_catches_a_broken_bom(signed: Signed) -> None:
    doc = model_bom(signed.registry, signed.model_id)
    doc["metadata"]["component"]["modelCard"]["modelParameters"]["approach"] = {"type": "guesswork"}
    assert validate_bom(doc)
    del doc["bomFormat"]
    assert any("bomFormat" in p for p in validate_bom(doc))
