{{/* Names, labels, the config file and the predictor container, shared by every template. */}}

{{- define "predictor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "predictor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "predictor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "predictor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "predictor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "predictor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "predictor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "predictor.sidecar" -}}
{{- eq .Values.mode "sidecar" -}}
{{- end -}}

{{/* The ServiceAccount the daemon runs as: its own in service mode, the application's pods' in sidecar mode. */}}
{{- define "predictor.serviceAccountName" -}}
{{- if and (eq .Values.mode "sidecar") (not .Values.sidecar.serviceAccount.create) -}}
{{- required "sidecar.serviceAccount.name: the application's ServiceAccount (or set sidecar.serviceAccount.create)" .Values.sidecar.serviceAccount.name -}}
{{- else -}}
{{- include "predictor.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "predictor.leaseName" -}}
{{- if .Values.leaderElection.leaseName -}}
{{- .Values.leaderElection.leaseName -}}
{{- else if eq .Values.mode "sidecar" -}}
{{- printf "%s-%s" (include "predictor.fullname" .) .Values.sidecar.deploymentName | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "predictor.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Fails the render with a message naming the value, before any object is produced. */}}
{{- define "predictor.validate" -}}
{{- if not (has .Values.mode (list "service" "sidecar")) -}}
{{- fail (printf "mode: expected service or sidecar, got %q" .Values.mode) -}}
{{- end -}}
{{- if eq .Values.mode "service" -}}
{{- if not .Values.targets -}}
{{- fail "targets: expected at least one {namespace, selector, names} to watch in service mode" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicaCount: %d replicas need leaderElection.enabled=true (only the leader may act)" (int .Values.replicaCount)) -}}
{{- end -}}
{{- else -}}
{{- if not .Values.sidecar.deploymentName -}}
{{- fail "sidecar.deploymentName: required in sidecar mode (the application Deployment to watch)" -}}
{{- end -}}
{{- if not (has .Values.sidecar.deploymentNameFrom (list "value" "label")) -}}
{{- fail (printf "sidecar.deploymentNameFrom: expected value or label, got %q" .Values.sidecar.deploymentNameFrom) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Volume names carry a predictor- prefix so that the sidecar's never clash with the application's. */}}
{{- define "predictor.tokenDir" -}}/var/run/secrets/predictor{{- end -}}

{{/* The config file (predictor/config.py format). ${VAR} is expanded by the daemon from its environment. */}}
{{- define "predictor.config" -}}
{{- $tokenDir := include "predictor.tokenDir" . -}}
prometheus:
  url: {{ .Values.prometheus.url | quote }}
  {{- with .Values.prometheus.bearerToken.existingSecret }}
  bearer_token_file: {{ printf "%s/prometheus/token" $tokenDir | quote }}
  {{- end }}
  {{- with .Values.prometheus.ca.configMap }}
  ca_file: {{ printf "%s/prometheus-ca/ca.crt" $tokenDir | quote }}
  {{- end }}
  verify_tls: {{ .Values.prometheus.verifyTLS }}
  timeout: {{ .Values.prometheus.timeout | quote }}
{{- if .Values.alertmanager.url }}
alertmanager:
  url: {{ .Values.alertmanager.url | quote }}
  {{- with .Values.alertmanager.generatorURL }}
  generator_url: {{ . | quote }}
  {{- end }}
  {{- with .Values.alertmanager.bearerToken.existingSecret }}
  bearer_token_file: {{ printf "%s/alertmanager/token" $tokenDir | quote }}
  {{- end }}
  {{- with .Values.alertmanager.ca.configMap }}
  ca_file: {{ printf "%s/alertmanager-ca/ca.crt" $tokenDir | quote }}
  {{- end }}
  verify_tls: {{ .Values.alertmanager.verifyTLS }}
  timeout: {{ .Values.alertmanager.timeout | quote }}
{{- end }}
targets:
{{- if eq .Values.mode "sidecar" }}
  - namespace: "${POD_NAMESPACE}"
    names:
      - "${DEPLOYMENT_NAME}"
{{- else }}
{{- range .Values.targets }}
  - namespace: {{ required "targets[].namespace: required" .namespace | quote }}
    {{- with .selector }}
    selector: {{ . | quote }}
    {{- end }}
    {{- with .names }}
    names:
      {{- range . }}
      - {{ . | quote }}
      {{- end }}
    {{- end }}
{{- end }}
{{- end }}
{{- with .Values.metrics }}
metrics:
  {{- toYaml . | nindent 2 }}
{{- end }}
policy:
  action: {{ .Values.policy.action | quote }}
  dry_run: {{ .Values.policy.dryRun }}
  bake: {{ .Values.policy.bake | quote }}
  horizon: {{ .Values.policy.horizon | quote }}
  interval: {{ .Values.policy.interval | quote }}
  consecutive: {{ .Values.policy.consecutive }}
  alert_threshold: {{ .Values.policy.alertThreshold }}
  risk_threshold: {{ .Values.policy.riskThreshold }}
  undo_threshold: {{ .Values.policy.undoThreshold }}
  blind_after: {{ .Values.policy.blindAfter }}
  blind_action: {{ .Values.policy.blindAction | quote }}
  lookback: {{ .Values.policy.lookback | quote }}
server:
  host: "0.0.0.0"
  port: {{ .Values.server.port }}
{{- with .Values.server.externalUrl }}
  external_url: {{ . | quote }}
{{- end }}
logging:
  format: {{ .Values.logging.format | quote }}
  level: {{ .Values.logging.level | quote }}
models:
  scorer: {{ .Values.models.scorer | quote }}
{{- if .Values.retraining.enabled }}
  dir: /models
  reload: {{ .Values.models.reload | quote }}
{{- end }}
{{- end -}}

{{- define "predictor.claimName" -}}
{{- default (printf "%s-models" (include "predictor.fullname" .)) .Values.retraining.persistence.existingClaim -}}
{{- end -}}

{{- define "predictor.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Mounts shared by the daemon and the retraining job: config, /tmp, Prometheus token and CA. */}}
{{- define "predictor.commonMounts" -}}
{{- $tokenDir := include "predictor.tokenDir" . -}}
- name: predictor-config
  mountPath: /etc/predictor
  readOnly: true
- name: predictor-tmp
  mountPath: /tmp
{{- if .Values.prometheus.bearerToken.existingSecret }}
- name: predictor-prometheus-token
  mountPath: {{ $tokenDir }}/prometheus
  readOnly: true
{{- end }}
{{- if .Values.prometheus.ca.configMap }}
- name: predictor-prometheus-ca
  mountPath: {{ $tokenDir }}/prometheus-ca
  readOnly: true
{{- end }}
{{- if and .Values.alertmanager.url .Values.alertmanager.bearerToken.existingSecret }}
- name: predictor-alertmanager-token
  mountPath: {{ $tokenDir }}/alertmanager
  readOnly: true
{{- end }}
{{- if and .Values.alertmanager.url .Values.alertmanager.ca.configMap }}
- name: predictor-alertmanager-ca
  mountPath: {{ $tokenDir }}/alertmanager-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "predictor.commonVolumes" -}}
- name: predictor-config
  configMap:
    name: {{ include "predictor.fullname" . }}-config
- name: predictor-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.prometheus.bearerToken.existingSecret }}
- name: predictor-prometheus-token
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.prometheus.bearerToken.key }}
        path: token
{{- end }}
{{- with .Values.prometheus.ca.configMap }}
- name: predictor-prometheus-ca
  configMap:
    name: {{ . }}
    items:
      - key: {{ $.Values.prometheus.ca.key }}
        path: ca.crt
{{- end }}
{{- if .Values.alertmanager.url }}
{{- with .Values.alertmanager.bearerToken.existingSecret }}
- name: predictor-alertmanager-token
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.alertmanager.bearerToken.key }}
        path: token
{{- end }}
{{- with .Values.alertmanager.ca.configMap }}
- name: predictor-alertmanager-ca
  configMap:
    name: {{ . }}
    items:
      - key: {{ $.Values.alertmanager.ca.key }}
        path: ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* The daemon's volumes: the common ones, the models claim, and in sidecar mode its own API token. */}}
{{- define "predictor.volumes" -}}
{{ include "predictor.commonVolumes" . }}
{{- if .Values.retraining.enabled }}
- name: predictor-models
  persistentVolumeClaim:
    claimName: {{ include "predictor.claimName" . }}
    readOnly: true
{{- end }}
{{- if eq .Values.mode "sidecar" }}
- name: predictor-kube-api-access
  projected:
    defaultMode: 420
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end }}
{{- end -}}

