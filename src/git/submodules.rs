//! Submodules: the commits a superproject's gitlinks pin, fetched into
//! their own object stores. Nothing is checked out: the stores' object
//! directories become in-process alternates of the superproject's store,
//! so an export or a tree walk descends into a gitlink as into a
//! directory (see [`super::open_with_alternates`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{ObjectType, Oid};

use super::{Error, RepoStore, Resolved, Stores};
use crate::domain::{url_host, RepoUrl};

/// Deepest nesting of submodules followed.
const MAX_DEPTH: usize = 8;
/// Most submodule commits one superproject commit may pin, all levels.
const MAX_SUBMODULES: usize = 256;
/// Largest `.gitmodules` read.
const MAX_GITMODULES_BYTES: usize = 1 << 20;

/// A gitlink of a commit's tree and the URL `.gitmodules` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gitlink {
    path: String,
    commit: String,
    url: Option<String>,
}

impl Stores {
    /// Makes every commit the submodules of `commit_sha` pin (and theirs,
    /// recursively) present in its own store, as `git submodule update
    /// --init --recursive` would, and returns the git directories of
    /// those stores. Empty when the commit has no `.gitmodules`. A gitlink
    /// `.gitmodules` does not name stays an empty directory, as in a
    /// checkout.
    ///
    /// A submodule on the superproject's host is fetched with the
    /// superproject's credentials; one elsewhere without any, so a
    /// `.gitmodules` cannot send them to a host of its choosing.
    pub async fn fetch_submodules(
        &self,
        repo_url: &RepoUrl,
        store: &Arc<RepoStore>,
        commit_sha: &str,
    ) -> Result<Vec<PathBuf>, Error> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut pending = vec![(repo_url.clone(), store.clone(), commit_sha.to_string(), 0)];
        while let Some((parent_url, parent_store, sha, depth)) = pending.pop() {
            let path = parent_store.path().to_path_buf();
            let alternates = dirs.clone();
            let links = tokio::task::spawn_blocking(move || gitlinks(&path, &alternates, &sha))
                .await
                .map_err(|err| Error::Store {
                    repo_url: parent_url.redacted(),
                    message: err.to_string(),
                })?
                .map_err(|err| Error::Store {
                    repo_url: parent_url.redacted(),
                    message: format!("cannot read submodules: {err}"),
                })?;
            for link in links {
                let Some(url) = &link.url else {
                    continue;
                };
                let failed = |message: String| Error::Submodule {
                    repo_url: parent_url.redacted(),
                    path: link.path.clone(),
                    message,
                    cause: None,
                };
                if depth + 1 > MAX_DEPTH {
                    return Err(failed(format!(
                        "submodules nest deeper than {MAX_DEPTH} levels"
                    )));
                }
                let resolved = submodule_url(parent_url.as_str(), url).map_err(failed)?;
                let sub_url = RepoUrl::parse(&resolved)
                    .map_err(|err| failed(format!("invalid submodule URL: {err}")))?;
                let sub_url = match parent_url.credentials() {
                    Some(credentials)
                        if url_host(&resolved).is_some()
                            && url_host(&resolved) == url_host(parent_url.as_str()) =>
                    {
                        sub_url.with_credentials(credentials.clone())
                    }
                    _ => sub_url,
                };
                if !seen.insert((sub_url.normalized(), link.commit.clone())) {
                    continue;
                }
                if seen.len() > MAX_SUBMODULES {
                    return Err(failed(format!(
                        "more than {MAX_SUBMODULES} submodule commits"
                    )));
                }
                let (sub_store, sub_sha) = self
                    .ensure_commit(
                        &sub_url,
                        &Resolved::Commit(link.commit.clone()),
                        &link.commit,
                    )
                    .await
                    .map_err(|err| Error::Submodule {
                        repo_url: parent_url.redacted(),
                        path: link.path.clone(),
                        message: err.to_string(),
                        cause: Some(Box::new(err)),
                    })?;
                if !dirs.iter().any(|dir| dir == sub_store.path()) {
                    dirs.push(sub_store.path().to_path_buf());
                }
                pending.push((sub_url, sub_store, sub_sha, depth + 1));
            }
        }
        Ok(dirs)
    }
}

