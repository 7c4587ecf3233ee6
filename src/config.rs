//! Flags and environment variables, parsed and validated once at start-up
//! into each module's own configuration. Names are Argo CD's wherever Argo
//! CD has one, so an operator's existing settings keep working. This is
//! the only module that reads the environment.
//!
//! A value that does not parse stops start-up with a message naming the
//! flag or variable (Argo CD silently falls back to the default; see
//! docs/deviations.md).

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{exec, git, pipeline, render, server};

#[derive(Debug, Parser)]
#[command(
    name = "manifold",
    version,
    about = "A drop-in, faster repo-server for Argo CD"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once at start-up: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve Argo CD's repo-server gRPC API.
    Serve(ServeArgs),
    /// Serve a config management plugin as a sidecar (Argo CD's argocd-cmp-server protocol).
    CmpServer(crate::cmp_server::CmpServerArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address of the gRPC port.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_LISTEN_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub address: String,
    /// gRPC port.
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    /// Listen address of the HTTP (health, metrics) port.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_METRICS_LISTEN_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub metrics_address: String,
    /// HTTP (health, metrics) port.
    #[arg(long, default_value_t = 8084)]
    pub metrics_port: u16,
    /// Serve plaintext gRPC instead of TLS.
    #[arg(long, env = "ARGOCD_REPO_SERVER_DISABLE_TLS")]
    pub disable_tls: bool,
    /// CA of the client certificates to require (mTLS). Argo CD's default
    /// path; manifold refuses to start when the file exists, because it does
    /// not verify client certificates yet and must not silently accept any
    /// client.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_CLIENT_CA_PATH",
        default_value = "/app/config/reposerver/mtls/client-ca.crt"
    )]
    pub client_ca_path: PathBuf,
    /// On SIGTERM, how long to let in-flight requests finish before closing
    /// connections (keep it below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "MANIFOLD_SHUTDOWN_GRACE_PERIOD", default_value = "25s")]
    pub shutdown_grace_period: String,
    /// Log format: json or text.
    #[arg(long, env = "ARGOCD_REPO_SERVER_LOGFORMAT", default_value = "json")]
    pub logformat: String,
    /// Log level: debug, info, warn or error.
    #[arg(long, env = "ARGOCD_REPO_SERVER_LOGLEVEL", default_value = "info")]
    pub loglevel: String,
    /// OpenTelemetry collector (OTLP over gRPC, `host:port`) to send
    /// traces to; empty: no tracing.
    #[arg(long, env = "ARGOCD_REPO_SERVER_OTLP_ADDRESS", default_value = "")]
    pub otlp_address: String,
    /// Talk to the collector without TLS.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_OTLP_INSECURE",
        default_value = "true",
        value_parser = go_bool,
        action = clap::ArgAction::Set
    )]
    pub otlp_insecure: bool,
    /// Headers sent with every export (`key=value,key2=value2`).
    #[arg(long, env = "ARGOCD_REPO_SERVER_OTLP_HEADERS", default_value = "")]
    pub otlp_headers: String,
    /// Resource attributes (`key:value,key2:value2`).
    #[arg(long, env = "ARGOCD_REPO_SERVER_OTLP_ATTRS", default_value = "")]
    pub otlp_attrs: String,
    /// Share of traces sampled (0 to 1; a sampled parent is followed).
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_OTLP_SAMPLE_RATIO",
        default_value = "1.0"
    )]
    pub otlp_sample_ratio: String,
    /// Longest a client connection is served before the server asks the
    /// client to reconnect (HTTP/2 GOAWAY), so long-lived connections
    /// spread over new replicas; 0: forever.
    #[arg(long, env = "MANIFOLD_MAX_CONNECTION_AGE", default_value = "10m")]
    pub max_connection_age: String,
    /// Most bytes of object stores, snapshots and chart archives kept
    /// under `$TMPDIR` (a Kubernetes quantity); beyond it the least
    /// recently used are removed. 0: no limit.
    #[arg(long, env = "MANIFOLD_DISK_BUDGET", default_value = "0")]
    pub disk_budget: String,

    // Settings Argo CD reads from the environment only.
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_APP_CONF_PATH",
        default_value = "/app/config"
    )]
    pub app_conf_path: PathBuf,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_GRPC_MAX_SIZE_MB",
        default_value = "100"
    )]
    pub grpc_max_size_mb: String,
    #[arg(long, hide = true, env = "ARGOCD_EXEC_TIMEOUT", default_value = "90s")]
    pub exec_timeout: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_EXEC_FATAL_TIMEOUT",
        default_value = "10s"
    )]
    pub exec_fatal_timeout: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_GIT_ATTEMPTS_COUNT",
        default_value = "1"
    )]
    pub git_attempts_count: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_GIT_RETRY_DURATION",
        default_value = "250ms"
    )]
    pub git_retry_duration: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_GIT_RETRY_FACTOR",
        default_value = "2"
    )]
    pub git_retry_factor: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_GIT_RETRY_MAX_DURATION",
        default_value = "5s"
    )]
    pub git_retry_max_duration: String,
    #[arg(long, hide = true, env = "TMPDIR", default_value = "/tmp")]
    pub tmpdir: PathBuf,
    /// Most manifest generations at once; 0 means unlimited.
    #[arg(
        long = "parallelismlimit",
        env = "ARGOCD_REPO_SERVER_PARALLELISM_LIMIT",
        default_value = "0"
    )]
    pub parallelism_limit: String,
    /// Most bytes of manifest files one Directory app may combine (a
    /// Kubernetes quantity such as `10M` or `64Mi`); 0 means unlimited.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_MAX_COMBINED_DIRECTORY_MANIFESTS_SIZE",
        default_value = "10M"
    )]
    pub max_combined_directory_manifests_size: String,
    /// How long rendered manifests stay cached.
    #[arg(long, env = "ARGOCD_REPO_CACHE_EXPIRATION", default_value = "24h")]
    pub repo_cache_expiration: String,
    /// How long ref listings (branch and tag heads) stay cached.
    #[arg(long, env = "ARGOCD_RECONCILIATION_TIMEOUT", default_value = "3m")]
    pub revision_cache_expiration: String,
    /// Lifetime of the cross-replica ls-remote lock; 0 disables it.
    #[arg(
        long,
        env = "ARGOCD_REVISION_CACHE_LOCK_TIMEOUT",
        default_value = "10s"
    )]
    pub revision_cache_lock_timeout: String,
    /// Redis `host:port` for the shared cache. Unset: Argo CD's
    /// `argocd-redis:6379` inside Kubernetes, no shared cache elsewhere.
    #[arg(long, env = "REDIS_SERVER")]
    pub redis: Option<String>,
    #[arg(long = "redisdb", env = "REDISDB", default_value = "0")]
    pub redis_db: String,
    #[arg(
        long,
        env = "REDIS_USERNAME",
        default_value = "",
        hide_env_values = true
    )]
    pub redis_username: String,
    #[arg(
        long,
        env = "REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub redis_password: Secret,
    #[arg(long)]
    pub redis_use_tls: bool,
    #[arg(long)]
    pub redis_insecure_skip_tls_verify: bool,
    /// PEM client certificate for Redis (mutual TLS), with its key.
    #[arg(long)]
    pub redis_client_certificate: Option<PathBuf>,
    #[arg(long)]
    pub redis_client_key: Option<PathBuf>,
    /// PEM CA certificates for Redis; unset means the system's.
    #[arg(long)]
    pub redis_ca_certificate: Option<PathBuf>,
    /// Compression of shared cache values: gzip, none, or zstd.
    #[arg(long, env = "REDIS_COMPRESSION", default_value = "gzip")]
    pub redis_compress: String,
    /// Sentinel addresses (`host:port`, repeatable or comma-separated);
    /// when set, the master is the one they name.
    #[arg(long, env = "REDIS_SENTINEL_HOSTS", value_delimiter = ',')]
    pub sentinel: Vec<String>,
    #[arg(
        long,
        env = "REDIS_SENTINEL_USERNAME",
        default_value = "",
        hide_env_values = true
    )]
    pub sentinel_username: String,
    #[arg(
        long,
        env = "REDIS_SENTINEL_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub sentinel_password: Secret,
    #[arg(
        long = "sentinelmaster",
        env = "REDIS_SENTINEL_MASTER",
        default_value = "master"
    )]
    pub sentinel_master: String,
    /// A directory with the Redis credentials as files (`auth`,
    /// `auth_username`, `sentinel_auth`, `sentinel_username`); when set,
    /// the credential variables are ignored.
    #[arg(long, hide = true, env = "REDIS_CREDS_DIR_PATH")]
    pub redis_creds_dir_path: Option<PathBuf>,
    #[arg(long, hide = true, env = "ARGOCD_REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,
    /// Deadline of one Redis command (manifold's own).
    #[arg(long, env = "MANIFOLD_REDIS_TIMEOUT", default_value = "1s")]
    pub redis_timeout: String,
    /// Bytes the in-process cache may hold (manifold's own; a Kubernetes
    /// quantity).
    #[arg(long, env = "MANIFOLD_MEMORY_CACHE_SIZE", default_value = "256Mi")]
    pub memory_cache_size: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_PAUSE_GEN_AFTER_FAILED_ATTEMPTS",
        default_value = "3"
    )]
    pub pause_gen_after_failed_attempts: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_PAUSE_GEN_MINUTES",
        default_value = "60"
    )]
    pub pause_gen_minutes: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_PAUSE_GEN_REQUESTS",
        default_value = "0"
    )]
    pub pause_gen_requests: String,
    /// Largest webhook payload accepted (a Kubernetes quantity; Argo CD's
    /// `webhook.maxPayloadSizeMB` defaults to 50 MiB).
    #[arg(
        long,
        env = "MANIFOLD_WEBHOOK_MAX_PAYLOAD_SIZE",
        default_value = "50Mi"
    )]
    pub webhook_max_payload_size: String,
    /// A directory holding webhook secrets as files named like the keys
    /// of Argo CD's `argocd-secret` (`webhook.github.secret`,
    /// `webhook.gitlab.secret`, `webhook.bitbucket.uuid`,
    /// `webhook.bitbucketserver.secret`, `webhook.gogs.secret`,
    /// `webhook.azuredevops.username`, `webhook.azuredevops.password`):
    /// mount `argocd-secret` here. A flag or variable below wins over its
    /// file.
    #[arg(long, env = "MANIFOLD_WEBHOOK_SECRETS_DIR")]
    pub webhook_secrets_dir: Option<PathBuf>,
    #[arg(long, env = "MANIFOLD_WEBHOOK_GITHUB_SECRET")]
    pub webhook_github_secret: Option<Secret>,
    #[arg(long, env = "MANIFOLD_WEBHOOK_GITLAB_SECRET")]
    pub webhook_gitlab_secret: Option<Secret>,
    #[arg(long, env = "MANIFOLD_WEBHOOK_BITBUCKET_UUID")]
    pub webhook_bitbucket_uuid: Option<Secret>,
    #[arg(long, env = "MANIFOLD_WEBHOOK_BITBUCKETSERVER_SECRET")]
    pub webhook_bitbucketserver_secret: Option<Secret>,
    #[arg(long, env = "MANIFOLD_WEBHOOK_GOGS_SECRET")]
    pub webhook_gogs_secret: Option<Secret>,
    #[arg(long, env = "MANIFOLD_WEBHOOK_AZUREDEVOPS_USERNAME")]
    pub webhook_azuredevops_username: Option<Secret>,
    #[arg(long, env = "MANIFOLD_WEBHOOK_AZUREDEVOPS_PASSWORD")]
    pub webhook_azuredevops_password: Option<Secret>,
    /// Largest Helm repository `index.yaml` read.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_HELM_MANIFEST_MAX_INDEX_SIZE",
        default_value = "1G"
    )]
    pub helm_registry_max_index_size: String,
    /// Most bytes a Helm chart archive may extract to.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_HELM_MANIFEST_MAX_EXTRACTED_SIZE",
        default_value = "1G"
    )]
    pub helm_manifest_max_extracted_size: String,
    /// Largest `.tar.gz` accepted by `GenerateManifestWithFiles`.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_STREAMED_MANIFEST_MAX_TAR_SIZE",
        default_value = "100M"
    )]
    pub streamed_manifest_max_tar_size: String,
    /// Most bytes an uploaded archive may extract to.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_STREAMED_MANIFEST_MAX_EXTRACTED_SIZE",
        default_value = "1G"
    )]
    pub streamed_manifest_max_extracted_size: String,
    /// Where plugin sidecars create their sockets.
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_PLUGINSOCKFILEPATH",
        default_value = "/home/argocd/cmp-server/plugins"
    )]
    pub plugin_sock_file_path: PathBuf,
    /// Globs of repository paths never streamed to plugins (repeatable;
    /// the variable is `;`-separated).
    #[arg(
        long = "plugin-tar-exclude",
        env = "ARGOCD_REPO_SERVER_PLUGIN_TAR_EXCLUSIONS",
        value_delimiter = ';'
    )]
    pub plugin_tar_exclude: Vec<String>,
    /// Argo CD streams the common root of the app path and its
    /// `manifest-generate-paths` only with this flag; manifold always
    /// streams just those directories (see
    /// `--plugin-whole-repository`). Accepted for compatibility.
    #[arg(
        long,
        env = "ARGOCD_REPO_SERVER_PLUGIN_USE_MANIFEST_GENERATE_PATHS",
        default_value = "false",
        value_parser = go_bool,
        action = clap::ArgAction::Set
    )]
    pub plugin_use_manifest_generate_paths: bool,
    /// Plugins (names; `*` for all) that are sent the whole repository,
    /// as Argo CD does, instead of the app directory and the directories
    /// of its `manifest-generate-paths` (repeatable; `;`-separated).
    #[arg(long, env = "MANIFOLD_PLUGIN_WHOLE_REPOSITORY", value_delimiter = ';')]
    pub plugin_whole_repository: Vec<String>,
    /// Bytes per chunk of the archive streamed to a plugin.
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_CMP_CHUNK_SIZE",
        default_value = "1024"
    )]
    pub cmp_chunk_size: String,
    /// `GetGitDirectories` also lists directories whose name starts with `.`.
    #[arg(long, env = "ARGOCD_REPO_SERVER_INCLUDE_HIDDEN_DIRECTORIES")]
    pub include_hidden_directories: bool,
    /// Renders include git submodules (`true`/`false`, as Go reads it).
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_GIT_MODULES_ENABLED",
        default_value = "true",
        value_parser = go_bool,
        action = clap::ArgAction::Set
    )]
    pub git_modules_enabled: bool,
    /// CA certificates for HTTPS remotes, one file per host
    /// (`argocd-tls-certs-cm` is mounted here).
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_TLS_DATA_PATH",
        default_value = "/app/config/tls"
    )]
    pub tls_data_path: PathBuf,
    /// `ssh_known_hosts` for SSH remotes (`argocd-ssh-known-hosts-cm`).
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_SSH_DATA_PATH",
        default_value = "/app/config/ssh"
    )]
    pub ssh_data_path: PathBuf,
    /// Set by Kubernetes in every pod.
    #[arg(long, hide = true, env = "KUBERNETES_SERVICE_HOST")]
    pub kubernetes_service_host: Option<String>,
    /// The helm binary (v3 or v4); `helm` on PATH by default.
    #[arg(long, env = "MANIFOLD_HELM_PATH", default_value = "helm")]
    pub helm_path: PathBuf,
    /// The kustomize binary for sources that name no version.
    #[arg(long, env = "MANIFOLD_KUSTOMIZE_PATH", default_value = "kustomize")]
    pub kustomize_path: PathBuf,
}