{{/* The predictor container: the service Deployment's only container, or the sidecar. */}}
{{- define "predictor.container" -}}
{{- $sidecar := eq .Values.mode "sidecar" -}}
- name: predictor
  image: {{ include "predictor.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - run
    - --config
    - /etc/predictor/config.yaml
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- if $sidecar }}
    - name: DEPLOYMENT_NAME
      {{- if eq .Values.sidecar.deploymentNameFrom "label" }}
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['app.kubernetes.io/name']
      {{- else }}
      value: {{ .Values.sidecar.deploymentName | quote }}
      {{- end }}
    {{- end }}
    {{- if .Values.leaderElection.enabled }}
    - name: PREDICTOR_LEADER_ELECTION
      value: "true"
    - name: PREDICTOR_LEASE_NAME
      value: {{ include "predictor.leaseName" . | quote }}
    - name: PREDICTOR_LEASE_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: PREDICTOR_LEASE_DURATION
      value: {{ .Values.leaderElection.leaseDuration | quote }}
    - name: PREDICTOR_RENEW_DEADLINE
      value: {{ .Values.leaderElection.renewDeadline | quote }}
    - name: PREDICTOR_RETRY_PERIOD
      value: {{ .Values.leaderElection.retryPeriod | quote }}
    {{- end }}
  ports:
    - name: predictor-http
      containerPort: {{ .Values.server.port }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /healthz
      port: predictor-http
    periodSeconds: 2
    failureThreshold: 30
  livenessProbe:
    httpGet:
      path: /healthz
      port: predictor-http
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: {{ if $sidecar }}{{ .Values.sidecar.readinessPath }}{{ else }}/readyz{{ end }}
      port: predictor-http
    periodSeconds: 5
    timeoutSeconds: 2
    failureThreshold: 3
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- include "predictor.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    {{- include "predictor.commonMounts" . | nindent 4 }}
    {{- if .Values.retraining.enabled }}
    - name: predictor-models
      mountPath: /models
      readOnly: true
    {{- end }}
    {{- if $sidecar }}
    - name: predictor-kube-api-access
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- end }}
{{- end -}}

{{/* What to merge into the application's Deployment in sidecar mode: a strategic-merge patch. */}}
{{- define "predictor.sidecarPatch" -}}
spec:
  template:
    spec:
      serviceAccountName: {{ include "predictor.serviceAccountName" . }}
      # The API token is mounted into the predictor container only, not into the application's.
      automountServiceAccountToken: false
      containers:
        {{- include "predictor.container" . | nindent 8 }}
      volumes:
        {{- include "predictor.volumes" . | nindent 8 }}
{{- end -}}