/// The gitlinks of `sha`'s tree with their `.gitmodules` URLs; empty when
/// the tree has no `.gitmodules`. Blocking.
fn gitlinks(store: &Path, alternates: &[PathBuf], sha: &str) -> Result<Vec<Gitlink>, git2::Error> {
    let repo = super::open_with_alternates(store, alternates)?;
    let tree = repo.find_commit(Oid::from_str(sha)?)?.tree()?;
    let Some(modules) = tree
        .get_name(".gitmodules")
        .filter(|entry| entry.kind() == Some(ObjectType::Blob))
    else {
        return Ok(Vec::new());
    };
    let blob = repo.find_blob(modules.id())?;
    if blob.size() > MAX_GITMODULES_BYTES {
        return Err(git2::Error::from_str(".gitmodules is too large"));
    }
    let urls = parse_gitmodules(&String::from_utf8_lossy(blob.content()));
    let mut links = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Commit) {
            let path = format!("{dir}{}", String::from_utf8_lossy(entry.name_bytes()));
            links.push(Gitlink {
                url: urls.get(&path).cloned(),
                path,
                commit: entry.id().to_string(),
            });
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(links)
}

/// Submodule path -> URL, from the text of a `.gitmodules` file (git's
/// config syntax: sections, quoted values with escapes, comments, line
/// continuations). Entries without both are left out; for a path given
/// twice the last wins, as in git.
fn parse_gitmodules(text: &str) -> HashMap<String, String> {
    let mut sections: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut current: Option<usize> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[') {
            current = None;
            let Some(end) = header.find(']') else {
                continue;
            };
            let header = &header[..end];
            let (section, name) = match header.split_once(char::is_whitespace) {
                Some((section, name)) => (section, name.trim()),
                None => (header, ""),
            };
            if section.eq_ignore_ascii_case("submodule") {
                let name = name
                    .trim_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\");
                sections.push((name, HashMap::new()));
                current = Some(sections.len() - 1);
            }
            continue;
        }
        let Some(index) = current else {
            continue;
        };
        let (key, raw) = match trimmed.split_once('=') {
            Some((key, value)) => (key.trim(), value.to_string()),
            None => (trimmed.trim(), String::new()),
        };
        let mut raw = raw;
        // A backslash at the end of the line continues the value.
        while raw.ends_with('\\') && !raw.ends_with("\\\\") {
            raw.pop();
            match lines.next() {
                Some(next) => raw.push_str(next),
                None => break,
            }
        }
        sections[index]
            .1
            .insert(key.to_ascii_lowercase(), config_value(&raw));
    }
    let mut urls = HashMap::new();
    for (_, keys) in sections {
        if let (Some(path), Some(url)) = (keys.get("path"), keys.get("url")) {
            let path = path.trim_matches('/').to_string();
            if !path.is_empty() && !url.is_empty() {
                urls.insert(path, url.clone());
            }
        }
    }
    urls
}

/// A git config value: quotes removed, escapes read, an unquoted comment
/// dropped, surrounding unquoted whitespace trimmed.
fn config_value(raw: &str) -> String {
    let mut value = String::new();
    let mut quoted = false;
    // Whitespace is kept only once something follows it.
    let mut pending_space = String::new();
    let mut chars = raw.trim_start().chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                value.push_str(&pending_space);
                pending_space.clear();
                quoted = !quoted;
            }
            '\\' => {
                value.push_str(&pending_space);
                pending_space.clear();
                match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('b') => {
                        value.pop();
                    }
                    Some(other) => value.push(other),
                    None => {}
                }
            }
            '#' | ';' if !quoted => break,
            c if c.is_whitespace() && !quoted => pending_space.push(c),
            c => {
                value.push_str(&pending_space);
                pending_space.clear();
                value.push(c);
            }
        }
    }
    value
}

/// The URL to fetch a submodule from: `url` from `.gitmodules`, resolved
/// against the superproject's URL when relative (`./x`, `../x`) the way
/// git resolves it. Only transports git allows for submodules by default
/// are accepted; a local path or `file://` only when the superproject is
/// itself local (a remote repository must not make the server read its
/// own disk).
fn submodule_url(parent: &str, url: &str) -> Result<String, String> {
    let resolved = if url.starts_with("./") || url.starts_with("../") {
        resolve_relative(parent, url)?
    } else {
        url.to_string()
    };
    let lower = resolved.to_ascii_lowercase();
    let is_local = |u: &str| u.starts_with("file://") || u.starts_with('/');
    if is_local(&lower) {
        return if is_local(&parent.to_ascii_lowercase()) {
            Ok(resolved)
        } else {
            Err("a local submodule URL in a remote repository is refused".to_string())
        };
    }
    let allowed = [
        "https://",
        "http://",
        "ssh://",
        "git://",
        "git+ssh://",
        "ssh+git://",
    ]
    .iter()
    .any(|scheme| lower.starts_with(scheme));
    // scp-like `user@host:path` (no scheme, a colon before any slash).
    let scp_like = !resolved.contains("://")
        && !resolved.starts_with('-')
        // `transport::address` runs a remote helper.
        && !resolved.split('/').next().unwrap_or_default().contains("::")
        && resolved
            .split_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'));
    if allowed || scp_like {
        Ok(resolved)
    } else {
        Err(format!(
            "the submodule URL scheme of {url:?} is not allowed"
        ))
    }
}

