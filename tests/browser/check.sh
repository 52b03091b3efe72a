#!/usr/bin/env bash
# The dashboard in a real headless Chromium (Debian's package, installed when missing): a simulated
# week of builds with a 20 % holdout is ingested into a fresh SQLite store, a model is trained and
# promoted, `inframind api` serves it on a free port, and tests/browser/check.py loads every page
# (no console errors, charts rendered, screenshots kept under target/browser-artifacts/).
# Usage: tests/browser/check.sh     (builds the binary first; CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build --quiet --bin inframind
target="${CARGO_TARGET_DIR:-target}"
bin="$target/debug/inframind"
artifacts="$target/browser-artifacts"
work="$(mktemp -d)"
api_pid=""
cleanup() { [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
# A private copy: the shared target directory may be rebuilt by someone else meanwhile.
cp "$bin" "$work/inframind"
export INFRAMIND_DATABASE_URL="sqlite://$work/im.db" INFRAMIND_MODELS_DIR="$work/models"
unset INFRAMIND_REDIS_URL
"$work/inframind" simulate --holdout-rate 0.2 --seed 7 --out "$work/week.csv" >/dev/null
"$work/inframind" ingest --strict "$work/week.csv" >/dev/null
"$work/inframind" train --trees 30 --promote >/dev/null
token="browser-$(date +%s%N)"
echo "$token" > "$work/ingest.token"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$work/inframind" api --listen "127.0.0.1:$port" --ingest-token-file "$work/ingest.token" \
  >"$work/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
# Log in the way the form does; the cookie is what the browser then presents.
cookie="$(curl -fsS -o /dev/null -D - --data-urlencode "token=$token" "http://127.0.0.1:$port/login" \
  | tr -d '\r' | sed -n 's/^set-cookie: inframind_session=\([^;]*\);.*/\1/Ip')"
[ -n "$cookie" ] || { echo "login did not set a session cookie" >&2; cat "$work/api.log" >&2; exit 1; }
rm -rf "$artifacts" && mkdir -p "$artifacts"
python3 tests/browser/check.py "http://127.0.0.1:$port" "$cookie" "$artifacts" \
  / /pipelines/acme%2Fapi /pipelines/acme%2Fweb /models /trainingjobs
