//! Every cache and flight key is composed here, so what goes into a key
//! (and what deliberately does not) is visible in one place.
//!
//! Keys are `<kind>|<version>|<sha256 hex of the canonical inputs>`. The
//! version changes whenever the inputs or their encoding change, so keys
//! written by an older manifold can never be misread.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The key of one render: a remote (normalised URL), a resolved commit,
/// and every request field that can change the output. `inputs` must
/// serialise deterministically (structs and sorted maps only).
pub fn render(repo_normalized: &str, commit_sha: &str, inputs: &impl Serialize) -> String {
    // Serialising plain data to a Vec cannot fail.
    render_encoded(repo_normalized, commit_sha, &encode(inputs))
}

/// The deterministic encoding of a key's inputs.
pub fn encode(inputs: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(inputs).unwrap_or_default()
}

/// [`render`] with the inputs already encoded (by [`encode`]): the same
/// key, so a render's key can be recomputed for another commit from the
/// encoding kept in the app index.
pub fn render_encoded(repo_normalized: &str, commit_sha: &str, encoded: &[u8]) -> String {
    format!(
        "render|v1|{}",
        digest(&[repo_normalized.as_bytes(), commit_sha.as_bytes(), encoded])
    )
}

/// The app index of a commit: which render inputs an app (the fields of
/// `identity`: what `UpdateRevisionForPaths` carries) was rendered with
/// at `commit_sha`, so its renders can be moved to another commit.
pub fn app_index(repo_normalized: &str, commit_sha: &str, identity: &impl Serialize) -> String {
    format!(
        "apps|v1|{}",
        digest(&[
            repo_normalized.as_bytes(),
            commit_sha.as_bytes(),
            &encode(identity)
        ])
    )
}

/// `GetGitFiles`' answer for a commit and a pattern.
pub fn git_files(
    repo_normalized: &str,
    commit_sha: &str,
    pattern: &str,
    new_globbing: bool,
    submodules: bool,
) -> String {
    format!(
        "gitfiles|v1|{}",
        digest(&[
            repo_normalized.as_bytes(),
            commit_sha.as_bytes(),
            pattern.as_bytes(),
            &[u8::from(new_globbing) | (u8::from(submodules) << 1)],
        ])
    )
}

/// A Helm repository's index (the revision cache of chart sources).
pub fn helm_index(repo_normalized: &str) -> String {
    format!("helm-index|v1|{}", digest(&[repo_normalized.as_bytes()]))
}

/// `ListApps`' answer for a commit (before filtering by source type).
pub fn app_list(repo_normalized: &str, commit_sha: &str) -> String {
    format!(
        "applist|v2|{}",
        digest(&[repo_normalized.as_bytes(), commit_sha.as_bytes()])
    )
}

/// `GetGitDirectories`' answer for a commit.
pub fn git_directories(
    repo_normalized: &str,
    commit_sha: &str,
    include_hidden: bool,
    submodules: bool,
) -> String {
    format!(
        "gitdirs|v1|{}",
        digest(&[
            repo_normalized.as_bytes(),
            commit_sha.as_bytes(),
            &[u8::from(include_hidden) | (u8::from(submodules) << 1)],
        ])
    )
}

/// The files that differ between two commits of a remote.
pub fn changed_files(repo_normalized: &str, from_sha: &str, to_sha: &str) -> String {
    format!(
        "changes|v1|{}",
        digest(&[
            repo_normalized.as_bytes(),
            from_sha.as_bytes(),
            to_sha.as_bytes()
        ])
    )
}

/// SHA-256 hex of length-prefixed parts (so parts cannot run into each
/// other).
fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The content key of a render: the remote, what the render reads (its
/// input closure, by object ids), the commit only when the output can
/// depend on it, and the request fields of [`render`]. `None` when the
/// render reads outside the repository.
pub fn content(
    repo_normalized: &str,
    closure: &crate::source::closure::Closure,
    commit_sha: Option<&str>,
    inputs: &impl Serialize,
) -> Option<String> {
    if matches!(closure, crate::source::closure::Closure::Unbounded) {
        return None;
    }
    let mut hasher = Sha256::new();
    let parts = [
        repo_normalized.as_bytes().to_vec(),
        commit_sha.unwrap_or_default().as_bytes().to_vec(),
        serde_json::to_vec(closure).unwrap_or_default(),
        serde_json::to_vec(inputs).unwrap_or_default(),
    ];
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(&part);
    }
    Some(format!("content|v1|{}", hex::encode(hasher.finalize())))
}

/// The key of a remote's ref listing (the revision cache). The URL is
/// normalised, which also drops any credentials in it.
pub fn refs(repo_normalized: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(repo_normalized.as_bytes());
    format!("refs|v1|{}", hex::encode(hasher.finalize()))
}

/// The cross-replica lock around listing the refs under `refs_key`.
pub fn lock(refs_key: &str) -> String {
    format!("{refs_key}|lock")
}

/// The cross-replica lease of the render under `render_key`.
pub fn lease(render_key: &str) -> String {
    format!("{render_key}|lease")
}

/// The in-process flight of a ref listing: a fresh listing never joins a
/// cached one.
pub fn listing_flight(refs_key: &str, fresh: bool) -> String {
    format!("{refs_key}|fresh={fresh}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cannot_run_into_each_other() {
        let a = render("ab", "c", &"x");
        let b = render("a", "bc", &"x");
        assert_ne!(a, b);
        assert_eq!(a, render("ab", "c", &"x"));
        assert!(a.starts_with("render|v1|"));
        assert_eq!(a, render_encoded("ab", "c", &encode(&"x")));
        assert_ne!(changed_files("r", "a", "b"), changed_files("r", "b", "a"));
    }
}
