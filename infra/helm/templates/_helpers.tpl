{{/* Names and labels. */}}
{{- define "tdp.name" -}}{{ .Release.Name }}{{- end }}

{{- define "tdp.labels" -}}
app.kubernetes.io/part-of: trading-data-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* Selector labels of one component: include with (list $ "collector"). */}}
{{- define "tdp.selector" -}}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "tdp.image" -}}
{{ required "image.repository is required (the image of infra/compose/Dockerfile)" .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{- define "tdp.secretName" -}}{{ required "secret.name is required" .Values.secret.name }}{{- end }}

{{- define "tdp.kafkaBootstrap" -}}
{{- if .Values.settings.kafkaBootstrapServers -}}
{{ .Values.settings.kafkaBootstrapServers }}
{{- else -}}
{{- $name := include "tdp.name" . -}}
{{- $servers := list -}}
{{- range $i := until (int .Values.kafka.replicas) -}}
{{- $servers = append $servers (printf "%s-kafka-%d.%s-kafka.%s.svc:9092" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{ join "," $servers }}
{{- end -}}
{{- end }}

{{- define "tdp.cassandraHosts" -}}
{{- if .Values.settings.cassandraHosts -}}
{{ .Values.settings.cassandraHosts }}
{{- else -}}
{{- $name := include "tdp.name" . -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.cassandra.replicas) -}}
{{- $hosts = append $hosts (printf "%s-cassandra-%d.%s-cassandra.%s.svc" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{ join "," $hosts }}
{{- end -}}
{{- end }}

{{/* One environment variable from the Secret: include with (list $ "CASSANDRA_PASSWORD"). */}}
{{- define "tdp.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tdp.secretName" (index . 0) }}
      key: {{ index . 1 }}
{{- end }}

{{/* The writers' role (collector, stream processor, forecast job). */}}
{{- define "tdp.writerEnv" -}}
- name: CASSANDRA_USERNAME
  value: {{ .Values.cassandraRoles.writer | quote }}
{{ include "tdp.secretEnv" (list . "CASSANDRA_PASSWORD") }}
{{- end }}

{{/* The read-only role (API, Streamlit, Trino). */}}
{{- define "tdp.readerEnv" -}}
- name: CASSANDRA_READER_USERNAME
  value: {{ .Values.cassandraRoles.reader | quote }}
{{ include "tdp.secretEnv" (list . "CASSANDRA_READER_PASSWORD") }}
{{- end }}

{{/* Pod security shared by our containers: the image runs as uid 10001. */}}
{{- define "tdp.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  fsGroup: 10001
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "tdp.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
{{- end }}
