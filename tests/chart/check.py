#!/usr/bin/env python3
"""Offline checks of charts/inframind, deploy/ and crds/ (run by tests/chart/check.sh).

For each values set below, with Helm 4's own library (helm-python-sdk):
  - `helm lint --strict` for each Kubernetes version (warnings fail too);
  - render, then validate every manifest with kubernetes-validate --strict against the schemas of
    each Kubernetes version in KUBE_VERSIONS. ServiceMonitor and PrometheusRule
    (prometheus-operator) and Issuer / Certificate (cert-manager) are CRDs unknown to
    kubernetes-validate: they are skipped by name and reported; any other kind it does not know
    fails;
  - the product's invariants on the rendered objects: the webhook configuration (CREATE pods only,
    failurePolicy Ignore, timeout, sideEffects, v1, reinvocation, which pods reach which webhook),
    the three certificate modes, least-privilege RBAC (exact rules per ServiceAccount: webhook,
    controller, API), the restricted Pod Security Standard, probes, ports, the binary's environment
    contract, the API's token files from the named Secrets, the API's certificate (HTTPS by
    default; SANs, chain, the published CA), the shutdown drain and grace periods, Services that
    select one component's pods only, PDBs, anti-affinity, ServiceMonitors, the PrometheusRule and
    the Grafana dashboard (their PromQL reads only metrics the binaries expose: METRICS),
    NetworkPolicy coverage of every component, and NOTES.txt's reporter instructions.
Then: values.schema.json rejects wrong types and ranges; README documents every value; the chart's
crds/ equals the top-level crds/ and every CRD validates; deploy/inframind.yaml equals a fresh
render; deploy/Dockerfile has the agreed shape.

Prints one line per failure and ends with `chart: N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "deploy"))
import render  # noqa: E402  (deploy/render.py: the one renderer of deploy/inframind.yaml)

import celpy  # noqa: E402
import helm_python as helm  # noqa: E402
import kubernetes_validate  # noqa: E402
from kubernetes_validate import utils as kv_utils  # noqa: E402

CHART = ROOT / "charts" / "inframind"
RELEASE, NAMESPACE = "inframind", "ci-system"
# The oldest version Chart.yaml's kubeVersion admits (kubernetes-validate's oldest schemas), the
# first with the webhook's matchConditions (beta, on by default), the first with them GA, and the
# newest. Every values set is rendered for each (.Capabilities.KubeVersion) and validated there.
KUBE_VERSIONS = ["1.25.0", "1.28.0", "1.30.0", "1.37.0"]
MATCH_CONDITIONS_SINCE = (1, 28)
# The webhook's matchConditions must not even call the webhook for a pod that opted out with the
# annotation the admission code reads (src/admission/contract.rs SKIP_ANNOTATION: "true" in any case),
# and call it for every other pod: (pod metadata, webhook called).
OPT_OUT_CASES = [
    ({}, True),
    ({"annotations": {}}, True),
    ({"annotations": {"team": "x"}}, True),
    ({"annotations": {"inframind.io/skip": "true"}}, False),
    ({"annotations": {"inframind.io/skip": "TRUE"}}, False),
    ({"annotations": {"inframind.io/skip": "True", "team": "x"}}, False),
    ({"annotations": {"inframind.io/skip": "false"}}, True),
    ({"annotations": {"inframind.io/skip": ""}}, True),
    ({"annotations": {"inframind.io/skip-not": "true"}}, True),
]
# Kinds that are CustomResourceDefinitions of other projects, which kubernetes-validate has no
# schema for. They are skipped explicitly (and reported); any other unknown kind is a failure.
SKIPPED_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
}

# The binary's environment contract.
# The shutdown drain (config::DrainSettings): every server reads it.
SHUTDOWN_ENV = {"INFRAMIND_DRAIN_SECONDS": "drainSeconds", "INFRAMIND_SHUTDOWN_GRACE_SECONDS": "graceSeconds"}
COMMON_ENV = ["INFRAMIND_DATABASE_URL", "INFRAMIND_REDIS_URL", "INFRAMIND_MODELS_DIR", "INFRAMIND_LOG",
              "INFRAMIND_LOG_FORMAT", *SHUTDOWN_ENV]
# After the grace period the server waits one more second before it cuts open connections, then
# exits: terminationGracePeriodSeconds must leave it that long and a second to exit.
SHUTDOWN_MARGIN_SECONDS = 2
# The optimizer's settings (config::OptimizerSettings): the webhook's and the API's (POST /v1/recommendations).
OPTIMIZER_ENV = ["INFRAMIND_OBJECTIVE", "INFRAMIND_EXPLORATION_RATE", "INFRAMIND_MIN_CPU", "INFRAMIND_MAX_CPU",
                 "INFRAMIND_MIN_MEM_GB", "INFRAMIND_MAX_MEM_GB", "INFRAMIND_MIN_CONCURRENCY",
                 "INFRAMIND_MAX_CONCURRENCY", "INFRAMIND_CPU_PRICE_PER_HOUR", "INFRAMIND_MEM_PRICE_PER_GB_HOUR"]
WEBHOOK_ONLY_ENV = ["INFRAMIND_DRY_RUN", "INFRAMIND_CONCURRENCY_ENV", "INFRAMIND_WATCH_NAMESPACE_LIMITS", "INFRAMIND_WATCH_NODES"]
WEBHOOK_ENV = WEBHOOK_ONLY_ENV + OPTIMIZER_ENV
CONTROLLER_ENV = ["INFRAMIND_LEASE_NAME", "POD_NAME", "POD_NAMESPACE"]
# Training Jobs (controller.batchJobs): the training ServiceAccount (controller only) and the
# allowlists of other images and ServiceAccounts (controller and API, when configured).
JOB_SA_ENV = "INFRAMIND_JOB_SERVICE_ACCOUNT"
JOB_POLICY_ENV = {"INFRAMIND_JOB_ALLOWED_IMAGES": "allowedJobImages",
                  "INFRAMIND_JOB_ALLOWED_SERVICE_ACCOUNTS": "allowedJobServiceAccounts"}
# `inframind api`: always, and when configured (admin token, TLS, training namespace).
API_ENV = ["INFRAMIND_INGEST_TOKEN_FILE", "INFRAMIND_API_MAX_BODY_BYTES"] + OPTIMIZER_ENV
API_OPTIONAL_ENV = ["INFRAMIND_ADMIN_TOKEN_FILE", "INFRAMIND_API_TLS_CERT", "INFRAMIND_API_TLS_KEY",
                    "INFRAMIND_TRAINING_NAMESPACE"]
API_PORT = 8081
MODELS_DIR = "/var/lib/inframind/models"
# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}

# The metrics the binaries expose, by name, with their labels (None: any value). This mirrors
# src/webhook/metrics.rs, src/api_metrics.rs, src/controller/metrics.rs and the run counters of the
# API and the controller's pod-outcome watcher: keep it in step with them. OpenMetrics: counters
# end in _total; a histogram is _bucket (label le), _sum and _count.
ADMISSION_OUTCOMES = {"mutated", "dry_run", "holdout", "cold_start", "kept", "unchanged", "ignored", "error"}
RUN_LABELS = {"decision": {"applied", "explored", "holdout", "dry-run", "unchanged", "none"},
              "result": {"success", "failure", "oom"}}
API_ROUTES = {"/v1/runs", "/v1/pipelines", "/v1/recommendations", "/v1/train", "/v1/savings", "/", "/pipelines",
              "/models", "/login", "/logout", "/healthz", "/readyz", "/metrics", "other"}


def _histogram(name: str) -> dict:
    return {f"{name}_bucket": {"le": None}, f"{name}_sum": {}, f"{name}_count": {}}


METRICS: dict[str, dict] = {
    # webhook /metrics
    "inframind_admissions_total": {"outcome": ADMISSION_OUTCOMES},
    **_histogram("inframind_admission_duration_seconds"),
    "inframind_decisions_explored_total": {},
    "inframind_model_info": {"version": None},
    "inframind_model_trained_timestamp_seconds": {},
    "inframind_model_swaps_total": {},
    "inframind_model_refusals_total": {},
    "inframind_tls_certificate_reloads_total": {},
    "inframind_bad_requests_total": {},
    "inframind_decision_cache": {"what": None},
    # API /metrics
    "inframind_api_requests_total": {"route": API_ROUTES, "status": None},
    **_histogram("inframind_api_request_duration_seconds"),
    "inframind_runs_ingested_total": RUN_LABELS,
    # controller /metrics
    "inframind_controller_reconciliations_total": {},
    "inframind_controller_reconcile_failures_total": {"error": None},
    "inframind_controller_trainings_total": {"outcome": None},
    "inframind_controller_promotions_total": {},
    "inframind_controller_triggers_total": {"kind": None},
    "inframind_controller_leader": {},
    **_histogram("inframind_controller_training_duration_seconds"),
    **_histogram("inframind_controller_reconcile_duration_seconds"),
    "inframind_controller_model_score": {"trainingjob": None, "metric": {"mae_seconds", "r2", "rank_accuracy"}},
    "inframind_controller_runs_recorded_total": RUN_LABELS,
}
# Labels Prometheus adds to every series of a target scraped through a ServiceMonitor.
TARGET_LABELS = {"namespace", "job", "instance", "pod", "service", "endpoint", "container"}
# What the PrometheusRule alerts on (the last two only with the API or the controller).
ALERTS = {"InframindAdmissionErrors", "InframindAdmissionsFailingOpen", "InframindAdmissionLatencyHigh",
          "InframindModelStale", "InframindNoTelemetry", "InframindOomAboveHoldout"}
RUN_ALERTS = {"InframindNoTelemetry", "InframindOomAboveHoldout"}
# What the dashboard shows: admissions by outcome, fail-open, latency, the model's version and
# age, runs by decision (API and controller), the API's requests and latency, trainings, promotions.
DASHBOARD_METRICS = {"inframind_admissions_total", "inframind_admission_duration_seconds_bucket", "inframind_model_info",
                     "inframind_model_trained_timestamp_seconds", "inframind_runs_ingested_total",
                     "inframind_controller_runs_recorded_total", "inframind_api_requests_total",
                     "inframind_api_request_duration_seconds_bucket", "inframind_controller_trainings_total",
                     "inframind_controller_promotions_total"}

VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    "cert-manager": {"certificates": {"mode": "cert-manager"}},
    "cert-manager-issuer": {
        "certificates": {"mode": "cert-manager",
                         "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}},
        "webhook": {"timeoutSeconds": 3, "reinvocationPolicy": "IfNeeded", "watchNamespaceLimits": False},
    },
    "self-signed": {"certificates": {"mode": "self-signed"}, "metrics": {"serviceMonitor": {"enabled": True}}},
    "helm-certs-dry-run": {
        "certificates": {"mode": "helm", "helm": {"validityDays": 365}},
        "optimizer": {"dryRun": True, "objective": "cost", "explorationRate": 0,
                      "bounds": {"minCpu": 0.5, "maxCpu": 8, "minMemGb": 2, "maxMemGb": 32,
                                 "minConcurrency": 2, "maxConcurrency": 12},
                      "concurrencyEnv": ["MAKEFLAGS", "NINJA_JOBS"],
                      "prices": {"cpuPerHour": 0.0316, "memPerGbHour": 0.0042}},
        "log": {"level": "debug,hyper=info", "format": "text"},
        "webhook": {"watchNodes": False, "watchNamespaceLimits": False,
                    "buildCache": {"claim": "build-cache", "namespaces": ["ci", "web"], "maxSizeGB": 8,
                                   "remoteEnv": {"SCCACHE_WEBDAV_ENDPOINT": "http://cache.ci:8080", "SCCACHE_BUCKET": "b"}}},
        "database": {"existingSecret": "pg", "secretKey": "DATABASE_URL"},
        "redis": {"existingSecret": "cache", "secretKey": "REDIS_URL"},
    },
    "monitoring-networkpolicy": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
        "networkPolicy": {
            "enabled": True,
            "webhook": {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
            "metrics": {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
            "egress": {"enabled": True, "to": [{"ports": [{"port": 5432, "protocol": "TCP"},
                                                          {"port": 6379, "protocol": "TCP"},
                                                          {"port": 443, "protocol": "TCP"}]}]},
        },
    },
    "webhook-only-single": {
        "controller": {"enabled": False},
        "api": {"enabled": False},
        "webhook": {"replicas": 1, "podAntiAffinity": "hard", "excludedNamespaces": ["kube-system", "gitlab"],
                    "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
                    "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}]},
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "regcred"}],
        "rbac": {"create": True},
        "metrics": {"prometheusRule": {"enabled": True}},
    },
    # GKE private clusters: the control plane reaches nodes on 443 only; no matchConditions.
    "webhook-port-443": {"webhook": {"port": 443, "matchConditions": False},
                         "networkPolicy": {"enabled": True},
                         "shutdown": {"drainSeconds": 0, "graceSeconds": 0}},
    # Control planes that cannot reach pod IPs: the webhook on the node's network.
    "webhook-host-network": {"webhook": {"hostNetwork": True, "port": 9443, "podAntiAffinity": "hard"}},
    # Signed models (private key in the controller only) and a private CA for the stores.
    "signed-models-store-tls": {
        "modelSigning": {"signingKeySecret": "im-signing", "publicKeySecret": "im-public"},
        "storesCA": {"existingSecret": "stores-ca", "secretKey": "root.pem"},
    },
    # Verifying only: the trainer (and its signing key) lives in another release.
    "webhook-verifies-only": {"controller": {"enabled": False},
                              "modelSigning": {"publicKeySecret": "im-public"},
                              "metrics": {"prometheusRule": {"enabled": True},
                                          "grafanaDashboard": {"enabled": True, "sidecarLabel": "grafana.com/dashboard",
                                                               "sidecarLabelValue": "inframind"}}},
    "controller-no-batch": {"controller": {"batchJobs": False, "replicas": 1, "podAntiAffinity": "none",
                                           "leaseName": "im-leader", "allowedJobImages": ["unused:1"]},
                            "api": {"replicas": 1, "podAntiAffinity": "none"},
                            "shutdown": {"drainSeconds": 15, "graceSeconds": 45},
                            "fullnameOverride": "im"},
    # The API creating TrainingJobs (its one Role), with an admin token, TLS and its own peers.
    "api-training-tls": {
        "api": {"trainingNamespace": "ci-training", "replicas": 3, "podAntiAffinity": "hard",
                "maxBodyBytes": 1048576,
                "ingestToken": {"secretName": "ci-ingest", "key": "ingest-token"},
                "adminToken": {"secretName": "ci-admin", "key": "admin.token"},
                "tls": {"enabled": True, "secretName": "ci-api-tls"},
                "podDisruptionBudget": {"minAvailable": 2},
                "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}]},
        "serviceAccount": {"api": {"name": "ingest"}, "training": {"name": "im-train"}},
        "controller": {"allowedJobImages": ["ghcr.io/inframind/inframind:debug", "registry.corp/inframind@sha256:" + "b" * 64],
                       "allowedJobServiceAccounts": ["trainer-gpu"]},
        "networkPolicy": {"enabled": True,
                          "api": {"from": [{"namespaceSelector": {"matchLabels": {"inframind.io/reporters": "true"}}}]}},
    },
    # The API trains through TrainingJobs in its own namespace, admin token in the ingest Secret
    # under another key; networkPolicy.api.from empty (any source); webhook and controller defaults.
    # Alerts and the Grafana dashboard, thresholds changed, the dashboard in Grafana's namespace.
    "alerts-dashboard": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                                       "failOpenRatio": 0.05, "admissionP99Seconds": 0.025, "modelMaxAgeHours": 72,
                                       "noTelemetryHours": 12, "oomRatioMargin": 0.1, "oomMinRuns": 50},
                    "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"team": "ci"},
                                         "annotations": {"grafana_folder": "CI"}}},
    },
    # Plain HTTP for the API (TLS is the default): Service port 80, HTTP probes, no certificate.
    "api-plain-http": {"api": {"tls": {"enabled": False}},
                       "metrics": {"serviceMonitor": {"enabled": True}}},
    "api-training-same-namespace": {
        "api": {"trainingNamespace": NAMESPACE,
                "adminToken": {"secretName": "inframind-api-ingest", "key": "admin"}},
        "networkPolicy": {"enabled": True, "api": {"from": []}},
    },
}

# values that values.schema.json must reject: (values, the JSON pointer the error must name)
SCHEMA_REJECTS = [
    ({"webhook": {"replicas": "two"}}, "/webhook/replicas"),
    ({"controller": {"replicas": 1.5}}, "/controller/replicas"),
    ({"webhook": {"timeoutSeconds": "5"}}, "/webhook/timeoutSeconds"),
    ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ({"webhook": {"reinvocationPolicy": "Always"}}, "/webhook/reinvocationPolicy"),
    ({"webhook": {"replica": 2}}, "/webhook"),  # a typo is not silently ignored
    ({"certificates": {"mode": "vault"}}, "/certificates/mode"),
    ({"optimizer": {"dryRun": "yes"}}, "/optimizer/dryRun"),
    ({"optimizer": {"objective": "speed"}}, "/optimizer/objective"),
    ({"optimizer": {"explorationRate": 1.5}}, "/optimizer/explorationRate"),
    ({"optimizer": {"bounds": {"maxConcurrency": 32}}}, "/optimizer/bounds/maxConcurrency"),
    ({"optimizer": {"bounds": {"minCpu": "1"}}}, "/optimizer/bounds/minCpu"),
    ({"optimizer": {"concurrencyEnv": "MAKEFLAGS"}}, "/optimizer/concurrencyEnv"),
    ({"controller": {"enabled": "false"}}, "/controller/enabled"),
    ({"database": {"existingSecret": ""}}, "/database/existingSecret"),
    ({"log": {"format": "xml"}}, "/log/format"),
    ({"metrics": {"serviceMonitor": {"enabled": 1}}}, "/metrics/serviceMonitor/enabled"),
    ({"bogus": True}, "bogus"),
    ({"shutdown": {"drainSeconds": -1}}, "/shutdown/drainSeconds"),
    ({"shutdown": {"graceSeconds": "10"}}, "/shutdown/graceSeconds"),
    ({"shutdown": {"graceSeconds": 3600}}, "/shutdown/graceSeconds"),
    ({"shutdown": {"preStopSleepSeconds": 5}}, "/shutdown"),  # no preStop: see values.yaml
    ({"api": {"replicas": "two"}}, "/api/replicas"),
    ({"api": {"enabled": "yes"}}, "/api/enabled"),
    ({"api": {"maxBodyBytes": "4MB"}}, "/api/maxBodyBytes"),
    ({"api": {"maxBodyBytes": 0}}, "/api/maxBodyBytes"),
    ({"api": {"trainingNamespace": "CI_Builds"}}, "/api/trainingNamespace"),
    ({"api": {"ingestToken": {"secretName": ""}}}, "/api/ingestToken/secretName"),
    ({"api": {"adminToken": {"secretName": 7}}}, "/api/adminToken/secretName"),
    ({"api": {"tls": {"enabled": "true"}}}, "/api/tls/enabled"),
    ({"api": {"tls": {"secretName": "API_TLS"}}}, "/api/tls/secretName"),
    ({"certificates": {"certManager": {"caDuration": "10y"}}}, "/certificates/certManager/caDuration"),
    ({"metrics": {"serviceMonitor": {"apiTlsConfig": "ca.crt"}}}, "/metrics/serviceMonitor/apiTlsConfig"),
    ({"metrics": {"prometheusRule": {"enabled": "yes"}}}, "/metrics/prometheusRule/enabled"),
    ({"metrics": {"prometheusRule": {"failOpenRatio": 5}}}, "/metrics/prometheusRule/failOpenRatio"),
    ({"metrics": {"prometheusRule": {"admissionP99Seconds": 0.5}}}, "/metrics/prometheusRule/admissionP99Seconds"),
    ({"metrics": {"prometheusRule": {"noTelemetryHours": 1.5}}}, "/metrics/prometheusRule/noTelemetryHours"),
    ({"metrics": {"prometheusRule": {"oomMinRuns": 0}}}, "/metrics/prometheusRule/oomMinRuns"),
    ({"metrics": {"prometheusRule": {"severity": "page"}}}, "/metrics/prometheusRule"),
    ({"metrics": {"grafanaDashboard": {"sidecarLabelValue": 1}}}, "/metrics/grafanaDashboard/sidecarLabelValue"),
    ({"metrics": {"grafanaDashboard": {"namespace": "Monitoring"}}}, "/metrics/grafanaDashboard/namespace"),
    ({"api": {"podAntiAffinity": "always"}}, "/api/podAntiAffinity"),
    ({"api": {"listen": "0.0.0.0:9000"}}, "/api"),  # the port is the chart's, not a value
    ({"serviceAccount": {"api": {"create": "yes"}}}, "/serviceAccount/api/create"),
    ({"serviceAccount": {"training": {"name": "Trainer"}}}, "/serviceAccount/training/name"),
    ({"controller": {"allowedJobImages": "ghcr.io/x/y:1"}}, "/controller/allowedJobImages"),
    ({"controller": {"allowedJobImages": ["a b"]}}, "/controller/allowedJobImages"),
    ({"controller": {"allowedJobServiceAccounts": ["Trainer_GPU"]}}, "/controller/allowedJobServiceAccounts"),
    ({"networkPolicy": {"api": {"from": {"namespaceSelector": {}}}}}, "/networkPolicy/api/from"),
    ({"webhook": {"port": 0}}, "/webhook/port"),
    ({"webhook": {"port": "443"}}, "/webhook/port"),
    ({"webhook": {"hostNetwork": "yes"}}, "/webhook/hostNetwork"),
    ({"webhook": {"matchConditions": "auto"}}, "/webhook/matchConditions"),
]
# values the schema accepts but the templates must refuse (cross-field rules)
TEMPLATE_REJECTS = [
    ({"optimizer": {"bounds": {"minCpu": 20}}}, "minCpu"),
    ({"optimizer": {"bounds": {"minMemGb": 128}}}, "minMemGb"),
    ({"optimizer": {"bounds": {"minConcurrency": 8, "maxConcurrency": 4}}}, "minConcurrency"),
    ({"api": {"adminToken": {"secretName": "inframind-api-ingest"}}}, "admin token must differ"),
    ({"webhook": {"hostNetwork": True}, "createNamespace": True}, "restricted Pod Security Standard"),
    ({"webhook": {"hostNetwork": True, "port": 10250}}, "kubelet"),
    ({"modelSigning": {"publicKeySecret": "im-public"}}, "modelSigning.signingKeySecret"),
]


# ---------------------------------------------------------------------------------------------
# A tiny check runner: every check is counted; a failure is reported with its context.

class Runner:
    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.passed = 0
        self.failures: list[str] = []
        self.notes: list[str] = []

    def check(self, name: str, fn, *args):
        """Run fn(*args); an AssertionError or any exception is a failure of this check."""
        try:
            fn(*args)
        except AssertionError as e:
            self.failures.append(f"{name}: {e}")
            print(f"FAIL {name}: {e}")
            return
        except Exception as e:  # noqa: BLE001 - a crash in a check is that check failing
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            if self.verbose:
                traceback.print_exc()
            return
        self.passed += 1
        if self.verbose:
            print(f"ok   {name}")

    def note(self, text: str):
        if text not in self.notes:
            self.notes.append(text)


def cel(expression: str, **bindings) -> bool:
    """Evaluate a CEL expression (cel-python) with Kubernetes' lowerAscii (strings extension)."""
    env = celpy.Environment()
    program = env.program(env.compile(expression),
                          functions={"lowerAscii": lambda s: celpy.celtypes.StringType(str(s).lower())})
    result = program.evaluate({k: celpy.json_to_cel(v) for k, v in bindings.items()})
    if isinstance(result, Exception):
        raise AssertionError(f"CEL {expression!r} failed: {result}")
    return bool(result)


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---------------------------------------------------------------------------------------------
# Kubernetes schema validation (kubernetes-validate's own function, with its schema files cached:
# it re-reads a multi-megabyte definitions file on every call otherwise).

kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def kube_validate(obj: dict, version: str, runner: Runner) -> None:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in SKIPPED_KINDS:
        runner.note(f"kubernetes-validate: skipped {key[1]} ({key[0]}), a CRD it has no schema for")
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kv_utils.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(f"{key[1]}/{obj['metadata'].get('name')} invalid for Kubernetes {version} "
                             f"(strict) at {path or '<root>'}: {e.message}") from None
    except kv_utils.SchemaNotFoundError as e:
        raise AssertionError(f"no Kubernetes {version} schema for {key[1]} ({key[0]}): {e.message}") from None


# ---------------------------------------------------------------------------------------------
# Helpers over rendered objects

def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
    return found[0]


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions)."""
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and key in labels and labels[key] in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def env_map(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def resolve_port(container, port) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def rules_of(role) -> set:
    """A Role's rules flattened to (apiGroup, resource, resourceName or '*any', verb) tuples."""
    out = set()
    for r in role.get("rules", []):
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for name in r.get("resourceNames") or ["*any"]:
                    for v in r.get("verbs", []):
                        out.add((g, res, name, v))
    return out


def grants_for(objs, sa_name: str, namespace: str):
    """(cluster-wide rules, {namespace: rules}) bound to a ServiceAccount."""
    cluster, namespaced = set(), {}
    roles = {("ClusterRole", o["metadata"]["name"]): o for o in by_kind(objs, "ClusterRole")}
    roles.update({("Role", o["metadata"]["name"], o["metadata"].get("namespace")): o for o in by_kind(objs, "Role")})
    for b in by_kind(objs, "ClusterRoleBinding") + by_kind(objs, "RoleBinding"):
        subjects = [s for s in b.get("subjects", [])
                    if s["kind"] == "ServiceAccount" and s["name"] == sa_name and s.get("namespace") == namespace]
        if not subjects:
            continue
        ref = b["roleRef"]
        if ref["kind"] == "ClusterRole":
            role = roles.get(("ClusterRole", ref["name"]))
        else:
            role = roles.get(("Role", ref["name"], b["metadata"].get("namespace")))
        assert role is not None, f"{b['kind']} {b['metadata']['name']} refers to {ref['kind']} {ref['name']}, which is not rendered"
        if b["kind"] == "ClusterRoleBinding":
            cluster |= rules_of(role)
        else:
            namespaced.setdefault(b["metadata"]["namespace"], set()).update(rules_of(role))
    return cluster, namespaced


