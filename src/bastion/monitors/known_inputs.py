"""Inputs already known to be hostile, recognised on first sight; and the fingerprints of a key's recent inputs,
kept so that another monitor's alert can carry them (what ``bastion intel export`` shares).

Threat intelligence (``bastion intel import``) hands this monitor fingerprints of adversarial and probing inputs
another gateway saw (:mod:`bastion.monitors.fingerprint`). Every input of every request is fingerprinted at each crop
offset and compared with all of them by one matrix product; an input within an indicator's radius raises a critical
alert at once, naming the indicator, so the first replay of an attack found elsewhere moves its key under attack
(and the gateway refuses the input unless ``intel.reject_inputs`` is off).

An imported radius is never trusted as is. Each indicator's radius is cut to at most ``radius`` (a fraction of its
bits) and then to below the distance of the nearest of this model's own clean inputs, less ``reference_margin``:
an indicator that would match the data the model serves (a careless export, or a hostile one meant to make a
gateway refuse its own clients) is narrowed until it cannot, or dropped; :meth:`KnownInputsMonitor.summary` counts
both.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.errors import InputValidationError
from bastion.monitors.base import Alert, KeyStates, QueryEvent, Severity
from bastion.monitors.fingerprint import FingerprintScheme, distances, from_hex, pack_projections, unpack
from bastion.monitors.registry import MONITORS, MonitorKind, MonitorSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownInput:
    """One indicator: a fingerprint made under ``scheme``, matched within ``radius`` bits; ``ref`` names it (its
    STIX id), ``atlas`` the technique it indicates, ``source`` who shared it."""

    ref: str
    scheme: FingerprintScheme
    fingerprint: str
    radius: int
    atlas: str = "AML.T0043"
    source: str = ""

    def __post_init__(self) -> None:
        self.scheme.check_hex(self.fingerprint)
        if not 0 <= self.radius <= self.scheme.bits // 4:
            raise InputValidationError(f"indicator radius must be 0-{self.scheme.bits // 4} bits, got {self.radius}")


@dataclass
class _Group:
    """Indicators of one scheme, as a matrix."""

    scheme: FingerprintScheme
    refs: list[KnownInput]
    signs: Tensor  # (M, bits)
    radii: Tensor  # (M,) int32


@dataclass
class KnownInputsMonitor:
    """Matches inputs against imported indicators and keeps each key's recent fingerprints (module docstring)."""

    scheme: FingerprintScheme | None
    clean: Tensor  # (N, D) this model's clean inputs (the gateway's 12,000): indicators are narrowed off all of them
    radius: float = 0.0625
    reference_margin: int = 3
    recent: int = 32
    name: str = "known_inputs"
    max_keys: int = 10_000
    _keys: KeyStates[deque[bytes]] = field(init=False, repr=False)
    _groups: list[_Group] = field(init=False, repr=False)
    _summary: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._keys = KeyStates(self.max_keys)
        self._groups = []
        self._summary = {"indicators": 0, "active": 0, "narrowed": 0, "dropped": 0, "other_input_space": 0}

    # --- indicators -------------------------------------------------------------------------------------------------

    def set_indicators(self, indicators: list[KnownInput]) -> dict[str, int]:
        """Replace the indicators (all of them: the gateway passes every stored one after an import or removal)."""
        shape = None if self.scheme is None else self.scheme.shape
        by_scheme: dict[str, list[KnownInput]] = {}
        other = 0
        for ind in indicators:
            if ind.scheme.shape != shape:
                other += 1
                continue
            by_scheme.setdefault(ind.scheme.key, []).append(ind)
        groups, narrowed, dropped = [], 0, 0
        for members in by_scheme.values():
            scheme = members[0].scheme
            signs = torch.stack([from_hex(m.fingerprint) for m in members])
            cap = int(self.radius * scheme.bits)
            radii = torch.tensor([min(m.radius, cap) for m in members], dtype=torch.int32)
            nearest = self._nearest_clean(scheme, signs)
            limit = nearest - 1 - self.reference_margin
            narrowed += int(((limit < radii) & (limit >= 0)).sum())
            radii = torch.minimum(radii, limit)
            keep = radii >= 0
            dropped += int((~keep).sum())
            if keep.any():
                kept = [m for m, k in zip(members, keep.tolist(), strict=True) if k]
                groups.append(_Group(scheme, kept, signs[keep], radii[keep]))
        self._groups = groups
        active = sum(len(g.refs) for g in groups)
        self._summary = {
            "indicators": len(indicators),
            "active": active,
            "narrowed": narrowed,
            "dropped": dropped,
            "other_input_space": other,
        }
        if dropped or narrowed:
            log.warning(
                "%d imported fingerprint(s) matched this model's own clean data: %d narrowed, %d dropped",
                dropped + narrowed,
                narrowed,
                dropped,
            )
        return dict(self._summary)

    def summary(self) -> dict[str, int]:
        """Indicators given, active, narrowed or dropped against clean data, and those of another input space."""
        return dict(self._summary)

    def _nearest_clean(self, scheme: FingerprintScheme, signs: Tensor) -> Tensor:
        """Per indicator, the distance to the nearest clean input. The clean inputs' fingerprints are made once per
        scheme and kept packed (12,000 x 25 offsets x 32 bytes for 28 px images): every refresh after an import
        only compares."""
        cache = self.__dict__.setdefault("_clean_packed", {})
        if scheme.key not in cache:
            cache[scheme.key] = torch.cat(
                [scheme.packed(self.clean[s : s + 1024], all_offsets=True) for s in range(0, self.clean.shape[0], 1024)]
            )
        packed = cache[scheme.key]
        nearest = torch.full((signs.shape[0],), scheme.bits, dtype=torch.int32)
        for start in range(0, packed.shape[0], 1024):
            nearest = torch.minimum(nearest, distances(unpack(packed[start : start + 1024]), signs).amin(0))
        return nearest

    # --- the stream ------------------------------------------------------------------------------------------------

    @property
    def prepare_digest(self) -> str:
        """What :meth:`prepare` computes is fixed by the scheme (replicas compare this, not a sample output, whose
        shape depends on the indicators loaded)."""
        return "none" if self.scheme is None else self.scheme.key

    def _matches_own(self) -> bool:
        return any(self.scheme is not None and g.scheme.key == self.scheme.key for g in self._groups)

    def prepare(self, inputs: Tensor) -> Tensor:
        """This model's own fingerprints of ``inputs``, packed (N, S, bits / 8) uint8: at every crop offset while
        indicators of this model's scheme are loaded (S = offsets), else at the centre only (S = 1, what the key's
        recent fingerprints need; 25x cheaper for 28 px images)."""
        if self.scheme is None:
            return torch.zeros(inputs.shape[0], 0, 0, dtype=torch.uint8)
        if self._matches_own():
            return self.scheme.packed(inputs, all_offsets=True)
        return self.scheme.packed(inputs)[:, None, :]

    def prepare_module(self, input_shape: tuple[int, ...]) -> nn.Module | None:
        """The centre fingerprint's projections as a traceable module over inputs (N, *input_shape), for the
        gateway's model graph (:meth:`finish_prepared` packs them); None without a scheme for this input space."""
        if self.scheme is None or tuple(input_shape) != tuple(self.scheme.shape):
            return None
        return self.scheme.module()

    def finish_prepared(self, raw: Tensor, inputs: Tensor) -> Tensor:
        """What :meth:`prepare` returns, from the output of :meth:`prepare_module` (every crop offset is computed
        here instead while indicators of this model's scheme are loaded)."""
        if self.scheme is None or self._matches_own():
            return self.prepare(inputs)
        return pack_projections(raw)[:, None, :]

    def observe(self, event: QueryEvent) -> list[Alert]:
        if self.scheme is None:
            return []
        scheme = self.scheme
        own = event.prepared.get(self.name)
        if own is None or own.dim() != 3 or own.shape[1] not in (1, scheme.offsets) or own.shape[2] != scheme.bits // 8:
            own = self.prepare(event.inputs)
        recent = self._keys.get_or_create(event.key_id, lambda: deque(maxlen=self.recent))
        centre = own[-self.recent :, (own.shape[1] - 1) // 2].contiguous().numpy()
        recent.extend(row.tobytes() for row in centre)  # packed; hex only when an alert carries them
        groups = self._groups
        if not groups:
            return []
        own_signs = unpack(own)
        if own_signs.shape[1] != scheme.offsets and self._matches_own():
            own_signs = scheme.signs(event.inputs, all_offsets=True)
        hits: list[dict[str, Any]] = []
        for group in groups:
            probe = (
                own_signs if group.scheme.key == self.scheme.key else group.scheme.signs(event.inputs, all_offsets=True)
            )
            d = distances(probe, group.signs)  # (N, M)
            within = d <= group.radii[None, :]
            for i, j in within.nonzero().tolist():
                ind = group.refs[j]
                hits.append(
                    {
                        "input": i,
                        "indicator": ind.ref,
                        "distance": int(d[i, j]),
                        "radius": int(group.radii[j]),
                        "atlas": ind.atlas,
                        "source": ind.source,
                    }
                )
        if not hits:
            return []
        inputs = sorted({h["input"] for h in hits})
        first = min(hits, key=lambda h: h["distance"])
        return [
            Alert(
                monitor=self.name,
                kind=self.name,
                key_id=event.key_id,
                severity=Severity.CRITICAL,
                message=(
                    f"{len(inputs)} input(s) match fingerprints of known hostile inputs (nearest: {first['distance']} "
                    f"of {self.scheme.bits} bits from {first['indicator']}"
                    + (f", shared by {first['source']}" if first["source"] else "")
                    + ")"
                ),
                score=1.0 - first["distance"] / self.scheme.bits,
                atlas=str(first["atlas"]),
                time=event.time,
                evidence={"inputs": inputs[:50], "matches": hits[:20]},
            )
        ]

    def recent_fingerprints(self, key_id: str) -> list[str]:
        """The fingerprints of ``key_id``'s last ``recent`` inputs (centre crop), oldest first."""
        kept = self._keys.get(key_id)
        return [b.hex() for b in kept] if kept is not None else []

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id)


