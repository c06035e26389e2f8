{{/* Names and labels shared by every Entente object. */}}
{{- define "entente.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "entente.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "entente.labels" -}}
{{ include "entente.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "entente.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "entente.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "entente.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "entente.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "entente.fullname" .)) -}}
{{- end -}}

{{/* Environment of every Entente container: the ConfigMap, then the three secrets by reference. */}}
{{- define "entente.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "entente.fullname" . }}-config
env:
  - name: ENTENTE_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "entente.secretName" . }}
        key: {{ .Values.secrets.keys.databaseUrl }}
  - name: ENTENTE_SECRET_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "entente.secretName" . }}
        key: {{ .Values.secrets.keys.secretKey }}
  - name: ENTENTE_AUDIT_SIGNING_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "entente.secretName" . }}
        key: {{ .Values.secrets.keys.auditSigningKey }}
{{- end -}}

{{/* Hook annotations for objects the migration Job needs before the release's own objects exist. */}}
{{- define "entente.preHook" -}}
{{- if .Values.migrations.enabled }}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}
{{- end -}}
