//! Refresh paths: the `argocd.argoproj.io/manifest-generate-paths`
//! annotation, and whether a set of changed files touches it, with Argo
//! CD's semantics (`util/app/path`), so an app is re-rendered (or not)
//! exactly when Argo CD would.
//!
//! The annotation is `;`-separated; an item starting with `/` is relative
//! to the repository root, any other to the app's path. A file touches a
//! refresh path when it is that path, lies in or below it, or matches it as
//! a pattern with Go's `filepath.Match` rules (`*` and `?` within one path
//! segment, `[...]` classes with `^` negation, `\` escapes, no `**` and no
//! `{a,b}`). Patterns are compiled with globset after translating them to
//! its syntax.

use globset::{GlobBuilder, GlobMatcher};

/// The refresh paths of an app at `app_path` with this annotation, as the
/// controller computes them: repository-relative, cleaned, without a
/// leading `/` (`.` and `/` both mean the whole repository).
pub fn refresh_paths(app_path: &str, annotation: &str) -> Vec<String> {
    annotation
        .split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.strip_prefix('/') {
            Some(absolute) => absolute.to_string(),
            None if app_path.is_empty() => clean(item),
            None => clean(&format!("{app_path}/{item}")),
        })
        .collect()
}

/// Whether any of `changed_files` touches any of `refresh_paths`. With no
/// changed files (nothing known) or no refresh paths (none declared) the
/// answer is yes, as in Argo CD.
pub fn files_have_changed(refresh_paths: &[String], changed_files: &[String]) -> bool {
    if changed_files.is_empty() || refresh_paths.is_empty() {
        return true;
    }
    let refresh: Vec<RefreshPath> = refresh_paths.iter().map(|p| RefreshPath::new(p)).collect();
    changed_files
        .iter()
        .any(|file| refresh.iter().any(|path| path.touched_by(file)))
}

/// One refresh path, prepared for matching many files.
struct RefreshPath {
    /// Rooted and as given (`/apps/a`), for equality.
    rooted: String,
    /// Rooted and cleaned, for the "in or below" test.
    root: String,
    /// The path as a Go pattern; `None` when it is not a valid one (Go's
    /// `ErrBadPattern`, which Argo CD treats as no match).
    pattern: Option<GlobMatcher>,
}

impl RefreshPath {
    fn new(path: &str) -> RefreshPath {
        let rooted = rooted(path);
        RefreshPath {
            root: clean(&rooted),
            pattern: go_pattern(&rooted),
            rooted,
        }
    }

    fn touched_by(&self, file: &str) -> bool {
        let file = rooted(file);
        if file == self.rooted {
            return true;
        }
        // The file's directory is the refresh path or below it.
        let dir = clean(dir(&file));
        if self.root == "/" || dir == self.root {
            return true;
        }
        if format!("{dir}/").starts_with(&format!("{}/", self.root)) {
            return true;
        }
        self.pattern
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(&file))
    }
}

/// `path` with a leading `/`.
fn rooted(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// Go's `filepath.Dir` before cleaning: everything up to the last `/`.
fn dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(at) => &path[..at],
        None => ".",
    }
}

/// Go's `filepath.Clean`: lexical, `..` at the root stays at the root, the
/// empty path is `.`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            name => parts.push(name),
        }
    }
    match (rooted, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".to_string(),
        (false, false) => parts.join("/"),
    }
}

/// Compiles a Go `filepath.Match` pattern; `None` when Go would call it
/// malformed.
pub fn go_pattern(pattern: &str) -> Option<GlobMatcher> {
    let translated = translate(pattern)?;
    GlobBuilder::new(&translated)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .ok()
        .map(|glob| glob.compile_matcher())
}

/// Whether `name` matches the Go pattern `pattern` (malformed: no match).
pub fn go_match(pattern: &str, name: &str) -> bool {
    go_pattern(pattern).is_some_and(|matcher| matcher.is_match(name))
}

/// Characters globset gives a meaning that Go does not, or that need an
/// escape to stay literal.
fn escape_literal(c: char, out: &mut String) {
    if matches!(
        c,
        '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!' | '^' | ','
    ) {
        out.push('\\');
    }
    out.push(c);
}

