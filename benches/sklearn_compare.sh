#!/usr/bin/env bash
# Side by side with scikit-learn on the honest feature matrix (see benches/sklearn_compare.py).
#   benches/sklearn_compare.sh [REAL_BUILDS.jsonl]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/sklearn_venv.sh
. benches/sklearn_venv.sh
ensure_sklearn_venv
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
exec "$SKLEARN_VENV/bin/python" benches/sklearn_compare.py --bin "$target/release/inframind" \
  --real "${1:-../shared/data/realbuilds/runs.jsonl}"
