"""Threat levels per key and for the service, raised by alerts and decaying back after a quiet period.

Levels: normal -> elevated -> under attack. A critical alert puts its key under attack at once; warnings count
within a sliding window (``elevated_after`` of them: elevated; ``under_attack_after``: under attack). Without
alerts a level drops one step per ``quiet_period_s``. The service is elevated or under attack when enough keys are
under attack. An admin can pin a key's level (it then neither rises nor decays on its own) and reset it, which
clears its history. Every change is returned as a ``LevelTransition`` so the caller can log it and act on it.

What a key is served at (:meth:`ThreatTracker.serving_level`) is its own level. The service level alerts people and
tightens what *new* keys get (keys created after the service left normal are served at the higher of the two), so
a few attacking keys cannot degrade every established client. A revoked key's state is dropped (:meth:`forget`).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from bastion.monitors.base import Alert, Severity


class ThreatLevel(IntEnum):
    NORMAL = 0
    ELEVATED = 1
    UNDER_ATTACK = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> ThreatLevel:
        try:
            return cls[text.strip().upper().replace(" ", "_").replace("-", "_")]
        except KeyError:
            raise ValueError(f"unknown threat level {text!r}; choose normal, elevated or under_attack") from None


@dataclass(frozen=True)
class LevelTransition:
    """One level change of a key (``key_id`` None: the service)."""

    time: float
    key_id: str | None
    old: ThreatLevel
    new: ThreatLevel
    reason: str
    actor: str = "policy"


@dataclass
class _KeyState:
    level: ThreatLevel = ThreatLevel.NORMAL
    warnings: deque[float] = field(default_factory=deque)
    last_alert: float = 0.0
    last_change: float = 0.0
    pinned: bool = False
    client: str | None = None  # the address the key's last alert came from


@dataclass(frozen=True)
class ThreatSettings:
    window_s: float = 600.0
    elevated_after: int = 1
    under_attack_after: int = 3
    quiet_period_s: float = 900.0
    service_elevated_keys: int = 1
    service_under_attack_keys: int = 3
    service_distinct_clients: int = 1  # the keys under attack must come from at least this many addresses


class ThreatTracker:
    """Per-key and service threat levels; thread-safe."""

    def __init__(self, settings: ThreatSettings | None = None) -> None:
        self.settings = settings or ThreatSettings()
        self._keys: dict[str, _KeyState] = {}
        self._raised: set[str] = set()  # keys above normal: the only ones decay has to look at
        self._service = ThreatLevel.NORMAL
        self._service_since: float | None = None  # when the service last left normal
        self._lock = threading.Lock()

    def _state(self, key_id: str) -> _KeyState:
        st = self._keys.get(key_id)
        if st is None:
            st = self._keys[key_id] = _KeyState()
        return st

    def _set(
        self, key_id: str, st: _KeyState, new: ThreatLevel, now: float, reason: str, actor: str
    ) -> LevelTransition:
        old = st.level
        st.level, st.last_change = new, now
        if new > ThreatLevel.NORMAL:
            self._raised.add(key_id)
        else:
            self._raised.discard(key_id)
        return LevelTransition(now, key_id, old, new, reason, actor)

    def _decay(self, key_id: str, st: _KeyState, now: float) -> list[LevelTransition]:
        out = []
        q = self.settings.quiet_period_s
        while not st.pinned and st.level > ThreatLevel.NORMAL and now - max(st.last_alert, st.last_change) >= q:
            at = max(st.last_alert, st.last_change) + q
            out.append(self._set(key_id, st, ThreatLevel(st.level - 1), at, f"no alerts for {q:g} s", "policy"))
        return out

    def _service_update(self, now: float, out: list[LevelTransition]) -> None:
        s = self.settings
        keys = [self._keys[k] for k in self._raised if self._keys[k].level is ThreatLevel.UNDER_ATTACK]
        attacked, clients = len(keys), len({st.client for st in keys})
        diverse = clients >= s.service_distinct_clients
        if diverse and attacked >= s.service_under_attack_keys:
            new = ThreatLevel.UNDER_ATTACK
        elif diverse and attacked >= s.service_elevated_keys:
            new = ThreatLevel.ELEVATED
        else:
            new = ThreatLevel.NORMAL
        if new is not self._service:
            why = f"{attacked} key(s) under attack from {clients} client address(es)"
            out.append(LevelTransition(now, None, self._service, new, why))
            if self._service is ThreatLevel.NORMAL:
                self._service_since = now
            elif new is ThreatLevel.NORMAL:
                self._service_since = None
            self._service = new

    def observe(self, alerts: list[Alert], now: float, client: str | None = None) -> list[LevelTransition]:
        """Apply decay, then the new alerts (from a request of address ``client``); returns every resulting change
        (keys first, then the service)."""
        s = self.settings
        out: list[LevelTransition] = []
        with self._lock:
            for key_id in list(self._raised):
                out.extend(self._decay(key_id, self._keys[key_id], now))
            for a in alerts:
                if a.key_id is None or a.severity < Severity.WARNING:
                    continue
                st = self._state(a.key_id)
                st.last_alert, st.client = now, client
                st.warnings.append(now)
                while st.warnings and now - st.warnings[0] > s.window_s:
                    st.warnings.popleft()
                if st.pinned:
                    continue
                if a.severity >= Severity.CRITICAL or len(st.warnings) >= s.under_attack_after:
                    target = ThreatLevel.UNDER_ATTACK
                elif len(st.warnings) >= s.elevated_after:
                    target = ThreatLevel.ELEVATED
                else:
                    continue
                if target > st.level:
                    out.append(self._set(a.key_id, st, target, now, f"{a.kind}: {a.message}", "policy"))
            self._service_update(now, out)
        return out

    def level(self, key_id: str) -> ThreatLevel:
        with self._lock:
            st = self._keys.get(key_id)
            return st.level if st is not None else ThreatLevel.NORMAL

    @property
    def service_level(self) -> ThreatLevel:
        return self._service

    def serving_level(self, key_id: str, created_at: float) -> ThreatLevel:
        """The level a key's answers follow: its own; for a key created after the service left normal (a new or
        unknown client while an attack is on), the higher of its own and the service's. A pinned key: its own."""
        with self._lock:
            st = self._keys.get(key_id)
            own = st.level if st is not None else ThreatLevel.NORMAL
            if st is not None and st.pinned:
                return own
            since = self._service_since
            if since is not None and created_at >= since:
                return max(own, self._service)
            return own

    def forget(self, key_id: str, now: float) -> list[LevelTransition]:
        """Drop a key's state (it was revoked); the service level is recomputed without it."""
        with self._lock:
            out: list[LevelTransition] = []
            if self._keys.pop(key_id, None) is not None:
                self._raised.discard(key_id)
                self._service_update(now, out)
            return out

    def pin(self, key_id: str, level: ThreatLevel, now: float, actor: str, reason: str) -> list[LevelTransition]:
        """Set a key's level by hand; it stays there until reset."""
        with self._lock:
            st = self._state(key_id)
            st.pinned = True
            out = [self._set(key_id, st, level, now, reason, actor)]
            self._service_update(now, out)
            return out

    def reset(self, key_id: str, now: float, actor: str, reason: str) -> list[LevelTransition]:
        """Back to normal, unpinned, with the key's alert history cleared."""
        with self._lock:
            st = self._state(key_id)
            out = [self._set(key_id, st, ThreatLevel.NORMAL, now, reason, actor)]
            st.pinned, st.warnings = False, deque()
            self._service_update(now, out)
            return out

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every key not at normal (or pinned), for the admin API and the dashboard."""
        with self._lock:
            return {
                k: {"level": st.level.label, "pinned": st.pinned, "recent_warnings": len(st.warnings)}
                for k, st in self._keys.items()
                if st.level > ThreatLevel.NORMAL or st.pinned
            }
