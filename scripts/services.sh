#!/usr/bin/env bash
# Make sure the local services the tests and the demo use are up and configured:
# PostgreSQL, Redis, RabbitMQ (with the management and prometheus plugins, and every feature
# flag enabled so quorum queues get at-least-once dead-lettering). Idempotent.
set -u

log() { echo "services: $*"; }

wait_for() {  # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then log "$name up"; return 0; fi
    sleep 1
  done
  log "$name did not come up"; return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
wait_for postgresql pg_isready -h 127.0.0.1 -p 5432

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
wait_for redis redis-cli -h 127.0.0.1 ping

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
fi
wait_for rabbitmq rabbitmqctl -q await_startup
rabbitmq-plugins -q enable rabbitmq_management rabbitmq_prometheus >/dev/null
rabbitmqctl -q enable_feature_flag all >/dev/null 2>&1 || true
wait_for rabbitmq-management curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview
wait_for rabbitmq-prometheus curl -fsS http://127.0.0.1:15692/metrics
