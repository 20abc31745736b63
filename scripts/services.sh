#!/usr/bin/env bash
# Makes sure what the tests use is there: PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) running on loopback,
# and Debian's Chromium for the dashboard's browser test. Starts the servers where they are installed but stopped;
# installs Debian's packages when they are missing and this runs as root. Fails (exit 1) when one cannot be had: the
# tests never skip a backend.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

missing=()
command -v pg_isready >/dev/null || missing+=(postgresql)
command -v redis-cli >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! pg_up && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! redis_up && command -v redis-server >/dev/null; then
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /tmp \
    --logfile /tmp/bastion-redis.log || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
command -v chromium >/dev/null || { echo "Chromium is missing (apt-get install chromium) and could not be installed" >&2; exit 1; }
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started" >&2; exit 1; }
redis_up || { echo "Redis is not reachable on 127.0.0.1:6379 and could not be started" >&2; exit 1; }
# the tests connect as postgres over TCP without a password (trust auth on loopback, as Debian's test setup has)
psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select 1" >/dev/null 2>&1 || {
  echo "PostgreSQL on 127.0.0.1 refuses the postgres user without a password; allow trust auth on loopback" >&2
  exit 1
}