/// A Go pattern in globset's syntax, or `None` when malformed by Go's
/// rules (an unclosed or empty class, an unescaped `-` or `]` inside a
/// class, a reversed range, a trailing `\`).
fn translate(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // Any run of stars is one star in Go.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push('*');
            }
            '?' => out.push('?'),
            '\\' => escape_literal(chars.next()?, &mut out),
            '[' => {
                let negated = chars.next_if(|c| *c == '^').is_some();
                let mut ranges: Vec<(char, char)> = Vec::new();
                loop {
                    match chars.peek() {
                        None => return None,
                        Some(']') if !ranges.is_empty() => {
                            chars.next();
                            break;
                        }
                        _ => {}
                    }
                    let lo = class_char(&mut chars)?;
                    let hi = if chars.next_if(|c| *c == '-').is_some() {
                        class_char(&mut chars)?
                    } else {
                        lo
                    };
                    if hi < lo {
                        return None;
                    }
                    ranges.push((lo, hi));
                }
                push_class(negated, &ranges, &mut out);
            }
            c => escape_literal(c, &mut out),
        }
    }
    Some(out)
}

/// One (possibly escaped) character of a Go class; `-` and `]` must be
/// escaped there.
fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<char> {
    match chars.next()? {
        '-' | ']' => None,
        '\\' => chars.next(),
        c => Some(c),
    }
}