/// `relative` (starting with `./` or `../`) against the remote `parent`,
/// which counts as a directory: each `../` removes one component of it.
fn resolve_relative(parent: &str, relative: &str) -> Result<String, String> {
    let mut base = parent.trim_end_matches('/').to_string();
    // Where the path part of the base starts: after `scheme://authority`,
    // or after the colon of an scp-like URL.
    let path_start = match base.find("://") {
        Some(i) => base[i + 3..]
            .find('/')
            .map(|j| i + 3 + j)
            .unwrap_or(base.len()),
        None => match base.split_once(':') {
            Some((host, _)) if !host.contains('/') => host.len() + 1,
            _ => 0,
        },
    };
    let mut rest = relative;
    loop {
        if let Some(next) = rest.strip_prefix("./") {
            rest = next;
        } else if let Some(next) = rest.strip_prefix("../") {
            let cut = base[path_start..]
                .rfind('/')
                .map(|i| path_start + i)
                .unwrap_or(path_start);
            if cut == path_start && base.len() == path_start {
                return Err(format!("{relative:?} leaves the superproject's URL"));
            }
            base.truncate(cut);
            rest = next;
        } else {
            break;
        }
    }
    let separator = if base.ends_with(':') || base.ends_with('/') {
        ""
    } else {
        "/"
    };
    Ok(format!("{base}{separator}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gitmodules() {
        let text = r#"
# comment
[submodule "lib"]
	path = vendor/lib
	url = https://example.com/lib.git ; trailing comment
[submodule "quoted name"]
	PATH = "with space/x"
	url = "../other.git"
[core]
	path = not-a-submodule
	url = nope
[submodule "incomplete"]
	path = only/path
[submodule "continued"]
	path = cont
	url = https://example.com/\
long.git
"#;
        let urls = parse_gitmodules(text);
        assert_eq!(urls.len(), 3, "{urls:?}");
        assert_eq!(urls["vendor/lib"], "https://example.com/lib.git");
        assert_eq!(urls["with space/x"], "../other.git");
        assert_eq!(urls["cont"], "https://example.com/long.git");
    }

    #[test]
    fn resolves_relative_urls_as_git_does() {
        let r = |parent: &str, url: &str| submodule_url(parent, url);
        assert_eq!(
            r("https://host/org/repo.git", "../lib.git").unwrap(),
            "https://host/org/lib.git"
        );
        assert_eq!(
            r("https://host/org/repo.git/", "./lib").unwrap(),
            "https://host/org/repo.git/lib"
        );
        assert_eq!(
            r("https://host/org/repo", "../../other/lib").unwrap(),
            "https://host/other/lib"
        );
        assert_eq!(
            r("git@host:org/repo.git", "../lib.git").unwrap(),
            "git@host:org/lib.git"
        );
        assert_eq!(
            r("git@host:repo.git", "../lib.git").unwrap(),
            "git@host:lib.git"
        );
        assert_eq!(
            r("file:///srv/git/super", "../sub").unwrap(),
            "file:///srv/git/sub"
        );
        assert!(r("https://host/repo", "../../../x").is_err());
    }

    #[test]
    fn refuses_dangerous_submodule_urls() {
        let r = |parent: &str, url: &str| submodule_url(parent, url);
        assert!(r("https://host/org/repo", "ext::sh -c touch% /tmp/pwned").is_err());
        assert!(r("https://host/org/repo", "file:///etc").is_err());
        assert!(r("https://host/org/repo", "/var/lib/other").is_err());
        assert!(r("https://host/org/repo", "-uhttps://x").is_err());
        assert!(r("https://host/org/repo", "fd::17").is_err());
        assert!(r("file:///srv/super", "/srv/sub").is_ok());
        assert!(r("https://host/org/repo", "ssh://git@host/lib").is_ok());
        assert!(r("https://host/org/repo", "git@host:org/lib").is_ok());
    }
}
