//! The build environment Argo CD exposes to renders (`ARGOCD_APP_*`), its
//! `$VAR` substitution, Kubernetes version normalisation and the command
//! lines reported in responses.

use std::ffi::OsStr;

/// `ARGOCD_APP_*` variables of one render, in Argo CD's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildEnv {
    vars: Vec<(String, String)>,
}

/// What the build environment is made of.
#[derive(Debug, Clone, Default)]
pub struct BuildEnvInput<'a> {
    pub app_name: &'a str,
    pub app_namespace: &'a str,
    pub project_name: &'a str,
    pub revision: &'a str,
    pub repo_url: &'a str,
    pub source_path: &'a str,
    pub target_revision: &'a str,
}

fn prefix(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

impl BuildEnv {
    pub fn new(input: BuildEnvInput<'_>) -> Self {
        let vars = [
            ("ARGOCD_APP_NAME", input.app_name),
            ("ARGOCD_APP_NAMESPACE", input.app_namespace),
            ("ARGOCD_APP_PROJECT_NAME", input.project_name),
            ("ARGOCD_APP_REVISION", input.revision),
            ("ARGOCD_APP_REVISION_SHORT", prefix(input.revision, 7)),
            ("ARGOCD_APP_REVISION_SHORT_8", prefix(input.revision, 8)),
            ("ARGOCD_APP_SOURCE_REPO_URL", input.repo_url),
            ("ARGOCD_APP_SOURCE_PATH", input.source_path),
            ("ARGOCD_APP_SOURCE_TARGET_REVISION", input.target_revision),
        ];
        BuildEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// These variables and `name=value` after them (for substitution).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    fn get(&self, name: &str) -> &str {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// `$VAR` and `${VAR}` expansion with Go's `os.Expand` rules against
    /// these variables only: unknown names expand to nothing, `$$` is `$`.
    pub fn substitute(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut j = 0;
        while j < bytes.len() {
            if bytes[j] == b'$' && j + 1 < bytes.len() {
                out.push_str(&text[copied..j]);
                let (name, width) = shell_name(&text[j + 1..]);
                match name {
                    None if width > 0 => {} // bad syntax: eaten
                    None => out.push('$'),
                    Some("$") => out.push('$'),
                    Some(name) => out.push_str(self.get(name)),
                }
                j += width + 1;
                copied = j;
            } else {
                j += 1;
            }
        }
        out.push_str(&text[copied..]);
        out
    }
}

fn is_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_alnum(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// The variable name after a `$` and how many bytes it spans (Go's
/// `getShellName`).
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        for i in 1..b.len() {
            if b[i] == b'}' {
                if i == 1 {
                    return (None, 2);
                }
                return (Some(&s[1..i]), i + 1);
            }
        }
        return (None, 1);
    }
    if is_special(b[0]) {
        return (Some(&s[0..1]), 1);
    }
    let end = b.iter().position(|c| !is_alnum(*c)).unwrap_or(b.len());
    if end == 0 {
        (None, 0)
    } else {
        (Some(&s[..end]), end)
    }
}

/// Normalises a Kubernetes version the way apimachinery's generic parser
/// does: the leading dotted numbers are kept, anything after them dropped
/// (`v1.30.11+IKS` → `1.30.11`, `1.29` stays `1.29`); `None` if it is not
/// a version.
pub fn normalize_kube_version(version: &str) -> Option<String> {
    if version.is_empty() {
        return Some(String::new());
    }
    let trimmed = version.trim_start();
    let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
    let mut components: Vec<&str> = Vec::new();
    let mut rest = trimmed;
    loop {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        components.push(&rest[..end]);
        rest = &rest[end..];
        match rest.strip_prefix('.') {
            Some(next) if next.starts_with(|c: char| c.is_ascii_digit()) => rest = next,
            _ => break,
        }
    }
    if components.len() < 2 || (components[0].len() > 1 && components[0].starts_with('0')) {
        return None;
    }
    let numbers: Option<Vec<String>> = components
        .iter()
        .map(|c| c.parse::<u64>().ok().map(|n| n.to_string()))
        .collect();
    Some(numbers?.join("."))
}

/// A command line as Argo CD reports it (`GetCommandArgsToLog`): arguments
/// holding whitespace are Go-quoted (`strconv.Quote`), empty ones shown as
/// `""`.
pub fn command_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut line = String::from(program);
    for arg in args {
        let arg = arg.as_ref().to_string_lossy();
        line.push(' ');
        if arg.is_empty() {
            line.push_str("\"\"");
        } else if arg.chars().any(char::is_whitespace) {
            line.push_str(&super::kustomize_edit::go_quote(&arg));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BuildEnv {
        BuildEnv::new(BuildEnvInput {
            app_name: "guestbook",
            revision: "0123456789abcdef",
            ..Default::default()
        })
    }

    #[test]
    fn substitutes_like_go_os_expand() {
        let env = env();
        assert_eq!(env.substitute("a-$ARGOCD_APP_NAME"), "a-guestbook");
        assert_eq!(env.substitute("${ARGOCD_APP_NAME}x"), "guestbookx");
        assert_eq!(env.substitute("$ARGOCD_APP_REVISION_SHORT"), "0123456");
        assert_eq!(env.substitute("${ARGOCD_APP_REVISION_SHORT_8}"), "01234567");
        assert_eq!(env.substitute("$HOME/$UNKNOWN"), "/");
        assert_eq!(env.substitute("cost: $$5"), "cost: $5");
        assert_eq!(env.substitute("trailing $"), "trailing $");
        assert_eq!(env.substitute("a $ b"), "a $ b");
        assert_eq!(env.substitute("${}x"), "x");
        assert_eq!(env.substitute("${open"), "open");
        assert_eq!(env.substitute("$1"), "");
        assert_eq!(env.substitute("é$ARGOCD_APP_NAME"), "éguestbook");
    }

    #[test]
    fn normalizes_kube_versions() {
        assert_eq!(normalize_kube_version("1.2.3+something").unwrap(), "1.2.3");
        assert_eq!(normalize_kube_version("v1.16.0").unwrap(), "1.16.0");
        assert_eq!(normalize_kube_version("1.30.11+IKS").unwrap(), "1.30.11");
        assert_eq!(normalize_kube_version("1.29").unwrap(), "1.29");
        assert_eq!(normalize_kube_version("").unwrap(), "");
        assert!(normalize_kube_version("latest").is_none());
        assert!(normalize_kube_version("1").is_none());
    }

    #[test]
    fn quotes_command_lines_like_argo_cd() {
        assert_eq!(
            command_line("kustomize", &["edit", "set", "image", "a b", ""]),
            r#"kustomize edit set image "a b" """#
        );
    }
}
