#!/usr/bin/env bash
# Debian packages the tests use beyond Python (`make test`): chromium + chromedriver (the
# dashboard's headless-browser test), prometheus and prometheus-alertmanager (promtool and
# amtool, and obskit.testing's PrometheusProcess / AlertmanagerProcess: the bundle's config, rules
# and dashboard queries checked against the real servers), docker-compose (the observability
# bundle's compose file) and kubectl (`kubectl kustomize` of deploy/kubernetes/).
# `scripts/system-deps.sh bench` installs wrk instead, for benchmarks/bench_http.py. The demo needs none of them. Installs only what is missing.
set -eu
missing=()
case "${1:-test}" in
  test)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    command -v kubectl >/dev/null 2>&1 || missing+=(kubectl)
    ;;
  bench)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    ;;
  *) echo "usage: $0 [test|bench]" >&2; exit 2 ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
  echo "system-deps: installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