def secret_file(spec: dict, container: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) behind a file path in a container, through its volume mounts.

    The mount must be read-only and a whole Secret volume (no subPath, which the kubelet never
    updates, so a rotated token would not reach the running pod)."""
    vols = {x["name"]: x for x in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if not path.startswith(mp + "/"):
            continue
        assert not m.get("subPath"), f"{path}: mounted with subPath {m['subPath']!r}, which never sees a rotated Secret"
        assert m.get("readOnly") is True, f"{path}: volume {m['name']} is not mounted read-only"
        vol = vols.get(m["name"])
        assert vol is not None and "secret" in vol, f"{path}: volume {m['name']} is not a Secret volume: {vol}"
        rel = path[len(mp) + 1:]
        items = vol["secret"].get("items")
        if items:
            keys = [i["key"] for i in items if i["path"] == rel]
            assert len(keys) == 1, f"{path}: Secret volume {m['name']} projects no item to {rel!r}: {items}"
            key = keys[0]
        else:
            key = rel
        assert not vol["secret"].get("optional"), f"{path}: Secret {vol['secret']['secretName']} is optional"
        return vol["secret"]["secretName"], key
    raise AssertionError(f"{container['name']}: no volume is mounted where {path} is read")


def check_anti_affinity(d: dict, want: str):
    """The Deployment's pods are spread over nodes as `want` (soft, hard, none) says."""
    spec = d["spec"]["template"]["spec"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    aff = spec.get("affinity", {}).get("podAntiAffinity", {})
    if want == "soft":
        terms = [t["podAffinityTerm"] for t in aff.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    elif want == "hard":
        terms = aff.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    else:
        assert not aff, f"{d['metadata']['name']}: podAntiAffinity none, but one is rendered"
        return
    assert any(t["topologyKey"] == "kubernetes.io/hostname" and selector_matches(t["labelSelector"], labels) for t in terms), \
        f"no {want} anti-affinity over nodes for {d['metadata']['name']}'s own pods"


def check_optimizer_env(env: dict, v: dict, who: str):
    """The optimizer's variables are plain decimals equal to the values (the binary parses them as numbers)."""
    o, bnd = v["optimizer"], v["optimizer"]["bounds"]
    assert env["INFRAMIND_OBJECTIVE"].get("value") == o["objective"], f"{who}: INFRAMIND_OBJECTIVE={env['INFRAMIND_OBJECTIVE']}"
    numeric = {"INFRAMIND_EXPLORATION_RATE": o["explorationRate"], "INFRAMIND_MIN_CPU": bnd["minCpu"],
               "INFRAMIND_MAX_CPU": bnd["maxCpu"], "INFRAMIND_MIN_MEM_GB": bnd["minMemGb"],
               "INFRAMIND_MAX_MEM_GB": bnd["maxMemGb"], "INFRAMIND_MIN_CONCURRENCY": bnd["minConcurrency"],
               "INFRAMIND_MAX_CONCURRENCY": bnd["maxConcurrency"],
               "INFRAMIND_CPU_PRICE_PER_HOUR": o["prices"]["cpuPerHour"],
               "INFRAMIND_MEM_PRICE_PER_GB_HOUR": o["prices"]["memPerGbHour"]}
    for var, val in numeric.items():
        got = env[var].get("value")
        assert got is not None and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", got) and float(got) == float(val), \
            f"{who}: {var}={got!r}, expected a plain decimal equal to {val}"


def expand(group, resource, verbs, name="*any"):
    return {(group, resource, name, v) for v in verbs}


def openssl(*args, stdin: bytes | None = None) -> str:
    res = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    assert res.returncode == 0, f"openssl {' '.join(args)}: {res.stderr.decode().strip()}"
    return res.stdout.decode()


def verify_serving_secret(data: dict, names: list[str], runner: Runner):
    """A kubernetes.io/tls Secret's data: tls.crt is a server certificate that ca.crt signed, whose
    subjectAltName covers `names`, and tls.key is its key."""
    if not shutil.which("openssl"):
        runner.note("openssl not found: the Helm-generated certificate chains were not verified")
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ca.crt").write_bytes(base64.b64decode(data["ca.crt"]))
        (Path(tmp) / "tls.crt").write_bytes(base64.b64decode(data["tls.crt"]))
        out = openssl("verify", "-purpose", "sslserver", "-CAfile", f"{tmp}/ca.crt", f"{tmp}/tls.crt")
        assert out.strip().endswith("OK"), out
        san = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", f"{tmp}/tls.crt")
        missing = [n for n in names if not re.search(rf"DNS:{re.escape(n)}(,|$)", san.strip(), re.M)]
        assert not missing, f"serving certificate names {san.strip()}, not {missing}"
        pub_cert = openssl("x509", "-noout", "-pubkey", "-in", f"{tmp}/tls.crt")
        pub_key = openssl("pkey", "-pubout", stdin=base64.b64decode(data["tls.key"]))
        assert pub_cert == pub_key, "tls.key does not belong to tls.crt"


# ---------------------------------------------------------------------------------------------
# A rough PromQL reader for the alert and dashboard expressions: balanced brackets, known
# functions, and the selectors (metric name and label matchers) they read. Not a parser: enough
# to catch a typo in a metric, label or value, or a bracket left open.

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv", "exp", "floor",
    "group", "histogram_quantile", "idelta", "increase", "irate", "label_join", "label_replace",
    "last_over_time", "ln", "log10", "log2", "max", "max_over_time", "min", "min_over_time",
    "predict_linear", "present_over_time", "quantile", "quantile_over_time", "rate", "resets", "round",
    "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum", "sum_over_time", "time",
    "timestamp", "topk", "vector",
}
PROMQL_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_PROMQL_TOKEN = re.compile(r"""\s+|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<var>\$\{?\w+\}?)"""
                           r"""|(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)?)|(?P<id>[A-Za-z_:][\w:]*)"""
                           r"""|(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}\[\]])""")


def promql_tokens(expr: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(expr):
        m = _PROMQL_TOKEN.match(expr, i)
        assert m, f"unexpected {expr[i:i + 20]!r} in {expr!r}"
        if m.lastgroup:
            out.append((m.lastgroup, m.group()))
        i = m.end()
    return out


def promql_selectors(expr: str) -> list[tuple[str, dict]]:
    """[(metric name, {label: (operator, value)})] of every selector in `expr`; asserts balanced
    brackets and known functions."""
    toks = promql_tokens(expr)
    stack = []
    for _, t in toks:
        if t in "([{":
            stack.append(t)
        elif t in ")]}":
            assert stack and stack.pop() == {")": "(", "]": "[", "}": "{"}[t], f"unbalanced {t!r} in {expr!r}"
    assert not stack, f"unclosed {stack} in {expr!r}"
    sels, i = [], 0
    while i < len(toks):
        kind, t = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind != "id":
            i += 1
            continue
        if t.lower() in PROMQL_LABEL_LISTS:
            i += 1
            if nxt == "(":  # a label list, not a selector
                while toks[i][1] != ")":
                    i += 1
                i += 1
            continue
        if t.lower() in PROMQL_WORDS:
            i += 1
            continue
        if nxt == "(" or (t in PROMQL_FUNCTIONS and nxt.lower() in ("by", "without")):  # sum by (le) (…)
            assert t in PROMQL_FUNCTIONS, f"unknown PromQL function {t}() in {expr!r}"
            i += 1
            continue
        matchers, i = {}, i + 1
        if nxt == "{":
            i += 1
            while toks[i][1] != "}":
                (lk, label), (_, op), (vk, val) = toks[i:i + 3]
                assert lk == "id" and op in ("=", "!=", "=~", "!~") and vk == "str", f"bad matcher in {t}{{…}} of {expr!r}"
                matchers[label] = (op, val[1:-1])
                i += 3
                if toks[i][1] == ",":
                    i += 1
            i += 1
        sels.append((t, matchers))
    return sels


def promql_numbers(expr: str) -> set[float]:
    return {float(t) for k, t in promql_tokens(expr) if k == "num" and re.fullmatch(r"[0-9.e+-]+", t)}


def check_selectors(expr: str, where: str, namespace: str | None = None) -> set[str]:
    """Every selector reads a metric the binaries expose, with their labels and label values (and
    the release's namespace when `namespace` is given); returns the metric names read."""
    names = set()
    for metric, matchers in promql_selectors(expr):
        assert metric in METRICS, f"{where}: {metric} is not a metric the binaries expose"
        names.add(metric)
        labels = METRICS[metric]
        for label, (op, val) in matchers.items():
            assert label in labels or label in TARGET_LABELS, f"{where}: {metric} has no label {label}"
            allowed = labels.get(label)
            if op == "=" and allowed is not None and "$" not in val:
                assert val in allowed, f"{where}: {metric}{{{label}={val!r}}} never exists ({sorted(allowed)})"
        if namespace is not None:
            assert matchers.get("namespace") == ("=", namespace), \
                f"{where}: {metric} is not scoped to the release namespace ({matchers.get('namespace')})"
    return names


# ---------------------------------------------------------------------------------------------
# The product's invariants on one rendered values set

def check_invariants(name: str, v: dict, objs: list[dict], notes: str, runner: Runner):
    mode = v["certificates"]["mode"]
    fullname = v["fullnameOverride"] or RELEASE
    svc_name = f"{fullname}-webhook"
    ctl_name = f"{fullname}-controller"
    api_name = f"{fullname}-api"
    svc_dns = f"{svc_name}.{NAMESPACE}.svc"
    tls_secret = f"{svc_name}-tls"
    ctl_on = v["controller"]["enabled"]
    api = v["api"]
    api_on = api["enabled"]
    api_tls = api["tls"]["enabled"]
    # the Secret the API serves from: the user's, or the chart's (api-certificate.yaml)
    api_tls_secret = api["tls"]["secretName"] or f"{api_name}-tls"
    api_chart_cert = api_on and api_tls and not api["tls"]["secretName"]
    api_dns = f"{api_name}.{NAMESPACE}.svc"
    api_dns_names = [api_name, f"{api_name}.{NAMESPACE}", api_dns, f"{api_dns}.{v['certificates']['clusterDomain']}"]
    api_sa = (v["serviceAccount"]["api"]["name"] or api_name) if v["serviceAccount"]["api"]["create"] \
        else (v["serviceAccount"]["api"]["name"] or "default")
    api_admin = bool(api["adminToken"]["secretName"])
    training_ns = api["trainingNamespace"]
    jobs_on = ctl_on and v["controller"]["batchJobs"]
    training_sa = v["serviceAccount"]["training"]["name"] or f"{fullname}-training"
    deployments = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")}
    c = lambda what, fn: runner.check(f"{name}: {what}", fn)  # noqa: E731

    def names_and_namespaces():
        cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                          "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
        for o in objs:
            md = o["metadata"]
            if o["kind"] in cluster_scoped:
                assert "namespace" not in md, f"{o['kind']}/{md['name']} is cluster-scoped but has a namespace"
            elif o["kind"] == "ConfigMap" and md["name"] == f"{fullname}-dashboard":
                # where Grafana's sidecar looks
                want = v["metrics"]["grafanaDashboard"]["namespace"] or NAMESPACE
                assert md.get("namespace") == want, f"ConfigMap/{md['name']} in {md.get('namespace')}, not {want}"
            elif (o["kind"] in ("Role", "RoleBinding") and md["labels"].get("app.kubernetes.io/component") == "api"
                  and training_ns):
                # the API's one Role lives where it creates TrainingJobs
                assert md.get("namespace") == training_ns, f"{o['kind']}/{md['name']} is not in api.trainingNamespace"
            else:
                assert md.get("namespace") == NAMESPACE, f"{o['kind']}/{md['name']} is not in the release namespace"
            assert md["labels"].get("app.kubernetes.io/instance") == RELEASE, f"{o['kind']}/{md['name']} lacks the instance label"
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
        assert len(kinds) == len(objs), "two rendered objects share a kind and name"
        expected = {svc_name} | ({ctl_name} if ctl_on else set()) | ({api_name} if api_on else set())
        assert set(deployments) == expected, f"Deployments {sorted(deployments)}, expected {sorted(expected)}"
    c("objects, names, namespaces and labels", names_and_namespaces)

    def pod_security():
        for d in deployments.values():
            spec = d["spec"]["template"]["spec"]
            dn = d["metadata"]["name"]
            psc = spec.get("securityContext", {})
            assert psc.get("runAsNonRoot") is True, f"{dn}: pod runAsNonRoot is not true"
            assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{dn}: pod seccomp is not RuntimeDefault"
            assert psc.get("runAsUser", 65532) != 0, f"{dn}: runs as root"
            host_network = dn == svc_name and v["webhook"]["hostNetwork"]
            assert bool(spec.get("hostNetwork")) == host_network, f"{dn}: hostNetwork {spec.get('hostNetwork')}"
            if host_network:
                assert spec.get("dnsPolicy") == "ClusterFirstWithHostNet", f"{dn}: hostNetwork without ClusterFirstWithHostNet"
            for key in ("hostPID", "hostIPC"):
                assert not spec.get(key), f"{dn}: {key}"
            for vol in spec.get("volumes", []):
                types = set(vol) - {"name"}
                assert types <= RESTRICTED_VOLUMES, f"{dn}: volume {vol['name']} of type {types} is not allowed by the restricted standard"
            for ct in spec.get("initContainers", []) + spec["containers"]:
                sc = ct.get("securityContext", {})
                who = f"{dn}/{ct['name']}"
                assert sc.get("allowPrivilegeEscalation") is False, f"{who}: allowPrivilegeEscalation is not false"
                assert sc.get("readOnlyRootFilesystem") is True, f"{who}: root filesystem is writable"
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{who}: does not drop ALL capabilities"
                want_add = ["NET_BIND_SERVICE"] if dn == svc_name and v["webhook"]["port"] < 1024 else []
                assert (sc.get("capabilities", {}).get("add") or []) == want_add, \
                    f"{who}: adds capabilities {sc.get('capabilities', {}).get('add')}, expected {want_add or 'none'}"
                assert not sc.get("privileged"), f"{who}: privileged"
                assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{who}: may run as root"
                assert sc.get("runAsUser", psc.get("runAsUser")) == 65532, f"{who}: not uid 65532"
                assert ct.get("resources", {}).get("requests") and ct["resources"].get("limits", {}).get("memory"), \
                    f"{who}: needs resource requests and a memory limit"
                assert not any(p.get("hostPort") for p in ct.get("ports", [])), f"{who}: hostPort"
                image = ct["image"]
                want = (f"{v['image']['repository']}@{v['image']['digest']}" if v["image"]["digest"]
                        else f"{v['image']['repository']}:{v['image']['tag'] or '0.1.0'}")
                assert image == want, f"{who}: image {image}, expected {want}"
                mounts = {m["mountPath"]: m["name"] for m in ct.get("volumeMounts", [])}
                assert MODELS_DIR in mounts, f"{who}: no volume at {MODELS_DIR}"
                vols = {vol["name"]: vol for vol in spec["volumes"]}
                assert "emptyDir" in vols[mounts[MODELS_DIR]], f"{who}: {MODELS_DIR} is not an emptyDir"
                assert env_map(ct)["INFRAMIND_MODELS_DIR"]["value"] == MODELS_DIR, f"{who}: INFRAMIND_MODELS_DIR"
    c("restricted Pod Security Standard, resources, image, models dir", pod_security)

    def environment():
        def check_common(ct):
            env = env_map(ct)
            missing = [n for n in COMMON_ENV if n not in env]
            assert not missing, f"{ct['name']}: missing {missing}"
            for var, section in (("INFRAMIND_DATABASE_URL", "database"), ("INFRAMIND_REDIS_URL", "redis")):
                ref = env[var].get("valueFrom", {}).get("secretKeyRef", {})
                assert ref == {"name": v[section]["existingSecret"], "key": v[section]["secretKey"]}, \
                    f"{ct['name']}: {var} must come from Secret {v[section]['existingSecret']}/{v[section]['secretKey']}, got {env[var]}"
            assert env["INFRAMIND_LOG"]["value"] == v["log"]["level"]
            assert env["INFRAMIND_LOG_FORMAT"]["value"] == v["log"]["format"]
            return env

        wh = deployments[svc_name]["spec"]["template"]["spec"]["containers"][0]
        env = check_common(wh)
        missing = [n for n in WEBHOOK_ENV if n not in env]
        assert not missing, f"webhook: missing {missing}"
        o = v["optimizer"]
        want = {
            "INFRAMIND_DRY_RUN": "true" if o["dryRun"] else "false",
            "INFRAMIND_CONCURRENCY_ENV": ",".join(o["concurrencyEnv"]),
            "INFRAMIND_WATCH_NAMESPACE_LIMITS": "true" if v["webhook"]["watchNamespaceLimits"] else "false",
            "INFRAMIND_WATCH_NODES": "true" if v["webhook"]["watchNodes"] else "false",
            "INFRAMIND_CACHE_MAX_SIZE_GB": str(v["webhook"]["buildCache"]["maxSizeGB"]),
        }
        bc = v["webhook"]["buildCache"]
        # The build cache: each setting reaches the binary's variable exactly, or is absent.
        for var, val in (("INFRAMIND_CACHE_CLAIM", bc["claim"]),
                         ("INFRAMIND_CACHE_REMOTE_ENV", ",".join(f"{k}={x}" for k, x in sorted(bc["remoteEnv"].items()))),
                         ("INFRAMIND_CACHE_NAMESPACES", ",".join(bc["namespaces"]))):
            if val:
                want[var] = val
            else:
                assert var not in env, f"webhook: {var} set without its value"
        for var, val in want.items():
            assert env[var].get("value") == val, f"webhook: {var}={env[var].get('value')!r}, expected {val!r}"
        check_optimizer_env(env, v, "webhook")
        stray = [n for n in API_ENV[:2] + API_OPTIONAL_ENV + CONTROLLER_ENV + [JOB_SA_ENV, *JOB_POLICY_ENV] if n in env]
        assert not stray, f"webhook: has other components' variables {stray}"

        def check_job_policy(env, who):
            for var, key in JOB_POLICY_ENV.items():
                want = v["controller"][key]
                if want and jobs_on:
                    got = env.get(var, {}).get("value")
                    assert got == ",".join(want), f"{who}: {var}={got!r}, expected {','.join(want)!r}"
                else:
                    assert var not in env, f"{who}: {var} set although controller.{key} is empty or Jobs are off"
        for extra in v["webhook"]["extraEnv"]:
            assert extra["name"] in env, f"webhook: extraEnv {extra['name']} missing"
        if ctl_on:
            ct = deployments[ctl_name]["spec"]["template"]["spec"]["containers"][0]
            env = check_common(ct)
            assert env["INFRAMIND_LEASE_NAME"]["value"] == v["controller"]["leaseName"]
            assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
            stray = [n for n in WEBHOOK_ENV + API_ENV + API_OPTIONAL_ENV if n in env]
            assert not stray, f"controller: has other components' variables {stray}"
            if jobs_on:
                assert env.get(JOB_SA_ENV, {}).get("value") == training_sa, \
                    f"controller: {JOB_SA_ENV}={env.get(JOB_SA_ENV)}, expected the training ServiceAccount {training_sa}"
            else:
                assert JOB_SA_ENV not in env, f"controller: {JOB_SA_ENV} without controller.batchJobs"
            check_job_policy(env, "controller")
        if api_on:
            ct = deployments[api_name]["spec"]["template"]["spec"]["containers"][0]
            env = check_common(ct)
            missing = [n for n in API_ENV if n not in env]
            assert not missing, f"api: missing {missing}"
            check_optimizer_env(env, v, "api")
            body = env["INFRAMIND_API_MAX_BODY_BYTES"].get("value")
            assert body is not None and re.fullmatch(r"[0-9]+", body) and int(body) == api["maxBodyBytes"], \
                f"api: INFRAMIND_API_MAX_BODY_BYTES={body!r}, expected the integer {api['maxBodyBytes']}"
            want_optional = {"INFRAMIND_ADMIN_TOKEN_FILE": api_admin, "INFRAMIND_API_TLS_CERT": api_tls,
                             "INFRAMIND_API_TLS_KEY": api_tls, "INFRAMIND_TRAINING_NAMESPACE": bool(training_ns)}
            for var, on in want_optional.items():
                assert (var in env) == on, f"api: {var} {'missing' if on else 'set'} ({var} follows the values)"
            if training_ns:
                assert env["INFRAMIND_TRAINING_NAMESPACE"].get("value") == training_ns
            stray = [n for n in WEBHOOK_ONLY_ENV + CONTROLLER_ENV + [JOB_SA_ENV] if n in env]
            assert not stray, f"api: has other components' variables {stray}"
            check_job_policy(env, "api")
            for extra in api["extraEnv"]:
                assert extra["name"] in env, f"api: extraEnv {extra['name']} missing"
            # no token ever travels as an environment value or a secretKeyRef
            token_secrets = {api["ingestToken"]["secretName"], api["adminToken"]["secretName"]} - {""}
            for e in ct["env"]:
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                assert not (ref and ref["name"] in token_secrets), f"api: {e['name']} reads a token Secret into the environment"
                assert "TOKEN" not in e["name"] or e["name"].endswith("_FILE"), f"api: {e['name']} looks like a token in the environment"
    c("environment contract (INFRAMIND_*, Secrets, downward API)", environment)

    def graceful_shutdown():
        sd = v["shutdown"]
        for dname, d in deployments.items():
            spec = d["spec"]["template"]["spec"]
            ct = spec["containers"][0]
            env = env_map(ct)
            for var, key in SHUTDOWN_ENV.items():
                got = env.get(var, {}).get("value")
                assert got is not None and re.fullmatch(r"[0-9]+", got) and int(got) == sd[key], \
                    f"{dname}: {var}={got!r}, expected shutdown.{key} {sd[key]}"
            # the image is distroless: an exec hook has nothing to run; only the kubelet's sleep
            # action could delay SIGTERM, and it counts against the grace period too
            sleep = 0
            for c_ in spec["containers"]:
                pre = (c_.get("lifecycle") or {}).get("preStop")
                if pre is None:
                    continue
                assert set(pre) == {"sleep"}, f"{dname}/{c_['name']}: preStop {pre} (no shell in the image: only a sleep action can work)"
                sleep = max(sleep, pre["sleep"]["seconds"])
            want = sd["drainSeconds"] + sd["graceSeconds"] + sleep + SHUTDOWN_MARGIN_SECONDS
            got = spec.get("terminationGracePeriodSeconds", 30)
            assert got >= want, (f"{dname}: terminationGracePeriodSeconds {got} < drain {sd['drainSeconds']} + grace "
                                 f"{sd['graceSeconds']} + preStop sleep {sleep} + {SHUTDOWN_MARGIN_SECONDS}: killed mid-drain")
    c("graceful shutdown (drain settings in every server, terminationGracePeriodSeconds covers them)", graceful_shutdown)

    def webhook_deployment():
        d = deployments[svc_name]
        spec = d["spec"]["template"]["spec"]
        ct = spec["containers"][0]
        assert d["spec"]["replicas"] == v["webhook"]["replicas"]
        args = ct["args"]
        port = v["webhook"]["port"]
        assert args[:3] == ["webhook", "--listen", f"0.0.0.0:{port}"], f"webhook args {args}"
        flag = lambda f: args[args.index(f) + 1] if f in args else None  # noqa: E731
        mounts = {m["name"]: m for m in ct.get("volumeMounts", [])}
        vols = {x["name"]: x for x in spec.get("volumes", [])}
        if mode == "self-signed":
            assert "--self-signed" in args, "self-signed mode without --self-signed"
            assert flag("--service-dns-name") == svc_dns, f"--service-dns-name {flag('--service-dns-name')}, expected {svc_dns}"
            mwc = one(objs, "MutatingWebhookConfiguration")
            assert flag("--webhook-config-name") == mwc["metadata"]["name"], "--webhook-config-name does not name the MutatingWebhookConfiguration"
            assert "--tls-cert" not in args and "tls" not in vols, "self-signed mode mounts a certificate"
            assert spec.get("automountServiceAccountToken") is True, "self-signed mode needs the API token"
        else:
            assert "--self-signed" not in args
            assert flag("--tls-cert") == "/tls/tls.crt" and flag("--tls-key") == "/tls/tls.key", f"webhook args {args}"
            assert mounts["tls"]["mountPath"] == "/tls" and mounts["tls"].get("readOnly") is True
            assert vols["tls"]["secret"]["secretName"] == tls_secret
            want_token = v["webhook"]["watchNodes"] or v["webhook"]["watchNamespaceLimits"] \
                or bool(v["webhook"]["buildCache"]["claim"])
            assert spec.get("automountServiceAccountToken") is want_token, \
                "the webhook needs the API token only to watch Nodes, LimitRanges and ResourceQuotas in this mode"
        assert resolve_port(ct, "https") == port
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = ct[probe]["httpGet"]
            assert get["path"] == path and get["scheme"] == "HTTPS" and resolve_port(ct, get["port"]) == port, f"{probe}: {get}"
        sel = d["spec"]["selector"]
        assert selector_matches(sel, d["spec"]["template"]["metadata"]["labels"]), "selector does not match its pods"
        check_anti_affinity(d, v["webhook"]["podAntiAffinity"])
    c("webhook Deployment (args per certificate mode, probes, ports, anti-affinity)", webhook_deployment)

    def controller_deployment():
        if not ctl_on:
            assert not [o for o in objs if o["metadata"]["labels"].get("app.kubernetes.io/component") == "controller"], \
                "controller.enabled=false still renders controller objects"
            return
        d = deployments[ctl_name]
        ct = d["spec"]["template"]["spec"]["containers"][0]
        assert d["spec"]["replicas"] == v["controller"]["replicas"]
        assert ct["args"] == ["controller", "--http-listen", "0.0.0.0:8080"], f"controller args {ct['args']}"
        assert resolve_port(ct, "http") == 8080
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = ct[probe]["httpGet"]
            assert get["path"] == path and get.get("scheme", "HTTP") == "HTTP" and resolve_port(ct, get["port"]) == 8080, f"{probe}: {get}"
        svc = one(objs, "Service", f"{ctl_name}-metrics")
        assert selector_matches({"matchLabels": svc["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])
        assert resolve_port(ct, svc["spec"]["ports"][0]["targetPort"]) == 8080
    c("controller Deployment (args, probes, metrics Service)", controller_deployment)

    def api_deployment():
        if not api_on:
            assert not [o for o in objs if o["metadata"]["labels"].get("app.kubernetes.io/component") == "api"], \
                "api.enabled=false still renders API objects"
            assert api_name not in notes, "NOTES.txt names the API although it is disabled"
            return
        d = deployments[api_name]
        spec = d["spec"]["template"]["spec"]
        ct = spec["containers"][0]
        assert len(spec["containers"]) == 1, "the API pod runs one container"
        assert d["spec"]["replicas"] == api["replicas"]
        assert ct["args"] == ["api", "--listen", f"0.0.0.0:{API_PORT}"], f"api args {ct['args']}"
        assert [p["containerPort"] for p in ct["ports"]] == [API_PORT], f"api ports {ct['ports']}"
        scheme = "HTTPS" if api_tls else "HTTP"
        # readiness on /readyz: 503 from SIGTERM on, so the API drains (see shutdown)
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            assert probe in ct, f"api: no {probe}"
            get = ct[probe]["httpGet"]
            assert get["path"] == path and get.get("scheme", "HTTP") == scheme and resolve_port(ct, get["port"]) == API_PORT, \
                f"api {probe}: {get}, expected {scheme} GET {path} on {API_PORT}"
        assert spec.get("enableServiceLinks") is False, \
            f"service links would put {api_name.upper().replace('-', '_')}_* variables next to the binary's INFRAMIND_API_* ones"
        env = env_map(ct)
        # the tokens: files from the named Secrets, read-only, the admin one a different Secret key
        files = {"INFRAMIND_INGEST_TOKEN_FILE": (api["ingestToken"]["secretName"], api["ingestToken"]["key"])}
        if api_admin:
            files["INFRAMIND_ADMIN_TOKEN_FILE"] = (api["adminToken"]["secretName"], api["adminToken"]["key"])
        if api_tls:
            files["INFRAMIND_API_TLS_CERT"] = (api_tls_secret, "tls.crt")
            files["INFRAMIND_API_TLS_KEY"] = (api_tls_secret, "tls.key")
        seen = {}
        for var, want in files.items():
            path = env[var].get("value")
            assert path and path.startswith("/"), f"api: {var} is not a file path: {env[var]}"
            got = secret_file(spec, ct, path)
            assert got == want, f"api: {var}={path} reads Secret {got[0]} key {got[1]}, expected {want[0]} key {want[1]}"
            seen[var] = path
        if api_admin:
            assert seen["INFRAMIND_ADMIN_TOKEN_FILE"] != seen["INFRAMIND_INGEST_TOKEN_FILE"]
        secret_vols = {x["secret"]["secretName"] for x in spec["volumes"] if "secret" in x}
        # besides its tokens: the model public key and the stores' CA (checked in model_keys_and_stores_ca)
        want_vols = {s for s, _ in files.values()} | \
            ({v["modelSigning"]["publicKeySecret"], v["storesCA"]["existingSecret"]} - {""})
        assert secret_vols == want_vols, f"api: Secret volumes {sorted(secret_vols)}, expected exactly {sorted(want_vols)}"
        # Kubernetes access only to create TrainingJobs
        assert spec.get("automountServiceAccountToken") is bool(training_ns), \
            f"api: automountServiceAccountToken {spec.get('automountServiceAccountToken')} with trainingNamespace {training_ns!r}"
        assert spec["serviceAccountName"] == api_sa
        assert selector_matches(d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]), "selector does not match its pods"
        check_anti_affinity(d, api["podAntiAffinity"])
        # the Service the reporters post to
        s = one(objs, "Service", api_name)
        ports = s["spec"]["ports"]
        want_port = 443 if api_tls else 80
        assert len(ports) == 1 and ports[0]["port"] == want_port, f"API Service ports {ports}, expected {want_port}"
        assert resolve_port(ct, ports[0]["targetPort"]) == API_PORT
        assert selector_matches({"matchLabels": s["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"]), \
            "the API Service does not select the API pods"
        # NOTES.txt tells CI teams how to report to exactly this Service
        url = f"{'https' if api_tls else 'http'}://{api_dns}"
        cmd = f"inframind report --endpoint {url} --token-file /var/run/secrets/inframind/token"
        if api_tls:
            cmd += " --ca-file /var/run/secrets/inframind/ca.crt"
        assert re.search(rf"^\s*{re.escape(cmd)}$", notes, re.M), f"NOTES.txt lacks the line `{cmd}`"
        assert api["ingestToken"]["secretName"] in notes, "NOTES.txt does not name the ingest token Secret"
        if api_tls:
            # where the reporters' CA comes from: the ConfigMap (Helm-generated), the Secret's
            # ca.crt (cert-manager), or the user's Secret
            source = (f"get configmap {api_name}-ca" if api_chart_cert and mode != "cert-manager"
                      else f"get secret {api_tls_secret}" if api_chart_cert else api_tls_secret)
            assert source in notes, f"NOTES.txt does not say where the API's CA comes from ({source!r})"
    c("API Deployment (args, /healthz probes, token files from the named Secrets, Service, NOTES)", api_deployment)

    def model_keys_and_stores_ca():
        ms, ca = v["modelSigning"], v["storesCA"]
        pods = {"webhook": svc_name}
        if ctl_on:
            pods["controller"] = ctl_name
        if api_on:
            pods["api"] = api_name
        for comp, name in pods.items():
            spec = deployments[name]["spec"]["template"]["spec"]
            ct = spec["containers"][0]
            env = env_map(ct)
            # the private key only in the controller (its training Jobs copy its pod); the others verify
            want = {"INFRAMIND_MODEL_SIGNING_KEY_FILE": ms["signingKeySecret"] if comp == "controller" else "",
                    "INFRAMIND_MODEL_PUBLIC_KEY_FILE": ms["publicKeySecret"] if comp != "controller" else ""}
            for var, secret in want.items():
                assert (var in env) == bool(secret), f"{comp}: {var} {'missing' if secret else 'set'}"
                if secret:
                    got = secret_file(spec, ct, env[var]["value"])
                    assert got == (secret, ms["secretKey"]), f"{comp}: {var} reads {got}, expected {secret}/{ms['secretKey']}"
            secrets = {x["secret"]["secretName"] for x in spec["volumes"] if "secret" in x}
            if comp != "controller":
                assert ms["signingKeySecret"] == "" or ms["signingKeySecret"] not in secrets, \
                    f"{comp}: mounts the model signing key"
            if ca["existingSecret"]:
                got = secret_file(spec, ct, "/etc/inframind/stores-ca/ca.crt")
                assert got == (ca["existingSecret"], ca["secretKey"]), f"{comp}: stores CA reads {got}"
            else:
                assert all(m["mountPath"] != "/etc/inframind/stores-ca" for m in ct.get("volumeMounts", [])), \
                    f"{comp}: mounts a stores CA that is not configured"
    c("model signing keys (private in the controller only) and the stores' CA", model_keys_and_stores_ca)

    def service():
        s = one(objs, "Service", svc_name)
        d = deployments[svc_name]
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector_matches({"matchLabels": s["spec"]["selector"]}, pod_labels), "Service does not select the webhook pods"
        if ctl_on:
            assert not selector_matches({"matchLabels": s["spec"]["selector"]}, deployments[ctl_name]["spec"]["template"]["metadata"]["labels"]), \
                "the webhook Service also selects controller pods"
        ports = s["spec"]["ports"]
        assert len(ports) == 1 and ports[0]["port"] == 443, f"Service ports {ports}"
        assert resolve_port(d["spec"]["template"]["spec"]["containers"][0], ports[0]["targetPort"]) == v["webhook"]["port"]
    c("webhook Service 443 -> webhook.port", service)

    def services_select_one_component():
        for s in by_kind(objs, "Service"):
            sel = {"matchLabels": s["spec"]["selector"]}
            matched = sorted(n for n, d in deployments.items() if selector_matches(sel, d["spec"]["template"]["metadata"]["labels"]))
            assert len(matched) == 1, f"Service {s['metadata']['name']} selects the pods of {matched or 'no Deployment'}"
            comp = s["metadata"]["labels"].get("app.kubernetes.io/component")
            assert deployments[matched[0]]["metadata"]["labels"].get("app.kubernetes.io/component") == comp, \
                f"Service {s['metadata']['name']} ({comp}) selects {matched[0]}"
    c("every Service selects the pods of its own component only", services_select_one_component)

    def webhook_configuration():
        mwc = one(objs, "MutatingWebhookConfiguration")
        hooks = mwc["webhooks"]
        assert len(hooks) == 2, f"{len(hooks)} webhooks"
        assert len({h["name"] for h in hooks}) == 2
        for h in hooks:
            assert h["admissionReviewVersions"] == ["v1"], h["name"]
            assert h["sideEffects"] == "None", h["name"]
            assert h["failurePolicy"] == "Ignore", f"{h['name']}: failurePolicy {h['failurePolicy']} could block pods"
            assert h["timeoutSeconds"] == v["webhook"]["timeoutSeconds"], h["name"]
            assert h["reinvocationPolicy"] == v["webhook"]["reinvocationPolicy"], h["name"]
            assert h["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                   "resources": ["pods"], "scope": "Namespaced"}], f"{h['name']}: rules {h['rules']}"
            assert h["clientConfig"]["service"] == {"name": svc_name, "namespace": NAMESPACE, "path": "/mutate", "port": 443}, \
                f"{h['name']}: clientConfig {h['clientConfig']['service']}"
            if mode == "helm":
                assert h["clientConfig"].get("caBundle"), f"{h['name']}: no caBundle in helm mode"
            else:
                assert "caBundle" not in h["clientConfig"], f"{h['name']}: a caBundle in {mode} mode would be overwritten"
        # Which pods reach the webhook, and how many times: simulate the API server's selection.
        excluded = [NAMESPACE] + v["webhook"]["excludedNamespaces"]
        cases = [
            # (namespace, namespace labels, pod labels, expected number of webhook calls)
            ("ci", {"inframind.io/enabled": "true"}, {}, 1),
            ("ci", {"inframind.io/enabled": "true"}, {"inframind.io/enabled": "true"}, 1),
            ("ci", {"inframind.io/enabled": "true"}, {"inframind.io/enabled": "false"}, 0),
            ("apps", {}, {}, 0),
            ("apps", {}, {"inframind.io/enabled": "true"}, 1),
            ("apps", {"inframind.io/enabled": "false"}, {"inframind.io/enabled": "true"}, 1),
            ("apps", {"inframind.io/enabled": "false"}, {}, 0),
        ] + [(ns, {"inframind.io/enabled": "true"}, pod, 0) for ns in excluded
             for pod in ({}, {"inframind.io/enabled": "true"})]
        for ns, ns_labels, pod_labels, want in cases:
            ns_labels = {**ns_labels, "kubernetes.io/metadata.name": ns}
            got = [h["name"] for h in hooks if selector_matches(h.get("namespaceSelector"), ns_labels)
                   and selector_matches(h.get("objectSelector"), pod_labels)]
            assert len(got) == want, (f"a pod labelled {pod_labels} in namespace {ns} labelled {ns_labels} "
                                      f"reaches {got or 'no webhook'}, expected {want} call(s)")
    c("MutatingWebhookConfiguration (rules, policies, selectors: opt-in, no double call, own namespace excluded)", webhook_configuration)

    def certificates():
        mwc = one(objs, "MutatingWebhookConfiguration")
        annotations = mwc["metadata"].get("annotations") or {}
        secrets = [s for s in by_kind(objs, "Secret") if s["metadata"]["name"] == tls_secret]
        certs, issuers = by_kind(objs, "Certificate"), by_kind(objs, "Issuer")
        if mode == "cert-manager":
            cert = one(objs, "Certificate", svc_name)
            assert annotations.get("cert-manager.io/inject-ca-from") == f"{NAMESPACE}/{cert['metadata']['name']}", \
                f"inject-ca-from {annotations.get('cert-manager.io/inject-ca-from')!r} does not name the Certificate"
            assert cert["spec"]["secretName"] == tls_secret
            assert svc_dns in cert["spec"]["dnsNames"] and svc_name in cert["spec"]["dnsNames"], cert["spec"]["dnsNames"]
            ref = cert["spec"]["issuerRef"]
            want_ref = v["certificates"]["certManager"]["issuerRef"]
            if want_ref:
                assert ref["name"] == want_ref["name"] and ref["kind"] == want_ref.get("kind", "Issuer"), ref
                assert not issuers, "an Issuer is rendered although issuerRef names one"
            else:
                issuer = one(objs, "Issuer", f"{svc_name}-selfsigned")
                assert ref == {"name": issuer["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io"}, ref
                assert "selfSigned" in issuer["spec"]
            assert not secrets, "cert-manager mode must not render the certificate Secret itself"
        else:
            assert not certs and not issuers, f"{mode} mode renders cert-manager objects"
            assert "cert-manager.io/inject-ca-from" not in annotations
        if mode == "helm":
            assert len(secrets) == 1, "helm mode renders no certificate Secret"
            data = secrets[0]["data"]
            assert secrets[0]["type"] == "kubernetes.io/tls"
            ca = base64.b64decode(data["ca.crt"])
            for h in mwc["webhooks"]:
                assert base64.b64decode(h["clientConfig"]["caBundle"]) == ca, "caBundle is not the Secret's CA"
            verify_serving_secret(data, [svc_name, svc_dns], runner)
        elif mode == "self-signed":
            assert not secrets, "self-signed mode renders a certificate Secret"
    c(f"certificates ({mode})", certificates)

    def api_certificate():
        api_objs = [o for o in objs if o["kind"] in ("Secret", "ConfigMap", "Certificate", "Issuer")
                    and o["metadata"]["labels"].get("app.kubernetes.io/component") == "api"]
        if not api_chart_cert:
            assert not api_objs, f"the chart renders {[(o['kind'], o['metadata']['name']) for o in api_objs]} " \
                f"although it provides no API certificate (TLS {api_tls}, secretName {api['tls']['secretName']!r})"
            return
        if mode == "cert-manager":
            cert = one(objs, "Certificate", api_name)
            assert cert["spec"]["secretName"] == api_tls_secret, cert["spec"]["secretName"]
            missing = sorted(set(api_dns_names) - set(cert["spec"]["dnsNames"]))
            assert not missing, f"the API Certificate does not name {missing}"
            assert "server auth" in cert["spec"]["usages"], cert["spec"]["usages"]
            ref = cert["spec"]["issuerRef"]
            want_ref = v["certificates"]["certManager"]["issuerRef"]
            if want_ref:
                assert ref["name"] == want_ref["name"] and ref["kind"] == want_ref.get("kind", "Issuer"), ref
                assert {(o["kind"], o["metadata"]["name"]) for o in api_objs} == {("Certificate", api_name)}, api_objs
            else:
                # a CA of the API's own, so that reporters' copies survive serving-certificate renewals
                assert ref == {"name": f"{api_name}-ca", "kind": "Issuer", "group": "cert-manager.io"}, ref
                ca_issuer = one(objs, "Issuer", f"{api_name}-ca")
                ca_cert = one(objs, "Certificate", f"{api_name}-ca")
                assert ca_cert["spec"].get("isCA") is True, "the API's CA Certificate is not a CA"
                assert ca_issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"] != api_tls_secret
                assert ca_cert["spec"]["privateKey"]["rotationPolicy"] == "Never", "the API's CA changes its key on renewal"
                assert ca_cert["spec"]["issuerRef"] == {"name": f"{svc_name}-selfsigned", "kind": "Issuer", "group": "cert-manager.io"}
                assert "selfSigned" in one(objs, "Issuer", f"{svc_name}-selfsigned")["spec"]
            assert not [o for o in api_objs if o["kind"] in ("Secret", "ConfigMap")], "cert-manager mode renders the API's key material"
            return
        # helm and self-signed: Helm generates the API's CA and certificate, the CA published in a ConfigMap
        assert not [o for o in api_objs if o["kind"] in ("Certificate", "Issuer")], f"{mode} mode renders cert-manager objects for the API"
        secret = one(objs, "Secret", api_tls_secret)
        assert secret["type"] == "kubernetes.io/tls"
        ca = base64.b64decode(secret["data"]["ca.crt"])
        cm = one(objs, "ConfigMap", f"{api_name}-ca")
        assert cm["data"]["ca.crt"].strip() == ca.decode().strip(), "ConfigMap ca.crt is not the CA of the API's certificate"
        assert "tls.key" not in cm["data"] and "PRIVATE" not in cm["data"]["ca.crt"], "the CA ConfigMap holds a key"
        webhook_tls = [o for o in by_kind(objs, "Secret") if o["metadata"]["name"] == tls_secret]
        if webhook_tls:
            assert webhook_tls[0]["data"]["tls.key"] != secret["data"]["tls.key"], "the API and the webhook share a key"
        verify_serving_secret(secret["data"], api_dns_names, runner)
    c(f"API certificate (TLS {api_tls}, {mode}): SANs cover the API Service names, CA published", api_certificate)

    def rbac():
        for r in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
            for rule in r.get("rules", []):
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(field, []), f"{r['kind']}/{r['metadata']['name']}: wildcard {field}"
        wh_sa = one(objs, "ServiceAccount", svc_name)
        watch_nodes = v["webhook"]["watchNodes"]
        watch_limits = v["webhook"]["watchNamespaceLimits"]
        cache_claim = v["webhook"]["buildCache"]["claim"]
        assert wh_sa.get("automountServiceAccountToken") is (mode == "self-signed" or watch_nodes or watch_limits or bool(cache_claim))
        cluster, namespaced = grants_for(objs, svc_name, NAMESPACE)
        mwc_name = one(objs, "MutatingWebhookConfiguration")["metadata"]["name"]
        want = expand("admissionregistration.k8s.io", "mutatingwebhookconfigurations", ["get", "patch"], mwc_name) \
            if mode == "self-signed" else set()
        if watch_nodes and v["rbac"]["create"]:
            # Read-only Node watch: list and watch, never get one by name or write.
            want |= expand("", "nodes", ["list", "watch"])
        if watch_limits and v["rbac"]["create"]:
            want |= expand("", "limitranges", ["list", "watch"]) | expand("", "resourcequotas", ["list", "watch"])
        if cache_claim and v["rbac"]["create"]:
            # Read-only claim watch: the cache is mounted only where its claim is Bound.
            want |= expand("", "persistentvolumeclaims", ["list", "watch"])
        assert cluster == want and not namespaced, f"webhook grants {sorted(cluster)} {namespaced}, expected exactly {sorted(want)}"
        # the API: nothing, or `create` on TrainingJobs in api.trainingNamespace
        if api_on:
            sa = [s for s in by_kind(objs, "ServiceAccount") if s["metadata"]["name"] == api_sa]
            if v["serviceAccount"]["api"]["create"]:
                assert len(sa) == 1, f"no ServiceAccount {api_sa}"
                assert sa[0].get("automountServiceAccountToken") is bool(training_ns), \
                    f"API ServiceAccount automountServiceAccountToken {sa[0].get('automountServiceAccountToken')}"
            cluster, namespaced = grants_for(objs, api_sa, NAMESPACE)
            want_ns = {training_ns: expand("inframind.io", "trainingjobs", ["create", "get", "list"])} \
                if training_ns and v["rbac"]["create"] else {}
            assert not cluster and namespaced == want_ns, \
                f"API grants {sorted(cluster)} {namespaced}, expected exactly {want_ns or 'nothing'}"
        else:
            assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding")
                        and o["metadata"]["labels"].get("app.kubernetes.io/component") == "api"], "API disabled but its Role is rendered"
        if not ctl_on:
            assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount")
                        and o["metadata"]["labels"].get("app.kubernetes.io/component") in ("controller", "training")], \
                "controller disabled but its RBAC is rendered"
            return
        cluster, namespaced = grants_for(objs, ctl_name, NAMESPACE)
        want = (expand("inframind.io", "trainingjobs", ["get", "list", "watch", "create"])
                | expand("inframind.io", "trainingjobs/status", ["get", "patch"])
                | expand("events.k8s.io", "events", ["create", "patch"])
                | expand("", "pods", ["get", "list", "watch"])
                | expand("", "nodes", ["get"]))
        assert cluster == want, f"controller cluster grants differ: extra {sorted(cluster - want)}, missing {sorted(want - cluster)}"
        lease = v["controller"]["leaseName"]
        want_ns = {NAMESPACE: expand("coordination.k8s.io", "leases", ["create"])
                   | expand("coordination.k8s.io", "leases", ["get", "update", "patch"], lease)}
        if jobs_on:
            # training Jobs run in the release namespace only: never a cluster-wide Jobs grant
            want_ns[NAMESPACE] |= expand("batch", "jobs", ["create", "get", "list", "watch"])
        assert namespaced == want_ns, f"controller namespaced grants {namespaced}, expected {want_ns}"
        # training Jobs: their own ServiceAccount, which may only report on TrainingJobs
        sas = [s for s in by_kind(objs, "ServiceAccount") if s["metadata"]["name"] == training_sa]
        cluster, namespaced = grants_for(objs, training_sa, NAMESPACE)
        if not jobs_on:
            assert not sas and not cluster and not namespaced, \
                f"training ServiceAccount or grants rendered without controller.batchJobs: {cluster} {namespaced}"
            return
        assert training_sa != ctl_name, "training Jobs must not run as the controller's ServiceAccount"
        if v["serviceAccount"]["training"]["create"]:
            assert len(sas) == 1, f"no training ServiceAccount {training_sa}"
            assert sas[0].get("automountServiceAccountToken") is False, \
                "the training ServiceAccount must not mount its token into every pod that borrows it"
        want = (expand("inframind.io", "trainingjobs", ["get"])
                | expand("inframind.io", "trainingjobs/status", ["get", "patch"])
                | expand("events.k8s.io", "events", ["create", "patch"]))
        assert cluster == want and not namespaced, \
            f"training grants differ: extra {sorted(cluster - want)}, missing {sorted(want - cluster)}, namespaced {namespaced}"
    c("RBAC least privilege (exact rules per ServiceAccount)", rbac)

    def pdbs():
        pdbs_all = by_kind(objs, "PodDisruptionBudget")
        assert len(pdbs_all) == len({p["metadata"]["name"] for p in pdbs_all})
        for comp, dname in (("webhook", svc_name), ("controller", ctl_name), ("api", api_name)):
            cfg = v[comp]
            pdb = [p for p in pdbs_all if p["metadata"]["name"] == dname]
            rendered = {"webhook": True, "controller": ctl_on, "api": api_on}[comp]
            enabled = rendered and cfg["podDisruptionBudget"]["enabled"] and cfg["replicas"] > 1
            if not enabled:
                assert not pdb, f"{comp}: a PodDisruptionBudget with {cfg['replicas']} replica(s) would block node drains"
                continue
            assert len(pdb) == 1, f"{comp}: no PodDisruptionBudget"
            labels = deployments[dname]["spec"]["template"]["metadata"]["labels"]
            assert selector_matches(pdb[0]["spec"]["selector"], labels), f"{comp}: PDB does not select its pods"
            assert pdb[0]["spec"]["minAvailable"] == cfg["podDisruptionBudget"]["minAvailable"]
            others = [d for n, d in deployments.items() if n != dname]
            assert not any(selector_matches(pdb[0]["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in others), \
                f"{comp}: PDB also selects another component"
    c("PodDisruptionBudgets", pdbs)

    def monitoring():
        sms = by_kind(objs, "ServiceMonitor")
        if not v["metrics"]["serviceMonitor"]["enabled"]:
            assert not sms, "ServiceMonitor rendered while disabled"
            return
        assert len(sms) == 1 + ctl_on + api_on, f"{len(sms)} ServiceMonitors"
        for sm in sms:
            for k, val in v["metrics"]["serviceMonitor"]["labels"].items():
                assert sm["metadata"]["labels"].get(k) == val, f"ServiceMonitor lacks label {k}"
            targets = [s for s in by_kind(objs, "Service") if selector_matches(sm["spec"]["selector"], s["metadata"]["labels"])]
            assert len(targets) == 1, f"ServiceMonitor {sm['metadata']['name']} selects {len(targets)} Services"
            port_names = {p["name"] for p in targets[0]["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                assert ep["port"] in port_names, f"endpoint port {ep['port']} not on Service {targets[0]['metadata']['name']}"
                assert ep["path"] == "/metrics"
                if targets[0]["metadata"]["name"] == svc_name:
                    assert ep["scheme"] == "https", "the webhook serves /metrics over HTTPS"
                    tls = ep.get("tlsConfig", {})
                    if mode == "self-signed":
                        assert tls.get("insecureSkipVerify") is True, f"self-signed mode: {tls}"
                    else:
                        assert tls.get("ca", {}).get("secret") == {"name": tls_secret, "key": "ca.crt"} and tls.get("serverName") == svc_dns, tls
                elif targets[0]["metadata"]["name"] == api_name:
                    # the API's /metrics on its one port, over its scheme
                    assert ep["scheme"] == ("https" if api_tls else "http"), f"API endpoint scheme {ep['scheme']} with TLS {api_tls}"
                    if api_tls:
                        tls = ep.get("tlsConfig", {})
                        if v["metrics"]["serviceMonitor"]["apiTlsConfig"]:
                            assert tls == v["metrics"]["serviceMonitor"]["apiTlsConfig"], tls
                        else:
                            assert tls.get("ca", {}).get("secret") == {"name": api_tls_secret, "key": "ca.crt"} \
                                and tls.get("serverName") == api_dns, tls
                else:
                    assert ep["scheme"] == "http"
    c("ServiceMonitors", monitoring)

    def alerts():
        pr_values = v["metrics"]["prometheusRule"]
        rules = by_kind(objs, "PrometheusRule")
        if not pr_values["enabled"]:
            assert not rules, "PrometheusRule rendered while disabled"
            return
        pr = one(objs, "PrometheusRule")
        assert pr["apiVersion"] == "monitoring.coreos.com/v1", pr["apiVersion"]
        for k, val in pr_values["labels"].items():
            assert pr["metadata"]["labels"].get(k) == val, f"PrometheusRule lacks label {k}"
        groups = pr["spec"]["groups"]
        assert isinstance(groups, list) and groups, "no rule groups"
        assert len({g["name"] for g in groups}) == len(groups), "two rule groups share a name"
        found = {}
        duration = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
        for g in groups:
            assert set(g) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}, f"group {g['name']}: {sorted(g)}"
            assert isinstance(g["rules"], list) and g["rules"], f"group {g['name']} has no rules"
            for r in g["rules"]:
                assert set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}, f"rule keys {sorted(r)}"
                name = r.get("alert") or r.get("record")
                assert name and isinstance(r["expr"], str) and r["expr"].strip(), f"rule {r}"
                assert name not in found, f"two rules named {name}"
                found[name] = r
                if "for" in r:
                    assert duration.fullmatch(r["for"]), f"{name}: for {r['for']!r}"
                assert r["labels"]["severity"] in ("info", "warning", "critical"), f"{name}: severity {r['labels']}"
                assert r["annotations"].get("summary") and r["annotations"].get("description"), f"{name}: annotations"
                check_selectors(r["expr"], f"alert {name}", namespace=NAMESPACE)
        want = ALERTS if (api_on or ctl_on) else ALERTS - RUN_ALERTS
        assert set(found) == want, f"alerts {sorted(found)}, expected {sorted(want)}"
        expr = {n: r["expr"] for n, r in found.items()}
        # the thresholds are the values
        for alert, key in (("InframindAdmissionsFailingOpen", "failOpenRatio"), ("InframindAdmissionLatencyHigh", "admissionP99Seconds"),
                           ("InframindOomAboveHoldout", "oomRatioMargin"), ("InframindOomAboveHoldout", "oomMinRuns")):
            if alert in expr:
                assert float(pr_values[key]) in promql_numbers(expr[alert]), f"{alert} does not use {key} {pr_values[key]}"
        fail_open = promql_selectors(expr["InframindAdmissionsFailingOpen"])
        assert ("inframind_admissions_total", {"namespace": ("=", NAMESPACE), "outcome": ("=", "error")}) in fail_open, \
            "the fail-open ratio does not count outcome error"
        assert promql_numbers(expr["InframindModelStale"]) >= {float(pr_values["modelMaxAgeHours"]), 3600.0} \
            and "inframind_model_trained_timestamp_seconds" in expr["InframindModelStale"], "InframindModelStale: not the model age in hours"
        if "InframindNoTelemetry" in expr:
            e = expr["InframindNoTelemetry"]
            window = f"[{pr_values['noTelemetryHours']}h]"
            for metric in ("inframind_runs_ingested_total", "inframind_controller_runs_recorded_total"):
                assert re.search(rf"\(sum\(increase\({metric}\{{[^}}]*\}}{re.escape(window)}\)\)\s+or\s+vector\(0\)\)", e), \
                    f"InframindNoTelemetry: {metric} over {window} without `or vector(0)` (a missing series would silence it)"
        if "InframindOomAboveHoldout" in expr:
            # the controller sees OOM kills; without it, what reporters sent
            runs = "inframind_controller_runs_recorded_total" if ctl_on else "inframind_runs_ingested_total"
            sels = promql_selectors(expr["InframindOomAboveHoldout"])
            assert {m for m, _ in sels} == {runs}, f"InframindOomAboveHoldout reads {sorted({m for m, _ in sels})}, expected {runs}"
            for decision in ("applied", "holdout"):
                assert any(m.get("decision") == ("=", decision) and m.get("result") == ("=", "oom") for _, m in sels), \
                    f"InframindOomAboveHoldout has no OOM ratio for decision {decision}"
    c("PrometheusRule (structure, known metrics and labels, thresholds from values)", alerts)

    def dashboard():
        gd = v["metrics"]["grafanaDashboard"]
        cms = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == f"{fullname}-dashboard"]
        if not gd["enabled"]:
            assert not cms, "dashboard ConfigMap rendered while disabled"
            return
        assert len(cms) == 1, f"{len(cms)} dashboard ConfigMaps"
        cm = cms[0]
        assert cm["metadata"]["labels"].get(gd["sidecarLabel"]) == gd["sidecarLabelValue"], \
            f"the dashboard ConfigMap lacks the sidecar label {gd['sidecarLabel']}={gd['sidecarLabelValue']}"
        for k, val in gd["labels"].items():
            assert cm["metadata"]["labels"].get(k) == val, f"dashboard ConfigMap lacks label {k}"
        assert (cm["metadata"].get("annotations") or {}) == gd["annotations"], cm["metadata"].get("annotations")
        assert list(cm["data"]) == ["inframind.json"], sorted(cm["data"])
        dash = json.loads(cm["data"]["inframind.json"])
        assert dash == json.loads((CHART / "dashboards" / "inframind.json").read_text()), \
            "the ConfigMap does not hold dashboards/inframind.json"
        assert dash.get("uid") and dash.get("title") and isinstance(dash.get("panels"), list), "not a Grafana dashboard"
        variables = {t["name"]: t for t in dash.get("templating", {}).get("list", [])}
        assert variables.get("datasource", {}).get("type") == "datasource" and variables["datasource"].get("query") == "prometheus", \
            "no Prometheus data source variable"
        used = set()
        for var in variables.values():
            q = var.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q or "")
            if var["type"] == "query":
                assert m, f"variable {var['name']}: query {q!r}"
                check_selectors(m.group(1), f"variable {var['name']}")
        panels = [p for top in dash["panels"] for p in [top, *top.get("panels", [])]]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), "two panels share an id"
        for p in panels:
            if p["type"] == "row":
                continue
            assert p.get("targets"), f"panel {p['title']!r} has no query"
            assert p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p['title']!r} does not use the data source variable"
            for t in p["targets"]:
                used |= check_selectors(t["expr"], f"panel {p['title']!r}")
        missing = sorted(DASHBOARD_METRICS - used)
        assert not missing, f"no dashboard panel shows {missing}"
    c("Grafana dashboard ConfigMap (sidecar label, valid JSON, known metrics, every topic)", dashboard)

    def network_policies():
        nps = by_kind(objs, "NetworkPolicy")
        if not v["networkPolicy"]["enabled"]:
            assert not nps, "NetworkPolicy rendered while disabled"
            return
        covered = set()
        for dname, port, peers in ((svc_name, v["webhook"]["port"], v["networkPolicy"]["webhook"]["from"]),
                                   (ctl_name, 8080, v["networkPolicy"]["metrics"]["from"]),
                                   (api_name, API_PORT, v["networkPolicy"]["api"]["from"])):
            if dname not in deployments:
                continue
            covered.add(dname)
            labels = deployments[dname]["spec"]["template"]["metadata"]["labels"]
            mine = [n for n in nps if selector_matches(n["spec"]["podSelector"], labels)]
            assert len(mine) == 1, f"{dname}: {len(mine)} NetworkPolicies select it"
            ingress = mine[0]["spec"]["ingress"]
            assert [p["port"] for rule in ingress for p in rule["ports"]] == [port], f"{dname}: ingress ports {ingress}"
            assert ingress[0].get("from", []) == peers
            egress_on = v["networkPolicy"]["egress"]["enabled"]
            assert ("Egress" in mine[0]["spec"]["policyTypes"]) == egress_on
            if egress_on:
                ports = {p["port"] for rule in mine[0]["spec"]["egress"] for p in rule.get("ports", [])}
                assert 53 in ports, f"{dname}: egress restricted without DNS"
        assert covered == set(deployments), f"Deployments without an ingress NetworkPolicy: {sorted(set(deployments) - covered)}"
    c("NetworkPolicies", network_policies)

    def namespace():
        nss = by_kind(objs, "Namespace")
        if not v["createNamespace"]:
            assert not nss
            return
        ns = one(objs, "Namespace")
        assert ns["metadata"]["name"] == NAMESPACE
        assert ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "restricted"
    c("Namespace", namespace)


# ---------------------------------------------------------------------------------------------

def render_notes(chart, values: dict) -> str:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = [text for path, text in rendered.items() if path.endswith("NOTES.txt")]
    assert len(notes) == 1, f"{len(notes)} NOTES.txt rendered"
    return notes[0]


def leaf_paths(d: dict, schema: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the values a user sets; objects of free form (resources, affinity) are one value."""
    out = []
    for k, val in d.items():
        p = f"{prefix}{k}"
        sub = schema.get("properties", {}).get(k, {})
        if isinstance(val, dict) and sub.get("required"):
            out += leaf_paths(val, sub, p + ".")
        else:
            out.append(p)
    return out


def main() -> int:
    verbose = "-v" in sys.argv[1:]
    runner = Runner(verbose)
    t0 = time.monotonic()
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''}; "
          f"Kubernetes {', '.join(KUBE_VERSIONS)}")

    chart = helm.Chart.load(str(CHART))
    defaults = chart.values

    # --- every values set: lint, render, validate, invariants ---------------------------------
    for name, overrides in VALUE_SETS.items():
        def lint(overrides=overrides):
            problems = []
            for kv in KUBE_VERSIONS:
                report = helm.lint(str(CHART), overrides, strict=True, namespace=NAMESPACE, kube_version=f"v{kv}")
                problems += [f"[{kv}] {m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]
                problems += [f"[{kv}] {e.strip()}" for e in report.get("errors", []) if not any(e.strip() in p for p in problems)]
            assert not problems, "helm lint --strict: " + "; ".join(problems)
        runner.check(f"{name}: helm lint --strict", lint)

        rendered: list = []
        notes: list = []

        def do_render(overrides=overrides, rendered=rendered, notes=notes):
            rendered += render.render_documents(chart, overrides, name=RELEASE, namespace=NAMESPACE)
            assert rendered, "nothing rendered"
            notes.append(render_notes(chart, overrides))
        runner.check(f"{name}: render", do_render)
        if not rendered:
            continue
        objs = [o for _, _, o in rendered]

        def validate(overrides=overrides):
            errors = []
            for kv in KUBE_VERSIONS:
                for _, _, o in render.render_documents(chart, overrides, name=RELEASE, namespace=NAMESPACE, kube_version=kv):
                    try:
                        kube_validate(o, kv, runner)
                    except AssertionError as e:
                        errors.append(str(e))
            assert not errors, "; ".join(errors)
        runner.check(f"{name}: rendered for and validated by kubernetes-validate --strict ({len(objs)} objects x {len(KUBE_VERSIONS)} versions)", validate)

        def match_conditions(overrides=overrides):
            want_on = deep_merge(defaults, overrides)["webhook"]["matchConditions"]
            for kv in KUBE_VERSIONS:
                objs_kv = [o for _, _, o in render.render_documents(chart, overrides, name=RELEASE, namespace=NAMESPACE, kube_version=kv)]
                has = tuple(int(x) for x in kv.split(".")[:2]) >= MATCH_CONDITIONS_SINCE
                for h in one(objs_kv, "MutatingWebhookConfiguration")["webhooks"]:
                    got = h.get("matchConditions")
                    if want_on and has:
                        assert [c["name"] for c in got or []] == ["not-opted-out"], f"[{kv}] {h['name']}: matchConditions {got}"
                        for meta, called in OPT_OUT_CASES:
                            pod = {"metadata": {"name": "b", **meta}, "spec": {"containers": [{"name": "build"}]}}
                            got_called = all(cel(c["expression"], object=pod) for c in got)
                            assert got_called == called, \
                                f"[{kv}] {h['name']}: a pod with {meta} is {'' if got_called else 'not '}sent to the webhook"
                    else:
                        assert got is None, f"[{kv}] {h['name']}: matchConditions rendered (webhook.matchConditions={want_on}): {got}"
        runner.check(f"{name}: matchConditions skip opted-out pods where the API server has them ({', '.join(KUBE_VERSIONS)})", match_conditions)

        def training_job_policy(overrides=overrides):
            v = deep_merge(defaults, overrides)
            jobs_on = v["controller"]["enabled"] and v["controller"]["batchJobs"]
            fullname = v["fullnameOverride"] or RELEASE
            image = (f"{v['image']['repository']}@{v['image']['digest']}" if v["image"]["digest"]
                     else f"{v['image']['repository']}:{v['image']['tag'] or '0.1.0'}")
            training_sa = v["serviceAccount"]["training"]["name"] or f"{fullname}-training"
            for kv in KUBE_VERSIONS:
                objs_kv = [o for _, _, o in render.render_documents(chart, overrides, name=RELEASE, namespace=NAMESPACE, kube_version=kv)]
                policies = by_kind(objs_kv, "ValidatingAdmissionPolicy")
                bindings = by_kind(objs_kv, "ValidatingAdmissionPolicyBinding")
                if not jobs_on or tuple(int(x) for x in kv.split(".")[:2]) < (1, 30):
                    assert not policies and not bindings, f"[{kv}] a ValidatingAdmissionPolicy without training Jobs or before 1.30"
                    continue
                assert len(policies) == 1 and len(bindings) == 1, f"[{kv}] {len(policies)} policies, {len(bindings)} bindings"
                pol, bnd = policies[0], bindings[0]
                assert bnd["spec"]["policyName"] == pol["metadata"]["name"] and bnd["spec"]["validationActions"] == ["Deny"], bnd["spec"]
                assert pol["spec"]["failurePolicy"] == "Fail"
                assert pol["spec"]["matchConstraints"]["resourceRules"] == [{"apiGroups": ["inframind.io"], "apiVersions": ["*"],
                                                                          "operations": ["CREATE", "UPDATE"], "resources": ["trainingjobs"]}]
                ok_images = [image] + v["controller"]["allowedJobImages"]
                ok_accounts = [training_sa] + v["controller"]["allowedJobServiceAccounts"]
                cases = [({"mode": "inProcess"}, True), ({"mode": "job"}, True)]
                cases += [({"mode": "job", "image": i}, True) for i in ok_images]
                cases += [({"mode": "job", "serviceAccountName": a}, True) for a in ok_accounts]
                cases += [({"mode": "job", "image": "attacker/miner:latest"}, False),
                          ({"mode": "job", "image": image + "-debug"}, False),
                          ({"mode": "job", "serviceAccountName": f"{fullname}-controller"}, False),
                          ({"mode": "job", "serviceAccountName": "default"}, False),
                          ({"mode": "job", "image": image, "serviceAccountName": "default"}, False)]
                for execution, allowed in cases:
                    tj = {"apiVersion": "inframind.io/v1alpha1", "kind": "TrainingJob",
                          "metadata": {"name": "t", "namespace": "ci"}, "spec": {"execution": execution}}
                    got = all(cel(val["expression"], object=tj) for val in pol["spec"]["validations"])
                    assert got == allowed, f"[{kv}] spec.execution {execution} is {'admitted' if got else 'refused'}"
                assert all(cel(val["expression"], object={"spec": {}}) for val in pol["spec"]["validations"]), \
                    "a TrainingJob without spec.execution is refused"
        runner.check(f"{name}: the API server refuses TrainingJobs choosing other images or ServiceAccounts (1.30+)", training_job_policy)

        values = deep_merge(defaults, overrides)
        check_invariants(name, values, objs, notes[0], runner)

    def api_https_by_default():
        tls = defaults["api"]["tls"]
        assert tls["enabled"] is True and tls["secretName"] == "", f"api.tls defaults to {tls}, not HTTPS with the chart's certificate"
    runner.check("the API serves HTTPS by default, with a certificate the chart provides", api_https_by_default)

    # --- the deploy/ values render the same way (and pass the same invariants) ---------------
    deploy_values = yaml.safe_load(render.VALUES.read_text()) or {}
    deploy_objs = [o for _, _, o in render.render_documents(chart, deploy_values, name=RELEASE, namespace=NAMESPACE)]
    check_invariants("deploy/values.yaml", deep_merge(defaults, deploy_values), deploy_objs,
                     render_notes(chart, deploy_values), runner)

    # --- Chart.yaml kubeVersion: as wide as the manifests validate --------------------------------
    def kube_version_range():
        meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
        oldest = KUBE_VERSIONS[0]
        assert meta.get("kubeVersion") == f">={oldest}-0", \
            f"Chart.yaml kubeVersion {meta.get('kubeVersion')!r}: the manifests validate from {oldest} on, so it must be '>={oldest}-0'"
    runner.check(f"Chart.yaml kubeVersion admits exactly the validated versions (>= {KUBE_VERSIONS[0]})", kube_version_range)

    # --- values.schema.json -------------------------------------------------------------------
    def schema_rejects():
        problems = []
        for overrides, pointer in SCHEMA_REJECTS:
            try:
                chart.render(overrides, name=RELEASE, namespace=NAMESPACE)
                problems.append(f"{json.dumps(overrides)} was accepted")
            except helm.HelmValuesError as e:
                if pointer not in str(e):
                    problems.append(f"{json.dumps(overrides)} was rejected without naming {pointer}: {str(e).strip()}")
        assert not problems, "; ".join(problems)
    runner.check(f"values.schema.json rejects {len(SCHEMA_REJECTS)} wrong-typed or out-of-range values", schema_rejects)

    def template_rejects():
        problems = []
        for overrides, word in TEMPLATE_REJECTS:
            try:
                chart.render(overrides, name=RELEASE, namespace=NAMESPACE)
                problems.append(f"{json.dumps(overrides)} was accepted")
            except helm.HelmRenderError as e:
                if word not in str(e):
                    problems.append(f"{json.dumps(overrides)}: unhelpful error {str(e).strip()}")
        assert not problems, "; ".join(problems)
    runner.check("templates reject min bounds above max bounds, one token for both roles, verifying without signing", template_rejects)

    def schema_covers_values():
        schema = chart.schema
        assert schema is not None, "the chart has no values.schema.json"
        chart.validate_schema(defaults)

        def walk(node, sch, path):
            if isinstance(node, dict) and sch.get("properties") is not None:
                for k, val in node.items():
                    assert k in sch["properties"], f"values.yaml key {path}{k} is not in values.schema.json"
                    walk(val, sch["properties"][k], f"{path}{k}.")
                for k in sch.get("required", []):  # objects with optional keys (issuerRef) list none
                    assert k in node, f"values.schema.json key {path}{k} is not in values.yaml"
        walk(defaults, schema, "")
    runner.check("values.schema.json and values.yaml describe the same keys", schema_covers_values)

    def readme_documents_values():
        readme = (CHART / "README.md").read_text()
        missing = [p for p in leaf_paths(defaults, chart.schema) if f"`{p}`" not in readme]
        assert not missing, f"charts/inframind/README.md does not document {missing}"
    runner.check("chart README documents every value", readme_documents_values)

    # --- CRDs ----------------------------------------------------------------------------------
    top = render.crd_files(ROOT / "crds")
    ours = render.crd_files(CHART / "crds")

    def crds_identical():
        top_names, our_names = {p.name for p in top}, {p.name for p in ours}
        extra = sorted(our_names - top_names)
        assert not extra, f"charts/inframind/crds/ has {extra}, which the top-level crds/ lacks (run deploy/regenerate.sh)"
        missing = sorted(top_names - our_names)
        assert not missing, f"charts/inframind/crds/ lacks {missing} from the top-level crds/ (run deploy/regenerate.sh)"
        differ = [p.name for p in top if p.read_bytes() != (CHART / "crds" / p.name).read_bytes()]
        assert not differ, f"charts/inframind/crds/ differs from crds/ in {differ} (run deploy/regenerate.sh)"
        if not top:
            runner.note("crds/ holds no CRD yet (`inframind crd` has not written crds/trainingjobs.inframind.io.yaml): "
                        "nothing to compare, and the chart ships none")
    runner.check("chart crds/ identical to top-level crds/", crds_identical)

    def crds_valid():
        for path in top + ours:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            assert docs, f"{path.relative_to(ROOT)} is empty"
            for d in docs:
                assert d.get("kind") == "CustomResourceDefinition", f"{path.relative_to(ROOT)}: {d.get('kind')} is not a CRD"
                for kv in KUBE_VERSIONS:
                    kube_validate(d, kv, runner)
    runner.check(f"every CRD validates (kubernetes-validate --strict, {', '.join(KUBE_VERSIONS)})", crds_valid)

    def crd_matches_rbac():
        crds = [d for p in ours for d in yaml.safe_load_all(p.read_text()) if d]
        tj = [d for d in crds if d["spec"]["names"]["kind"] == "TrainingJob"]
        if not tj:
            return
        spec = tj[0]["spec"]
        assert spec["group"] == "inframind.io" and spec["names"]["plural"] == "trainingjobs", spec["names"]
        assert spec["scope"] == "Namespaced"
        served = [ver for ver in spec["versions"] if ver["name"] == "v1alpha1" and ver.get("served")]
        assert served, "TrainingJob v1alpha1 is not served"
        assert "status" in (served[0].get("subresources") or {}), "the controller patches trainingjobs/status: the CRD needs the status subresource"
    runner.check("TrainingJob CRD matches what the controller's RBAC grants", crd_matches_rbac)

    def crd_execution_rule():
        # The API server refuses an image or service account outside execution mode `job`
        # (after defaulting, so `mode` is always set); the controller checks the allowlists.
        cases = [({"mode": "job"}, True), ({"mode": "job", "image": "x:1"}, True),
                 ({"mode": "job", "serviceAccountName": "trainer"}, True), ({"mode": "inProcess"}, True),
                 ({"mode": "inProcess", "image": "x:1"}, False),
                 ({"mode": "inProcess", "serviceAccountName": "trainer"}, False)]
        for path in ours:
            for d in yaml.safe_load_all(path.read_text()):
                if not d or d["spec"]["names"]["kind"] != "TrainingJob":
                    continue
                for ver in d["spec"]["versions"]:
                    ex = ver["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["execution"]
                    rules = ex.get("x-kubernetes-validations") or []
                    assert rules, f"{ver['name']}: spec.execution has no x-kubernetes-validations"
                    for value, ok in cases:
                        got = all(cel(r["rule"], self=value) for r in rules)
                        assert got == ok, f"{ver['name']}: spec.execution {value} {'passes' if got else 'fails'} the CEL rules"
    runner.check("TrainingJob CRD: the CEL rule on spec.execution admits image and serviceAccountName in mode job only", crd_execution_rule)

    # --- deploy/ ---------------------------------------------------------------------------------
    def deploy_fresh():
        fresh = render.render_bundle()
        current = render.OUTPUT.read_text() if render.OUTPUT.exists() else ""
        if fresh != current:
            import difflib
            diff = "".join(list(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                                     "deploy/inframind.yaml", "fresh render", n=1))[:40])
            raise AssertionError(f"deploy/inframind.yaml is stale: run deploy/regenerate.sh\n{diff}")
    runner.check("deploy/inframind.yaml equals a fresh render", deploy_fresh)

    def deploy_valid():
        docs = [d for d in yaml.safe_load_all(render.OUTPUT.read_text()) if d]
        kinds = [d["kind"] for d in docs]
        assert "Namespace" in kinds and kinds.index("Namespace") < kinds.index("Deployment")
        mwc = kinds.index("MutatingWebhookConfiguration")
        assert all(i < mwc for i, k in enumerate(kinds) if k == "Deployment"), \
            "the webhook must be configured after the Deployments, once its pods exist"
        assert kinds.count("CustomResourceDefinition") == sum(
            1 for p in ours for d in yaml.safe_load_all(p.read_text()) if d), "deploy/inframind.yaml lacks the CRDs"
        # rendered for current Kubernetes (matchConditions, a ValidatingAdmissionPolicy: 1.30 on);
        # older clusters install with Helm, which renders for theirs
        for kv in KUBE_VERSIONS:
            if tuple(int(x) for x in kv.split(".")[:2]) < (1, 30):
                continue
            for d in docs:
                kube_validate(d, kv, runner)
    runner.check("deploy/inframind.yaml validates (Kubernetes >= 1.30) and is ordered for kubectl apply", deploy_valid)

    def dockerfile():
        text = (ROOT / "deploy" / "Dockerfile").read_text()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
        assert len(froms) >= 2, "not a multi-stage build"
        assert re.search(r"\brust:", froms[0]), f"build stage {froms[0]!r} is not the official rust image"
        final = froms[-1]
        assert "distroless" in final and "nonroot" in final, f"runtime base {final!r} is not a distroless nonroot image"
        final_stage = text[text.rfind(final.split()[0] + " " + final.split()[1]):]
        assert re.search(r"^USER\s+(65532|nonroot)", final_stage, re.M), "the runtime stage does not run as uid 65532"
        assert re.search(r'^ENTRYPOINT\s+\["/usr/local/bin/inframind"\]', final_stage, re.M), "ENTRYPOINT is not the binary"
        assert "--release" in text and "--locked" in text, "the binary must be built --release --locked"
        assert not re.search(r"openssl|libssl", "\n".join(lines), re.I), "the binary uses rustls; the image needs no OpenSSL"
        ignore = ROOT / "deploy" / "Dockerfile.dockerignore"
        patterns = [ln.strip() for ln in ignore.read_text().splitlines()] if ignore.exists() else []
        assert "*" in patterns or any(p.strip("/") == "target" for p in patterns), \
            "deploy/Dockerfile.dockerignore must keep target/ (gigabytes) out of the build context"
    runner.check("deploy/Dockerfile: multi-stage, rust -> distroless nonroot, uid 65532", dockerfile)

    chart.close()
    for n in runner.notes:
        print(f"note: {n}")
    total = time.monotonic() - t0
    for f in runner.failures:
        print(f"FAILED {f.splitlines()[0]}")
    print(f"({total:.1f}s)")
    print(f"chart: {runner.passed} passed, {len(runner.failures)} failed")
    return 1 if runner.failures else 0


if __name__ == "__main__":
    sys.exit(main())
