#!/usr/bin/env bash
# Offline checks of the Helm chart, deploy/ and the CRDs: lint, render under several values sets,
# strict Kubernetes schema validation (1.25, 1.28, 1.30, 1.37), the product's invariants, the values schema,
# chart crds/ == top-level crds/, deploy/inframind.yaml == a fresh render. See tests/chart/check.py.
# Usage: tests/chart/check.sh [-v]      -v lists every check
#        tests/chart/check.sh --self-test  breaks the chart ~80 ways in a copy and requires each to be caught
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/chart/venv.sh
. tests/chart/venv.sh
ensure_chart_venv
if [ "${1:-}" = "--self-test" ]; then
  exec "$CHART_VENV/bin/python" tests/chart/mutations.py
fi
exec "$CHART_VENV/bin/python" tests/chart/check.py "$@"
