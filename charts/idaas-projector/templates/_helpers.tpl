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

{{/* Whether one Deployment runs `serve` (combined: true) instead of two. Renders "true" or "". */}}
{{- define "idaas-projector.combined" -}}
{{- if .Values.combined }}true{{ end }}
{{- end }}

{{/*
The components this release runs, as a space-separated list: "combined", or "webhook projector".
*/}}
{{- define "idaas-projector.components" -}}
{{- if .Values.combined }}combined{{ else }}webhook projector{{ end }}
{{- end }}

{{/*
Selector labels of one component's pods; dict "root" (the chart context) and "component"
(webhook, projector or combined). The combined Deployment keeps the plain selector labels, so
that an installation from before the split upgrades in place.
*/}}
{{- define "idaas-projector.componentSelectorLabels" -}}
{{ include "idaas-projector.selectorLabels" .root }}
{{- if ne .component "combined" }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* The name of one component's resources (Deployment, PodDisruptionBudget); dict root, component. */}}
{{- define "idaas-projector.componentName" -}}
{{- $fullname := include "idaas-projector.fullname" .root }}
{{- if eq .component "combined" }}{{ $fullname }}{{ else }}{{ printf "%s-%s" $fullname .component }}{{ end }}
{{- end }}

{{/* One component's ServiceAccount; dict root, component. */}}
{{- define "idaas-projector.serviceAccountName" -}}
{{- $sa := .root.Values.serviceAccount }}
{{- $given := index (dict "combined" $sa.name "webhook" $sa.webhookName "projector" $sa.projectorName) .component }}
{{- if $sa.create }}
{{- default (include "idaas-projector.componentName" .) $given }}
{{- else }}
{{- required (printf "serviceAccount.%s is required when serviceAccount.create is false" (index (dict "combined" "name" "webhook" "webhookName" "projector" "projectorName") .component)) $given }}
{{- end }}
{{- end }}

{{/* One component's replica count; dict root, component. The combined pods all serve the webhook. */}}
{{- define "idaas-projector.replicas" -}}
{{- if eq .component "projector" }}{{ .root.Values.projector.replicaCount }}{{ else }}{{ .root.Values.webhook.replicaCount }}{{ end }}
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

{{/*
The image reference: repository@digest, else repository:tag (default appVersion). The projector's
containers and, unless webhook.initImage is set, the injected init container run it. There is no
default repository: an unqualified name would be looked up on Docker Hub, where no such image is
published.
*/}}
{{- define "idaas-projector.image" -}}
{{- $repository := required "image.repository is not set: set it to the registry path you pushed the idaas-projector image to, for example --set image.repository=registry.cn-hangzhou.aliyuncs.com/<namespace>/idaas-projector (docs/install.md#build-and-push-the-image)" .Values.image.repository }}
{{- if regexMatch "@|:[^/]*$" $repository }}
{{- fail (printf "image.repository %q carries a tag or digest: set image.repository to the path alone and the tag in image.tag (or the digest in image.digest)" $repository) }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
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
A webhook entry's clientConfig: the webhook Service at one path; dict "root" (the chart context)
and "path". Every entry of the MutatingWebhookConfiguration renders it from here, so that the
Service, the port and the caBundle handling cannot drift apart between entries.
*/}}
{{- define "idaas-projector.webhookClientConfig" -}}
{{- $root := .root -}}
clientConfig:
  service:
    name: {{ include "idaas-projector.serviceName" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: {{ $root.Values.service.port }}
  {{- if eq $root.Values.certificates.mode "files" }}
  caBundle: {{ required "certificates.caBundle is required when certificates.mode is files: base64 of the PEM CA that signed the certificate in certificates.secretName" $root.Values.certificates.caBundle }}
  {{- end }}
  {{- /*
  No caBundle field in the self and cert-manager modes: idaas-projector (server-side apply,
  field manager idaas-projector, on every entry of the configuration) or cert-manager's CA
  injector owns it. Because the field is in neither the old nor the new manifest, `helm upgrade`
  leaves the live value alone.
  */}}
{{- end }}

{{/*
What every webhook entry has in common: pods, CREATE; no side effects; called again when a later
webhook changed the pod; AdmissionReview v1.
*/}}
{{- define "idaas-projector.webhookCommon" -}}
admissionReviewVersions: ["v1"]
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["pods"]
    scope: Namespaced
sideEffects: None
reinvocationPolicy: IfNeeded
matchPolicy: Equivalent
{{- end }}

{{/*
A webhook entry's namespaceSelector; dict "root" and "labelled": true for the entry of
namespaces labelled idaas-projector.io/injection=enabled, false for the pod-level entries, which
leave those namespaces out while that entry exists (so that no pod is sent twice; with
webhook.namespaceOptIn.enabled=false the label routes nothing and the pod-level entries cover
every namespace). All leave out kube-system, the release namespace and webhook.excludeNamespaces:
system pods and the webhook's own pods never depend on the webhook.
*/}}
{{- define "idaas-projector.webhookNamespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range (concat (list "kube-system" .root.Release.Namespace) .root.Values.webhook.excludeNamespaces | uniq) }}
        - {{ . | quote }}
        {{- end }}
    {{- if or .labelled .root.Values.webhook.namespaceOptIn.enabled }}
    - key: idaas-projector.io/injection
      operator: {{ ternary "In" "NotIn" .labelled }}
      values: ["enabled"]
    {{- end }}
{{- end }}
