{{/* The release's full name, at most 63 characters. */}}
{{- define "sparkwing-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sparkwing-operator.labels" -}}
app.kubernetes.io/name: sparkwing-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sparkwing
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sparkwing-operator.selectorLabels" -}}
app.kubernetes.io/name: sparkwing-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sparkwing-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sparkwing-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Leader election is on with more than one replica, or when asked for. */}}
{{- define "sparkwing-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{/* The namespace runners (and the default pool) live in. */}}
{{- define "sparkwing-operator.runnerNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace -}}
{{- end -}}

{{/*
The API's URL as runner pods reach it: runner.apiUrl, else the API Service's in-cluster URL when
the API is enabled, else nothing.
*/}}
{{- define "sparkwing-operator.runnerApiUrl" -}}
{{- if .Values.runner.apiUrl -}}
{{- .Values.runner.apiUrl -}}
{{- else if .Values.api.enabled -}}
http://{{ include "sparkwing-operator.fullname" . }}-api.{{ .Release.Namespace }}.svc:{{ default .Values.api.port .Values.api.service.port }}
{{- end -}}
{{- end }}
