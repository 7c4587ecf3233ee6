//! Discovery by file patterns, with the semantics Argo CD's sidecar gets
//! from Go:
//!
//! * `discover.fileName` is a `filepath.Glob` of the pattern joined to the
//!   app directory: one path component per pattern component, `*`, `?`,
//!   `[...]` (with `^` negation) and `\` escapes, `*` never crossing `/` and
//!   matching dot files too. Any match claims the app.
//! * `discover.find.glob` is a zglob (mattn/go-zglob) of the pattern joined
//!   to the app directory: only `*` is special (`?`, `[` and `{` are
//!   literal), `**/` stands for any number of directories (none included),
//!   symlinks are neither matched nor followed, and a pattern without `*`
//!   asks whether that path exists.
//!
//! Both join and clean the pattern lexically first, as Go's
//! `filepath.Join` does. Unlike Argo CD, a pattern whose fixed part leaves
//! the request's extraction directory (`../..`) matches nothing, so one
//! request can never look at another's files.
//!
//! Blocking (directory reads): async callers use `spawn_blocking`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Whether `pattern` (a `filepath.Glob` pattern relative to `app_dir`)
/// matches anything. `root` bounds where it may look.
pub fn file_name_matches(root: &Path, app_dir: &Path, pattern: &str) -> Result<bool, String> {
    let joined = clean(&join(app_dir, pattern));
    if !inside(root, &fixed_prefix(&joined, has_go_meta)) {
        return Ok(false);
    }
    let mut candidates = vec![PathBuf::from("/")];
    for component in joined.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if has_go_meta(component) {
            let matcher = go_component_matcher(component)?;
            let mut next = Vec::new();
            for dir in &candidates {
                if !fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .filter(|name| matcher.is_match(Path::new(name)))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|name| dir.join(name)));
            }
            candidates = next;
        } else {
            let component = OsStr::from_bytes(component);
            for candidate in &mut candidates {
                candidate.push(component);
            }
        }
        if candidates.is_empty() {
            return Ok(false);
        }
    }
    Ok(candidates
        .iter()
        .any(|path| fs::symlink_metadata(path).is_ok()))
}

/// Whether `pattern` (a zglob pattern relative to `app_dir`) matches
/// anything. `root` bounds where it may look.
pub fn find_glob_matches(root: &Path, app_dir: &Path, pattern: &str) -> Result<bool, String> {
    let joined = clean(&join(app_dir, pattern));
    let walk_root = fixed_prefix(&joined, |c| c.contains(&b'*'));
    if !inside(root, &walk_root) {
        return Ok(false);
    }
    if !joined.contains(&b'*') {
        return Ok(fs::metadata(OsStr::from_bytes(&joined)).is_ok());
    }
    let tokens = zglob_tokens(&joined);
    let mut pending = vec![PathBuf::from(OsStr::from_bytes(&walk_root))];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                continue;
            }
            let path = entry.path();
            if zglob_match(&tokens, path.as_os_str().as_bytes()) {
                return Ok(true);
            }
            if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(false)
}

/// `dir` + `/` + `pattern`, as bytes (a leading `/` in the pattern does not
/// make it absolute, as with Go's `filepath.Join`).
fn join(dir: &Path, pattern: &str) -> Vec<u8> {
    let mut joined = dir.as_os_str().as_bytes().to_vec();
    joined.push(b'/');
    joined.extend_from_slice(pattern.as_bytes());
    joined
}

/// Go's `filepath.Clean` for an absolute path: no empty, `.` or `..`
/// components (`..` at the root stays at the root).
fn clean(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The leading components of the absolute `path` before the first one for
/// which `is_pattern` holds.
fn fixed_prefix(path: &[u8], is_pattern: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for component in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if is_pattern(component) {
            break;
        }
        out.push(b'/');
        out.extend_from_slice(component);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn inside(root: &Path, path: &[u8]) -> bool {
    Path::new(OsStr::from_bytes(path)).starts_with(root)
}

/// Go's `hasMeta` on Unix.
fn has_go_meta(component: &[u8]) -> bool {
    component
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// One path component of a Go `filepath.Match` pattern, as a glob matcher.
/// globset reads `{a,b}` as alternatives and `**` specially, Go does not:
/// braces outside classes are made literal and runs of `*` (the same as
/// one `*` within a component) are collapsed.
fn go_component_matcher(component: &[u8]) -> Result<globset::GlobMatcher, String> {
    let text =
        std::str::from_utf8(component).map_err(|_| "the pattern is not valid UTF-8".to_string())?;
    let mut translated = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                translated.push('\\');
                match chars.next() {
                    Some(escaped) => translated.push(escaped),
                    None => return Err(format!("syntax error in pattern {text:?}")),
                }
            }
            '[' if !in_class => {
                in_class = true;
                translated.push(c);
                // A `]` or `^]` right after the opening bracket: Go reads
                // `[]` as an error, globset as a literal `]`; keep Go's.
                if chars.peek() == Some(&'^') {
                    translated.push(chars.next().expect("peeked"));
                }
                if chars.peek() == Some(&']') {
                    return Err(format!("syntax error in pattern {text:?}"));
                }
            }
            ']' if in_class => {
                in_class = false;
                translated.push(c);
            }
            '{' | '}' if !in_class => {
                translated.push('[');
                translated.push(c);
                translated.push(']');
            }
            '*' if !in_class => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                translated.push('*');
            }
            other => translated.push(other),
        }
    }
    if in_class {
        return Err(format!("syntax error in pattern {text:?}"));
    }
    globset::GlobBuilder::new(&translated)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|err| format!("syntax error in pattern {text:?}: {err}"))
}

