{{/*
Name of the application (app.kubernetes.io/name).
*/}}
{{- define "manifold.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's resources: fullnameOverride, else the release
name when it already contains the chart name, else "<release>-<chart>".
*/}}
{{- define "manifold.fullname" -}}
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

{{- define "manifold.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels that select the server's pods (Deployment, Services, PDB, policies).
*/}}
{{- define "manifold.selectorLabels" -}}
app.kubernetes.io/name: {{ include "manifold.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object of the release.
*/}}
{{- define "manifold.labels" -}}
helm.sh/chart: {{ include "manifold.chart" . }}
{{ include "manifold.selectorLabels" . }}
app.kubernetes.io/component: repo-server
app.kubernetes.io/part-of: argocd
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The bundled Redis: its name and labels.
*/}}
{{- define "manifold.redis.fullname" -}}
{{- printf "%s-redis" (include "manifold.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{- define "manifold.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "manifold.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "manifold.redis.labels" -}}
helm.sh/chart: {{ include "manifold.chart" . }}
{{ include "manifold.redis.selectorLabels" . }}
app.kubernetes.io/component: redis
app.kubernetes.io/part-of: argocd
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "manifold.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "manifold.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The server's image reference.
*/}}
{{- define "manifold.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{/*
Name of the ConfigMap the chart creates for a plugin sidecar.
Call with (dict "root" $ "sidecar" $sidecar).
*/}}
{{- define "manifold.sidecarConfigMapName" -}}
{{- printf "%s-cmp-%s" (include "manifold.fullname" .root | trunc 40 | trimSuffix "-") .sidecar.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Checks of values that Kubernetes would accept but that make no sense.
*/}}
{{- define "manifold.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownGracePeriodSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be larger than shutdownGracePeriodSeconds (%v): Kubernetes would kill the server before in-flight requests finish" .Values.terminationGracePeriodSeconds .Values.shutdownGracePeriodSeconds) -}}
{{- end -}}
{{- if not (has .Values.redis.mode (list "external" "bundled" "none")) -}}
{{- fail (printf "redis.mode must be external, bundled or none, not %q" .Values.redis.mode) -}}
{{- end -}}
{{- if and (ne .Values.redis.mode "external") (or .Values.redis.address .Values.redis.sentinel.hosts) -}}
{{- fail "redis.address and redis.sentinel.hosts are only used with redis.mode=external" -}}
{{- end -}}
{{- range .Values.plugins.sidecars -}}
{{- if not .name -}}
{{- fail "every plugins.sidecars entry needs a name" -}}
{{- end -}}
{{- if eq (empty .configMapName) (empty .files) -}}
{{- fail (printf "plugins.sidecars %s: set exactly one of configMapName and files" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
One `--flag=value` list item when the value is set (not "" or null; 0 and
false count as set). Call with (list "--flag" value).
*/}}
{{- define "manifold.opt" -}}
{{- $value := index . 1 -}}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
- {{ index . 0 }}={{ $value }}
{{- end -}}
{{- end -}}

{{/*
Arguments of `manifold serve`: one flag per value that is set.
Every flag here must be listed by `manifold serve --help` (tests/chart.rs
checks the rendered Deployment against the real binary).
*/}}
{{- define "manifold.serveArgs" -}}
{{- $v := .Values -}}
- serve
- --port={{ $v.containerPorts.server }}
- --metrics-port={{ $v.containerPorts.metrics }}
- --shutdown-grace-period={{ $v.shutdownGracePeriodSeconds }}s
{{- include "manifold.opt" (list "--address" $v.listenAddress) }}
{{- include "manifold.opt" (list "--metrics-address" $v.metricsListenAddress) }}
{{- if $v.disableTls }}
- --disable-tls
{{- end }}
{{- include "manifold.opt" (list "--logformat" $v.logFormat) }}
{{- include "manifold.opt" (list "--loglevel" $v.logLevel) }}
{{- include "manifold.opt" (list "--parallelismlimit" $v.parallelismLimit) }}
{{- include "manifold.opt" (list "--max-combined-directory-manifests-size" $v.maxCombinedDirectoryManifestsSize) }}
{{- if $v.includeHiddenDirectories }}
- --include-hidden-directories
{{- end }}
{{- include "manifold.opt" (list "--helm-path" $v.helmPath) }}
{{- include "manifold.opt" (list "--kustomize-path" $v.kustomizePath) }}
{{- include "manifold.opt" (list "--helm-registry-max-index-size" $v.limits.helmRegistryMaxIndexSize) }}
{{- include "manifold.opt" (list "--helm-manifest-max-extracted-size" $v.limits.helmManifestMaxExtractedSize) }}
{{- include "manifold.opt" (list "--streamed-manifest-max-tar-size" $v.limits.streamedManifestMaxTarSize) }}
{{- include "manifold.opt" (list "--streamed-manifest-max-extracted-size" $v.limits.streamedManifestMaxExtractedSize) }}
{{- include "manifold.opt" (list "--repo-cache-expiration" $v.cache.repoCacheExpiration) }}
{{- include "manifold.opt" (list "--revision-cache-expiration" $v.cache.revisionCacheExpiration) }}
{{- include "manifold.opt" (list "--revision-cache-lock-timeout" $v.cache.revisionCacheLockTimeout) }}
{{- include "manifold.opt" (list "--memory-cache-size" $v.cache.memoryCacheSize) }}
{{- if eq $v.redis.mode "none" }}
- --redis=
{{- else if eq $v.redis.mode "bundled" }}
- --redis={{ include "manifold.redis.fullname" . }}:6379
{{- else }}
{{- include "manifold.opt" (list "--redis" $v.redis.address) }}
{{- range $v.redis.sentinel.hosts }}
- --sentinel={{ . }}
{{- end }}
{{- include "manifold.opt" (list "--sentinelmaster" $v.redis.sentinel.master) }}
{{- end }}
{{- if ne $v.redis.mode "none" }}
{{- include "manifold.opt" (list "--redisdb" $v.redis.db) }}
{{- include "manifold.opt" (list "--redis-compress" $v.redis.compression) }}
{{- include "manifold.opt" (list "--redis-timeout" $v.redis.timeout) }}
{{- if $v.redis.tls.enabled }}
- --redis-use-tls
{{- end }}
{{- if $v.redis.tls.insecureSkipVerify }}
- --redis-insecure-skip-tls-verify
{{- end }}
{{- if $v.redis.tls.secretName }}
{{- with $v.redis.tls.certKey }}
- --redis-client-certificate=/app/config/redis/tls/{{ . }}
{{- end }}
{{- with $v.redis.tls.keyKey }}
- --redis-client-key=/app/config/redis/tls/{{ . }}
{{- end }}
{{- with $v.redis.tls.caKey }}
- --redis-ca-certificate=/app/config/redis/tls/{{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- include "manifold.opt" (list "--webhook-max-payload-size" $v.webhook.maxPayloadSize) }}
{{- if $v.webhook.argocdSecret.enabled }}
- --webhook-secrets-dir={{ $v.webhook.argocdSecret.mountPath }}
{{- end }}
{{- range $v.plugins.tarExclude }}
- --plugin-tar-exclude={{ . }}
{{- end }}
{{- range $v.plugins.wholeRepository }}
- --plugin-whole-repository={{ . }}
{{- end }}
{{- range $v.extraArgs }}
- {{ . }}
{{- end }}
{{- end -}}

{{/*
Environment variables Argo CD's repo-server Deployment reads from
argocd-cmd-params-cm, limited to those manifold reads: (variable, key).
*/}}
{{- define "manifold.cmdParamsEnv" -}}
ARGOCD_REPO_SERVER_LOGFORMAT: reposerver.log.format
ARGOCD_REPO_SERVER_LOGLEVEL: reposerver.log.level
ARGOCD_REPO_SERVER_PARALLELISM_LIMIT: reposerver.parallelism.limit
ARGOCD_REPO_SERVER_LISTEN_ADDRESS: reposerver.listen.address
ARGOCD_REPO_SERVER_DISABLE_TLS: reposerver.disable.tls
ARGOCD_REPO_CACHE_EXPIRATION: reposerver.repo.cache.expiration
ARGOCD_REVISION_CACHE_LOCK_TIMEOUT: reposerver.revision.cache.lock.timeout
ARGOCD_REPO_SERVER_MAX_COMBINED_DIRECTORY_MANIFESTS_SIZE: reposerver.max.combined.directory.manifests.size
ARGOCD_REPO_SERVER_PLUGIN_TAR_EXCLUSIONS: reposerver.plugin.tar.exclusions
ARGOCD_REPO_SERVER_PLUGIN_USE_MANIFEST_GENERATE_PATHS: reposerver.plugin.use.manifest.generate.paths
ARGOCD_REPO_SERVER_STREAMED_MANIFEST_MAX_TAR_SIZE: reposerver.streamed.manifest.max.tar.size
ARGOCD_REPO_SERVER_STREAMED_MANIFEST_MAX_EXTRACTED_SIZE: reposerver.streamed.manifest.max.extracted.size
ARGOCD_REPO_SERVER_HELM_MANIFEST_MAX_EXTRACTED_SIZE: reposerver.helm.manifest.max.extracted.size
ARGOCD_REPO_SERVER_INCLUDE_HIDDEN_DIRECTORIES: reposerver.include.hidden.directories
ARGOCD_GIT_MODULES_ENABLED: reposerver.enable.git.submodule
ARGOCD_GRPC_MAX_SIZE_MB: reposerver.grpc.max.size
REDIS_SERVER: redis.server
REDIS_SENTINEL_HOSTS: redis.sentinel.hosts
REDIS_SENTINEL_MASTER: redis.sentinel.master
REDIS_COMPRESSION: redis.compression
REDISDB: redis.db
ARGOCD_REDIS_KEY_PREFIX: redis.key.prefix
{{- end -}}
