{{/* The chart's name, and the release's full name (kustomize: "extauthz"). */}}
{{- define "extauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extauthz.fullname" -}}
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

{{- define "extauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "extauthz.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "extauthz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "extauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "extauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret and key holding the session secret. */}}
{{- define "extauthz.sessionSecretName" -}}
{{- default (printf "%s-session" (include "extauthz.fullname" .)) .Values.sessionSecret.existingSecret }}
{{- end }}
{{- define "extauthz.sessionSecretKey" -}}
{{- if .Values.sessionSecret.existingSecret }}{{ .Values.sessionSecret.key | default "secret" }}{{ else }}secret{{ end }}
{{- end }}

{{/* EXT_SESSION_MGT.instanceName: the redis-cache instance, its binding and its folder under SERVICE_BINDING_ROOT. */}}
{{- define "extauthz.redisInstance" -}}
{{- default (printf "%s-redis" (include "extauthz.fullname" .)) .Values.extSessionMgt.instanceName }}
{{- end }}
{{- define "extauthz.redisSecret" -}}
{{- default (include "extauthz.redisInstance" .) .Values.btp.redis.secretName }}
{{- end }}

{{/* The identity service's instance (xsuaa or identity), binding and folder; "" without one. */}}
{{- define "extauthz.identityInstance" -}}
{{- with .Values.btp.identity.service }}
{{- default (printf "%s-%s" (include "extauthz.fullname" $) .) $.Values.btp.identity.instanceName }}
{{- end }}
{{- end }}
{{- define "extauthz.identitySecret" -}}
{{- default (include "extauthz.identityInstance" .) .Values.btp.identity.secretName }}
{{- end }}

{{/* The xs-app.json ConfigMap, "" without one. */}}
{{- define "extauthz.xsAppConfigMap" -}}
{{- if .Values.xsApp.existingConfigMap }}
{{- .Values.xsApp.existingConfigMap }}
{{- else if or .Values.xsApp.json .Values.xsApp.config }}
{{- printf "%s-xs-app" (include "extauthz.fullname" .) }}
{{- end }}
{{- end }}
{{- define "extauthz.xsAppContent" -}}
{{- if .Values.xsApp.json }}
{{- .Values.xsApp.json }}
{{- else }}
{{- toPrettyJson .Values.xsApp.config }}
{{- end }}
{{- end }}

{{/* Refuses what extauthz would refuse, at install time rather than in a crash loop. */}}
{{- define "extauthz.validate" -}}
{{- if and (not .Values.tenantHostPattern) (not .Values.allowedHosts) }}
{{- fail "set tenantHostPattern (multitenant, approuter's TENANT_HOST_PATTERN) or allowedHosts (single tenant, EXTAUTHZ_ALLOWED_HOSTS): without either extauthz serves loopback host names only and every request gets 404" }}
{{- end }}
{{- if and .Values.tenantHostPattern .Values.allowedHosts }}
{{- fail "set tenantHostPattern or allowedHosts, not both: with TENANT_HOST_PATTERN the pattern decides the hosts" }}
{{- end }}
{{- if not (has .Values.btp.identity.service (list "xsuaa" "identity" "")) }}
{{- fail (printf "btp.identity.service: %q is not xsuaa, identity (IAS) or \"\" (none)" .Values.btp.identity.service) }}
{{- end }}
{{- if gt (len (compact (list .Values.xsApp.json (ne (len .Values.xsApp.config) 0 | ternary "config" "") .Values.xsApp.existingConfigMap))) 1 }}
{{- fail "xsApp: set one of json, config and existingConfigMap" }}
{{- end }}
{{- range .Values.protect }}
{{- if or (not .name) (not .selector) }}
{{- fail "protect: every entry needs a name and a selector (the pod labels of the workload whose sidecar asks extauthz)" }}
{{- end }}
{{- end }}
{{- end }}
