//! Listing a remote's refs (`git ls-remote`, retried with backoff) and
//! resolving a revision against them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::{git_invocation, Config, Error, Operation};
use crate::domain::RepoUrl;
use crate::exec::Supervisor;

/// One advertised ref, with annotated tags peeled to their commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteRef {
    pub name: String,
    pub sha: String,
}

/// Everything a remote advertises.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteRefs {
    /// The ref `HEAD` points at (e.g. `refs/heads/main`), when advertised.
    pub head_target: Option<String>,
    /// The commit `HEAD` points at.
    pub head_sha: Option<String>,
    /// Sorted by name.
    pub refs: Vec<RemoteRef>,
}

/// The outcome of resolving a revision against a remote's refs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A full commit SHA.
    Commit(String),
    /// An abbreviated SHA, to expand against the local store after a fetch.
    Abbreviated(String),
}

pub fn is_full_sha(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn is_abbreviated_sha(revision: &str) -> bool {
    (7..40).contains(&revision.len()) && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RemoteRefs {
    /// Parses `git ls-remote --symref` output.
    pub fn parse(output: &str) -> Self {
        let mut head_target = None;
        let mut by_name: BTreeMap<String, String> = BTreeMap::new();
        let mut peeled: BTreeMap<String, String> = BTreeMap::new();
        let mut head_sha = None;
        for line in output.lines() {
            let Some((left, name)) = line.split_once('\t') else {
                continue;
            };
            if let Some(target) = left.strip_prefix("ref: ") {
                if name == "HEAD" {
                    head_target = Some(target.to_string());
                }
                continue;
            }
            if name == "HEAD" {
                head_sha = Some(left.to_string());
            } else if let Some(tag) = name.strip_suffix("^{}") {
                peeled.insert(tag.to_string(), left.to_string());
            } else {
                by_name.insert(name.to_string(), left.to_string());
            }
        }
        for (tag, sha) in peeled {
            by_name.insert(tag, sha);
        }
        RemoteRefs {
            head_target,
            head_sha,
            refs: by_name
                .into_iter()
                .map(|(name, sha)| RemoteRef { name, sha })
                .collect(),
        }
    }

    fn sha_of(&self, name: &str) -> Option<&str> {
        self.refs
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| self.refs[i].sha.as_str())
    }

    /// Branch names (without `refs/heads/`), sorted.
    pub fn branches(&self) -> Vec<String> {
        self.short_names("refs/heads/")
    }

    /// Tag names (without `refs/tags/`), sorted.
    pub fn tags(&self) -> Vec<String> {
        self.short_names("refs/tags/")
    }

    fn short_names(&self, prefix: &str) -> Vec<String> {
        self.refs
            .iter()
            .filter_map(|r| r.name.strip_prefix(prefix).map(str::to_string))
            .collect()
    }

    /// Resolves `revision`: empty or `HEAD` is the remote's HEAD; a full
    /// ref name matches exactly; a short name is tried with git's own
    /// rev-parse rules in git's order (`refs/<r>`, `refs/tags/<r>`,
    /// `refs/heads/<r>`, `refs/remotes/<r>`, `refs/remotes/<r>/HEAD`), so
    /// a tag and a branch of the same name resolve the way `git` resolves
    /// them, every time. An unmatched hex string of 7+ characters is an
    /// abbreviated SHA.
    pub fn resolve(&self, revision: &str) -> Option<Resolved> {
        if is_full_sha(revision) {
            return Some(Resolved::Commit(revision.to_ascii_lowercase()));
        }
        if revision.is_empty() || revision == "HEAD" {
            let sha = self
                .head_sha
                .as_deref()
                .or_else(|| self.head_target.as_deref().and_then(|t| self.sha_of(t)))?;
            return Some(Resolved::Commit(sha.to_string()));
        }
        let candidates = [
            revision.to_string(),
            format!("refs/{revision}"),
            format!("refs/tags/{revision}"),
            format!("refs/heads/{revision}"),
            format!("refs/remotes/{revision}"),
            format!("refs/remotes/{revision}/HEAD"),
        ];
        let only_full_names = revision.starts_with("refs/");
        for candidate in candidates.iter().take(if only_full_names { 1 } else { 6 }) {
            if let Some(sha) = self.sha_of(candidate) {
                return Some(Resolved::Commit(sha.to_string()));
            }
        }
        if is_abbreviated_sha(revision) {
            return Some(Resolved::Abbreviated(revision.to_ascii_lowercase()));
        }
        None
    }
}

/// Lists the refs of `repo_url`, retrying transient failures with
/// exponential backoff as configured.
pub async fn list_refs(
    supervisor: &Supervisor,
    config: &Config,
    cwd: &Path,
    repo_url: &RepoUrl,
) -> Result<RemoteRefs, Error> {
    let attempt = || async {
        let command = git_invocation(config, cwd, repo_url)?;
        let invocation = command
            .invocation
            .clone()
            .args(["ls-remote", "--symref", "--"])
            .arg(&command.url);
        let output = supervisor
            .run(invocation)
            .await
            .map_err(|err| Error::from_exec(err, repo_url, Operation::LsRemote))?;
        Ok(RemoteRefs::parse(&String::from_utf8_lossy(&output.stdout)))
    };
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(config.retry_duration)
        .with_factor(config.retry_factor)
        .with_max_times(config.attempts.saturating_sub(1) as usize);
    backoff = match config.retry_max_duration {
        Some(max) => backoff.with_max_delay(max),
        None => backoff.with_max_delay(Duration::from_secs(24 * 3600)),
    };
    attempt
        .retry(backoff)
        .when(Error::is_transient)
        .notify(|err: &Error, delay: Duration| {
            tracing::warn!(repo = %repo_url, error = %err, retry_in = ?delay, "ls-remote failed, retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "ref: refs/heads/main\tHEAD\n\
        1111111111111111111111111111111111111111\tHEAD\n\
        2222222222222222222222222222222222222222\trefs/heads/dev\n\
        1111111111111111111111111111111111111111\trefs/heads/main\n\
        3333333333333333333333333333333333333333\trefs/heads/same\n\
        4444444444444444444444444444444444444444\trefs/tags/same\n\
        5555555555555555555555555555555555555555\trefs/tags/v1.0.0\n\
        6666666666666666666666666666666666666666\trefs/tags/v1.0.0^{}\n\
        7777777777777777777777777777777777777777\trefs/pull/1/head\n";

    fn refs() -> RemoteRefs {
        RemoteRefs::parse(SAMPLE)
    }

    fn commit(c: char) -> Option<Resolved> {
        Some(Resolved::Commit(std::iter::repeat_n(c, 40).collect()))
    }

    #[test]
    fn parses_symref_and_peels_annotated_tags() {
        let refs = refs();
        assert_eq!(refs.head_target.as_deref(), Some("refs/heads/main"));
        assert_eq!(refs.branches(), ["dev", "main", "same"]);
        assert_eq!(refs.tags(), ["same", "v1.0.0"]);
        assert_eq!(refs.resolve("v1.0.0"), commit('6'));
    }

    #[test]
    fn resolves_head_branches_tags_and_full_names() {
        let refs = refs();
        assert_eq!(refs.resolve(""), commit('1'));
        assert_eq!(refs.resolve("HEAD"), commit('1'));
        assert_eq!(refs.resolve("dev"), commit('2'));
        assert_eq!(refs.resolve("refs/heads/dev"), commit('2'));
        assert_eq!(refs.resolve("heads/same"), commit('3'));
        assert_eq!(refs.resolve("refs/heads/same"), commit('3'));
        // git's rule: a tag wins over a branch of the same short name.
        assert_eq!(refs.resolve("same"), commit('4'));
        assert_eq!(refs.resolve("pull/1/head"), commit('7'));
    }

    #[test]
    fn resolves_shas() {
        let refs = refs();
        let full = "ABCDEF0123456789abcdef0123456789abcdef01";
        assert_eq!(
            refs.resolve(full),
            Some(Resolved::Commit(full.to_ascii_lowercase()))
        );
        assert_eq!(
            refs.resolve("abcdef0"),
            Some(Resolved::Abbreviated("abcdef0".into()))
        );
        assert_eq!(refs.resolve("abcdef"), None, "6 hex digits is too short");
        assert_eq!(refs.resolve("nope"), None);
        assert_eq!(refs.resolve("refs/heads/nope"), None);
    }

    #[test]
    fn head_falls_back_to_symref_target() {
        let refs = RemoteRefs::parse("ref: refs/heads/main\tHEAD\n1111111111111111111111111111111111111111\trefs/heads/main\n");
        assert_eq!(refs.resolve("HEAD"), commit('1'));
        assert_eq!(RemoteRefs::parse("").resolve("HEAD"), None);
    }
}
