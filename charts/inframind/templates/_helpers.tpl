{{/* Chart name, truncated to what a label value allows. */}}
{{- define "inframind.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Resource name prefix: the release name when it already contains the chart name (release
"inframind" gives "inframind-webhook", not "inframind-inframind-webhook").
Truncated to 52 so that "<fullname>-controller-metrics" still fits in 63 characters.
*/}}
{{- define "inframind.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "inframind.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "inframind.labels" -}}
helm.sh/chart: {{ include "inframind.chart" . }}
app.kubernetes.io/name: {{ include "inframind.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inframind
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "webhook"). */}}
{{- define "inframind.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inframind.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's resources. */}}
{{- define "inframind.componentLabels" -}}
{{ include "inframind.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "inframind.webhook.fullname" -}}
{{- printf "%s-webhook" (include "inframind.fullname" .) }}
{{- end }}

{{- define "inframind.controller.fullname" -}}
{{- printf "%s-controller" (include "inframind.fullname" .) }}
{{- end }}

{{- define "inframind.training.fullname" -}}
{{- printf "%s-training" (include "inframind.fullname" .) }}
{{- end }}

{{- define "inframind.api.fullname" -}}
{{- printf "%s-api" (include "inframind.fullname" .) }}
{{- end }}

{{/* The MutatingWebhookConfiguration (cluster-scoped, like the ClusterRoles: one release of a name per cluster). */}}
{{- define "inframind.webhookConfigName" -}}
{{- include "inframind.fullname" . }}
{{- end }}

{{- define "inframind.webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.webhook.create }}
{{- default (include "inframind.webhook.fullname" .) .Values.serviceAccount.webhook.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.webhook.name }}
{{- end }}
{{- end }}

{{- define "inframind.controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.controller.create }}
{{- default (include "inframind.controller.fullname" .) .Values.serviceAccount.controller.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.controller.name }}
{{- end }}
{{- end }}

{{/* The training Jobs' ServiceAccount; never "default" or the controller's. */}}
{{- define "inframind.training.serviceAccountName" -}}
{{- default (include "inframind.training.fullname" .) .Values.serviceAccount.training.name }}
{{- end }}

{{/*
Which other images and ServiceAccounts a TrainingJob may choose for its Job (the controller
enforces them; the API refuses POST /v1/train specs outside them).
*/}}
{{- define "inframind.jobPolicyEnv" -}}
{{- if and .Values.controller.enabled .Values.controller.batchJobs }}
{{- with .Values.controller.allowedJobImages }}
- name: INFRAMIND_JOB_ALLOWED_IMAGES
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.controller.allowedJobServiceAccounts }}
- name: INFRAMIND_JOB_ALLOWED_SERVICE_ACCOUNTS
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "inframind.api.serviceAccountName" -}}
{{- if .Values.serviceAccount.api.create }}
{{- default (include "inframind.api.fullname" .) .Values.serviceAccount.api.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.api.name }}
{{- end }}
{{- end }}

{{/*
CEL for the webhook's matchConditions: the pod is not opted out with the annotation
inframind.io/skip=true (case-insensitive, as src/admission reads it: contract::SKIP_ANNOTATION).
*/}}
{{- define "inframind.notOptedOut" -}}
!has(object.metadata.annotations) || !('inframind.io/skip' in object.metadata.annotations) || object.metadata.annotations['inframind.io/skip'].lowerAscii() != 'true'
{{- end }}

{{/* The API's base URL inside the cluster: what `inframind report --endpoint` is given. */}}
{{- define "inframind.api.url" -}}
{{- printf "%s://%s.%s.svc" (ternary "https" "http" .Values.api.tls.enabled) (include "inframind.api.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The Secret holding the serving certificate (modes helm and cert-manager). */}}
{{- define "inframind.tlsSecretName" -}}
{{- printf "%s-tls" (include "inframind.webhook.fullname" .) }}
{{- end }}

{{/* The webhook Service's DNS names, short to fully qualified. */}}
{{- define "inframind.webhook.dnsNames" -}}
{{- $svc := include "inframind.webhook.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.certificates.clusterDomain) | toJson }}
{{- end }}

{{- define "inframind.webhook.serviceDnsName" -}}
{{- printf "%s.%s.svc" (include "inframind.webhook.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
The API's serving certificate (api.tls): the user's Secret (api.tls.secretName) or, when that is
empty, the chart's `<fullname>-api-tls` (Helm-generated, or cert-manager's in mode cert-manager).
*/}}
{{- define "inframind.api.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "inframind.api.fullname" .)) .Values.api.tls.secretName }}
{{- end }}

{{/* "true" when the chart provides the API's certificate (TLS on, no Secret of the user's). */}}
{{- define "inframind.api.chartCertificate" -}}
{{- if and .Values.api.enabled .Values.api.tls.enabled (not .Values.api.tls.secretName) }}true{{ end }}
{{- end }}

{{/* The ConfigMap publishing the CA of a Helm-generated API certificate, for reporters (`--ca-file`). */}}
{{- define "inframind.api.caConfigMapName" -}}
{{- printf "%s-ca" (include "inframind.api.fullname" .) }}
{{- end }}

{{/* The API Service's DNS names, short to fully qualified. */}}
{{- define "inframind.api.dnsNames" -}}
{{- $svc := include "inframind.api.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.certificates.clusterDomain) | toJson }}
{{- end }}

{{- define "inframind.api.serviceDnsName" -}}
{{- printf "%s.%s.svc" (include "inframind.api.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "inframind.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Restricted Pod Security Standard: pod level. */}}
{{- define "inframind.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Restricted Pod Security Standard: container level. */}}
{{- define "inframind.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment every component reads (the drain settings: see values shutdown). */}}
{{- define "inframind.commonEnv" -}}
- name: INFRAMIND_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
- name: INFRAMIND_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
- name: INFRAMIND_MODELS_DIR
  value: /var/lib/inframind/models
- name: INFRAMIND_LOG
  value: {{ .Values.log.level | quote }}
- name: INFRAMIND_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: INFRAMIND_DRAIN_SECONDS
  value: {{ .Values.shutdown.drainSeconds | int | quote }}
- name: INFRAMIND_SHUTDOWN_GRACE_SECONDS
  value: {{ .Values.shutdown.graceSeconds | int | quote }}
{{- end }}

{{/*
How long the kubelet waits after SIGTERM before it kills a pod: the binary's drain and grace
(values shutdown), plus 5 s because the server gives up on open connections only a second after
the grace period, and must still exit cleanly. No preStop hook, see values.yaml.
*/}}
{{- define "inframind.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdown.drainSeconds) (int .Values.shutdown.graceSeconds) 5 }}
{{- end }}

{{/*
The optimizer's settings (OptimizerArgs in the binary): read by the webhook to decide and by the
API for POST /v1/recommendations.
*/}}
{{- define "inframind.optimizerEnv" -}}
- name: INFRAMIND_OBJECTIVE
  value: {{ .Values.optimizer.objective | quote }}
- name: INFRAMIND_EXPLORATION_RATE
  value: {{ .Values.optimizer.explorationRate | quote }}
- name: INFRAMIND_MIN_CPU
  value: {{ .Values.optimizer.bounds.minCpu | quote }}
- name: INFRAMIND_MAX_CPU
  value: {{ .Values.optimizer.bounds.maxCpu | quote }}
- name: INFRAMIND_MIN_MEM_GB
  value: {{ .Values.optimizer.bounds.minMemGb | quote }}
- name: INFRAMIND_MAX_MEM_GB
  value: {{ .Values.optimizer.bounds.maxMemGb | quote }}
- name: INFRAMIND_MIN_CONCURRENCY
  value: {{ .Values.optimizer.bounds.minConcurrency | quote }}
- name: INFRAMIND_MAX_CONCURRENCY
  value: {{ .Values.optimizer.bounds.maxConcurrency | quote }}
- name: INFRAMIND_CPU_PRICE_PER_HOUR
  value: {{ .Values.optimizer.prices.cpuPerHour | quote }}
- name: INFRAMIND_MEM_PRICE_PER_GB_HOUR
  value: {{ .Values.optimizer.prices.memPerGbHour | quote }}
{{- end }}

{{/* Volumes every component mounts: the models cache and /tmp (the root filesystem is read-only). */}}
{{- define "inframind.commonVolumes" -}}
- name: models
  emptyDir:
    sizeLimit: {{ .Values.models.sizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- include "inframind.storesCA.volumes" . }}
{{- end }}

{{- define "inframind.commonVolumeMounts" -}}
- name: models
  mountPath: /var/lib/inframind/models
- name: tmp
  mountPath: /tmp
{{- include "inframind.storesCA.mounts" . }}
{{- end }}

{{/*
Pod anti-affinity over nodes, merged with the user's affinity.
Call with (dict "ctx" $ "component" "webhook" "mode" "soft" "affinity" $extra).
*/}}
{{- define "inframind.affinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "inframind.selectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml)) -}}
{{- $anti := dict -}}
{{- if eq .mode "soft" }}
{{- $anti = dict "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) -}}
{{- else if eq .mode "hard" }}
{{- $anti = dict "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) -}}
{{- end }}
{{- $merged := mergeOverwrite $anti (deepCopy .affinity) -}}
{{- if $merged }}
{{- toYaml $merged }}
{{- end }}
{{- end }}

{{/* Cross-field checks the JSON schema cannot express. */}}
{{- define "inframind.validate" -}}
{{- $b := .Values.optimizer.bounds -}}
{{- if gt (float64 $b.minCpu) (float64 $b.maxCpu) }}
{{- fail (printf "optimizer.bounds: minCpu (%v) is above maxCpu (%v)" $b.minCpu $b.maxCpu) }}
{{- end }}
{{- if gt (float64 $b.minMemGb) (float64 $b.maxMemGb) }}
{{- fail (printf "optimizer.bounds: minMemGb (%v) is above maxMemGb (%v)" $b.minMemGb $b.maxMemGb) }}
{{- end }}
{{- if gt (int $b.minConcurrency) (int $b.maxConcurrency) }}
{{- fail (printf "optimizer.bounds: minConcurrency (%v) is above maxConcurrency (%v)" $b.minConcurrency $b.maxConcurrency) }}
{{- end }}
{{- if and .Values.webhook.hostNetwork .Values.createNamespace }}
{{- fail "webhook.hostNetwork cannot be combined with createNamespace: the Namespace enforces the restricted Pod Security Standard, which forbids hostNetwork" }}
{{- end }}
{{- if and .Values.webhook.hostNetwork (has (int .Values.webhook.port) (list 10250 10256)) }}
{{- fail (printf "webhook.port %d is the kubelet's or kube-proxy's own port on every node; with webhook.hostNetwork choose another" (int .Values.webhook.port)) }}
{{- end }}
{{- $api := .Values.api -}}
{{- if $api.enabled }}
{{- if and (eq $api.adminToken.secretName $api.ingestToken.secretName) (eq $api.adminToken.key $api.ingestToken.key) }}
{{- fail (printf "api.adminToken names the same Secret key as api.ingestToken (%s/%s): the admin token must differ from the ingest token" $api.ingestToken.secretName $api.ingestToken.key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Egress when networkPolicy.egress.enabled: DNS, then the user's rules (API server, PostgreSQL, Redis). */}}
{{- define "inframind.egressRules" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- with .Values.networkPolicy.egress.to }}
{{ toYaml . }}
{{- end }}
{{- end }}
