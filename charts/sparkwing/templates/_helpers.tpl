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


{{/* The API's stores are the shared ones (PostgreSQL and an object store). */}}
{{- define "sparkwing-operator.sharedStores" -}}
{{- if and .Values.api.metadata.existingSecret .Values.api.objects.url -}}true{{- end -}}
{{- end -}}

{{/* The API runs in its own Deployment (`sparkwing-operator api`). */}}
{{- define "sparkwing-operator.apiDeployment" -}}
{{- if and .Values.api.enabled (gt (int .Values.api.replicas) 0) -}}
{{- if not (include "sparkwing-operator.sharedStores" .) -}}
{{- fail "api.replicas > 0 needs the shared stores: api.metadata.existingSecret and api.objects.url" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{- define "sparkwing-operator.apiSelectorLabels" -}}
app.kubernetes.io/name: sparkwing-api
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The shared stores' environment (the operator's and the API replicas'). */}}
{{- define "sparkwing-operator.storeEnv" -}}
{{- if include "sparkwing-operator.sharedStores" . }}
- name: SPARKWING_METADATA
  valueFrom:
    secretKeyRef:
      name: {{ .Values.api.metadata.existingSecret }}
      key: {{ .Values.api.metadata.secretKey }}
- name: SPARKWING_OBJECTS
  value: {{ .Values.api.objects.url | quote }}
{{- with .Values.api.objects.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- with .Values.api.objects.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.api.objects.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- if .Values.api.objects.allowHttp }}
- name: AWS_ALLOW_HTTP
  value: "true"
{{- end }}
{{- end }}
{{- end -}}

{{/* The embedded stores' volume (when the stores are not the shared ones). */}}
{{- define "sparkwing-operator.dataVolume" -}}
- name: data
  {{- if .Values.api.persistence.emptyDir }}
  emptyDir: {}
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "sparkwing-operator.fullname" .)) .Values.api.persistence.existingClaim }}
  {{- end }}
{{- end -}}

{{/* The API's flags shared by the operator and the API Deployment: TLS in front (api.behindTls),
   garbage collection and retention (api.gc, api.retention). */}}
{{- define "sparkwing-operator.gcArgs" -}}
- --gc-interval-seconds={{ .Values.api.gc.intervalSeconds | int }}
{{- if .Values.api.behindTls }}
- --behind-tls
{{- end }}
{{- with .Values.api.retention.finishedDays }}
- --retain-finished-days={{ . | int }}
{{- end }}
{{- with .Values.api.retention.finishedRuns }}
- --retain-finished-runs={{ . | int }}
{{- end }}
{{- end }}
