#!/usr/bin/env bash
# Debian packages the tests and benchmarks use beyond Python: chromium + chromedriver (the
# dashboard's headless-browser test), wrk (HTTP benchmark), prometheus and
# prometheus-alertmanager (obskit.testing's PrometheusProcess / AlertmanagerProcess: the bundle's
# config, rules and dashboard queries checked against the real servers) and docker-compose (the
# observability bundle). Installs only what is missing.
set -eu
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  echo "system-deps: installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