#[derive(Debug, PartialEq)]
enum Token {
    Byte(u8),
    /// `*`: any bytes but `/`.
    Star,
    /// `**/`: nothing, or anything ending in `/`.
    AnyDirs,
}

fn zglob_tokens(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == b'*' {
            if pattern.get(i + 1) == Some(&b'*') && pattern.get(i + 2) == Some(&b'/') {
                tokens.push(Token::AnyDirs);
                i += 3;
                continue;
            }
            tokens.push(Token::Star);
        } else {
            tokens.push(Token::Byte(pattern[i]));
        }
        i += 1;
    }
    tokens
}

/// Whether `path` matches the whole of `tokens`.
fn zglob_match(tokens: &[Token], path: &[u8]) -> bool {
    // matches[j]: tokens[i..] match path[j..], filled from the last token.
    let n = path.len();
    let mut next = vec![false; n + 1];
    next[n] = true;
    for token in tokens.iter().rev() {
        let mut current = vec![false; n + 1];
        for j in (0..=n).rev() {
            current[j] = match token {
                Token::Byte(b) => j < n && path[j] == *b && next[j + 1],
                Token::Star => next[j] || (j < n && path[j] != b'/' && current[j + 1]),
                Token::AnyDirs => next[j] || (j..n).any(|k| path[k] == b'/' && next[k + 1]),
            };
        }
        next = current;
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "x").unwrap();
        }
        dir
    }

    fn glob(tokens: &str, path: &str) -> bool {
        zglob_match(&zglob_tokens(tokens.as_bytes()), path.as_bytes())
    }

    #[test]
    fn zglob_stars() {
        assert!(glob("/a/*.yaml", "/a/x.yaml"));
        assert!(!glob("/a/*.yaml", "/a/b/x.yaml"));
        assert!(glob("/a/**/x.yaml", "/a/x.yaml"));
        assert!(glob("/a/**/x.yaml", "/a/b/c/x.yaml"));
        assert!(!glob("/a/**/x.yaml", "/a/b/c/y.yaml"));
        assert!(glob("/a/**/*.yaml", "/a/.hidden.yaml"));
        assert!(glob("/a/?.yaml", "/a/?.yaml"));
        assert!(!glob("/a/?.yaml", "/a/x.yaml"));
        assert!(glob("/a/[x].yaml", "/a/[x].yaml"));
        // A trailing `**` is two single stars.
        assert!(glob("/a/**", "/a/b"));
        assert!(!glob("/a/**", "/a/b/c"));
    }

    #[test]
    fn find_glob_walks_the_app_directory() {
        let dir = tree(&[
            "app/deep/er/Chart.yaml",
            "app/values.yaml",
            "other/Chart.yaml",
        ]);
        let root = dir.path();
        let app = root.join("app");
        assert!(find_glob_matches(root, &app, "**/Chart.yaml").unwrap());
        assert!(find_glob_matches(root, &app, "deep/**/Chart.yaml").unwrap());
        assert!(!find_glob_matches(root, &app, "*/Chart.yaml").unwrap());
        assert!(find_glob_matches(root, &app, "*/*/Chart.yaml").unwrap());
        assert!(find_glob_matches(root, &app, "values.yaml").unwrap());
        assert!(!find_glob_matches(root, &app, "missing.yaml").unwrap());
        assert!(find_glob_matches(root, &app, "../other/*.yaml").unwrap());
        // Outside the extraction root: never.
        assert!(!find_glob_matches(&app, &app, "../other/*.yaml").unwrap());
        assert!(!find_glob_matches(&app, &app, "../../**/*").unwrap());
    }

    #[test]
    fn find_glob_ignores_symlinks() {
        let dir = tree(&["target/Chart.yaml", "app/x"]);
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("app/link")).unwrap();
        let app = dir.path().join("app");
        assert!(!find_glob_matches(dir.path(), &app, "**/Chart.yaml").unwrap());
    }

    #[test]
    fn file_name_is_a_go_glob() {
        let dir = tree(&[
            "app/a.envsubst.yaml",
            "app/.hidden.yaml",
            "app/sub/b.yaml",
            "app/{x}.yaml",
        ]);
        let root = dir.path();
        let app = root.join("app");
        let matches = |pattern: &str| file_name_matches(root, &app, pattern).unwrap();
        assert!(matches("*.envsubst.yaml"));
        assert!(matches("a.envsubst.yaml"));
        assert!(!matches("b.yaml"));
        assert!(matches("*/b.yaml"));
        assert!(matches("sub/*.yaml"));
        assert!(!matches("*/*/b.yaml"));
        assert!(matches(".hid*"));
        assert!(matches("?.envsubst.yaml"));
        assert!(matches("[a-c].envsubst.yaml"));
        assert!(!matches("[^a].envsubst.yaml"));
        assert!(matches("{x}.yaml"));
        assert!(!matches("{a,b}.envsubst.yaml"));
        assert!(matches("\\{x}.yaml"));
        assert!(matches("./sub/../a.*"));
        assert!(!file_name_matches(&app, &app, "../*").unwrap());
        assert!(file_name_matches(root, &app, "[").is_err());
    }
}
