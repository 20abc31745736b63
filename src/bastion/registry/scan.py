"""Scan a serialized artifact from elsewhere before anything loads it: pickles are analysed, never unpickled.

Unpickling runs whatever callables the pickle names (MITRE ATLAS AML.T0011, unsafe ML artifacts), so a pickle, a
``torch.save`` checkpoint (a zip around ``data.pkl``, or the legacy raw format) or a joblib file is analysed by two
independent libraries and refused when either says it can run code:

- **fickling** (Trail of Bits): decompiles each pickle stream to the Python it would run. Its default analyses name
  overtly malicious patterns (``os.system``, ``exec``, ``builtins.getattr`` chains, unused call results); its ML
  allowlist names every import that is not a known-safe tensor/array rebuild function. Bastion refuses a pickle with
  any import outside that allowlist, so a benign state dict of tensors passes and anything else does not.
- **modelscan** (Protect AI): a denylist of dangerous globals, across pickle, zip and legacy torch formats.

The verdict is ``safe`` (every import is on the allowlist and neither tool found anything), ``unsafe`` (it imports
something that can run code, or could not be parsed) or ``malicious`` (a known code-execution pattern). Only a safe
file may be converted (:func:`bastion.registry.loading.convert_checkpoint`), and even then it is read with torch's
own restricted unpickler (``weights_only=True``): two independent checks, not one.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bastion.errors import ArtifactError, UnsafeArtifactError

log = logging.getLogger(__name__)

Verdict = Literal["safe", "unsafe", "malicious", "not-pickle"]
_RANK = {"not-pickle": 0, "safe": 0, "unsafe": 1, "malicious": 2}
_PICKLE_MEMBERS = (".pkl", ".pickle", ".bin")


@dataclass(frozen=True)
class ScanFinding:
    """One thing a scanner reported: which tool, where (a zip member or the file), how bad, and what."""

    tool: str
    where: str
    verdict: Verdict
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"tool": self.tool, "where": self.where, "verdict": self.verdict, "detail": self.detail}


@dataclass(frozen=True)
class ScanResult:
    """What scanning one file found; ``verdict`` is the worst of its findings."""

    path: Path
    format: str
    verdict: Verdict
    findings: tuple[ScanFinding, ...]
    streams: int

    @property
    def loadable(self) -> bool:
        return self.verdict in ("safe", "not-pickle")

    def reason(self) -> str:
        worst = [f for f in self.findings if f.verdict == self.verdict] or list(self.findings)
        return "; ".join(f"{f.tool}: {f.detail}" for f in worst[:4])

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "format": self.format,
            "verdict": self.verdict,
            "streams": self.streams,
            "findings": [f.to_dict() for f in self.findings],
        }


def _pickle_streams(path: Path) -> list[tuple[str, bytes]]:
    """The pickle streams in ``path``: the file itself, or each pickle member of a zip (torch.save's data.pkl)."""
    if zipfile.is_zipfile(path):
        out = []
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.is_dir() and info.filename.lower().endswith(_PICKLE_MEMBERS):
                    out.append((info.filename, z.read(info)))
        return out
    return [(path.name, path.read_bytes())]


def _fickling(where: str, data: bytes) -> list[ScanFinding]:
    from fickling.analysis import Analyzer, Severity, check_safety
    from fickling.fickle import PickleDecodeError, StackedPickle
    from fickling.ml import MLAllowlist

    try:
        stacked = StackedPickle.load(io.BytesIO(data), fail_on_decode_error=True)
    except (PickleDecodeError, ValueError, EOFError) as e:
        return [ScanFinding("fickling", where, "unsafe", f"cannot be parsed as a pickle ({e}); refusing to guess")]
    findings: list[ScanFinding] = []
    allow = Analyzer([MLAllowlist()])
    for pickled in stacked:
        try:
            general = check_safety(pickled)
            allowed = allow.analyze(pickled)
        except Exception as e:  # fickling's interpreter can fail on hostile opcode sequences
            findings.append(ScanFinding("fickling", where, "unsafe", f"analysis failed: {type(e).__name__}: {e}"))
            continue
        if general.severity >= Severity.LIKELY_OVERTLY_MALICIOUS:
            for r in general.results:
                if r.severity >= Severity.LIKELY_OVERTLY_MALICIOUS:
                    findings.append(ScanFinding("fickling", where, "malicious", _first_line(str(r))))
        for r in allowed.results:
            if r.severity >= Severity.LIKELY_UNSAFE:
                trigger = r.trigger or _first_line(str(r))
                findings.append(
                    ScanFinding("fickling", where, "unsafe", f"imports {trigger} (not on the ML allowlist)")
                )
    return findings


def _modelscan(path: Path) -> list[ScanFinding]:
    from modelscan.modelscan import ModelScan
    from modelscan.settings import DEFAULT_SETTINGS

    logging.getLogger("modelscan").setLevel(logging.ERROR)
    try:
        report = ModelScan(settings=DEFAULT_SETTINGS).scan(str(path))
    except Exception as e:  # modelscan wraps many file errors; any of them means "could not vouch for it"
        return [ScanFinding("modelscan", path.name, "unsafe", f"scan failed: {type(e).__name__}: {e}")]
    findings = []
    for issue in report.get("issues", []):
        sev = str(issue.get("severity", "")).upper()
        verdict: Verdict = "malicious" if sev in ("CRITICAL", "HIGH") else "unsafe"
        what = f"{issue.get('module')}.{issue.get('operator')}"
        findings.append(ScanFinding("modelscan", path.name, verdict, f"{sev.lower()}: uses {what}"))
    for err in report.get("errors", []):
        findings.append(ScanFinding("modelscan", path.name, "unsafe", f"error: {err}"))
    return findings


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no detail)"


def scan_file(path: str | Path) -> ScanResult:
    """Analyse ``path`` without loading it. Non-pickle formats (safetensors, ONNX, torch.export, skops) carry no
    pickled code and get ``not-pickle``; every pickle stream in a pickle file or a torch.save zip is analysed."""
    from bastion.models.formats.sniff import detect_format

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p} does not exist (or is not a file)")
    fmt = detect_format(p)
    if fmt != "pickle":
        return ScanResult(p, fmt, "not-pickle", (), 0)
    streams = _pickle_streams(p)
    findings: list[ScanFinding] = []
    for where, data in streams:
        findings += _fickling(where, data)
    if not streams:
        findings.append(ScanFinding("bastion", p.name, "unsafe", "a pickle archive with no pickle member to analyse"))
    findings += _modelscan(p)
    verdict: Verdict = "safe"
    for f in findings:
        if _RANK[f.verdict] > _RANK[verdict]:
            verdict = f.verdict
    return ScanResult(p, "pickle", verdict, tuple(findings), len(streams))


def require_loadable(path: str | Path) -> ScanResult:
    """Scan ``path`` and raise :class:`UnsafeArtifactError` unless it is safe (or not a pickle at all)."""
    result = scan_file(path)
    if not result.loadable:
        raise UnsafeArtifactError(
            f"{result.path.name} is refused: a {result.verdict} pickle ({result.reason()}); Bastion loads no code "
            "from a model file. Export the model where you trust it (safetensors, ONNX, torch.export)"
        )
    return result
