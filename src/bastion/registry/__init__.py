"""Supply chain: a registry of signed, versioned models and datasets with lineage, scanning of artifacts from
elsewhere, safe loading, and an ML bill of materials.

- :class:`Registry` (``registry.py``): add, resolve, verify, trace and export artifacts (``store.py`` holds them).
- :mod:`~bastion.registry.manifest` / :mod:`~bastion.registry.digest`: what one artifact version records.
- :mod:`~bastion.registry.signing`: signatures in the OpenSSF model-signing format (``model-signing``).
- :mod:`~bastion.registry.scan`: pickle analysis with fickling and modelscan; :mod:`~bastion.registry.loading`:
  verified loading and checkpoint conversion; :mod:`~bastion.registry.bom`: the CycloneDX ML-BOM.

Importing this package loads no heavy library; each loads when a function needs it.
"""

from bastion.registry.bom import model_bom, validate_bom, write_bom
from bastion.registry.loading import VerifiedModel, convert_checkpoint, import_model, load_verified
from bastion.registry.manifest import Manifest, Parent, Transformation
from bastion.registry.registry import LineageNode, Registry, Verification
from bastion.registry.scan import ScanResult, require_loadable, scan_file
from bastion.registry.signing import SigningKey, TrustPolicy, fingerprint, generate_keypair

__all__ = [
    "LineageNode",
    "Manifest",
    "Parent",
    "Registry",
    "ScanResult",
    "SigningKey",
    "Transformation",
    "TrustPolicy",
    "Verification",
    "VerifiedModel",
    "convert_checkpoint",
    "fingerprint",
    "generate_keypair",
    "import_model",
    "load_verified",
    "model_bom",
    "require_loadable",
    "scan_file",
    "validate_bom",
    "write_bom",
]