/// A setting that must never be printed (passwords): `Debug` shows `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {name}: {message}")]
pub struct Error {
    /// The flag or environment variable at fault.
    pub name: &'static str,
    pub message: String,
}

/// Environment variables handed on to every child process when set.
const PASSED_THROUGH_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
];

fn invalid(name: &'static str, message: impl Into<String>) -> Error {
    Error {
        name,
        message: message.into(),
    }
}

/// Parses a Go duration (`90s`, `1m30s`, `250ms`, `1.5h`; `0` alone is
/// zero). Also accepts a day unit (`1d`), as Argo CD does.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    if text.starts_with('-') {
        return Err(format!("negative duration {text:?}"));
    }
    let mut total = 0f64;
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?}"))?;
        let number: f64 = rest[..number_end]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            unit => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration {text:?} is out of range"))
}

/// Parses a Kubernetes quantity (`10M`, `64Mi`, `1.5G`, `1e6`, `100`)
/// into a whole number of bytes, rounding up as Kubernetes does.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..]
                .parse()
                .map_err(|_| format!("{text:?} is not a quantity"))?;
            10f64.powi(power)
        }
        _ => return Err(format!("{text:?} is not a quantity")),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a quantity"))?;
    let bytes = (number * multiplier).ceil();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

fn socket_addr(name: &'static str, host: &str, port: u16) -> Result<SocketAddr, Error> {
    let ip: IpAddr = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| invalid(name, format!("{host:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

impl ServeArgs {
    /// Validates everything and builds the server configuration.
    pub fn server_config(&self) -> Result<server::Config, Error> {
        let duration =
            |name: &'static str, text: &str| parse_go_duration(text).map_err(|m| invalid(name, m));

        let max_size_mb: u64 = self
            .grpc_max_size_mb
            .trim()
            .parse()
            .ok()
            .filter(|mb| *mb <= i32::MAX as u64)
            .ok_or_else(|| {
                invalid(
                    "ARGOCD_GRPC_MAX_SIZE_MB",
                    format!("{:?} is not a size in MiB", self.grpc_max_size_mb),
                )
            })?;
        let exec_timeout = duration("ARGOCD_EXEC_TIMEOUT", &self.exec_timeout)?;
        let attempts: i64 = self.git_attempts_count.trim().parse().map_err(|_| {
            invalid(
                "ARGOCD_GIT_ATTEMPTS_COUNT",
                format!("{:?} is not an integer", self.git_attempts_count),
            )
        })?;
        let retry_factor: f32 = self
            .git_retry_factor
            .trim()
            .parse()
            .ok()
            .filter(|f: &f32| *f >= 1.0)
            .ok_or_else(|| {
                invalid(
                    "ARGOCD_GIT_RETRY_FACTOR",
                    format!("{:?} is not a number >= 1", self.git_retry_factor),
                )
            })?;
        let retry_max = duration(
            "ARGOCD_GIT_RETRY_MAX_DURATION",
            &self.git_retry_max_duration,
        )?;

        if !self.disable_tls && self.client_ca_path.is_file() {
            return Err(invalid(
                "--client-ca-path",
                format!(
                    "{} exists, but client certificate verification (mTLS) is not implemented yet",
                    self.client_ca_path.display()
                ),
            ));
        }
        let path = std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        let mut base_env = vec![("PATH".into(), path)];
        // Settings of the pod that git and the tools must see: proxies and
        // CA bundles. Nothing else is inherited.
        for name in PASSED_THROUGH_ENV {
            if let Some(value) = std::env::var_os(name) {
                base_env.push((OsString::from(*name), value));
            }
        }
        let parallelism_limit: i64 = self.parallelism_limit.trim().parse().map_err(|_| {
            invalid(
                "--parallelismlimit",
                format!("{:?} is not an integer", self.parallelism_limit),
            )
        })?;
        let max_combined = parse_quantity(&self.max_combined_directory_manifests_size)
            .map_err(|m| invalid("--max-combined-directory-manifests-size", m))?;
        let count = |name: &'static str, text: &str| -> Result<u64, Error> {
            text.trim()
                .parse::<u64>()
                .map_err(|_| invalid(name, format!("{text:?} is not a non-negative integer")))
        };
        let sentinels: Vec<String> = self
            .sentinel
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let compression = crate::cache::codec::Compression::parse(&self.redis_compress)
            .ok_or_else(|| {
                invalid(
                    "--redis-compress",
                    format!("{:?}: expected gzip, none or zstd", self.redis_compress),
                )
            })?;
        use crate::cache::redis::Endpoint;
        // Credentials: from files when a directory is given (a missing
        // file is empty), else from the variables.
        let [username, password, sentinel_username, sentinel_password] =
            match &self.redis_creds_dir_path {
                Some(dir) => [
                    "auth_username",
                    "auth",
                    "sentinel_username",
                    "sentinel_auth",
                ]
                .map(|name| {
                    std::fs::read_to_string(dir.join(name))
                        .map(|text| text.trim().to_string())
                        .unwrap_or_default()
                }),
                None => [
                    self.redis_username.clone(),
                    self.redis_password.0.clone(),
                    self.sentinel_username.clone(),
                    self.sentinel_password.0.clone(),
                ],
            };
        let endpoint = if !sentinels.is_empty() {
            Some(Endpoint::Sentinel {
                sentinels,
                master: self.sentinel_master.clone(),
                username: sentinel_username,
                password: sentinel_password,
            })
        } else {
            match &self.redis {
                Some(address) if !address.trim().is_empty() => {
                    Some(Endpoint::Direct(address.trim().to_string()))
                }
                Some(_) => None,
                None => self
                    .kubernetes_service_host
                    .as_ref()
                    .map(|_| Endpoint::Direct("argocd-redis:6379".to_string())),
            }
        };
        let read = |name: &'static str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, Error> {
            let Some(path) = path.as_ref().filter(|p| !p.as_os_str().is_empty()) else {
                return Ok(None);
            };
            std::fs::read(path)
                .map(Some)
                .map_err(|err| invalid(name, format!("{}: {err}", path.display())))
        };
        let client_certificate = match (
            read("--redis-client-certificate", &self.redis_client_certificate)?,
            read("--redis-client-key", &self.redis_client_key)?,
        ) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            _ => return Err(invalid(
                "--redis-client-certificate",
                "a client certificate needs its key (--redis-client-key), and the other way round",
            )),
        };
        let ca_certificate = read("--redis-ca-certificate", &self.redis_ca_certificate)?;
        let redis = match endpoint {
            Some(endpoint) => Some(crate::cache::redis::Config {
                endpoint,
                client_certificate,
                ca_certificate,
                db: self.redis_db.trim().parse().map_err(|_| {
                    invalid("REDISDB", format!("{:?} is not an integer", self.redis_db))
                })?,
                username,
                password,
                tls: self.redis_use_tls,
                insecure_skip_tls_verify: self.redis_insecure_skip_tls_verify,
                key_prefix: self.redis_key_prefix.clone(),
                timeout: duration("MANIFOLD_REDIS_TIMEOUT", &self.redis_timeout)?,
            }),
            None => None,
        };
        let cache = crate::cache::Config {
            memory_bytes: parse_quantity(&self.memory_cache_size)
                .map_err(|m| invalid("MANIFOLD_MEMORY_CACHE_SIZE", m))?,
            redis,
            compression,
            repo_cache_expiration: duration(
                "ARGOCD_REPO_CACHE_EXPIRATION",
                &self.repo_cache_expiration,
            )?,
            revision_cache_expiration: duration(
                "ARGOCD_RECONCILIATION_TIMEOUT",
                &self.revision_cache_expiration,
            )?,
            revision_cache_lock_timeout: duration(
                "ARGOCD_REVISION_CACHE_LOCK_TIMEOUT",
                &self.revision_cache_lock_timeout,
            )?,
        };
        let webhook_payload = parse_quantity(&self.webhook_max_payload_size)
            .map_err(|m| invalid("--webhook-max-payload-size", m))?;
        let secret = |given: &Option<Secret>, file: &str| -> Option<Secret> {
            given.clone().filter(|s| !s.0.is_empty()).or_else(|| {
                let dir = self.webhook_secrets_dir.as_ref()?;
                let text = std::fs::read_to_string(dir.join(file)).ok()?;
                let text = text.trim_end_matches(['\r', '\n']);
                (!text.is_empty()).then(|| Secret(text.to_string()))
            })
        };
        let webhook = crate::webhook::Config {
            max_payload_bytes: usize::try_from(webhook_payload).unwrap_or(usize::MAX),
            secrets: crate::webhook::providers::Secrets {
                github: secret(&self.webhook_github_secret, "webhook.github.secret"),
                gitlab: secret(&self.webhook_gitlab_secret, "webhook.gitlab.secret"),
                bitbucket_uuid: secret(&self.webhook_bitbucket_uuid, "webhook.bitbucket.uuid"),
                bitbucket_server: secret(
                    &self.webhook_bitbucketserver_secret,
                    "webhook.bitbucketserver.secret",
                ),
                gogs: secret(&self.webhook_gogs_secret, "webhook.gogs.secret"),
                azure_devops_username: secret(
                    &self.webhook_azuredevops_username,
                    "webhook.azuredevops.username",
                ),
                azure_devops_password: secret(
                    &self.webhook_azuredevops_password,
                    "webhook.azuredevops.password",
                ),
            },
        };
        let charts = crate::charts::Config {
            max_index_bytes: parse_quantity(&self.helm_registry_max_index_size)
                .map_err(|m| invalid("--helm-registry-max-index-size", m))?,
            max_extracted_bytes: parse_quantity(&self.helm_manifest_max_extracted_size)
                .map_err(|m| invalid("--helm-manifest-max-extracted-size", m))?,
            tls_data_path: self.tls_data_path.clone(),
            ..Default::default()
        };
        Ok(server::Config {
            webhook,
            charts,
            grpc_addr: socket_addr("--address", &self.address, self.port)?,
            http_addr: socket_addr(
                "--metrics-address",
                &self.metrics_address,
                self.metrics_port,
            )?,
            tls: if self.disable_tls {
                server::Tls::Disabled
            } else {
                let dir = self.app_conf_path.join("reposerver/tls");
                server::Tls::Enabled {
                    cert_path: dir.join("tls.crt"),
                    key_path: dir.join("tls.key"),
                }
            },
            max_message_bytes: usize::try_from(max_size_mb << 20).unwrap_or(usize::MAX),
            temp_dir: self.tmpdir.clone(),
            exec: exec::Config {
                timeout: (!exec_timeout.is_zero()).then_some(exec_timeout),
                fatal_timeout: duration("ARGOCD_EXEC_FATAL_TIMEOUT", &self.exec_fatal_timeout)?,
                max_stdout_bytes: 1 << 30,
                base_env,
            },
            pipeline: pipeline::Config {
                // Argo CD treats anything below 1 as unlimited.
                parallelism_limit: (parallelism_limit >= 1)
                    .then(|| usize::try_from(parallelism_limit).unwrap_or(usize::MAX)),
                max_combined_directory_manifests_bytes: (max_combined > 0).then_some(max_combined),
                pause_after_failed_attempts: u32::try_from(count(
                    "ARGOCD_PAUSE_GEN_AFTER_FAILED_ATTEMPTS",
                    &self.pause_gen_after_failed_attempts,
                )?)
                .unwrap_or(u32::MAX),
                pause_minutes: count("ARGOCD_PAUSE_GEN_MINUTES", &self.pause_gen_minutes)?,
                pause_requests: u32::try_from(count(
                    "ARGOCD_PAUSE_GEN_REQUESTS",
                    &self.pause_gen_requests,
                )?)
                .unwrap_or(u32::MAX),
                include_hidden_directories: self.include_hidden_directories,
                git_modules_enabled: self.git_modules_enabled,
                upload_limits: crate::source::tarball::Limits {
                    max_compressed: parse_quantity(&self.streamed_manifest_max_tar_size)
                        .map_err(|m| invalid("--streamed-manifest-max-tar-size", m))?,
                    max_extracted: parse_quantity(&self.streamed_manifest_max_extracted_size)
                        .map_err(|m| invalid("--streamed-manifest-max-extracted-size", m))?,
                    ..Default::default()
                },
            },
            cache,
            shutdown_grace: duration("--shutdown-grace-period", &self.shutdown_grace_period)?,
            max_connection_age: Some(duration("--max-connection-age", &self.max_connection_age)?)
                .filter(|age| !age.is_zero()),
            persistent_work_dir: true,
            disk_budget: Some(
                parse_quantity(&self.disk_budget).map_err(|m| invalid("--disk-budget", m))?,
            )
            .filter(|bytes| *bytes > 0),
            janitor_interval: std::time::Duration::from_secs(30),
            git: git::Config {
                git_program: "git".to_string(),
                // Argo CD clamps values below 1 to 1.
                attempts: attempts.clamp(1, u32::MAX as i64) as u32,
                retry_duration: duration("ARGOCD_GIT_RETRY_DURATION", &self.git_retry_duration)?,
                retry_factor,
                retry_max_duration: (!retry_max.is_zero()).then_some(retry_max),
                tls_data_path: self.tls_data_path.clone(),
                ssh_data_path: self.ssh_data_path.clone(),
            },
            render: render::Config {
                helm: self.helm_path.clone(),
                kustomize: self.kustomize_path.clone(),
                plugin_sockets: self.plugin_sock_file_path.clone(),
                plugin_files: render::PluginFiles {
                    exclude: self
                        .plugin_tar_exclude
                        .iter()
                        .filter(|glob| !glob.is_empty())
                        .cloned()
                        .collect(),
                    // As Argo CD: anything but a positive number is the
                    // default.
                    chunk_size: self
                        .cmp_chunk_size
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|size| *size > 0)
                        .unwrap_or(1024),
                    whole_repository: self.plugin_whole_repository.clone(),
                },
            },
        })
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it.
fn go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

/// The command line with Argo CD's program names mapped to manifold's
/// commands: run as (or given first) `argocd-repo-server`, it is `serve`;
/// `argocd-cmp-server`, `cmp-server`. Manifests written for Argo CD's image
/// (argo-helm's `args: [/usr/local/bin/argocd-repo-server, ...]`, plugin
/// sidecars running a copy named `argocd-cmp-server`) then work unchanged.
pub fn argo_cd_compatible_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let command = |arg: &std::ffi::OsString| -> Option<&'static str> {
        match std::path::Path::new(arg).file_name()?.to_str()? {
            "argocd-repo-server" => Some("serve"),
            "argocd-cmp-server" => Some("cmp-server"),
            _ => None,
        }
    };
    if let Some(first) = args.get(1).and_then(command) {
        args[1] = first.into();
    } else if let Some(program) = args.first().and_then(command) {
        args.insert(1, program.into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_go_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("5 parsecs").is_err());
        assert!(parse_go_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn builds_server_config_with_argo_cd_defaults() {
        let cli =
            Cli::try_parse_from(["manifold", "serve", "--disable-tls", "--port", "0"]).unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        let config = args.server_config().unwrap();
        assert_eq!(config.grpc_addr.port(), 0);
        assert_eq!(config.http_addr.port(), 8084);
        assert!(matches!(config.tls, server::Tls::Disabled));
        assert_eq!(config.exec.fatal_timeout, Duration::from_secs(10));
        assert_eq!(config.pipeline.parallelism_limit, None);
        assert_eq!(
            config.pipeline.max_combined_directory_manifests_bytes,
            Some(10_000_000)
        );
        let cli = Cli::try_parse_from([
            "manifold",
            "serve",
            "--parallelismlimit",
            "3",
            "--max-combined-directory-manifests-size",
            "0",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        let config = args.server_config().unwrap();
        assert_eq!(config.pipeline.parallelism_limit, Some(3));
        assert_eq!(config.pipeline.max_combined_directory_manifests_bytes, None);
    }

    #[test]
    fn redis_settings_and_credential_files() {
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("auth"), "s3cret\n").unwrap();
        let cli = Cli::try_parse_from([
            "manifold",
            "serve",
            "--redis",
            "redis.example:6379",
            "--redis-password",
            "ignored",
            "--redis-creds-dir-path",
            creds.path().to_str().unwrap(),
            "--redis-compress",
            "zstd",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        assert!(
            !format!("{args:?}").contains("ignored"),
            "Debug hides passwords"
        );
        let config = args.server_config().unwrap();
        let redis = config.cache.redis.unwrap();
        assert_eq!(
            redis.endpoint,
            crate::cache::redis::Endpoint::Direct("redis.example:6379".into())
        );
        assert_eq!(
            (redis.username.as_str(), redis.password.as_str()),
            ("", "s3cret")
        );
        assert_eq!(
            config.cache.compression,
            crate::cache::codec::Compression::Zstd
        );
        assert!(
            !format!("{redis:?}").contains("s3cret"),
            "Debug hides the password"
        );

        let cli = Cli::try_parse_from(["manifold", "serve", "--redis-compress", "lz4"]).unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        assert_eq!(args.server_config().unwrap_err().name, "--redis-compress");
    }

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(parse_quantity("10M").unwrap(), 10_000_000);
        assert_eq!(parse_quantity("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_quantity("1.5k").unwrap(), 1500);
        assert_eq!(parse_quantity("1e3").unwrap(), 1000);
        assert_eq!(parse_quantity("100").unwrap(), 100);
        assert_eq!(parse_quantity("0").unwrap(), 0);
        assert!(parse_quantity("10 MB").is_err());
        assert!(parse_quantity("M").is_err());
        assert!(parse_quantity("-1").is_err());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cli = Cli::try_parse_from(["manifold", "serve", "--exec-timeout", "soon"]).unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        let err = args.server_config().unwrap_err();
        assert_eq!(err.name, "ARGOCD_EXEC_TIMEOUT");
        let ca = tempfile::NamedTempFile::new().unwrap();
        let cli = Cli::try_parse_from([
            "manifold",
            "serve",
            "--client-ca-path",
            ca.path().to_str().unwrap(),
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        assert_eq!(args.server_config().unwrap_err().name, "--client-ca-path");
        let cli = Cli::try_parse_from(["manifold", "serve", "--address", "nowhere"]).unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        assert_eq!(args.server_config().unwrap_err().name, "--address");
    }

    #[test]
    fn argo_cd_program_names_map_to_commands() {
        let map = |args: &[&str]| -> Vec<String> {
            argo_cd_compatible_args(args.iter().map(std::ffi::OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            map(&[
                "/usr/local/bin/manifold",
                "/usr/local/bin/argocd-repo-server",
                "--port=8081"
            ]),
            ["/usr/local/bin/manifold", "serve", "--port=8081"]
        );
        assert_eq!(
            map(&["/var/run/argocd/argocd-cmp-server", "--loglevel", "info"]),
            [
                "/var/run/argocd/argocd-cmp-server",
                "cmp-server",
                "--loglevel",
                "info"
            ]
        );
        assert_eq!(
            map(&["/usr/local/bin/argocd-repo-server"]),
            ["/usr/local/bin/argocd-repo-server", "serve"]
        );
        assert_eq!(map(&["manifold", "serve"]), ["manifold", "serve"]);
    }
}
