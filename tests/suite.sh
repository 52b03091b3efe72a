#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real PostgreSQL and Redis).
# Usage: tests/suite.sh        (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

step() { printf '\n==> %s\n' "$*"; }

# On this kind of machine both services are started before a session; start them if they stopped.
ensure_services() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      step "starting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
      for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
  fi
  if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
    if command -v redis-server >/dev/null 2>&1; then
      step "starting Redis"
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /tmp --logfile /tmp/inframind-redis.log || true
      for _ in $(seq 1 30); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break; sleep 1; done
    fi
  fi
  pg_isready -q -d "$DATABASE_URL" 2>/dev/null || {
    echo "error: PostgreSQL is not reachable at $DATABASE_URL (set DATABASE_URL)" >&2; exit 1; }
  redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || {
    echo "error: Redis is not reachable at $REDIS_URL (set REDIS_URL)" >&2; exit 1; }
}

step "services"
ensure_services

# Tests work in schemas and key prefixes of their own; drop what earlier runs left behind.
clean_leftovers() {
  psql "$DATABASE_URL" -Atqc "SELECT 'DROP SCHEMA IF EXISTS ' || quote_ident(schema_name) || ' CASCADE;'
    FROM information_schema.schemata WHERE schema_name LIKE 'im\_test\_%'" 2>/dev/null \
    | psql "$DATABASE_URL" -q >/dev/null 2>&1 || true
  for p in imt_ imwh_ ime2e_ imc_; do
    redis-cli -u "$REDIS_URL" --scan --pattern "${p}*" 2>/dev/null | xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
  done
}
clean_leftovers

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "chart and CRD tools (Helm SDK, kubernetes-validate; installed into target/chart-venv once)"
# shellcheck source=tests/chart/venv.sh
. tests/chart/venv.sh
ensure_chart_venv
# The CRD test validates the generated CRD with kubernetes-validate --strict: required here.
export INFRAMIND_REQUIRE_KUBERNETES_VALIDATE=1

step "cargo test"
cargo test

step "chart"
tests/chart/check.sh

step "dashboard in headless Chromium (screenshots in target/browser-artifacts/)"
tests/browser/check.sh
