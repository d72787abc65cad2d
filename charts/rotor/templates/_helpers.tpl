{{/* The chart name, or nameOverride. */}}
{{- define "rotor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's resources (63 characters at most: DNS label). */}}
{{- define "rotor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version label value. */}}
{{- define "rotor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "rotor.labels" -}}
helm.sh/chart: {{ include "rotor.chart" . }}
{{ include "rotor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels selecting the agent's pods. */}}
{{- define "rotor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the agent runs as. */}}
{{- define "rotor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the agents elect a leader: asked for, or more than one replica. */}}
{{- define "rotor.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/* The Lease the agents elect a leader on. */}}
{{- define "rotor.leaseName" -}}
{{- default (include "rotor.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "rotor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the policies. */}}
{{- define "rotor.policyConfigMap" -}}
{{- default (printf "%s-policies" (include "rotor.fullname" .)) .Values.existingPolicyConfigMap }}
{{- end }}

{{/* The Secret holding the auth config, or nothing when the API has none. */}}
{{- define "rotor.authSecret" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.inline.enabled }}
{{- printf "%s-auth" (include "rotor.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret holding the Vault token (token auth). */}}
{{- define "rotor.vaultTokenSecret" -}}
{{- default (printf "%s-vault-token" (include "rotor.fullname" .)) .Values.vault.auth.token.existingSecret }}
{{- end }}

{{/* The audit log's claim when persistence is on. */}}
{{- define "rotor.auditClaim" -}}
{{- default (printf "%s-audit" (include "rotor.fullname" .)) .Values.audit.persistence.existingClaim }}
{{- end }}

{{/*
The rules for watching RotationPolicy resources: read and watch them, write their
status (the status subresource only), and report Events (events.k8s.io; patch folds a
repeat into a series).
*/}}
{{- define "rotor.policyResourceRules" -}}
- apiGroups: ["rotor.dev"]
  resources: ["rotationpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["rotor.dev"]
  resources: ["rotationpolicies/status"]
  verbs: ["update", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
