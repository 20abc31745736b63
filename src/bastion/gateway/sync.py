"""Threat state shared by gateway replicas over a Redis pub/sub channel.

Each replica keeps its own :class:`~bastion.monitors.threat.ThreatTracker` (reads stay in memory, on the request
path) and tells the others what changed it: the alerts its monitors raised, an administrator's pin or reset, a
revoked key. The others apply the same events to their trackers, so a key's level, and the service's, converge on
every replica within a message's latency: an attacker spreading queries round-robin raises its level everywhere,
and a reset or revocation on one replica holds on all. The replica that saw an event records it (audit log, level
changes, incidents); the others only update their state, so nothing is recorded twice.

Monitor state is shared the same way, by sharing what the monitors watch: each replica publishes every request it
served as an observation frame (``bastion.gateway.observations``) on ``CHANNEL:observations``, and the others feed
it to their own monitors. Every replica's monitors then see the whole service's traffic, in nearly the same order,
and an alert is recorded once: the replica whose monitors raise it first claims it in Redis (``SET NX`` on the
event it fired at) and records and publishes it; the others, firing at the same event, drop theirs. Where two
replicas saw the triggering queries in a different order, both may fire at different events and both record it
(a duplicate, never a lost alert).

Redis going away does not stop a replica: it keeps serving on its own state, logs it, reports ``sync: degraded``
in :meth:`StateBus.status`, claims every alert itself (so none is lost), and resubscribes when Redis returns.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bastion.errors import ConfigError
from bastion.gateway.observations import FrameError, Observation, decode, origin_of

log = logging.getLogger(__name__)


class StateBus:
    """Publish this replica's threat events; apply the other replicas' ones with ``apply`` (in a listener thread)."""

    CLAIM_TTL_S = 3600
    MAX_QUEUED = 10_000

    def __init__(
        self,
        url: str,
        channel: str,
        apply: Callable[[dict[str, Any]], None],
        observe: Callable[[Observation], None] | None = None,
    ) -> None:
        import redis

        self.replica = uuid.uuid4().hex
        self.channel = channel
        self.observations = f"{channel}:observations"
        self._apply = apply
        self._observe = observe
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
            self._redis.ping()
        except (redis.RedisError, ValueError) as e:
            raise ConfigError(f"cannot reach the state bus at {url}: {e}") from None
        self.connected = True
        self.received = 0
        self.observed = 0  # observation frames from other replicas fed to this one's monitors
        self.dropped = 0  # frames that were not ours to read (FrameError) or failed to apply
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="bastion-state-bus", daemon=True)
        self._thread.start()
        self._subscribed.wait(5.0)
        self.unsent = 0  # observations not delivered (queue full or Redis down): other replicas' monitors missed them
        self._outbox: queue.Queue[bytes] = queue.Queue(self.MAX_QUEUED)
        self._sender: threading.Thread | None = None
        if observe is not None:
            self._sender = threading.Thread(target=self._send_observations, name="bastion-state-bus-out", daemon=True)
            self._sender.start()

    def _listen(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel, *([self.observations] if self._observe is not None else []))
                self.connected = True
                self._subscribed.set()
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg is None or msg.get("type") != "message":
                        continue
                    if msg.get("channel") in (self.observations, self.observations.encode()):
                        self._take_observation(msg["data"])
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

    def _take_observation(self, frame: bytes) -> None:
        if origin_of(frame) == self.replica:  # Redis echoes this replica's own frames back to it
            return
        try:
            obs = decode(frame)
        except FrameError as e:
            self.dropped += 1
            log.warning("state bus: dropped an observation frame: %s", e)
            return
        if obs.origin == self.replica or self._observe is None:
            return
        self.observed += 1
        try:
            self._observe(obs)
        except Exception:  # one bad frame must not stop the listener
            self.dropped += 1
            log.exception("state bus: could not apply an observation of key %s", obs.event.key_id)

    @property
    def shares_observations(self) -> bool:
        return self._observe is not None

    def publish_observation(self, frame: bytes) -> bool:
        """Queue an encoded observation for the other replicas' monitors (sent in order by a publisher thread, off
        the request path). False, and counted in ``status()['unsent']``, when the queue is full: Redis has been
        unreachable or slower than the traffic for ``MAX_QUEUED`` requests."""
        try:
            self._outbox.put_nowait(frame)
            return True
        except queue.Full:
            self.unsent += 1
            return False

    def _send_observations(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                frame = self._outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._redis.publish(self.observations, frame)
            except redis.RedisError as e:
                self.unsent += 1
                if self.connected:
                    log.error("state bus: could not publish an observation (%s)", e)
                self.connected = False

    def claim(self, name: str) -> bool:
        """Whether this replica is the first to claim ``name`` (an alert at one event): it then records it. True
        when Redis is unavailable, so an alert is never lost (at worst recorded by two replicas)."""
        import redis

        try:
            won = self._redis.set(f"{self.channel}:claim:{name}", self.replica, nx=True, ex=self.CLAIM_TTL_S)
            return bool(won)
        except redis.RedisError as e:
            if self.connected:
                log.error("state bus: could not claim an alert (%s); recording it here", e)
            self.connected = False
            return True

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
            "observed": self.observed,
            "dropped": self.dropped,
            "unsent": self.unsent,
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3.0)
        if self._sender is not None:
            self._sender.join(timeout=3.0)
        self._redis.close()
