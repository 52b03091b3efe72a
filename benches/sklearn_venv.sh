# Sourced by benches/sklearn_compare.sh (from the repository root).
# Installs scikit-learn from PyPI into target/sklearn-venv once; later runs are offline.
SKLEARN_VENV="${SKLEARN_VENV:-target/sklearn-venv}"
SKLEARN_TOOLS="scikit-learn==1.5.2 numpy==2.1.3"

ensure_sklearn_venv() {
  local stamp="$SKLEARN_VENV/.inframind-sklearn"
  if [ -x "$SKLEARN_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$SKLEARN_TOOLS" ] \
    && "$SKLEARN_VENV/bin/python" -c 'import sklearn, numpy' 2>/dev/null; then
    return 0
  fi
  echo "installing $SKLEARN_TOOLS into $SKLEARN_VENV"
  python3 -m venv --clear "$SKLEARN_VENV"
  # shellcheck disable=SC2086 # word splitting of the pinned list is intended
  "$SKLEARN_VENV/bin/python" -m pip install --quiet --disable-pip-version-check $SKLEARN_TOOLS
  echo "$SKLEARN_TOOLS" >"$stamp"
}
