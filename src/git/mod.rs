//! Git: listing a remote's refs, resolving revisions, and one bare object
//! store per remote under the work directory.
//!
//! The `git` CLI does the network work (ls-remote, fetch): it speaks protocol
//! v2, handles credential helpers, proxies and LFS, and it runs under the
//! process supervisor so it can be timed out and killed with its children.
//! `git2` does the in-process reads of a store (does a commit exist, rev-parse
//! of an abbreviated SHA, exporting a tree), which saves a process per read.
//!
//! This module must not render anything and must not know about protobuf.

pub mod cloud;
pub mod github_app;
pub mod inspect;
mod remote;
mod store;
mod submodules;
pub mod tree;

use std::time::Duration;

pub use remote::{is_abbreviated_sha, is_full_sha, RemoteRef, RemoteRefs, Resolved};
pub use store::{ExportExtras, ExportReport, RepoStore, Stores};

use crate::domain::RepoUrl;
use crate::exec;

/// Opens the object store `store` with the object stores `alternates`
/// (git directories: those of submodules) readable through it, in this
/// process only. Blocking.
pub fn open_with_alternates(
    store: &std::path::Path,
    alternates: &[std::path::PathBuf],
) -> Result<git2::Repository, git2::Error> {
    let repo = git2::Repository::open_bare(store)?;
    if !alternates.is_empty() {
        let odb = repo.odb()?;
        for alternate in alternates {
            odb.add_disk_alternate(&alternate.join("objects").to_string_lossy())?;
        }
    }
    Ok(repo)
}

/// The network operations git performs for us.
#[derive(Debug, Clone, Copy)]
enum Operation {
    LsRemote,
    Fetch,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::LsRemote => "ls-remote",
            Operation::Fetch => "fetch",
        }
    }
}

/// Git settings, from Argo CD's environment variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// `git` program to run.
    pub git_program: String,
    /// `ARGOCD_GIT_ATTEMPTS_COUNT`: attempts of ls-remote (at least 1).
    pub attempts: u32,
    /// `ARGOCD_GIT_RETRY_DURATION`: first backoff.
    pub retry_duration: Duration,
    /// `ARGOCD_GIT_RETRY_FACTOR`: backoff growth.
    pub retry_factor: f32,
    /// `ARGOCD_GIT_RETRY_MAX_DURATION`: backoff cap; `None` = no cap.
    pub retry_max_duration: Option<Duration>,
    /// `ARGOCD_TLS_DATA_PATH`: a CA bundle per host (file named after the
    /// host) for HTTPS remotes.
    pub tls_data_path: std::path::PathBuf,
    /// `ARGOCD_SSH_DATA_PATH`: holds `ssh_known_hosts`.
    pub ssh_data_path: std::path::PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            git_program: "git".to_string(),
            attempts: 1,
            retry_duration: Duration::from_millis(250),
            retry_factor: 2.0,
            retry_max_duration: Some(Duration::from_secs(5)),
            tls_data_path: "/app/config/tls".into(),
            ssh_data_path: "/app/config/ssh".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote could not be listed (unreachable, not a repository, auth).
    #[error("failed to list refs of repository {repo_url}: {stderr_tail}")]
    ListRefsFailed {
        repo_url: String,
        stderr_tail: String,
    },
    #[error("failed to fetch from repository {repo_url}: {stderr_tail}")]
    FetchFailed {
        repo_url: String,
        stderr_tail: String,
    },
    /// No ref or commit of that name.
    #[error("unable to resolve '{revision}' to a commit SHA: revision not found in {repo_url}")]
    RevisionNotFound { repo_url: String, revision: String },
    #[error("revision '{revision}' is ambiguous in {repo_url}")]
    AmbiguousRevision { repo_url: String, revision: String },
    #[error("git {operation} on {repo_url} timed out after {after:?}")]
    TimedOut {
        repo_url: String,
        operation: &'static str,
        after: Duration,
    },
    /// The git program could not be run at all.
    #[error("could not run git: {message}")]
    GitUnavailable { message: String },
    /// The failure of a listing this request shared with others.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
    /// Reading or writing a local object store failed.
    #[error("local object store of {repo_url} failed: {message}")]
    Store { repo_url: String, message: String },
    /// The repository's credentials could not be turned into something
    /// git can use (a GitHub App token request failed).
    #[error("credentials for {repo_url} failed: {message}")]
    Credentials { repo_url: String, message: String },
    /// A submodule of the commit could not be fetched.
    #[error("submodule {path:?} of {repo_url}: {message}")]
    Submodule {
        repo_url: String,
        path: String,
        message: String,
        /// The failure fetching it, if that was the problem.
        cause: Option<Box<Error>>,
    },
}

