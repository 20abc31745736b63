"""Threat intelligence out and in, as STIX 2.1 bundles (made and checked by the ``stix2`` library).

**Out** (:func:`export_bundle`): what the gateway saw in a period, from its incidents: one attack pattern per MITRE
ATLAS technique involved (with its ATLAS reference); indicators of the inputs behind evasion alerts — the
fingerprints (:mod:`bastion.monitors.fingerprint`) of the flagged key's last inputs, which every such alert
carries, clustered so that one attack's near-duplicate queries become one indicator; a sighting of each indicator
(how many inputs, first and last seen); client addresses only where ``clients`` allows (public addresses, or all);
one report per incident. Never a key id, a key secret, an input or an output: a test greps every bundle for them.

**In** (:func:`parse_bundle`, :func:`import_bundle`): a bundle from this or any other gateway becomes stored
indicators: fingerprint indicators (``pattern_type`` ``bastion-simhash-1``) go to each served model's
``known_inputs`` monitor, which alerts on a matching input at once; ``[ipv4-addr:value = '...']`` and
``[ipv6-addr:value = '...']`` indicators list client addresses or networks, whose requests raise a critical alert.
Other indicators are valid STIX that Bastion cannot apply, counted and skipped. A bundle that is oversize, nested
too deeply, not STIX 2.1, of objects Bastion does not import, or carries a malformed Bastion indicator is refused
whole, with one message, before anything is stored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import torch

from bastion.atlas import SOURCE, is_technique_id, technique_name, technique_url
from bastion.errors import InputValidationError
from bastion.gateway.store.base import IntelRecord
from bastion.monitors.base import Alert, Severity
from bastion.monitors.fingerprint import SCHEME, FingerprintScheme, distances, from_hex, to_hex
from bastion.monitors.known_inputs import KnownInput

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_OBJECTS = 50_000
MAX_DEPTH = 16
IMPORTED_TYPES = ("identity", "attack-pattern", "indicator", "relationship", "sighting", "report", "marking-definition")
EVASION = ("AML.T0043", "AML.T0015")  # alerts whose key's recent inputs are the attack's own inputs
ClientPolicy = Literal["none", "public", "all"]
_ADDRESS = re.compile(r"\[(ipv4-addr|ipv6-addr):value\s*=\s*'([0-9A-Fa-f.:/]{2,64})'\]")


def carries_fingerprints(alert: Alert) -> bool:
    """Whether an alert's evidence should carry the fingerprints of its key's recent inputs (evasion alerts: the
    recent inputs are the attack's queries; an extraction client's are natural data, not worth sharing)."""
    return alert.key_id is not None and alert.kind != "known_inputs" and alert.atlas.startswith(EVASION)


# --- export ---------------------------------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Cluster:
    scheme: FingerprintScheme
    members: list[str]
    times: list[float]
    atlas: str
    incident: int


def _clusters(scheme: FingerprintScheme, found: list[tuple[str, float, str, int]]) -> list[_Cluster]:
    """Greedy clustering of fingerprints within a sixteenth of their bits; a cluster's fingerprint is the majority
    vote of its members (one attack's near-duplicate queries become one indicator)."""
    radius = scheme.bits // 16
    out: list[_Cluster] = []
    heads: list[torch.Tensor] = []
    for fp, t, atlas, incident in found:
        signs = from_hex(fp)
        if heads:
            d = distances(signs[None, None, :], torch.stack(heads))[0]
            j = int(d.argmin())
            if int(d[j]) <= radius:
                out[j].members.append(fp)
                out[j].times.append(t)
                continue
        heads.append(signs)
        out.append(_Cluster(scheme, [fp], [t], atlas, incident))
    return out


def export_bundle(
    store: Any,
    *,
    since: float,
    until: float,
    identity: str = "Bastion gateway",
    clients: ClientPolicy = "none",
) -> tuple[str, dict[str, Any]]:
    """A STIX 2.1 bundle (JSON text) of the incidents active in ``[since, until]``, and a summary of what it holds."""
    from stix2 import v21

    if not since < until:
        raise InputValidationError(f"the period is empty: since ({_iso(since)}) must be before until ({_iso(until)})")
    if clients not in ("none", "public", "all"):
        raise InputValidationError(f"clients must be none, public or all, got {clients!r}")
    me = v21.Identity(name=identity, identity_class="system", description="a Bastion gateway")
    incidents = [i for i in store.list_incidents() if i.opened_at <= until and i.updated_at >= since]
    patterns: dict[str, Any] = {}

    def pattern(atlas: str) -> Any:
        if atlas not in patterns:
            patterns[atlas] = v21.AttackPattern(
                name=technique_name(atlas),
                created_by_ref=me.id,
                external_references=[{"source_name": SOURCE, "external_id": atlas, "url": technique_url(atlas)}],
            )
        return patterns[atlas]

    objects: list[Any] = []
    per_incident: dict[int, list[Any]] = {}
    by_scheme: dict[str, tuple[FingerprintScheme, list[tuple[str, float, str, int]]]] = {}
    keys_of: dict[int, str | None] = {}
    for inc in incidents:
        iid = int(inc.incident_id or 0)
        keys_of[iid] = inc.key_id
        per_incident[iid] = []
        if is_technique_id(inc.atlas):
            per_incident[iid].append(pattern(inc.atlas))
        for ev in inc.evidence:
            t = float(ev.get("time", inc.opened_at))
            atlas = str(ev.get("atlas", inc.atlas))
            if not since <= t <= until or not is_technique_id(atlas):
                continue
            per_incident[iid].append(pattern(atlas))
            fps = ev.get("evidence", {}).get("fingerprints") or []
            raw_scheme = ev.get("evidence", {}).get("fingerprint_scheme")
            if not fps or raw_scheme is None:
                continue
            scheme = FingerprintScheme.from_dict(raw_scheme)
            bucket = by_scheme.setdefault(scheme.key, (scheme, []))[1]
            bucket.extend((scheme.check_hex(fp), t, atlas, iid) for fp in fps)
    n_inputs = 0
    for scheme, found in by_scheme.values():
        for c in _clusters(scheme, found):
            votes = torch.stack([from_hex(m) for m in c.members]).sum(0)
            centre = to_hex(torch.where(votes >= 0, 1.0, -1.0))
            ind = v21.Indicator(
                name=f"Inputs of an attack: {technique_name(c.atlas)}",
                description=f"Fingerprint of {len(c.members)} input(s) a Bastion gateway flagged ({c.atlas})",
                indicator_types=["malicious-activity"],
                pattern_type=SCHEME,
                pattern=centre,
                valid_from=_iso(min(c.times)),
                created_by_ref=me.id,
                external_references=[{"source_name": SOURCE, "external_id": c.atlas, "url": technique_url(c.atlas)}],
                custom_properties={"x_bastion_scheme": scheme.to_dict(), "x_bastion_radius": scheme.bits // 16},
                allow_custom=True,
            )
            seen = v21.Sighting(
                sighting_of_ref=ind.id,
                count=len(c.members),
                first_seen=_iso(min(c.times)),
                last_seen=_iso(max(c.times)) if max(c.times) > min(c.times) else _iso(min(c.times) + 1e-3),
                where_sighted_refs=[me.id],
                created_by_ref=me.id,
            )
            objects += [ind, v21.Relationship(ind, "indicates", pattern(c.atlas), created_by_ref=me.id), seen]
            per_incident[c.incident] += [ind, seen]
            n_inputs += 1
    n_clients = 0
    if clients != "none":
        wanted = {key for iid, key in keys_of.items() if key is not None and per_incident[iid]}
        addresses = _clients_of(store, wanted, since, until, clients)
        for iid, key in keys_of.items():
            if key is None or not per_incident[iid]:
                continue
            for address, first in addresses.get(key, {}).items():
                kind = "ipv6-addr" if ":" in address else "ipv4-addr"
                ind = v21.Indicator(
                    name="A client address an attack came from",
                    indicator_types=["malicious-activity"],
                    pattern_type="stix",
                    pattern=f"[{kind}:value = '{address}']",
                    valid_from=_iso(first),
                    created_by_ref=me.id,
                )
                inc_pattern = next((p for p in per_incident[iid] if p.type == "attack-pattern"), None)
                inc_pattern = inc_pattern if inc_pattern is not None else pattern("AML.T0040")
                objects += [ind, v21.Relationship(ind, "indicates", inc_pattern, created_by_ref=me.id)]
                per_incident[iid].append(ind)
                n_clients += 1
    reports = []
    for inc in incidents:
        refs = list(dict.fromkeys(o.id for o in per_incident[int(inc.incident_id or 0)]))
        if not refs:
            continue
        steps = ", ".join(
            f"{a.get('action')} at {_iso(float(a.get('time', 0)))}" for a in inc.actions if a.get("action")
        )
        reports.append(
            v21.Report(
                name=f"Bastion incident {inc.incident_id}: {inc.kind}",
                description=(
                    f"{inc.kind} ({inc.severity}, {inc.atlas}): {inc.alert_count} alert(s), status {inc.status}, "
                    f"opened {_iso(inc.opened_at)}, last updated {_iso(inc.updated_at)}"
                    + (f"; actions: {steps}" if steps else "")
                ),
                report_types=["threat-report"],
                published=_iso(inc.opened_at),
                object_refs=refs,
                created_by_ref=me.id,
            )
        )
    bundle = v21.Bundle(me, *patterns.values(), *objects, *reports, allow_custom=True)
    summary = {
        "incidents": len(incidents),
        "attack_patterns": sorted(patterns),
        "input_indicators": n_inputs,
        "client_indicators": n_clients,
        "reports": len(reports),
        "since": _iso(since),
        "until": _iso(until),
    }
    return bundle.serialize(pretty=True), summary


def _clients_of(
    store: Any, keys: set[str], since: float, until: float, policy: ClientPolicy
) -> dict[str, dict[str, float]]:
    """Per key of ``keys``: the addresses its requests came from in the period (as ``policy`` allows), each with
    the first time seen; one pass over the audit log."""
    seen: dict[str, dict[str, float]] = {}
    if not keys:
        return seen
    for e in store.events_between(since, until):
        if e.key_id not in keys or not e.client:
            continue
        try:
            address = ipaddress.ip_address(e.client)
        except ValueError:
            continue
        if policy == "public" and not address.is_global:
            continue
        seen.setdefault(e.key_id, {}).setdefault(str(address), e.time)
    return seen


# --- import ---------------------------------------------------------------------------------------------------------


@dataclass
class ParsedIntel:
    """What a bundle holds that Bastion can apply, and what it skipped (by reason)."""

    bundle: str
    source: str
    records: list[IntelRecord]
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "source": self.source,
            "input_indicators": sum(r.kind == "input" for r in self.records),
            "client_indicators": sum(r.kind == "client" for r in self.records),
            "skipped": dict(self.skipped),
        }


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _time(text: Any, what: str) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputValidationError(f"{what} is not a timestamp: {str(text)[:40]!r}") from None


def parse_bundle(data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES, now: float | None = None) -> ParsedIntel:
    """Check a STIX 2.1 bundle and turn what Bastion can apply into indicator records (nothing is stored here)."""
    import stix2
    from stix2.exceptions import STIXError

    now = time.time() if now is None else now
    if len(data) > max_bytes:
        raise InputValidationError(
            f"the bundle is {len(data):,} bytes, over the {max_bytes:,}-byte limit (raise --max-bytes if it is trusted)"
        )
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputValidationError(f"the bundle is not JSON text: {str(exc).splitlines()[0][:120]}") from None
    except RecursionError:
        raise InputValidationError(f"the bundle is nested too deeply (at most {MAX_DEPTH} levels)") from None
    if _depth(doc) > MAX_DEPTH:
        raise InputValidationError(f"the bundle is nested too deeply (at most {MAX_DEPTH} levels)")
    if not isinstance(doc, dict) or doc.get("type") != "bundle" or not isinstance(doc.get("objects", []), list):
        raise InputValidationError('not a STIX bundle: expected an object with "type": "bundle" and a list "objects"')
    objs = doc.get("objects", [])
    if len(objs) > MAX_OBJECTS:
        raise InputValidationError(f"the bundle has {len(objs):,} objects, over the limit of {MAX_OBJECTS:,}")
    for i, o in enumerate(objs):
        if not isinstance(o, dict):
            raise InputValidationError(f"object {i} of the bundle is a {type(o).__name__}, not a STIX object")
        if o.get("type") not in IMPORTED_TYPES:
            raise InputValidationError(
                f"object {i} has type {str(o.get('type'))[:60]!r}, which Bastion does not import "
                f"(it imports {', '.join(IMPORTED_TYPES)}): remove it from the bundle"
            )
        if o.get("spec_version") != "2.1":
            raise InputValidationError(
                f"object {i} ({o.get('type')}) is not STIX 2.1 (spec_version {o.get('spec_version')!r})"
            )
    try:
        bundle = stix2.parse(doc, allow_custom=True, version="2.1")
    except (STIXError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputValidationError(f"not a valid STIX 2.1 bundle: {first[:200]}") from None
    objects = list(getattr(bundle, "objects", []) or [])
    digest = hashlib.sha256(data).hexdigest()[:16]
    names = {o.id: str(o.name) for o in objects if o.type == "identity"}
    techniques: dict[str, str] = {}
    for o in objects:
        if o.type == "attack-pattern":
            for ref in o.get("external_references", []) or []:
                if ref.get("source_name") == SOURCE and is_technique_id(str(ref.get("external_id", ""))):
                    techniques[o.id] = str(ref["external_id"])
    indicates = {
        o.source_ref: techniques[o.target_ref]
        for o in objects
        if o.type == "relationship" and o.relationship_type == "indicates" and o.target_ref in techniques
    }
    records: list[IntelRecord] = []
    skipped: dict[str, int] = {}
    default_source = next(iter(names.values()), "unknown")
    for o in objects:
        if o.type != "indicator":
            continue
        why = None
        if o.get("revoked"):
            why = "revoked"
        elif o.get("valid_until") is not None and _time(o.valid_until, f"{o.id} valid_until") < now:
            why = "expired"
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        source = names.get(o.get("created_by_ref", ""), default_source)[:200]
        valid_until = None if o.get("valid_until") is None else _time(o.valid_until, f"{o.id} valid_until")
        common: dict[str, Any] = {
            "ref": str(o.id),
            "bundle": digest,
            "source": source,
            "imported_at": now,
            "valid_until": valid_until,
        }
        if o.pattern_type == SCHEME:
            try:
                scheme = FingerprintScheme.from_dict(o.get("x_bastion_scheme"))
                fp = scheme.check_hex(o.pattern)
                radius = o.get("x_bastion_radius", scheme.bits // 16)
                if type(radius) is not int or not 0 <= radius <= scheme.bits // 4:
                    raise InputValidationError(f"x_bastion_radius must be an integer 0-{scheme.bits // 4}")
            except InputValidationError as exc:
                raise InputValidationError(f"indicator {o.id}: {exc.message}") from None
            atlas = indicates.get(o.id) or "AML.T0043"
            records.append(
                IntelRecord(kind="input", value=fp, atlas=atlas, scheme=scheme.to_dict(), radius=radius, **common)
            )
            continue
        m = _ADDRESS.fullmatch(str(o.pattern).strip()) if o.pattern_type == "stix" else None
        if m is None:
            skipped["not applicable"] = skipped.get("not applicable", 0) + 1
            continue
        try:
            net = ipaddress.ip_network(m.group(2), strict=False)
        except ValueError:
            raise InputValidationError(f"indicator {o.id}: {m.group(2)!r} is not an IP address or network") from None
        if (net.version == 4) != (m.group(1) == "ipv4-addr"):
            raise InputValidationError(f"indicator {o.id}: {m.group(2)!r} is not an {m.group(1)}")
        if net.num_addresses > 2**16:
            raise InputValidationError(
                f"indicator {o.id}: network {net} lists {net.num_addresses:,} addresses; Bastion imports networks of "
                "at most 65,536 (a /16 in IPv4)"
            )
        atlas = indicates.get(o.id) or "AML.T0040"
        records.append(IntelRecord(kind="client", value=str(net), atlas=atlas, **common))
    return ParsedIntel(digest, default_source, records, skipped)


def import_bundle(store: Any, data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> dict[str, Any]:
    """Check ``data`` (:func:`parse_bundle`) and store its indicators in one transaction; a summary of the import."""
    parsed = parse_bundle(data, max_bytes=max_bytes)
    added = store.add_indicators(parsed.records)
    return {**parsed.summary(), "new": added, "already_imported": len(parsed.records) - added}


# --- applying stored indicators -------------------------------------------------------------------------------------


def bundle_summary(records: Iterable[IntelRecord]) -> list[dict[str, Any]]:
    """One row per imported bundle: its id, who shared it, when it was imported, its indicators of each kind."""
    bundles: dict[str, dict[str, Any]] = {}
    for r in records:
        b = bundles.setdefault(
            r.bundle, {"bundle": r.bundle, "source": r.source, "imported_at": r.imported_at, "input": 0, "client": 0}
        )
        b[r.kind] = int(b.get(r.kind, 0)) + 1
    return list(bundles.values())


def known_inputs(records: Iterable[IntelRecord], now: float) -> list[KnownInput]:
    """The stored fingerprint indicators still valid at ``now``, for the ``known_inputs`` monitors."""
    out = []
    for r in records:
        if r.kind != "input" or (r.valid_until is not None and r.valid_until < now):
            continue
        try:
            scheme = FingerprintScheme.from_dict(r.scheme)
            out.append(KnownInput(r.ref, scheme, r.value, int(r.radius or 0), r.atlas, r.source))
        except InputValidationError as exc:  # stored by another version, say: skip it, say so
            log.warning("stored indicator %s cannot be used: %s", r.ref, exc.message)
    return out


class ClientWatch:
    """Listed client addresses and networks: a request from one raises a critical alert, once per key and network
    until the key is forgotten (its level decays or is reset)."""

    def __init__(self) -> None:
        self._networks: list[tuple[Any, IntelRecord]] = []
        self._alerted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def set_records(self, records: Iterable[IntelRecord], now: float) -> int:
        nets = []
        for r in records:
            if r.kind == "client" and (r.valid_until is None or r.valid_until >= now):
                try:
                    nets.append((ipaddress.ip_network(r.value, strict=False), r))
                except ValueError:
                    log.warning("stored client indicator %s is not a network: %r", r.ref, r.value)
        with self._lock:
            self._networks = nets
        return len(nets)

    def __len__(self) -> int:
        return len(self._networks)

    def check(self, key_id: str, client: str | None, now: float) -> Alert | None:
        if not self._networks or not client:
            return None
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return None
        for net, rec in self._networks:
            if address.version == net.version and address in net:
                with self._lock:
                    if (key_id, rec.ref) in self._alerted:
                        return None
                    self._alerted.add((key_id, rec.ref))
                return Alert(
                    monitor="intel",
                    kind="known_client",
                    key_id=key_id,
                    severity=Severity.CRITICAL,
                    message=f"requests come from {client}, listed by {rec.source or 'imported intelligence'} ({net})",
                    score=1.0,
                    atlas=rec.atlas,
                    time=now,
                    evidence={"client": client, "network": str(net), "indicator": rec.ref, "source": rec.source},
                )
        return None

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._alerted = {a for a in self._alerted if a[0] != key_id}


class IntelWatch:
    """Keeps a gateway's indicators in step with its store: loads them at start, then checks the store's revision
    every ``refresh_s`` (an import or removal made by the CLI, or by another replica's administrator, reaches
    every replica within that time) and hands the indicators to ``apply``."""

    def __init__(self, store: Any, apply: Callable[[list[IntelRecord]], None], refresh_s: float) -> None:
        self.store = store
        self.apply = apply
        self.refresh_s = refresh_s
        self.revision: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Reload when the store changed; whether it did."""
        revision = self.store.intel_revision()
        if revision == self.revision:
            return False
        self.apply(self.store.list_indicators())
        self.revision = revision
        return True

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="bastion-intel", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception as exc:  # the database may be down: keep the indicators we have, try again
                log.warning("could not refresh threat intelligence: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
