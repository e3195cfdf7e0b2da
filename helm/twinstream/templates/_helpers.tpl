{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "twinstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: release-chart unless the release name already holds the chart name.
Truncated to 56 characters so that suffixes such as "-worker" still fit in 63.
*/}}
{{- define "twinstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "twinstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "twinstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twinstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "twinstream.labels" -}}
helm.sh/chart: {{ include "twinstream.chart" . }}
{{ include "twinstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: twinstream
{{- end }}

{{- define "twinstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "twinstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "twinstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "twinstream.configMapName" -}}
{{- printf "%s-config" (include "twinstream.fullname" .) }}
{{- end }}

{{- define "twinstream.kafkaSecretName" -}}
{{- default (printf "%s-kafka" (include "twinstream.fullname" .)) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{- define "twinstream.kafkaSasl" -}}
{{- if or .Values.kafka.sasl.password .Values.kafka.sasl.existingSecret }}true{{ end }}
{{- end }}

{{/*
Kafka files as ConfigMap entries: only paths (the password stays in its Secret).
*/}}
{{- define "twinstream.kafkaFileEnv" -}}
{{- if include "twinstream.kafkaSasl" . }}
TWINSTREAM_KAFKA_SASL_PASSWORD_FILE: "/etc/twinstream/kafka/sasl/password"
{{- end }}
{{- if or .Values.kafka.tls.caConfigMap .Values.kafka.tls.caSecret }}
TWINSTREAM_KAFKA_SSL_CAFILE: "/etc/twinstream/kafka/ca/ca.crt"
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
TWINSTREAM_KAFKA_SSL_CERTFILE: "/etc/twinstream/kafka/client/tls.crt"
TWINSTREAM_KAFKA_SSL_KEYFILE: "/etc/twinstream/kafka/client/tls.key"
{{- end }}
{{- end }}

{{- define "twinstream.kafkaVolumeMounts" -}}
{{- if include "twinstream.kafkaSasl" . }}
- name: kafka-sasl
  mountPath: /etc/twinstream/kafka/sasl
  readOnly: true
{{- end }}
{{- if or .Values.kafka.tls.caConfigMap .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/twinstream/kafka/ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  mountPath: /etc/twinstream/kafka/client
  readOnly: true
{{- end }}
{{- end }}

{{- define "twinstream.kafkaVolumes" -}}
{{- if include "twinstream.kafkaSasl" . }}
- name: kafka-sasl
  secret:
    secretName: {{ include "twinstream.kafkaSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.sasl.passwordKey }}
        path: password
{{- end }}
{{- if .Values.kafka.tls.caConfigMap }}
- name: kafka-ca
  configMap:
    name: {{ .Values.kafka.tls.caConfigMap }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.crt
{{- else if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.crt
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.tls.clientCertSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "twinstream.apiSecretName" -}}
{{- default (printf "%s-api" (include "twinstream.fullname" .)) .Values.api.existingSecret }}
{{- end }}

{{- define "twinstream.influxSecretName" -}}
{{- default (printf "%s-influx" (include "twinstream.fullname" .)) .Values.influx.existingSecret }}
{{- end }}

{{/*
Every field of twinstream.settings.Settings (the TWINSTREAM_* environment variables
without the prefix, lower case). A unit test keeps this list equal to Settings.
*/}}
{{- define "twinstream.settingsFields" -}}
broker broker_storage app_id topic_namespace partitions data_dir store session_timeout_s batch_size batch_timeout_s checkpoint_interval_s twin_idle_evict_s gc_gen0_threshold batch_intake fetch_max_wait_ms twins_spec learner learner_params target prior_registry_url prior_registry_public_key prior_poll_interval_s prior_registry_timeout_s max_payload_bytes max_future_skew_s max_metrics gap_detection learn_from_synthetic synthetic_learn_weight sidecar_window sidecar_adaptive_fill sidecar_max_missed sidecar_generator_budget_s sidecar_warmup_records synth_generator_dir synth_gate_max_mae_ratio synth_gate_max_discriminative influx_url influx_api influx_org influx_bucket influx_token influx_batch_size influx_flush_interval_s influx_max_backoff_s metrics_port metrics_addr recovery_consistency_check log_level kafka_security_protocol kafka_sasl_mechanism kafka_sasl_username kafka_sasl_password kafka_sasl_password_file kafka_ssl_cafile kafka_ssl_certfile kafka_ssl_keyfile kafka_ssl_check_hostname kafka_connect_timeout_s lag_interval_s api_port api_addr api_advertised_url api_token
{{- end }}

{{/*
Settings the chart sets itself; values.config may not hold them.
*/}}
{{- define "twinstream.chartManagedFields" -}}
data_dir metrics_port metrics_addr influx_token api_token kafka_sasl_password kafka_sasl_password_file kafka_ssl_cafile kafka_ssl_certfile kafka_ssl_keyfile
{{- end }}

{{/*
A config value as an environment-variable string: strings as they are, numbers and
booleans as JSON (so 1000000 stays 1000000, not 1e+06).
*/}}
{{- define "twinstream.envValue" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
Fails the render on invalid combinations; included by the ConfigMap.
*/}}
{{- define "twinstream.validate" -}}
{{- $known := splitList " " (include "twinstream.settingsFields" .) }}
{{- $managed := splitList " " (include "twinstream.chartManagedFields" .) }}
{{- range $key, $value := .Values.config }}
{{- if has $key $managed }}
{{- fail (printf "config.%s is set by the chart (data_dir: worker.persistence.mountPath, metrics_port: metrics.port, influx_token: influx.token or influx.existingSecret, api_token: api.token or api.existingSecret, kafka_sasl_password and kafka_ssl_*file: the kafka block)" $key) }}
{{- end }}
{{- if not (has $key $known) }}
{{- fail (printf "config.%s is not a twinstream setting (known: %s)" $key (join ", " $known)) }}
{{- end }}
{{- end }}
{{- $protocol := default "PLAINTEXT" .Values.config.kafka_security_protocol }}
{{- if hasPrefix "SASL_" $protocol }}
{{- if not (or .Values.kafka.sasl.password .Values.kafka.sasl.existingSecret) }}
{{- fail (printf "config.kafka_security_protocol %s needs kafka.sasl.password or kafka.sasl.existingSecret" $protocol) }}
{{- end }}
{{- if not .Values.config.kafka_sasl_username }}
{{- fail (printf "config.kafka_security_protocol %s needs config.kafka_sasl_username" $protocol) }}
{{- end }}
{{- end }}
{{- if and .Values.kafka.tls.caConfigMap .Values.kafka.tls.caSecret }}
{{- fail "set kafka.tls.caConfigMap or kafka.tls.caSecret, not both" }}
{{- end }}
{{- if not .Values.config.broker }}
{{- fail "config.broker is required: the Kafka bootstrap URL, e.g. kafka://kafka.kafka.svc:9092" }}
{{- end }}
{{- if and .Values.sink.enabled (not .Values.config.influx_url) }}
{{- fail "config.influx_url is required when sink.enabled is true (or set sink.enabled=false)" }}
{{- end }}
{{- $partitions := .Values.config.partitions }}
{{- if not (kindIs "invalid" $partitions) }}
{{- if gt (int .Values.worker.replicas) (int $partitions) }}
{{- fail (printf "worker.replicas (%d) must not exceed config.partitions (%d): each partition is owned by one worker, extra workers idle" (int .Values.worker.replicas) (int $partitions)) }}
{{- end }}
{{- if and .Values.sink.enabled (gt (int .Values.sink.replicas) (int $partitions)) }}
{{- fail (printf "sink.replicas (%d) must not exceed config.partitions (%d)" (int .Values.sink.replicas) (int $partitions)) }}
{{- end }}
{{- if and .Values.sidecar.enabled (gt (int .Values.sidecar.replicas) (int $partitions)) }}
{{- fail (printf "sidecar.replicas (%d) must not exceed config.partitions (%d)" (int .Values.sidecar.replicas) (int $partitions)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Probe handler: GET /metrics from inside the container (works whatever address the
metrics server binds to).
*/}}
{{- define "twinstream.metricsProbeHandler" -}}
exec:
  command:
    - python
    - -c
    - "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['TWINSTREAM_METRICS_PORT'] + '/metrics', timeout=3)"
{{- end }}