impl Error {
    /// Failures that may pass on retry (network hiccups, server overload).
    fn is_transient(&self) -> bool {
        match self {
            Error::ListRefsFailed { stderr_tail, .. } | Error::FetchFailed { stderr_tail, .. } => {
                let text = stderr_tail.to_ascii_lowercase();
                [
                    "timed out",
                    "timeout",
                    "connection reset",
                    "connection refused",
                    "early eof",
                    "unexpected disconnect",
                    "the remote end hung up",
                    "returned error: 5",
                    "returned error: 429",
                    "temporary failure",
                ]
                .iter()
                .any(|needle| text.contains(needle))
            }
            Error::TimedOut { .. } => true,
            Error::Shared(inner) => inner.is_transient(),
            Error::RevisionNotFound { .. }
            | Error::Credentials { .. }
            | Error::AmbiguousRevision { .. }
            | Error::GitUnavailable { .. }
            | Error::Store { .. }
            | Error::Submodule { .. } => false,
        }
    }

    /// Whether the remote refused our credentials (or we had none it
    /// accepts), or its identity could not be verified.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            Error::ListRefsFailed { stderr_tail, .. } | Error::FetchFailed { stderr_tail, .. } => {
                let text = stderr_tail.to_ascii_lowercase();
                [
                    "authentication failed",
                    "could not read username",
                    "could not read password",
                    "permission denied (publickey",
                    "host key verification failed",
                    "returned error: 401",
                    "returned error: 403",
                    "invalid username or password",
                ]
                .iter()
                .any(|needle| text.contains(needle))
            }
            Error::Shared(inner) => inner.is_auth_failure(),
            Error::Submodule {
                cause: Some(inner), ..
            } => inner.is_auth_failure(),
            _ => false,
        }
    }

    /// Maps a failed git run to an error of `operation` on `repo_url`.
    fn from_exec(err: exec::Error, repo_url: &RepoUrl, operation: Operation) -> Self {
        let repo_url = repo_url.redacted();
        match err {
            exec::Error::Spawn { source, .. } => Error::GitUnavailable {
                message: source.to_string(),
            },
            exec::Error::TimedOut { after, .. } => Error::TimedOut {
                repo_url,
                operation: operation.name(),
                after,
            },
            exec::Error::Failed { stderr_tail, .. } => {
                let stderr_tail = crate::domain::redact_url(&stderr_tail);
                match operation {
                    Operation::Fetch => Error::FetchFailed {
                        repo_url,
                        stderr_tail,
                    },
                    Operation::LsRemote => Error::ListRefsFailed {
                        repo_url,
                        stderr_tail,
                    },
                }
            }
            exec::Error::OutputTooLarge { .. } | exec::Error::Io { .. } => Error::Store {
                repo_url,
                message: err.to_string(),
            },
        }
    }
}

/// Answers git's credential requests from two environment variables, so
/// credentials never appear on a command line (where any local user could
/// read them in /proc).
const ENV_CREDENTIAL_HELPER: &str =
    "!f() { test \"$1\" = get || exit 0; printf 'username=%s\\n' \"$MANIFOLD_GIT_USERNAME\"; \
     test -n \"$MANIFOLD_GIT_PASSWORD\" && printf 'password=%s\\n' \"$MANIFOLD_GIT_PASSWORD\"; exit 0; }; f";

/// The environment that lets a `git` run elsewhere (a plugin sidecar's
/// commands, when the plugin sets `provideGitCreds`) authenticate to
/// `repo_url` over HTTPS like the repo-server does: the username and
/// password or token through the environment credential helper, a bearer
/// or forced basic `Authorization` header, `GIT_SSL_NO_VERIFY` when
/// insecure. Keys and client certificates are files private to this
/// process and are not passed on.
pub fn credential_env(repo_url: &RepoUrl) -> Vec<(String, String)> {
    let Some(credentials) = repo_url.credentials() else {
        return Vec::new();
    };
    let mut env = Vec::new();
    let mut settings: Vec<(&str, String)> = Vec::new();
    let (username, password) = (&credentials.username, &credentials.password);
    let clean = |text: &str| !text.contains(['\n', '\r', '\0']);
    if (!username.is_empty() || !password.is_empty()) && clean(username) && clean(password) {
        let username = if username.is_empty() {
            "x-access-token"
        } else {
            username
        };
        env.push(("MANIFOLD_GIT_USERNAME".to_string(), username.to_string()));
        env.push(("MANIFOLD_GIT_PASSWORD".to_string(), password.clone()));
        settings.push(("credential.helper", ENV_CREDENTIAL_HELPER.to_string()));
        if credentials.force_http_basic_auth {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            settings.push(("http.extraHeader", format!("Authorization: Basic {token}")));
        }
    }
    if !credentials.bearer_token.is_empty() && clean(&credentials.bearer_token) {
        settings.push((
            "http.extraHeader",
            format!("Authorization: Bearer {}", credentials.bearer_token),
        ));
    }
    if credentials.insecure {
        env.push(("GIT_SSL_NO_VERIFY".to_string(), "true".to_string()));
    }
    if !settings.is_empty() {
        env.push(("GIT_CONFIG_COUNT".to_string(), settings.len().to_string()));
        for (i, (key, value)) in settings.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), key.to_string()));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
        }
    }
    env
}

