"""Threat state shared by gateway replicas over a Redis pub/sub channel.

Each replica keeps its own :class:`~bastion.monitors.threat.ThreatTracker` (reads stay in memory, on the request
path) and tells the others what changed it: the alerts its monitors raised, an administrator's pin or reset, a
revoked key. The others apply the same events to their trackers, so a key's level, and the service's, converge on
every replica within a message's latency: an attacker spreading queries round-robin raises its level everywhere,
and a reset or revocation on one replica holds on all. The replica that saw an event records it (audit log, level
changes, incidents); the others only update their state, so nothing is recorded twice.

Redis going away does not stop a replica: it keeps serving on its own state, logs it, reports ``sync: degraded``
in :meth:`StateBus.status`, and resubscribes when Redis returns.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bastion.errors import ConfigError

log = logging.getLogger(__name__)


class StateBus:
    """Publish this replica's threat events; apply the other replicas' ones with ``apply`` (in a listener thread)."""

    def __init__(self, url: str, channel: str, apply: Callable[[dict[str, Any]], None]) -> None:
        import redis

        self.replica = uuid.uuid4().hex
        self.channel = channel
        self._apply = apply
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
            self._redis.ping()
        except (redis.RedisError, ValueError) as e:
            raise ConfigError(f"cannot reach the state bus at {url}: {e}") from None
        self.connected = True
        self.received = 0
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="bastion-state-bus", daemon=True)
        self._thread.start()
        self._subscribed.wait(5.0)

    def _listen(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.connected = True
                self._subscribed.set()
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        event = json.loads(msg["data"])
                    except (ValueError, TypeError):
                        log.warning("state bus: ignored a message that is not JSON")
                        continue
                    if event.get("from") == self.replica:
                        continue
                    self.received += 1
                    try:
                        self._apply(event)
                    except Exception:  # one bad event must not stop the listener
                        log.exception("state bus: could not apply %s", event.get("op"))
                pubsub.close()
            except redis.RedisError as e:
                if self.connected:
                    log.error("state bus: Redis unavailable (%s); serving on this replica's own state", e)
                self.connected = False
                self._subscribed.set()
                self._stop.wait(1.0)

    def publish(self, event: dict[str, Any]) -> bool:
        """Send ``event`` to the other replicas; False (and logged, never raised) when Redis is unavailable."""
        import redis

        try:
            payload = json.dumps({**event, "from": self.replica, "sent": time.time()}, default=str)
            self._redis.publish(self.channel, payload)
            return True
        except redis.RedisError as e:
            if self.connected:
                log.error("state bus: could not publish %s (%s)", event.get("op"), e)
            self.connected = False
            return False

    def status(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "channel": self.channel,
            "connected": self.connected,
            "received": self.received,
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3.0)
        self._redis.close()
