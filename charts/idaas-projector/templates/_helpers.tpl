{{/* Chart name, at most 63 characters. */}}
{{- define "idaas-projector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, with the chart name appended unless the release name contains it.
At most 52 characters, so that "<fullname>-webhook-tls" and friends stay within 63.
*/}}
{{- define "idaas-projector.fullname" -}}
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

{{- define "idaas-projector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "idaas-projector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "idaas-projector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "idaas-projector.labels" -}}
helm.sh/chart: {{ include "idaas-projector.chart" . }}
{{ include "idaas-projector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: idaas-projector
{{- end }}

{{- define "idaas-projector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "idaas-projector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The MutatingWebhookConfiguration's name (also --webhook-configuration). */}}
{{- define "idaas-projector.webhookConfigurationName" -}}
{{- default (include "idaas-projector.fullname" .) .Values.webhook.configurationName }}
{{- end }}

{{/* The Service's name (also --service-name). */}}
{{- define "idaas-projector.serviceName" -}}
{{- include "idaas-projector.fullname" . }}
{{- end }}

{{- define "idaas-projector.leaseName" -}}
{{- default (include "idaas-projector.fullname" .) .Values.projector.leaseName }}
{{- end }}

{{/* The Secret holding the serving certificate, in every mode. */}}
{{- define "idaas-projector.certificateSecretName" -}}
{{- if eq .Values.certificates.mode "files" }}
{{- required "certificates.secretName is required when certificates.mode is files: the name of a kubernetes.io/tls Secret in the release namespace" .Values.certificates.secretName }}
{{- else }}
{{- default (printf "%s-webhook-tls" (include "idaas-projector.fullname" .)) .Values.certificates.secretName }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (default appVersion). */}}
{{- define "idaas-projector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Service's DNS names: the serving certificate must carry them all. */}}
{{- define "idaas-projector.serviceDnsNames" -}}
{{- $svc := include "idaas-projector.serviceName" . -}}
- {{ $svc }}
- {{ $svc }}.{{ .Release.Namespace }}
- {{ $svc }}.{{ .Release.Namespace }}.svc
- {{ $svc }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{/*
Whether the webhook selects pods by label (objectSelector) rather than with matchConditions:
asked for, or a Kubernetes without matchConditions (before 1.28). Renders "true" or "".
*/}}
{{- define "idaas-projector.objectSelectorMode" -}}
{{- if or .Values.webhook.objectSelectorMode (not (semverCompare ">=1.28-0" .Capabilities.KubeVersion.Version)) }}true{{ end }}
{{- end }}

{{/* The namespaces the projector serves, comma-separated; empty for all. */}}
{{- define "idaas-projector.namespaces" -}}
{{- join "," .Values.rbac.namespaces }}
{{- end }}

{{/*
Least privilege; README.md explains each rule. Rules the projector needs wherever it serves
M2MTokens: in a ClusterRole, or with rbac.namespaces in a Role per listed namespace.
*/}}
{{- define "idaas-projector.projectorRules" -}}
# Write the M2MTokens' status (Ready condition, expiry, refresh time).
- apiGroups: ["idaas-projector.io"]
  resources: ["m2mtokens/status"]
  verbs: ["patch"]
# Read the credentials Secrets named in M2MTokens (get), watch the managed token Secrets
# (list, watch, selected by label app.kubernetes.io/managed-by=idaas-projector; RBAC cannot
# restrict by label) and write them by server-side apply (patch; create when the apply creates).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Record Refreshed / RefreshFailed / TokenRejected events on M2MTokens.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