/// Writes a class in globset's syntax, which has no escapes in classes:
/// `]` may only come first, `-` first or last, and `!`/`^` first would
/// negate. Ranges starting or ending at those characters are split so that
/// they appear only as single characters, placed where they are literal.
fn push_class(negated: bool, ranges: &[(char, char)], out: &mut String) {
    if !negated && ranges.len() == 1 && ranges[0].0 == ranges[0].1 {
        escape_literal(ranges[0].0, out);
        return;
    }
    let next = |c: char| char::from_u32(c as u32 + 1).unwrap_or(c);
    let mut singles: Vec<char> = Vec::new();
    let mut spans: Vec<(char, char)> = Vec::new();
    for &(lo, hi) in ranges {
        let (mut lo, mut hi) = (lo, hi);
        if lo != hi && hi == ']' {
            // `]` (0x5D) ends the class: keep it single; `\` precedes it.
            singles.push(']');
            hi = '\\';
        }
        while lo != hi && matches!(lo, '!' | '^' | '-' | ']') {
            singles.push(lo);
            lo = next(lo);
        }
        if lo == hi {
            singles.push(lo);
        } else {
            spans.push((lo, hi));
        }
    }
    let special = |c: char| matches!(c, '!' | '^' | '-' | ']');
    let mut body = String::new();
    if singles.contains(&']') {
        body.push(']');
    }
    // Safe characters next; `!`/`^` only after something else.
    for (lo, hi) in &spans {
        body.push(*lo);
        body.push('-');
        body.push(*hi);
    }
    for c in singles.iter().filter(|c| !special(**c)) {
        body.push(*c);
    }
    for c in ['!', '^'] {
        if singles.contains(&c) {
            body.push(c);
        }
    }
    if singles.contains(&'-') {
        body.push('-');
    }
    if !negated && body.starts_with(['!', '^']) {
        // Only `!`, `^` (and perhaps `-`): an alternation of the literals
        // instead (Go patterns have none of their own, so it cannot nest).
        let alternates: Vec<String> = body.chars().map(|c| format!("\\{c}")).collect();
        out.push('{');
        out.push_str(&alternates.join(","));
        out.push('}');
        return;
    }
    out.push('[');
    if negated {
        out.push('!');
    }
    out.push_str(&body);
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(paths: &[&str], files: &[&str]) -> bool {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        files_have_changed(&paths, &files)
    }

    #[test]
    fn refresh_paths_are_relative_to_the_app_or_the_root() {
        assert_eq!(
            refresh_paths("apps/a", ".; ../shared ;/charts/common;;  ;values/*.yaml"),
            [
                "apps/a",
                "apps/shared",
                "charts/common",
                "apps/a/values/*.yaml"
            ]
        );
        assert_eq!(refresh_paths("apps/a", "/"), [""]);
        assert_eq!(refresh_paths("", "."), ["."]);
        assert_eq!(refresh_paths("a", "../../../x"), ["../../x"]);
        assert!(refresh_paths("a", "").is_empty());
        assert!(refresh_paths("a", " ; ").is_empty());
    }

    #[test]
    fn matches_files_in_or_below_a_path() {
        assert!(changed(&["apps/a"], &["apps/a/deploy.yaml"]));
        assert!(changed(&["apps/a"], &["apps/a/deep/er/x.yaml"]));
        assert!(changed(&["/apps/a"], &["/apps/a/x.yaml"]));
        assert!(
            changed(&["apps/a/x.yaml"], &["apps/a/x.yaml"]),
            "the file itself"
        );
        assert!(
            !changed(&["apps/a"], &["apps/ab/x.yaml"]),
            "a sibling sharing a prefix"
        );
        assert!(!changed(&["apps/a"], &["apps/b/x.yaml", "README.md"]));
        assert!(changed(
            &["apps/b", "apps/a"],
            &["README.md", "apps/a/x.yaml"]
        ));
        // A path that is a directory touched only by its own entry (a
        // submodule or a file replaced by a directory).
        assert!(changed(&["apps/a"], &["apps/a"]));
        // The root matches everything.
        assert!(changed(&["."], &["anything/at/all"]));
        assert!(changed(&[""], &["x"]));
        assert!(changed(&["/"], &["x"]));
        // A path climbing out of the root is clamped to it, as Go cleans.
        assert!(changed(&["../x"], &["x/y.yaml"]));
    }

    #[test]
    fn nothing_known_or_nothing_declared_means_changed() {
        assert!(changed(&["apps/a"], &[]));
        assert!(changed(&[], &["apps/b/x.yaml"]));
    }

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(changed(&["apps/*/values.yaml"], &["apps/a/values.yaml"]));
        assert!(!changed(&["apps/*/values.yaml"], &["apps/a/b/values.yaml"]));
        assert!(changed(&["apps/a/*.yaml"], &["apps/a/x.yaml"]));
        assert!(!changed(&["apps/a/*.yaml"], &["apps/a/x.json"]));
        // A glob matches one level only (its "directory" is not a prefix).
        assert!(!changed(&["apps/*"], &["apps/a/x.yaml"]));
        assert!(changed(&["apps/*"], &["apps/x.yaml"]));
        // `**` is just `*` in Go: no recursion.
        assert!(!changed(&["apps/**/x.yaml"], &["apps/a/b/x.yaml"]));
        assert!(changed(&["apps/**/x.yaml"], &["apps/a/x.yaml"]));
        assert!(changed(&["apps/?/x.yaml"], &["apps/a/x.yaml"]));
        assert!(!changed(&["apps/?/x.yaml"], &["apps/ab/x.yaml"]));
    }

    #[test]
    fn go_pattern_syntax() {
        assert!(go_match("/a/[abc].yaml", "/a/b.yaml"));
        assert!(!go_match("/a/[abc].yaml", "/a/d.yaml"));
        assert!(go_match("/a/[^abc].yaml", "/a/d.yaml"));
        assert!(!go_match("/a/[^abc].yaml", "/a/a.yaml"));
        assert!(go_match("/a/[a-c]x", "/a/bx"));
        assert!(go_match("/a/[\\]]", "/a/]"));
        assert!(go_match("/a/[\\-a]", "/a/-"));
        assert!(go_match("/a/[!]", "/a/!"));
        assert!(go_match("/a/[!^]x", "/a/^x"));
        assert!(go_match("/a/[!^]x", "/a/!x"));
        assert!(!go_match("/a/[!^]x", "/a/bx"));
        assert!(go_match("/a/[^!]x", "/a/bx"));
        assert!(!go_match("/a/[^!]x", "/a/!x"));
        assert!(go_match("/a/\\*", "/a/*"));
        assert!(!go_match("/a/\\*", "/a/b"));
        // Ranges that start or end at characters globset treats specially.
        assert!(go_match("/a/[!-#]", "/a/\""));
        assert!(go_match("/a/[!-#]", "/a/!"));
        assert!(!go_match("/a/[!-#]", "/a/-"));
        assert!(go_match("/a/[A-\\]]", "/a/B"));
        assert!(go_match("/a/[A-\\]]", "/a/]"));
        assert!(!go_match("/a/[A-\\]]", "/a/^"));
        assert!(go_match("/a/[a-c\\--/]", "/a/."));
        assert!(go_match("/a/[a-c\\--/]", "/a/-"));
        assert!(go_match("/a/[a-c\\--/]", "/a/b"));
        assert!(!go_match("/a/[a-c\\--/]", "/a/,"));
        assert!(go_match("/a/[^!-#]", "/a/x"));
        assert!(!go_match("/a/[^!-#]", "/a/\""));
        assert!(go_match("/a/[\\]-a]", "/a/_"));
        assert!(!go_match("/a/[\\]-a]", "/a/b"));
        // Go has no alternation: braces and commas are literal.
        assert!(go_match("/a/{b,c}", "/a/{b,c}"));
        assert!(!go_match("/a/{b,c}", "/a/b"));
        // Go classes may match the separator; `*` and `?` may not.
        assert!(go_match("/a[^x]b", "/a/b"));
        assert!(!go_match("/a?b", "/a/b"));
        assert!(!go_match("/a*b", "/a/b"));
        // Malformed in Go: no match.
        for bad in [
            "/a/[", "/a/[]", "/a/[b-a]", "/a/[-a]", "/a/[a-]", "/a/\\", "/a/[]a]",
        ] {
            assert!(go_pattern(bad).is_none(), "{bad} is malformed");
            assert!(!changed(&[bad], &["/a/x"]));
        }
    }

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean("a/./b/../c"), "a/c");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("a/.."), ".");
    }
}
