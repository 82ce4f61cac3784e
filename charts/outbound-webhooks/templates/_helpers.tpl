{{/* Name of the release's objects. */}}
{{- define "owh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "owh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (list . "controller"). */}}
{{- define "owh.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "owh.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Secret holding the Redis URL. */}}
{{- define "owh.redisSecretName" -}}
{{- if .Values.redis.url -}}
{{ include "owh.fullname" . }}-redis
{{- else -}}
{{ required "set redis.existingSecret (a Secret holding the Redis URL) or redis.url" .Values.redis.existingSecret }}
{{- end -}}
{{- end -}}

{{- define "owh.redisSecretKey" -}}
{{- if .Values.redis.url -}}
redis-url
{{- else -}}
{{ .Values.redis.existingSecretKey }}
{{- end -}}
{{- end -}}

{{/* Where the dispatcher reads the Redis CA, if one is configured. */}}
{{- define "owh.redisCaDir" -}}
/etc/outbound-webhooks/redis-ca
{{- end -}}

{{/* Where the receivers' CA bundle is mounted in the dispatcher. */}}
{{- define "owh.destinationCaDir" -}}
/etc/outbound-webhooks/destination-ca
{{- end -}}

{{/* "true" when the receivers' CA comes from a Secret or a ConfigMap. */}}
{{- define "owh.destinationCaConfigured" -}}
{{- with .Values.dispatcher.destinationCa -}}
{{- if and .secret.name .configMap.name -}}
{{- fail "set dispatcher.destinationCa.secret or dispatcher.destinationCa.configMap, not both" -}}
{{- end -}}
{{- if or .secret.name .configMap.name }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* "true" when a Redis CA comes from a Secret or a ConfigMap. */}}
{{- define "owh.redisCaConfigured" -}}
{{- with .Values.redis.tls -}}
{{- if and .caSecret.name .caConfigMap.name -}}
{{- fail "set redis.tls.caSecret or redis.tls.caConfigMap, not both" -}}
{{- end -}}
{{- if or .caSecret.name .caConfigMap.name }}true{{ end -}}
{{- end -}}
{{- end -}}
