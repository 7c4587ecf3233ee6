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

mod remote;
mod store;
pub mod tree;

use std::time::Duration;

pub use remote::{is_full_sha, RemoteRef, RemoteRefs, Resolved};
pub use store::{ExportReport, RepoStore, Stores};

use crate::domain::RepoUrl;
use crate::exec;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            git_program: "git".to_string(),
            attempts: 1,
            retry_duration: Duration::from_millis(250),
            retry_factor: 2.0,
            retry_max_duration: Some(Duration::from_secs(5)),
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
            | Error::AmbiguousRevision { .. }
            | Error::GitUnavailable { .. }
            | Error::Store { .. } => false,
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

/// A git invocation for talking to `repo_url`, and the URL to put on its
/// command line. Every git process gets: no prompts, no user or global
/// configuration, no LFS smudging, no background or automatic maintenance.
/// Credentials embedded in the URL are moved into the environment and
/// handed to git by a credential helper.
fn git_invocation(
    config: &Config,
    cwd: &std::path::Path,
    repo_url: &RepoUrl,
) -> (exec::Invocation, String) {
    let mut invocation = exec::Invocation::new(&config.git_program, cwd)
        .env("HOME", "/dev/null")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Never pick up a repository above the working directory.
        .env("GIT_CEILING_DIRECTORIES", cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .env("GIT_LFS_SKIP_SMUDGE", "1");
    let mut settings = vec![
        ("maintenance.autoDetach", "false"),
        ("gc.autoDetach", "false"),
        ("gc.auto", "0"),
        ("maintenance.auto", "false"),
    ];
    let url = match repo_url.split_credentials() {
        Some(credentials) => {
            invocation = invocation
                .env("MANIFOLD_GIT_USERNAME", credentials.username)
                .env("MANIFOLD_GIT_PASSWORD", credentials.password);
            settings.push(("credential.helper", ENV_CREDENTIAL_HELPER));
            credentials.url_without_userinfo
        }
        None => repo_url.as_str().to_string(),
    };
    invocation = invocation.env("GIT_CONFIG_COUNT", settings.len().to_string());
    for (i, (key, value)) in settings.into_iter().enumerate() {
        invocation = invocation
            .env(format!("GIT_CONFIG_KEY_{i}"), key)
            .env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    (invocation, url)
}