class KnownInputsSettings(MonitorSettings):
    radius: float = Field(0.0625, gt=0, le=0.25, description="largest match radius, a fraction of the bits")
    reference_margin: int = Field(3, ge=0, le=64, description="bits an indicator keeps away from the clean data")
    recent: int = Field(32, ge=1, le=1024, description="fingerprints kept per key for another monitor's alert")


def _build(st: KnownInputsSettings, clean: Tensor, probs: Tensor) -> KnownInputsMonitor:
    shape = tuple(clean.shape[1:])
    flat = clean.reshape(clean.shape[0], -1)
    try:
        scheme: FingerprintScheme | None = FingerprintScheme.for_inputs(shape, flat)
    except InputValidationError as exc:
        log.warning("inputs of shape %s cannot be fingerprinted (%s): the known_inputs monitor is off", shape, exc)
        scheme = None
    return KnownInputsMonitor(scheme, flat, st.radius, st.reference_margin, st.recent)


MONITORS.add(
    "known_inputs",
    MonitorKind(
        "known_inputs",
        KnownInputsSettings,
        _build,
        "Known hostile inputs (an input matches threat intelligence another gateway shared)",
        (
            "The key was put under attack at once and, unless intel.reject_inputs is off, the input was refused.",
            "The alert names the indicator and who shared it: `bastion intel list` shows the imported bundles.",
            "Revoke the key if its other traffic looks hostile too; tell the sharing team you saw their attack.",
            "If the match is a mistake, remove the bundle (`bastion intel remove`) and reset the key's level.",
        ),
    ),
)
