# Sourced by tests/chart/check.sh and deploy/regenerate.sh (from the repository root).
# Installs the chart tools from PyPI into target/chart-venv once; later runs are offline.
#   helm-python-sdk      Helm 4's Go library (lint, render, schema validation), no helm binary
#   kubernetes-validate  the Kubernetes OpenAPI schemas of 1.25..1.37, for strict validation
#   cel-python           a CEL evaluator: the webhook's matchConditions and the CRD's rules are run
CHART_VENV="${CHART_VENV:-target/chart-venv}"
CHART_TOOLS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 cel-python==0.5.0"

ensure_chart_venv() {
  local stamp="$CHART_VENV/.inframind-chart-tools"
  if [ -x "$CHART_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$CHART_TOOLS" ] \
    && "$CHART_VENV/bin/python" -c 'import helm_python, kubernetes_validate, yaml, celpy' 2>/dev/null; then
    return 0
  fi
  echo "installing chart tools into $CHART_VENV: $CHART_TOOLS"
  python3 -m venv --clear "$CHART_VENV"
  # shellcheck disable=SC2086 # word splitting of the pinned list is intended
  "$CHART_VENV/bin/python" -m pip install --quiet --disable-pip-version-check $CHART_TOOLS
  echo "$CHART_TOOLS" >"$stamp"
}
