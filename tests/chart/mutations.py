#!/usr/bin/env python3
"""Self-test of tests/chart/check.py: break the chart, deploy/ or crds/ one way at a time, in a
copy of the repository, and require check.py to fail with the expected check named.

    tests/chart/check.sh --self-test      (a few minutes; not part of tests/suite.sh)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: trainingjobs.inframind.io
spec:
  group: inframind.io
  names:
    kind: TrainingJob
    listKind: TrainingJobList
    plural: trainingjobs
    singular: trainingjob
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
      subresources:
        status: {}
"""


def edit(path, old, new):
    def apply(root: Path):
        p = root / path
        text = p.read_text()
        assert old in text, f"mutation does not apply: {old!r} not in {path}"
        p.write_text(text.replace(old, new, 1))
    return apply


def write(path, text):
    def apply(root: Path):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return apply


def both(*fns):
    def apply(root: Path):
        for f in fns:
            f(root)
    return apply


T = "charts/inframind/templates/"
DASHBOARD = "charts/inframind/dashboards/inframind.json"
# (what is broken, how, a substring of the check that must fail; None: the check must pass)
MUTATIONS = [
    ("unknown field in the webhook Deployment", edit(T + "webhook-deployment.yaml", "  revisionHistoryLimit: 5", "  revisionHistoryLimt: 5"), "kubernetes-validate --strict"),
    ("wrong type in the webhook Service", edit(T + "webhook-service.yaml", "port: 443", 'port: "443"'), "kubernetes-validate --strict"),
    ("failurePolicy Fail", edit(T + "mutatingwebhookconfiguration.yaml", "failurePolicy: Ignore", "failurePolicy: Fail"), "MutatingWebhookConfiguration"),
    ("UPDATE operations too", edit(T + "mutatingwebhookconfiguration.yaml", '["CREATE"]', '["CREATE", "UPDATE"]'), "MutatingWebhookConfiguration"),
    ("pod webhook no longer excludes opted-in namespaces (double call)", edit(T + "mutatingwebhookconfiguration.yaml", "operator: NotIn\n          {{- end }}", "operator: Exists\n          {{- end }}"), "no double call"),
    ("own namespace not excluded", edit(T + "mutatingwebhookconfiguration.yaml", "prepend .Values.webhook.excludedNamespaces .Release.Namespace", "prepend .Values.webhook.excludedNamespaces \"x\""), "own namespace excluded"),
    ("timeoutSeconds hard-coded", edit(T + "mutatingwebhookconfiguration.yaml", "timeoutSeconds: {{ $.Values.webhook.timeoutSeconds }}", "timeoutSeconds: 5"), "MutatingWebhookConfiguration"),
    ("an extra verb for the controller", edit(T + "controller-rbac.yaml", '["get", "list", "watch", "create"]', '["get", "list", "watch", "create", "delete"]'), "RBAC least privilege"),
    ("training Jobs as the controller's ServiceAccount", edit(T + "_helpers.tpl", 'default (include "inframind.training.fullname" .) .Values.serviceAccount.training.name', 'include "inframind.controller.serviceAccountName" .'), "RBAC least privilege"),
    ("training ServiceAccount mounts its token everywhere", edit(T + "serviceaccounts.yaml", "# nothing else that borrows this ServiceAccount gets one.\nautomountServiceAccountToken: false", "automountServiceAccountToken: true"), "RBAC least privilege"),
    ("controller without the training ServiceAccount", edit(T + "controller-deployment.yaml", "- name: INFRAMIND_JOB_SERVICE_ACCOUNT", "- name: INFRAMIND_JOB_SA"), "environment contract"),
    ("matchConditions rendered for clusters without them", edit(T + "mutatingwebhookconfiguration.yaml", 'semverCompare ">=1.28.0-0"', 'semverCompare ">=1.20.0-0"'), "rendered for and validated"),
    ("matchConditions no longer skip opted-out pods", edit(T + "_helpers.tpl", "lowerAscii() != 'true'", "lowerAscii() == 'true'"), "matchConditions skip opted-out pods"),
    ("webhook port hard-coded", edit(T + "webhook-deployment.yaml", '{{ printf "0.0.0.0:%d" (int .Values.webhook.port) }}', "0.0.0.0:8443"), "webhook Deployment"),
    ("kubeVersion narrower than what validates", edit("charts/inframind/Chart.yaml", 'kubeVersion: ">=1.25.0-0"', 'kubeVersion: ">=1.33.0-0"'), "kubeVersion"),
    ("admission policy allows any image", edit(T + "trainingjob-policy.yaml", "!has(object.spec.execution.image) ||", "has(object.spec.execution.image) ||"), "the API server refuses TrainingJobs"),
    ("lease rule without resourceNames", edit(T + "controller-rbac.yaml", '    resourceNames: [{{ .Values.controller.leaseName | quote }}]\n', ""), "RBAC least privilege"),
    ("webhook token mounted in helm mode", edit(T + "webhook-deployment.yaml", '{{ or (eq $mode "self-signed") .Values.webhook.watchNodes .Values.webhook.watchNamespaceLimits (not (empty .Values.webhook.buildCache.claim)) }}', "true"), "webhook Deployment"),
    ("webhook token not mounted for the Node watch", edit(T + "webhook-deployment.yaml", ".Values.webhook.watchNodes .Values.webhook.watchNamespaceLimits (not", ".Values.webhook.watchNamespaceLimits (not"), "webhook Deployment"),
    ("privilege escalation allowed", edit(T + "_helpers.tpl", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"), "restricted Pod Security Standard"),
    ("seccomp dropped from the pod", edit(T + "_helpers.tpl", "fsGroup: 65532\nseccompProfile:\n  type: RuntimeDefault", "fsGroup: 65532"), "restricted Pod Security Standard"),
    ("dry-run value ignored", edit(T + "webhook-deployment.yaml", "{{ .Values.optimizer.dryRun | quote }}", '"false"'), "environment contract"),
    ("database URL as plain value", edit(T + "_helpers.tpl", "- name: INFRAMIND_DATABASE_URL\n  valueFrom:\n    secretKeyRef:\n      name: {{ .Values.database.existingSecret }}\n      key: {{ .Values.database.secretKey }}", "- name: INFRAMIND_DATABASE_URL\n  value: postgres://x"), "environment contract"),
    ("readiness probe on the wrong path", edit(T + "webhook-deployment.yaml", "path: /readyz", "path: /healthz"), "webhook Deployment"),
    ("caBundle in cert-manager mode", edit(T + "mutatingwebhookconfiguration.yaml", "{{- if $caBundle }}", "{{- if true }}"), "MutatingWebhookConfiguration"),
    ("Certificate without the service DNS name", edit(T + "certificate.yaml", "  dnsNames:\n", "  dnsNames:\n    - other.example\n  x:\n"), "certificates (cert-manager)"),
    ("PDB rendered for a single replica", edit(T + "pdb.yaml", "(gt (int .Values.webhook.replicas) 1)", "true"), "PodDisruptionBudgets"),
    ("schema accepts a string for replicas", edit("charts/inframind/values.schema.json", '"type": "integer",\n          "description": "Replicas."', '"description": "Replicas."'), "values.schema.json rejects"),
    ("schema accepts unknown keys", edit("charts/inframind/values.schema.json", '"title": "inframind chart values",\n  "type": "object",\n  "additionalProperties": false', '"title": "inframind chart values",\n  "type": "object",\n  "additionalProperties": true'), "values.schema.json rejects"),
    ("undocumented value", edit("charts/inframind/README.md", "| `controller.priorityClassName` |", "| priority class |"), "README documents every value"),
    ("lint warning (icon must be a URL)", edit("charts/inframind/Chart.yaml", "home: ", "icon: not-a-url\nhome: "), "helm lint"),
    ("stale deploy/inframind.yaml", edit("deploy/inframind.yaml", "replicas: 2", "replicas: 3"), "deploy/inframind.yaml equals a fresh render"),
    ("top-level CRD not in the chart", write("crds/trainingjobs.inframind.io.yaml", CRD), "chart crds/ identical"),
    ("chart CRD not in the top level", write("charts/inframind/crds/trainingjobs.inframind.io.yaml", CRD), "chart crds/ identical"),
    ("chart CRD differs from the top level", both(write("crds/trainingjobs.inframind.io.yaml", CRD), write("charts/inframind/crds/trainingjobs.inframind.io.yaml", CRD.replace("singular: trainingjob", "singular: tj"))), "chart crds/ identical"),
    ("invalid CRD", both(write("crds/trainingjobs.inframind.io.yaml", CRD.replace("scope: Namespaced", "scope: Namespaced\n  bogus: 1")), write("charts/inframind/crds/trainingjobs.inframind.io.yaml", CRD.replace("scope: Namespaced", "scope: Namespaced\n  bogus: 1"))), "every CRD validates"),
    ("CRD without the status subresource", both(write("crds/trainingjobs.inframind.io.yaml", CRD.replace("      subresources:\n        status: {}\n", "")), write("charts/inframind/crds/trainingjobs.inframind.io.yaml", CRD.replace("      subresources:\n        status: {}\n", ""))), "TrainingJob CRD matches"),
    ("Dockerfile runs as root", edit("deploy/Dockerfile", "USER 65532:65532", "USER root"), "deploy/Dockerfile"),
    # the pod outcome watcher and the HTTP API
    ("controller cannot get Nodes", edit(T + "controller-rbac.yaml", '  - apiGroups: [""]\n    resources: ["nodes"]\n    verbs: ["get"]\n', ""), "RBAC least privilege"),
    ("controller may list Nodes", edit(T + "controller-rbac.yaml", 'resources: ["nodes"]\n    verbs: ["get"]', 'resources: ["nodes"]\n    verbs: ["get", "list"]'), "RBAC least privilege"),
    ("API Role grants more than create, get and list", edit(T + "api-rbac.yaml", 'verbs: ["create", "get", "list"]', 'verbs: ["create", "get", "list", "delete"]'), "RBAC least privilege"),
    ("webhook cannot watch the cache claims", edit(T + "webhook-rbac.yaml", 'resources: ["persistentvolumeclaims"]', 'resources: ["persistentvolumes"]'), "RBAC least privilege"),
    ("build cache claim not passed to the webhook", edit(T + "webhook-deployment.yaml", "- name: INFRAMIND_CACHE_CLAIM", "- name: INFRAMIND_CACHE_VOLUME"), "environment"),
    ("API Role in the release namespace", edit(T + "api-rbac.yaml", "  namespace: {{ .Values.api.trainingNamespace }}\n", "  namespace: {{ .Release.Namespace }}\n"), "RBAC least privilege"),
    ("API token mounted without trainingNamespace", edit(T + "api-deployment.yaml", "automountServiceAccountToken: {{ not (empty $api.trainingNamespace) }}", "automountServiceAccountToken: true"), "API Deployment"),
    ("API ingest token from a hard-coded Secret", edit(T + "api-deployment.yaml", "secretName: {{ $api.ingestToken.secretName }}", "secretName: inframind-api-ingest"), "API Deployment"),
    ("API token volume writable", edit(T + "api-deployment.yaml", "mountPath: /var/run/secrets/inframind/ingest\n              readOnly: true", "mountPath: /var/run/secrets/inframind/ingest\n              readOnly: false"), "API Deployment"),
    ("API admin token file points at the ingest token", edit(T + "api-deployment.yaml", "value: /var/run/secrets/inframind/admin/token", "value: /var/run/secrets/inframind/ingest/token"), "API Deployment"),
    ("API readiness probe on /healthz (never not-ready while draining)", edit(T + "api-deployment.yaml", "readinessProbe:\n            httpGet:\n              path: /readyz", "readinessProbe:\n            httpGet:\n              path: /healthz"), "API Deployment"),
    ("API Service always on port 80", edit(T + "api-service.yaml", "port: {{ ternary 443 80 $tls }}", "port: 80"), "API Deployment"),
    ("API Service selects every component", edit(T + "api-service.yaml", '{{- include "inframind.selectorLabels" (dict "ctx" $ "component" "api") | nindent 4 }}', "app.kubernetes.io/instance: {{ .Release.Name }}"), "every Service selects"),
    ("API max body size ignored", edit(T + "api-deployment.yaml", "{{ $api.maxBodyBytes | int64 | quote }}", '"4194304"'), "environment contract"),
    ("API gets the webhook's dry-run flag", edit(T + "api-deployment.yaml", '{{- include "inframind.optimizerEnv" . | nindent 12 }}', '- name: INFRAMIND_DRY_RUN\n              value: "false"\n            {{- include "inframind.optimizerEnv" . | nindent 12 }}'), "environment contract"),
    ("PDB rendered for a single API replica", edit(T + "pdb.yaml", "(gt (int .Values.api.replicas) 1)", "true"), "PodDisruptionBudgets"),
    ("API left out of the NetworkPolicies", edit(T + "networkpolicy.yaml", "{{- if .Values.api.enabled }}\n---", "{{- if false }}\n---"), "NetworkPolicies"),
    ("API NetworkPolicy ignores networkPolicy.api.from", edit(T + "networkpolicy.yaml", "{{- with $np.api.from }}", "{{- with $np.metrics.from }}"), "NetworkPolicies"),
    ("NOTES without the reporter command", edit(T + "NOTES.txt", "--token-file /var/run/secrets/inframind/token", "--token-file /tmp/token"), "API Deployment"),
    ("schema accepts a string for api.replicas", edit("charts/inframind/values.schema.json", '"type": "integer",\n          "description": "API replicas."', '"description": "API replicas."'), "values.schema.json rejects"),
    ("one Secret key for both API tokens", edit(T + "_helpers.tpl", "{{- if and (eq $api.adminToken.secretName $api.ingestToken.secretName) (eq $api.adminToken.key $api.ingestToken.key) }}", "{{- if false }}"), "templates reject"),
    ("undocumented API value", edit("charts/inframind/README.md", "| `api.topologySpreadConstraints` |", "| API spread |"), "README documents every value"),
    ("the webhook mounts the model signing key", both(
        edit(T + "webhook-deployment.yaml", '{{- with include "inframind.modelKey.mounts" (dict "ctx" $ "role" "public") }}', '{{- with include "inframind.modelKey.mounts" (dict "ctx" $ "role" "signing") }}'),
        edit(T + "webhook-deployment.yaml", '{{- with include "inframind.modelKey.volumes" (dict "ctx" $ "role" "public") }}', '{{- with include "inframind.modelKey.volumes" (dict "ctx" $ "role" "signing") }}')),
     "model signing keys"),
    ("the stores' CA not mounted", edit(T + "_helpers.tpl", '{{- include "inframind.storesCA.mounts" . }}', ''), "model signing keys"),
    # the API over TLS by default
    ("API plain HTTP by default", edit("charts/inframind/values.yaml", "    #    `false`: plain HTTP, Service port 80.\n    enabled: true", "    #    `false`: plain HTTP, Service port 80.\n    enabled: false"), "the API serves HTTPS by default"),
    ("API certificate for the webhook's names", edit(T + "api-certificate.yaml", '(include "inframind.api.dnsNames" . | fromJsonArray) (int', '(include "inframind.webhook.dnsNames" . | fromJsonArray) (int'), "API certificate"),
    ("API Certificate (cert-manager) without the API Service names", edit(T + "api-certificate.yaml", '{{- include "inframind.api.dnsNames" . | fromJsonArray | toYaml | nindent 4 }}', "- other.example"), "API certificate"),
    ("API CA ConfigMap publishes the serving certificate", edit(T + "api-certificate.yaml", "{{- $ca | b64dec | trim | nindent 4 }}", "{{- $crt | b64dec | trim | nindent 4 }}"), "API certificate"),
    ("API CA (cert-manager) rotates its key", edit(T + "api-certificate.yaml", "rotationPolicy: Never", "rotationPolicy: Always"), "API certificate"),
    ("API mounts the chart's Secret although the user names one", edit(T + "api-deployment.yaml", 'secretName: {{ include "inframind.api.tlsSecretName" . }}', "secretName: {{ include \"inframind.api.fullname\" . }}-tls"), "API Deployment"),
    ("API liveness probe over HTTP while serving HTTPS", edit(T + "api-deployment.yaml", "scheme: {{ upper $port }}", "scheme: HTTP"), "API Deployment"),
    ("NOTES reporter command without --ca-file", edit(T + "NOTES.txt", " --ca-file /var/run/secrets/inframind/ca.crt", ""), "API Deployment"),
    # graceful shutdown
    ("terminationGracePeriodSeconds leaves out the grace", edit(T + "_helpers.tpl", "add (int .Values.shutdown.drainSeconds) (int .Values.shutdown.graceSeconds) 5", "add (int .Values.shutdown.drainSeconds) 5"), "graceful shutdown"),
    ("drain seconds hard-coded", edit(T + "_helpers.tpl", "value: {{ .Values.shutdown.drainSeconds | int | quote }}", 'value: "5"'), "graceful shutdown"),
    ("controller pod keeps the default 30 s grace period", edit(T + "controller-deployment.yaml", '      terminationGracePeriodSeconds: {{ include "inframind.terminationGracePeriodSeconds" . }}\n', ""), "graceful shutdown"),
    ("an exec preStop sleep (no shell in the image)", edit(T + "webhook-deployment.yaml", "          resources:\n            {{- toYaml .Values.webhook.resources", "          lifecycle:\n            preStop:\n              exec:\n                command: [sleep, \"5\"]\n          resources:\n            {{- toYaml .Values.webhook.resources"), "graceful shutdown"),
    # alerts and the Grafana dashboard
    ("PrometheusRule rendered while disabled", edit(T + "prometheusrule.yaml", "{{- if .Values.metrics.prometheusRule.enabled }}", "{{- if true }}"), "PrometheusRule"),
    ("alert on a metric the binaries do not expose", edit(T + "prometheusrule.yaml", "inframind_bad_requests_total{", "inframind_bad_request_total{"), "PrometheusRule"),
    ("alert not scoped to the release namespace", edit(T + "prometheusrule.yaml", 'inframind_admissions_total{ {{- $ns }},outcome="error"}[15m])) or', 'inframind_admissions_total{outcome="error"}[15m])) or'), "PrometheusRule"),
    ("OOM ratio of a decision that never exists", edit(T + "prometheusrule.yaml", 'decision="holdout",result="oom"', 'decision="held-out",result="oom"'), "PrometheusRule"),
    ("unbalanced parenthesis in an alert", edit(T + "prometheusrule.yaml", "histogram_quantile(0.99, sum by (le) (rate(", "histogram_quantile(0.99, sum by (le) ((rate("), "PrometheusRule"),
    ("no-telemetry alert silenced by a missing counter", edit(T + "prometheusrule.yaml", "(sum(increase(inframind_runs_ingested_total{ {{- $ns }}}[{{ $r.noTelemetryHours }}h])) or vector(0))", "sum(increase(inframind_runs_ingested_total{ {{- $ns }}}[{{ $r.noTelemetryHours }}h]))"), "PrometheusRule"),
    ("fail-open threshold hard-coded", edit(T + "prometheusrule.yaml", "> {{ $r.failOpenRatio }}", "> 0.01"), "PrometheusRule"),
    ("dashboard ConfigMap without the configured sidecar label", edit(T + "grafana-dashboard.yaml", "{{ $g.sidecarLabel }}: {{ $g.sidecarLabelValue | quote }}", 'grafana_dashboard: "1"'), "Grafana dashboard"),
    ("dashboard panel on an unknown metric", edit(DASHBOARD, "inframind_api_requests_total{", "inframind_api_request_total{"), "Grafana dashboard"),
    ("dashboard without the model age", edit(DASHBOARD, "inframind_model_trained_timestamp_seconds{", "inframind_model_info{"), "Grafana dashboard"),
    ("dashboard JSON invalid", edit(DASHBOARD, '"uid": "inframind",', '"uid": "inframind",,'), "Grafana dashboard"),
    ("API ServiceMonitor over HTTP while the API serves HTTPS", edit(T + "servicemonitor.yaml", "{{- if .Values.api.tls.enabled }}\n    - port: https", "{{- if false }}\n    - port: https"), "ServiceMonitors"),
]


def run_check(root: Path) -> tuple[int, str]:
    res = subprocess.run([sys.executable, str(root / "tests/chart/check.py")], capture_output=True, text=True, cwd=root)
    return res.returncode, res.stdout + res.stderr


def main() -> int:
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        pristine = Path(tmp) / "pristine"
        for part in ("charts", "deploy", "crds", "tests/chart"):
            src = ROOT / part
            if src.exists():
                shutil.copytree(src, pristine / part, ignore=shutil.ignore_patterns("__pycache__"))
        (pristine / "crds").mkdir(exist_ok=True)
        code, out = run_check(pristine)
        if code != 0:
            print(out)
            print("self-test: the unmodified tree does not pass; fix that first")
            return 1
        for i, (what, apply, expect) in enumerate(MUTATIONS):
            root = Path(tmp) / f"m{i}"
            shutil.copytree(pristine, root)
            try:
                apply(root)
            except AssertionError as e:
                print(f"BROKEN  {what}: {e}")
                bad += 1
                continue
            code, out = run_check(root)
            failed = [ln for ln in out.splitlines() if ln.startswith("FAIL ")]
            caught = code != 0 and any(expect in ln for ln in failed)
            print(f"{'caught' if caught else 'MISSED'}  {what}" + ("" if caught else f"  (exit {code}; failures: {failed})"))
            bad += not caught
            shutil.rmtree(root)
    print(f"self-test: {len(MUTATIONS) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
