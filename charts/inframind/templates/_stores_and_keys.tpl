{{/*
TLS to the stores and model-signing keys (values storesCA and modelSigning). Each define renders
nothing when its Secret is not configured.
*/}}

{{/* The stores' CA bundle, in every component: /etc/inframind/stores-ca/ca.crt. */}}
{{- define "inframind.storesCA.volumes" -}}
{{- with .Values.storesCA.existingSecret }}
- name: stores-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.storesCA.secretKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{- define "inframind.storesCA.mounts" -}}
{{- if .Values.storesCA.existingSecret }}
- name: stores-ca
  mountPath: /etc/inframind/stores-ca
  readOnly: true
{{- end }}
{{- end }}

{{/*
A model key. Call with (dict "ctx" $ "role" "signing") in the controller (its training Jobs copy
its pod) or (dict "ctx" $ "role" "public") in the webhook and the API.
*/}}
{{- define "inframind.modelKey.env" -}}
{{- if and .ctx.Values.controller.enabled .ctx.Values.modelSigning.publicKeySecret (not .ctx.Values.modelSigning.signingKeySecret) }}
{{- fail "modelSigning.publicKeySecret without modelSigning.signingKeySecret: the webhook and the API would refuse every (unsigned) model this release's controller trains" }}
{{- end }}
{{- $secret := ternary .ctx.Values.modelSigning.signingKeySecret .ctx.Values.modelSigning.publicKeySecret (eq .role "signing") }}
{{- if $secret }}
- name: {{ ternary "INFRAMIND_MODEL_SIGNING_KEY_FILE" "INFRAMIND_MODEL_PUBLIC_KEY_FILE" (eq .role "signing") }}
  value: /etc/inframind/model-{{ .role }}/key.pem
{{- end }}
{{- end }}

{{- define "inframind.modelKey.volumes" -}}
{{- $secret := ternary .ctx.Values.modelSigning.signingKeySecret .ctx.Values.modelSigning.publicKeySecret (eq .role "signing") }}
{{- if $secret }}
- name: model-{{ .role }}
  secret:
    secretName: {{ $secret }}
    defaultMode: 0400
    items:
      - key: {{ .ctx.Values.modelSigning.secretKey }}
        path: key.pem
{{- end }}
{{- end }}

{{- define "inframind.modelKey.mounts" -}}
{{- $secret := ternary .ctx.Values.modelSigning.signingKeySecret .ctx.Values.modelSigning.publicKeySecret (eq .role "signing") }}
{{- if $secret }}
- name: model-{{ .role }}
  mountPath: /etc/inframind/model-{{ .role }}
  readOnly: true
{{- end }}
{{- end }}