/// A git command for talking to a remote: the invocation, the URL to put
/// on its command line (never with credentials), and the private files
/// (keys, certificates) it reads, removed when this is dropped.
pub(crate) struct GitCommand {
    pub invocation: exec::Invocation,
    pub url: String,
    _files: Option<tempfile::TempDir>,
}

/// A git invocation for talking to `repo_url`. Every git process gets: no
/// prompts, no user or global configuration, no LFS smudging, no background
/// or automatic maintenance. Credentials never reach a command line:
/// passwords and tokens go to git through a credential helper reading the
/// environment (or an `http.extraHeader` set through the environment);
/// keys and client certificates through files in a private directory.
fn git_invocation(
    config: &Config,
    cwd: &std::path::Path,
    repo_url: &RepoUrl,
) -> Result<GitCommand, Error> {
    let mut invocation = exec::Invocation::new(&config.git_program, cwd)
        .env("HOME", "/dev/null")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Never pick up a repository above the working directory.
        .env("GIT_CEILING_DIRECTORIES", cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("GIT_LFS_SKIP_SMUDGE", "1");
    let mut settings: Vec<(&str, String)> = vec![
        ("maintenance.autoDetach", "false".into()),
        ("gc.autoDetach", "false".into()),
        ("gc.auto", "0".into()),
        ("maintenance.auto", "false".into()),
    ];
    let store_error = |err: std::io::Error| Error::Store {
        repo_url: repo_url.redacted(),
        message: format!("cannot write credentials for git: {err}"),
    };
    let credentials = repo_url.credentials().cloned().unwrap_or_default();
    let (url, in_url) = url_for_git(repo_url);
    // The Repository's username and password win over userinfo in the URL.
    let (username, password) =
        if !credentials.username.is_empty() || !credentials.password.is_empty() {
            (credentials.username.clone(), credentials.password.clone())
        } else if let Some(split) = in_url {
            (split.username, split.password)
        } else {
            (String::new(), String::new())
        };
    // A line break would end the credential protocol's field early (and
    // could add fields): refuse rather than send something else.
    if [&username, &password]
        .iter()
        .any(|text| text.contains(['\n', '\r', '\0']))
    {
        return Err(Error::Credentials {
            repo_url: repo_url.redacted(),
            message: "the username or password contains a line break".to_string(),
        });
    }
    if !username.is_empty() || !password.is_empty() {
        // Argo CD's default user for a bare token.
        let username = if username.is_empty() {
            "x-access-token".to_string()
        } else {
            username
        };
        if credentials.force_http_basic_auth {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            settings.push(("http.extraHeader", format!("Authorization: Basic {token}")));
        }
        invocation = invocation
            .env("MANIFOLD_GIT_USERNAME", username)
            .env("MANIFOLD_GIT_PASSWORD", password);
        settings.push(("credential.helper", ENV_CREDENTIAL_HELPER.to_string()));
    }
    if !credentials.bearer_token.is_empty() {
        settings.push((
            "http.extraHeader",
            format!("Authorization: Bearer {}", credentials.bearer_token),
        ));
    }
    let needs_files = !credentials.ssh_private_key.is_empty()
        || !credentials.tls_client_cert.is_empty()
        || !credentials.tls_client_key.is_empty();
    let files = if needs_files {
        Some(
            tempfile::Builder::new()
                .prefix("manifold-creds-")
                .tempdir_in(private_dir())
                .map_err(store_error)?,
        )
    } else {
        None
    };
    let write = |name: &str, content: &str| -> Result<std::path::PathBuf, Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = files.as_ref().map(|d| d.path()).unwrap_or(cwd);
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(store_error)?;
        file.write_all(content.as_bytes()).map_err(store_error)?;
        // ssh refuses a key without a final newline.
        if !content.ends_with('\n') {
            file.write_all(b"\n").map_err(store_error)?;
        }
        Ok(path)
    };
    // HTTPS: client certificate, CA, verification.
    if !credentials.tls_client_cert.is_empty() && !credentials.tls_client_key.is_empty() {
        invocation = invocation
            .env(
                "GIT_SSL_CERT",
                write("client.crt", &credentials.tls_client_cert)?,
            )
            .env(
                "GIT_SSL_KEY",
                write("client.key", &credentials.tls_client_key)?,
            );
    }
    if credentials.insecure {
        invocation = invocation.env("GIT_SSL_NO_VERIFY", "true");
    } else if let Some(ca) = crate::domain::url_host(&url)
        .map(|host| config.tls_data_path.join(host))
        .filter(|path| path.is_file())
    {
        invocation = invocation.env("GIT_SSL_CAINFO", ca);
    }
    // SSH: the key, and host keys checked against Argo CD's known hosts
    // (or not at all when insecure).
    let mut ssh = vec!["ssh".to_string(), "-o".into(), "BatchMode=yes".into()];
    if !credentials.ssh_private_key.is_empty() {
        let key = write("ssh.key", &credentials.ssh_private_key)?;
        ssh.extend([
            "-i".into(),
            shell_quote(&key.to_string_lossy()),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    if credentials.insecure {
        ssh.extend([
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
        ]);
    } else {
        let known_hosts = config.ssh_data_path.join("ssh_known_hosts");
        ssh.extend([
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                shell_quote(&known_hosts.to_string_lossy())
            ),
        ]);
    }
    invocation = invocation.env("GIT_SSH_COMMAND", ssh.join(" "));
    if !credentials.proxy.is_empty() {
        for name in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            invocation = invocation.env(name, &credentials.proxy);
        }
        for name in ["no_proxy", "NO_PROXY"] {
            invocation = invocation.env(name, &credentials.no_proxy);
        }
    }
    invocation = invocation.env("GIT_CONFIG_COUNT", settings.len().to_string());
    for (i, (key, value)) in settings.into_iter().enumerate() {
        invocation = invocation
            .env(format!("GIT_CONFIG_KEY_{i}"), key)
            .env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    Ok(GitCommand {
        invocation,
        url,
        _files: files,
    })
}

/// The URL to give git, and the credentials taken out of it. Only HTTP(S)
/// URLs lose their userinfo (to the credential helper); any other scheme
/// (`ssh://git@host/...`) keeps its user, which names the account, and
/// drops only a password.
fn url_for_git(repo_url: &RepoUrl) -> (String, Option<crate::domain::UrlCredentials>) {
    let raw = repo_url.as_str();
    let lower = raw.to_ascii_lowercase();
    let Some(split) = repo_url.split_credentials() else {
        return (raw.to_string(), None);
    };
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return (split.url_without_userinfo.clone(), Some(split));
    }
    let Some(scheme_end) = raw.find("://").map(|i| i + 3) else {
        return (raw.to_string(), None);
    };
    let rest = &raw[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (raw.to_string(), None);
    };
    let user = rest[..at].split(':').next().unwrap_or_default();
    (
        format!("{}{user}@{}", &raw[..scheme_end], &rest[at + 1..]),
        None,
    )
}

/// Where credential files go: memory-backed `/dev/shm` when there is one
/// (as Argo CD), else the temporary directory.
fn private_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Single-quotes `text` for the shell git runs `GIT_SSH_COMMAND` with.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn for_git(url: &str) -> (String, Option<(String, String)>) {
        let (url, split) = url_for_git(&RepoUrl::parse(url).unwrap());
        (url, split.map(|s| (s.username, s.password)))
    }

    #[test]
    fn only_http_urls_lose_their_user() {
        assert_eq!(
            for_git("https://alice:s3cret@host/r.git"),
            (
                "https://host/r.git".to_string(),
                Some(("alice".to_string(), "s3cret".to_string()))
            )
        );
        // The SSH user names the account: it stays; a password never does.
        assert_eq!(
            for_git("ssh://git@github.com/o/r").0,
            "ssh://git@github.com/o/r"
        );
        assert_eq!(
            for_git("ssh://git:pw@host:2222/o/r"),
            ("ssh://git@host:2222/o/r".to_string(), None)
        );
        assert_eq!(
            for_git("git@github.com:o/r.git").0,
            "git@github.com:o/r.git"
        );
        assert_eq!(
            crate::domain::url_host("ssh://git@h.example:22/x"),
            Some("h.example")
        );
        assert_eq!(
            crate::domain::url_host("git@h.example:o/r"),
            Some("h.example")
        );
        assert_eq!(shell_quote("/tmp/it's"), "'/tmp/it'\\''s'");
    }

    #[test]
    fn line_breaks_in_credentials_are_refused() {
        let url = RepoUrl::parse("https://host/r").unwrap().with_credentials(
            crate::domain::Credentials {
                username: "alice\n".into(),
                password: "pw".into(),
                ..Default::default()
            },
        );
        let err = git_invocation(&Config::default(), std::path::Path::new("/"), &url)
            .err()
            .unwrap();
        assert!(matches!(err, Error::Credentials { .. }), "{err}");
        assert!(!err.to_string().contains("pw"));
    }
}
