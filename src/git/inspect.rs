//! What Argo CD's repo-server reports about one commit, read in-process
//! (git2) from a bare object store: `GetRevisionMetadata`
//! ([`revision_metadata`]), `GetGitFiles` ([`git_files`]) and
//! `GetGitDirectories` ([`git_directories`]).
//!
//! Argo CD (`reposerver/repository/repository.go`, `util/git/client.go`)
//! checks the commit out and runs `git show`, `git interpret-trailers
//! --parse`, `git tag --points-at`, `git ls-files` (or doublestar globbing
//! over the work tree) and `filepath.WalkDir`. Each of those is reproduced
//! here over the commit's tree, without a checkout and without running git.
//! The parts of Go's standard library that decide which reference trailers
//! Argo CD accepts and how it prints them (`net/mail`, `net/url`, `time`,
//! `encoding/json`) are reproduced as far as they matter.
//!
//! Blocking; no processes, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("commit {0} not found")]
    CommitNotFound(String),
    #[error("{0}")]
    Git(String),
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
}

impl From<git2::Error> for Error {
    fn from(err: git2::Error) -> Self {
        Error::Git(err.message().to_string())
    }
}

/// What Argo CD reports for a commit (`RevisionMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevisionMetadata {
    /// `Name <email>` of the author (`git show -s --format='%an <%ae>'`).
    pub author: String,
    /// Author time, seconds since the epoch (`%at`), and its UTC offset in
    /// minutes (Argo CD itself drops the offset: `time.Unix(at, 0)`).
    pub date_seconds: i64,
    pub date_offset_minutes: i32,
    /// Tags (short names) pointing at the commit, directly or through
    /// (possibly nested) annotated tags, sorted (`git tag --points-at`).
    pub tags: Vec<String>,
    /// The raw commit message (`%B`) with leading and trailing white space
    /// removed (Go's `strings.TrimSpace`).
    pub message: String,
    /// At most one reference, built from the message's
    /// `Argocd-reference-commit-*` trailers.
    pub references: Vec<RevisionReference>,
}

/// Argo CD's `RevisionReference` (`pkg/apis/application/v1alpha1`): for
/// now only a commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevisionReference {
    pub commit: Option<CommitMetadata>,
}

/// Argo CD's `CommitMetadata`, as `GetRevisionMetadata` fills it in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitMetadata {
    /// Go's `mail.Address.String()` of the `-author` trailer:
    /// `"Name" <local@domain>`, `<local@domain>` without a name, RFC 2047
    /// encoded names when not ASCII, and `<@>` when the trailer is absent
    /// or invalid (the zero `mail.Address`, as Argo CD reports it).
    pub author: String,
    /// The `-date` trailer re-formatted as RFC 3339 (no fraction, `Z` for
    /// UTC); empty when absent.
    pub date: String,
    pub subject: String,
    /// The `-body` trailer, decoded from its JSON string.
    pub body: String,
    pub sha: String,
    pub repo_url: String,
}

/// Argo CD's `GetRevisionMetadata` for `commit_sha` (without
/// `signatureInfo`: see [`is_signed`]).
pub fn revision_metadata(store: &Path, commit_sha: &str) -> Result<RevisionMetadata, Error> {
    let (repo, oid) = open_commit(store, &[], commit_sha)?;
    let commit = repo.find_commit(oid)?;
    let author = commit.author();
    let when = author.when();
    let message = String::from_utf8_lossy(commit.message_raw_bytes())
        .trim()
        .to_string();
    Ok(RevisionMetadata {
        author: format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        ),
        date_seconds: when.seconds(),
        date_offset_minutes: when.offset_minutes(),
        tags: tags_pointing_at(&repo, oid)?,
        references: references_from_message(&message),
        message,
    })
}

/// Whether the commit object carries a signature header (`gpgsig`, or
/// `gpgsig-sha256`); the signature itself is not checked.
pub fn is_signed(store: &Path, commit_sha: &str) -> Result<bool, Error> {
    let (repo, oid) = open_commit(store, &[], commit_sha)?;
    let commit = repo.find_commit(oid)?;
    Ok(["gpgsig", "gpgsig-sha256"]
        .iter()
        .any(|field| commit.header_field_bytes(*field).is_ok()))
}

/// Files at `commit_sha` whose repository-relative path matches `pattern`,
/// with their content, selected as Argo CD's `GetGitFiles` selects them:
///
/// - `new_globbing == false`: `git ls-files -- <pattern>` (git pathspec:
///   `*` and `?` also match `/`, a directory name selects everything below
///   it, `:(glob)`/`:(icase)`/`:(literal)`/`:!` magic).
/// - `new_globbing == true`: doublestar globbing of the work tree
///   (`*` stops at `/`, `**` spans directories, `{a,b}`), following
///   symlinked directories; matches resolving outside the repository are
///   left out (Argo CD logs and ignores them).
///
/// A symlink is read through (its target's content, under the link's
/// path). In the legacy mode, a symlink leaving the repository is an error
/// naming it (Argo CD would read the file outside the checkout). A match
/// that is a directory (or a symlink to one), a dangling symlink or a
/// symlink loop is an error, as `os.ReadFile` fails in Argo CD. Submodule
/// entries are skipped (their content is not in this store). An empty
/// pattern means `.`. Stops with an error once the contents add up to more
/// than `max_total_bytes`.
pub fn git_files(
    store: &Path,
    submodules: &[PathBuf],
    commit_sha: &str,
    pattern: &str,
    new_globbing: bool,
    max_total_bytes: u64,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let pattern = if pattern.is_empty() { "." } else { pattern };
    let (repo, oid) = open_commit(store, submodules, commit_sha)?;
    let root = repo.find_commit(oid)?.tree_id();
    let reader = Reader {
        repo: &repo,
        root,
        pattern,
        limit: max_total_bytes,
        total: 0,
    };
    if new_globbing {
        new_glob_files(reader)
    } else {
        legacy_files(reader)
    }
}

/// Every directory at `commit_sha`, as `GetGitDirectories` lists them: a
/// `filepath.WalkDir` of the checkout, so pre-order with each directory's
/// entries sorted by name (which is not plain string order: `a`, `a/b`,
/// `a-c`). The root is left out; directories whose name starts with `.` are
/// left out with everything below them unless `include_hidden`. Symlinks
/// to directories are not listed (WalkDir does not follow them); a
/// submodule is listed (a checkout has a directory there), and what it
/// contains when its store is among `submodules` (git directories of
/// submodule stores, see [`super::Stores::fetch_submodules`]).
pub fn git_directories(
    store: &Path,
    submodules: &[PathBuf],
    commit_sha: &str,
    include_hidden: bool,
) -> Result<Vec<String>, Error> {
    let (repo, oid) = open_commit(store, submodules, commit_sha)?;
    let root = repo.find_commit(oid)?.tree_id();
    let mut paths = Vec::new();
    walk_directories(&repo, root, "", include_hidden, &mut paths)?;
    Ok(paths)
}

fn walk_directories(
    repo: &Repository,
    tree: Oid,
    prefix: &str,
    include_hidden: bool,
    paths: &mut Vec<String>,
) -> Result<(), Error> {
    let tree = repo.find_tree(tree)?;
    let mut entries: Vec<(Vec<u8>, Oid, bool)> = tree
        .iter()
        .filter_map(|entry| match entry.kind() {
            Some(ObjectType::Tree) => Some((entry.name_bytes().to_vec(), entry.id(), true)),
            Some(ObjectType::Commit) => Some(match submodule_tree(repo, entry.id()) {
                Some(tree) => (entry.name_bytes().to_vec(), tree, true),
                None => (entry.name_bytes().to_vec(), entry.id(), false),
            }),
            _ => None,
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, id, is_tree) in entries {
        if !include_hidden && name.starts_with(b".") {
            continue;
        }
        let path = join(prefix, &String::from_utf8_lossy(&name));
        paths.push(path.clone());
        if is_tree {
            walk_directories(repo, id, &path, include_hidden, paths)?;
        }
    }
    Ok(())
}

/// The tree of the submodule commit `gitlink`, when its store is one of
/// the repository's alternates.
fn submodule_tree(repo: &Repository, gitlink: Oid) -> Option<Oid> {
    repo.find_commit(gitlink)
        .ok()
        .map(|commit| commit.tree_id())
}

fn open_commit(
    store: &Path,
    submodules: &[PathBuf],
    commit_sha: &str,
) -> Result<(Repository, Oid), Error> {
    let repo = super::open_with_alternates(store, submodules)?;
    let not_found = || Error::CommitNotFound(commit_sha.to_string());
    if commit_sha.len() != 40 || !commit_sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let oid = Oid::from_str(commit_sha).map_err(|_| not_found())?;
    match repo.find_object(oid, None) {
        Ok(object) if object.kind() == Some(ObjectType::Commit) => {}
        Ok(_) => return Err(not_found()),
        Err(err) if err.code() == git2::ErrorCode::NotFound => return Err(not_found()),
        Err(err) => return Err(err.into()),
    }
    Ok((repo, oid))
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// `git tag --points-at <commit>`: tags whose target is the commit, or an
/// annotated tag that leads to it (git >= 2.42 peels nested tags).
fn tags_pointing_at(repo: &Repository, commit: Oid) -> Result<Vec<String>, Error> {
    let odb = repo.odb()?;
    let mut tags = Vec::new();
    for reference in repo.references_glob("refs/tags/*")? {
        let Ok(reference) = reference else { continue };
        let Some(name) = reference.name_bytes().strip_prefix(b"refs/tags/") else {
            continue;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let Some(mut id) = reference.resolve().ok().and_then(|r| r.target()) else {
            continue;
        };
        for _ in 0..64 {
            if id == commit {
                tags.push(name);
                break;
            }
            // Only an annotated tag leads further (the header is enough
            // to tell, without inflating every tagged commit).
            match odb.read_header(id) {
                Ok((_, ObjectType::Tag)) => match repo.find_tag(id) {
                    Ok(tag) => id = tag.target_id(),
                    Err(_) => break,
                },
                _ => break,
            }
        }
    }
    tags.sort();
    Ok(tags)
}

// ---------------------------------------------------------------------------
// References: `git interpret-trailers --parse` + Argo CD's `GetReferences`.

fn references_from_message(message: &str) -> Vec<RevisionReference> {
    references_from_trailer_lines(&trailer_lines(message))
}

/// The lines `git interpret-trailers --parse` prints for `message`.
fn trailer_lines(message: &str) -> Vec<String> {
    // interpret-trailers completes the last line of its input.
    let mut input = message.as_bytes().to_vec();
    if !input.is_empty() && !input.ends_with(b"\n") {
        input.push(b'\n');
    }
    trailers::parse(&input)
        .into_iter()
        .map(|(token, value)| {
            let mut line = token;
            line.extend_from_slice(b": ");
            line.extend_from_slice(&value);
            String::from_utf8_lossy(&line).into_owned()
        })
        .collect()
}

/// Argo CD's `GetReferences` over the output lines of `git
/// interpret-trailers --parse` (`util/git/client.go`): a valid trailer
/// overrides an earlier one, an invalid one is ignored; one reference if
/// any field ended up set.
fn references_from_trailer_lines(lines: &[String]) -> Vec<RevisionReference> {
    let mut author: Option<gomail::Address> = None;
    let mut meta = CommitMetadata::default();
    for line in lines {
        // bufio.Scanner gives up on a line of 64 KiB or more.
        if line.len() >= 64 * 1024 {
            break;
        }
        let Some(rest) = line.strip_prefix("Argocd-reference-commit-") else {
            continue;
        };
        let Some((key, value)) = rest.split_once(": ") else {
            continue;
        };
        match key {
            "repourl" if gourl::parses(value) => meta.repo_url = value.to_string(),
            "author" => {
                if let Ok(address) = gomail::parse_address(value) {
                    author = Some(address);
                }
            }
            "date" => {
                if let Some(date) = gotime::reformat_rfc3339(value) {
                    meta.date = date;
                }
            }
            "subject" => meta.subject = value.to_string(),
            "body" => {
                if let Some(body) = gojson::unmarshal_string(value) {
                    meta.body = body;
                }
            }
            "sha" if is_reference_sha(value) => meta.sha = value.to_string(),
            _ => {}
        }
    }
    let author = author.unwrap_or_default();
    let zero =
        author.name.is_empty() && author.address.is_empty() && meta == CommitMetadata::default();
    if zero {
        return Vec::new();
    }
    meta.author = author.to_string();
    vec![RevisionReference { commit: Some(meta) }]
}

/// `^[0-9a-f]{5,40}$`
fn is_reference_sha(value: &str) -> bool {
    (5..=40).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// git's trailer parser (`trailer.c`, git 2.4x) as `git interpret-trailers
/// --parse` (`--only-trailers --only-input --unfold`) runs it with the
/// default configuration: separators `:`, comment character `#`.
mod trailers {
    const GIT_GENERATED_PREFIXES: [&[u8]; 2] = [b"Signed-off-by: ", b"(cherry picked from commit "];
    const SCISSORS: &[u8] = b"# ------------------------ >8 ------------------------";

    /// git's `isspace` (sane_ctype): no `\v`, no `\f`.
    fn is_space(c: u8) -> bool {
        matches!(c, b' ' | b'\t' | b'\n' | b'\r')
    }

    fn next_line(buf: &[u8], pos: usize) -> usize {
        match buf[pos..].iter().position(|&c| c == b'\n') {
            Some(i) => pos + i + 1,
            None => buf.len(),
        }
    }

    fn is_blank_line(buf: &[u8], pos: usize) -> bool {
        let mut i = pos;
        while i < buf.len() && buf[i] != b'\n' && is_space(buf[i]) {
            i += 1;
        }
        i >= buf.len() || buf[i] == b'\n'
    }

    /// Start of the last line of `buf[..len]` (a final newline belongs to
    /// the last line).
    fn last_line(buf: &[u8], len: usize) -> Option<usize> {
        match len {
            0 => None,
            1 => Some(0),
            _ => Some(
                buf[..len - 1]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |i| i + 1),
            ),
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// `wt_status_locate_end`: the scissors line and below are ignored.
    fn locate_end(buf: &[u8], len: usize) -> usize {
        if buf.starts_with(SCISSORS) {
            return 0;
        }
        let mut pattern = vec![b'\n'];
        pattern.extend_from_slice(SCISSORS);
        match find(buf, &pattern) {
            Some(p) if p + 1 < len => p + 1,
            _ => len,
        }
    }

    /// `ignored_log_message_bytes`: trailing comments and blank lines (and
    /// an old-style `Conflicts:` block).
    fn ignored_bytes(buf: &[u8], len: usize) -> usize {
        let cutoff = locate_end(buf, len);
        let (mut boc, mut bol, mut in_conflicts) = (0, 0, false);
        while bol < cutoff {
            let next = match buf[bol..len].iter().position(|&c| c == b'\n') {
                Some(i) => bol + i + 1,
                None => len,
            };
            if buf[bol..cutoff].starts_with(b"#") || buf[bol] == b'\n' {
                if boc == 0 {
                    boc = bol;
                }
            } else if buf[bol..].starts_with(b"Conflicts:\n") {
                in_conflicts = true;
                if boc == 0 {
                    boc = bol;
                }
            } else if in_conflicts && buf[bol] == b'\t' {
                // A path of the conflicts block.
            } else if boc != 0 {
                boc = 0;
                in_conflicts = false;
            }
            bol = next;
        }
        if boc != 0 {
            len - boc
        } else {
            len - cutoff
        }
    }

    /// `find_end_of_log_message`: a `---` line starts a patch part.
    fn end_of_log_message(input: &[u8]) -> usize {
        let mut end = input.len();
        let mut s = 0;
        while s < input.len() {
            if input[s..].starts_with(b"---") && input.get(s + 3).is_some_and(|&c| is_space(c)) {
                end = s;
                break;
            }
            s = next_line(input, s);
        }
        end - ignored_bytes(input, end)
    }

    /// `find_separator`: `<token><optional white space>:`.
    fn find_separator(line: &[u8]) -> Option<usize> {
        let mut whitespace_found = false;
        for (i, &c) in line.iter().enumerate() {
            if c == b':' {
                return Some(i);
            }
            if !whitespace_found && (c.is_ascii_alphanumeric() || c == b'-') {
                continue;
            }
            if i != 0 && (c == b' ' || c == b'\t') {
                whitespace_found = true;
                continue;
            }
            break;
        }
        None
    }

    fn is_trailer_line(line: &[u8]) -> bool {
        matches!(find_separator(line), Some(p) if p >= 1)
    }

    /// `find_trailer_block_start`: the last paragraph (never the first),
    /// when it is all trailers, or holds a git-generated one and at least
    /// 25% trailers.
    fn block_start(buf: &[u8], len: usize) -> usize {
        let mut s = 0;
        while s < len {
            if buf[s..len].starts_with(b"#") {
                s = next_line(buf, s);
                continue;
            }
            if is_blank_line(buf, s) {
                break;
            }
            s = next_line(buf, s);
        }
        let end_of_title = s;
        let (mut only_spaces, mut recognized_prefix) = (true, false);
        let (mut trailer_lines, mut non_trailer_lines, mut continuation_lines) = (0, 0, 0);
        let mut line = last_line(buf, len);
        while let Some(bol) = line {
            if bol < end_of_title {
                break;
            }
            line = last_line(buf, bol);
            if buf[bol..len].starts_with(b"#") {
                non_trailer_lines += continuation_lines;
                continuation_lines = 0;
                continue;
            }
            if is_blank_line(buf, bol) {
                if only_spaces {
                    continue;
                }
                non_trailer_lines += continuation_lines;
                if (recognized_prefix && trailer_lines * 3 >= non_trailer_lines)
                    || (trailer_lines > 0 && non_trailer_lines == 0)
                {
                    return next_line(buf, bol);
                }
                return len;
            }
            only_spaces = false;
            if GIT_GENERATED_PREFIXES
                .iter()
                .any(|p| buf[bol..].starts_with(p))
            {
                trailer_lines += 1;
                continuation_lines = 0;
                recognized_prefix = true;
                continue;
            }
            if is_trailer_line(&buf[bol..]) && !is_space(buf[bol]) {
                trailer_lines += 1;
                continuation_lines = 0;
            } else if is_space(buf[bol]) {
                continuation_lines += 1;
            } else {
                non_trailer_lines += 1 + continuation_lines;
                continuation_lines = 0;
            }
        }
        len
    }

    fn trim(s: &[u8]) -> &[u8] {
        let start = s.iter().position(|&c| !is_space(c)).unwrap_or(s.len());
        let end = s
            .iter()
            .rposition(|&c| !is_space(c))
            .map_or(start, |i| i + 1);
        &s[start..end]
    }

    /// `unfold_value`: each newline and the white space after it become
    /// one space.
    fn unfold(value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.len());
        let mut i = 0;
        while i < value.len() {
            let c = value[i];
            i += 1;
            if c == b'\n' {
                while i < value.len() && is_space(value[i]) {
                    i += 1;
                }
                out.push(b' ');
            } else {
                out.push(c);
            }
        }
        trim(&out).to_vec()
    }

    /// The (token, value) pairs `git interpret-trailers --parse` prints as
    /// `token: value` lines for `input` (which ends with a newline).
    pub fn parse(input: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let end = end_of_log_message(input);
        let start = block_start(input, end).min(end);
        let block = &input[start..end];
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut last: Option<usize> = None;
        let mut i = 0;
        while i < block.len() {
            let j = next_line(block, i);
            let piece = &block[i..j];
            i = j;
            if let Some(last) = last {
                if is_space(piece[0]) {
                    lines[last].extend_from_slice(piece);
                    continue;
                }
            }
            lines.push(piece.to_vec());
            last = is_trailer_line(piece).then(|| lines.len() - 1);
        }
        lines
            .iter()
            .filter(|line| !line.starts_with(b"#"))
            .filter_map(|line| {
                let sep = find_separator(line).filter(|&p| p >= 1)?;
                Some((trim(&line[..sep]).to_vec(), unfold(trim(&line[sep + 1..]))))
            })
            .collect()
    }
}

/// Go's `net/mail` address parsing (`ParseAddress`) and printing
/// (`Address.String`, with `mime` RFC 2047 word encoding).
mod gomail {
    use base64::Engine as _;

    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub struct Address {
        pub name: String,
        pub address: String,
    }

    pub fn parse_address(s: &str) -> Result<Address, String> {
        let mut p = Parser { s };
        let mut addresses = p.parse_address(true)?;
        if !p.skip_cfws() {
            return Err("mail: misformatted parenthetical comment".into());
        }
        if !p.s.is_empty() {
            return Err(format!("mail: expected single address, got {:?}", p.s));
        }
        match addresses.len() {
            0 => Err("mail: empty group".into()),
            1 => Ok(addresses.remove(0)),
            _ => Err("mail: group with multiple addresses".into()),
        }
    }

    fn is_vchar(r: char) -> bool {
        ('!'..='~').contains(&r) || is_multibyte(r)
    }

    fn is_multibyte(r: char) -> bool {
        r as u32 >= 0x80
    }

    fn is_wsp(r: char) -> bool {
        r == ' ' || r == '\t'
    }

    fn is_atext(r: char, dot: bool) -> bool {
        match r {
            '.' => dot,
            '(' | ')' | '<' | '>' | '[' | ']' | ':' | ';' | '@' | '\\' | ',' | '"' => false,
            _ => is_vchar(r),
        }
    }

    fn is_qtext(r: char) -> bool {
        r != '\\' && r != '"' && is_vchar(r)
    }

    fn is_dtext(r: char) -> bool {
        r != '[' && r != ']' && r != '\\' && is_vchar(r)
    }

    struct Parser<'a> {
        s: &'a str,
    }

    enum Word {
        Decoded(String),
        NotEncoded,
        CharsetError(String),
    }

    impl<'a> Parser<'a> {
        fn skip_space(&mut self) {
            self.s = self.s.trim_start_matches([' ', '\t']);
        }

        fn consume(&mut self, c: char) -> bool {
            match self.s.strip_prefix(c) {
                Some(rest) => {
                    self.s = rest;
                    true
                }
                None => false,
            }
        }

        fn parse_address(&mut self, handle_group: bool) -> Result<Vec<Address>, String> {
            self.skip_space();
            if self.s.is_empty() {
                return Err("mail: no address".into());
            }
            if let Ok(spec) = self.consume_addr_spec() {
                let mut name = String::new();
                self.skip_space();
                if self.s.starts_with('(') {
                    name = self.consume_display_name_comment()?;
                }
                return Ok(vec![Address {
                    name,
                    address: spec,
                }]);
            }
            let mut name = String::new();
            if !self.s.starts_with('<') {
                name = self.consume_phrase()?;
            }
            self.skip_space();
            if handle_group && self.consume(':') {
                return self.consume_group_list();
            }
            if !self.consume('<') {
                if name.chars().all(|r| is_atext(r, true)) {
                    return Err("mail: missing '@' or angle-addr".into());
                }
                return Err("mail: no angle-addr".into());
            }
            let spec = self.consume_addr_spec()?;
            if !self.consume('>') {
                return Err("mail: unclosed angle-addr".into());
            }
            Ok(vec![Address {
                name,
                address: spec,
            }])
        }

        fn consume_group_list(&mut self) -> Result<Vec<Address>, String> {
            let mut group = Vec::new();
            self.skip_space();
            if self.consume(';') {
                if !self.skip_cfws() {
                    return Err("mail: misformatted parenthetical comment".into());
                }
                return Ok(group);
            }
            loop {
                self.skip_space();
                group.extend(self.parse_address(false)?);
                if !self.skip_cfws() {
                    return Err("mail: misformatted parenthetical comment".into());
                }
                if self.consume(';') {
                    if !self.skip_cfws() {
                        return Err("mail: misformatted parenthetical comment".into());
                    }
                    return Ok(group);
                }
                if !self.consume(',') {
                    return Err("mail: expected comma".into());
                }
            }
        }

        fn consume_addr_spec(&mut self) -> Result<String, String> {
            let orig = self.s;
            let spec = self.addr_spec();
            if spec.is_err() {
                self.s = orig;
            }
            spec
        }

        fn addr_spec(&mut self) -> Result<String, String> {
            self.skip_space();
            if self.s.is_empty() {
                return Err("mail: no addr-spec".into());
            }
            let local = if self.s.starts_with('"') {
                let local = self.consume_quoted_string();
                match local {
                    Ok(local) if !local.is_empty() => local,
                    _ => return Err("mail: empty quoted string in addr-spec".into()),
                }
            } else {
                self.consume_atom(true, false)?.to_string()
            };
            if !self.consume('@') {
                return Err("mail: missing @ in addr-spec".into());
            }
            self.skip_space();
            if self.s.is_empty() {
                return Err("mail: no domain in addr-spec".into());
            }
            let domain = if self.s.starts_with('[') {
                self.consume_domain_literal()?
            } else {
                self.consume_atom(true, false)?.to_string()
            };
            Ok(format!("{local}@{domain}"))
        }

        fn consume_phrase(&mut self) -> Result<String, String> {
            let mut words: Vec<String> = Vec::new();
            let mut prev_encoded = false;
            let mut error = None;
            loop {
                if !words.is_empty() && !self.skip_cfws() {
                    return Err("mail: misformatted parenthetical comment".into());
                }
                self.skip_space();
                if self.s.is_empty() {
                    break;
                }
                let (word, encoded) = if self.s.starts_with('"') {
                    match self.consume_quoted_string() {
                        Ok(word) => (word, false),
                        Err(err) => {
                            error = Some(err);
                            break;
                        }
                    }
                } else {
                    match self.consume_atom(true, true) {
                        Ok(atom) => match decode_rfc2047_word(atom) {
                            Word::Decoded(word) => (word, true),
                            Word::NotEncoded => (atom.to_string(), false),
                            Word::CharsetError(err) => {
                                error = Some(err);
                                break;
                            }
                        },
                        Err(err) => {
                            error = Some(err);
                            break;
                        }
                    }
                };
                match words.last_mut() {
                    Some(last) if prev_encoded && encoded => last.push_str(&word),
                    _ => words.push(word),
                }
                prev_encoded = encoded;
            }
            if let Some(err) = error {
                if words.is_empty() {
                    return Err(format!("mail: missing word in phrase: {err}"));
                }
            }
            Ok(words.join(" "))
        }

        fn consume_quoted_string(&mut self) -> Result<String, String> {
            // The first character is '"'.
            let mut i = 1;
            let mut out = String::new();
            let mut escaped = false;
            loop {
                let Some(r) = self.s[i..].chars().next() else {
                    return Err("mail: unclosed quoted-string".into());
                };
                if escaped {
                    if !is_vchar(r) && !is_wsp(r) {
                        return Err(format!("mail: bad character in quoted-string: {r:?}"));
                    }
                    out.push(r);
                    escaped = false;
                } else if is_qtext(r) || is_wsp(r) {
                    out.push(r);
                } else if r == '"' {
                    break;
                } else if r == '\\' {
                    escaped = true;
                } else {
                    return Err(format!("mail: bad character in quoted-string: {r:?}"));
                }
                i += r.len_utf8();
            }
            self.s = &self.s[i + 1..];
            Ok(out)
        }

        fn consume_atom(&mut self, dot: bool, permissive: bool) -> Result<&'a str, String> {
            let len: usize = self
                .s
                .chars()
                .take_while(|&r| is_atext(r, dot))
                .map(char::len_utf8)
                .sum();
            if len == 0 {
                return Err("mail: invalid string".into());
            }
            let atom = &self.s[..len];
            self.s = &self.s[len..];
            if !permissive {
                if atom.starts_with('.') {
                    return Err("mail: leading dot in atom".into());
                }
                if atom.contains("..") {
                    return Err("mail: double dot in atom".into());
                }
                if atom.ends_with('.') {
                    return Err("mail: trailing dot in atom".into());
                }
            }
            Ok(atom)
        }

        fn consume_domain_literal(&mut self) -> Result<String, String> {
            if !self.consume('[') {
                return Err("mail: missing \"[\" in domain-literal".into());
            }
            let mut dtext = String::new();
            loop {
                let Some(r) = self.s.chars().next() else {
                    return Err("mail: unclosed domain-literal".into());
                };
                if r == ']' {
                    break;
                }
                if !is_dtext(r) {
                    return Err(format!("mail: bad character in domain-literal: {r:?}"));
                }
                dtext.push(r);
                self.s = &self.s[r.len_utf8()..];
            }
            if !self.consume(']') {
                return Err("mail: unclosed domain-literal".into());
            }
            let valid = match dtext.strip_prefix("IPv6:") {
                // net.ParseIP gives 16 bytes for either family.
                Some(ip) => ip.parse::<std::net::IpAddr>().is_ok(),
                None => match dtext.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(_)) => true,
                    Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_some(),
                    Err(_) => false,
                },
            };
            if !valid {
                return Err(format!(
                    "mail: invalid IP address in domain-literal: {dtext:?}"
                ));
            }
            Ok(format!("[{dtext}]"))
        }

        fn consume_display_name_comment(&mut self) -> Result<String, String> {
            if !self.consume('(') {
                return Err("mail: comment does not start with (".into());
            }
            let Some(comment) = self.consume_comment() else {
                return Err("mail: misformatted parenthetical comment".into());
            };
            let mut words = Vec::new();
            for word in comment.split([' ', '\t']).filter(|w| !w.is_empty()) {
                words.push(match decode_rfc2047_word(word) {
                    Word::Decoded(decoded) => decoded,
                    Word::NotEncoded => word.to_string(),
                    Word::CharsetError(err) => return Err(err),
                });
            }
            Ok(words.join(" "))
        }

        fn skip_cfws(&mut self) -> bool {
            self.skip_space();
            while self.consume('(') {
                if self.consume_comment().is_none() {
                    return false;
                }
                self.skip_space();
            }
            true
        }

        /// After '('; `None` when unbalanced.
        fn consume_comment(&mut self) -> Option<String> {
            let bytes = self.s.as_bytes();
            let mut depth = 1;
            let mut comment = Vec::new();
            let mut i = 0;
            while i < bytes.len() && depth > 0 {
                if bytes[i] == b'\\' && bytes.len() - i > 1 {
                    i += 1;
                } else if bytes[i] == b'(' {
                    depth += 1;
                } else if bytes[i] == b')' {
                    depth -= 1;
                }
                if depth > 0 {
                    comment.push(bytes[i]);
                }
                i += 1;
            }
            // `i` may split a character only when the input ends there.
            self.s = self.s.get(i..).unwrap_or("");
            (depth == 0).then(|| String::from_utf8_lossy(&comment).into_owned())
        }
    }

    /// `mime.WordDecoder.Decode` with only the built-in charsets (utf-8,
    /// iso-8859-1, us-ascii), as net/mail uses it.
    fn decode_rfc2047_word(word: &str) -> Word {
        if word.len() < 8
            || !word.starts_with("=?")
            || !word.ends_with("?=")
            || word.matches('?').count() != 4
        {
            return Word::NotEncoded;
        }
        let inner = &word[2..word.len() - 2];
        let (charset, rest) = inner.split_once('?').unwrap_or((inner, ""));
        if charset.is_empty() {
            return Word::NotEncoded;
        }
        let (encoding, text) = rest.split_once('?').unwrap_or((rest, ""));
        let content = match encoding {
            "B" | "b" => {
                let config = base64::engine::GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical);
                let engine =
                    base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config);
                match engine.decode(text) {
                    Ok(content) => content,
                    Err(_) => return Word::NotEncoded,
                }
            }
            "Q" | "q" => match q_decode(text.as_bytes()) {
                Some(content) => content,
                None => return Word::NotEncoded,
            },
            _ => return Word::NotEncoded,
        };
        if charset.eq_ignore_ascii_case("utf-8") {
            Word::Decoded(String::from_utf8_lossy(&content).into_owned())
        } else if charset.eq_ignore_ascii_case("iso-8859-1") {
            Word::Decoded(content.iter().map(|&b| b as char).collect())
        } else if charset.eq_ignore_ascii_case("us-ascii") {
            Word::Decoded(
                content
                    .iter()
                    .map(|&b| if b < 0x80 { b as char } else { '\u{fffd}' })
                    .collect(),
            )
        } else {
            Word::CharsetError(format!(
                "charset not supported: {:?}",
                charset.to_ascii_lowercase()
            ))
        }
    }

    fn q_decode(s: &[u8]) -> Option<Vec<u8>> {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            match c {
                b'_' => out.push(b' '),
                b'=' => {
                    if i + 2 >= s.len() {
                        return None;
                    }
                    out.push(hex(s[i + 1])? << 4 | hex(s[i + 2])?);
                    i += 2;
                }
                b' '..=b'~' | b'\n' | b'\r' | b'\t' => out.push(c),
                _ => return None,
            }
            i += 1;
        }
        Some(out)
    }

    fn quote_string(s: &str) -> String {
        let mut out = String::from("\"");
        for r in s.chars() {
            if is_qtext(r) || is_wsp(r) {
                out.push(r);
            } else if is_vchar(r) {
                out.push('\\');
                out.push(r);
            }
        }
        out.push('"');
        out
    }

    const MAX_CONTENT_LEN: usize = 75 - "=?UTF-8?q?".len() - "?=".len();

    /// `mime.BEncoding.Encode("utf-8", s)`.
    fn b_encode(s: &str) -> String {
        let std = base64::engine::general_purpose::STANDARD;
        let max_base64_len = MAX_CONTENT_LEN / 4 * 3;
        let mut out = String::from("=?utf-8?b?");
        if s.len().div_ceil(3) * 4 <= MAX_CONTENT_LEN {
            out.push_str(&std.encode(s));
        } else {
            let (mut current, mut last) = (0, 0);
            for (i, r) in s.char_indices() {
                let len = r.len_utf8();
                if current + len <= max_base64_len {
                    current += len;
                } else {
                    out.push_str(&std.encode(&s[last..i]));
                    out.push_str("?= =?utf-8?b?");
                    last = i;
                    current = len;
                }
            }
            out.push_str(&std.encode(&s[last..]));
        }
        out.push_str("?=");
        out
    }

    /// `mime.QEncoding.Encode("utf-8", s)`.
    fn q_encode(s: &str) -> String {
        let mut out = String::from("=?utf-8?q?");
        let mut current = 0;
        for r in s.chars() {
            let mut buf = [0u8; 4];
            let bytes = r.encode_utf8(&mut buf).as_bytes();
            let plain = bytes.len() == 1
                && (b' '..=b'~').contains(&bytes[0])
                && !b"=?_".contains(&bytes[0]);
            let len = if plain { 1 } else { 3 * bytes.len() };
            if current + len > MAX_CONTENT_LEN {
                out.push_str("?= =?utf-8?q?");
                current = 0;
            }
            for &b in bytes {
                match b {
                    b' ' => out.push('_'),
                    b'!'..=b'~' if !b"=?_".contains(&b) => out.push(b as char),
                    _ => out.push_str(&format!("={b:02X}")),
                }
            }
            current += len;
        }
        out.push_str("?=");
        out
    }

    impl std::fmt::Display for Address {
        /// `mail.Address.String()`.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let (local, domain) = match self.address.rfind('@') {
                Some(at) => (&self.address[..at], &self.address[at + 1..]),
                None => (self.address.as_str(), ""),
            };
            let bytes = local.as_bytes();
            let quote_local = local.char_indices().any(|(i, r)| {
                let dot_ok = r == '.' && i > 0 && bytes[i - 1] != b'.' && i < local.len() - 1;
                !is_atext(r, false) && !dot_ok
            });
            let local = if quote_local {
                quote_string(local)
            } else {
                local.to_string()
            };
            let addr = format!("<{local}@{domain}>");
            if self.name.is_empty() {
                return f.write_str(&addr);
            }
            let all_printable = self
                .name
                .chars()
                .all(|r| (is_vchar(r) || is_wsp(r)) && !is_multibyte(r));
            let name = if all_printable {
                quote_string(&self.name)
            } else if !self
                .name
                .chars()
                .any(|r| ((r as u32) < 0x20 && r != '\t') || r as u32 > 0x7e)
            {
                self.name.clone()
            } else if self
                .name
                .contains(|r| "\"#$%&'(),.:;<>@[]^`{|}~".contains(r))
            {
                b_encode(&self.name)
            } else {
                q_encode(&self.name)
            };
            write!(f, "{name} {addr}")
        }
    }
}

/// Whether Go's `url.Parse` (Go 1.26) accepts a string.
mod gourl {
    fn is_ctl(b: u8) -> bool {
        b < 0x20 || b == 0x7f
    }

    #[derive(PartialEq, Eq, Clone, Copy)]
    enum Mode {
        Path,
        Host,
        Zone,
        UserPassword,
        Fragment,
    }

    fn should_escape_host(c: u8) -> bool {
        !(c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c))
    }

    /// `unescape`'s validation.
    fn unescape_ok(s: &[u8], mode: Mode) -> bool {
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'%' => {
                    if i + 2 >= s.len()
                        || !s[i + 1].is_ascii_hexdigit()
                        || !s[i + 2].is_ascii_hexdigit()
                    {
                        return false;
                    }
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    let v = hex(s[i + 1]) << 4 | hex(s[i + 2]);
                    let is25 = &s[i..i + 3] == b"%25";
                    if mode == Mode::Host && hex(s[i + 1]) < 8 && !is25 {
                        return false;
                    }
                    if mode == Mode::Zone && !is25 && v != b' ' && should_escape_host(v) {
                        return false;
                    }
                    i += 3;
                }
                c => {
                    if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && should_escape_host(c)
                    {
                        return false;
                    }
                    i += 1;
                }
            }
        }
        true
    }

    fn valid_optional_port(port: &str) -> bool {
        port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
    }

    fn host_ok(host: &str) -> bool {
        if host.starts_with('[') {
            let Some(i) = host.rfind(']') else {
                return false;
            };
            if !valid_optional_port(&host[i + 1..]) {
                return false;
            }
            if let Some(zone) = host[..i].find("%25") {
                let bytes = host.as_bytes();
                return unescape_ok(&bytes[..zone], Mode::Host)
                    && unescape_ok(&bytes[zone..i], Mode::Zone)
                    && unescape_ok(&bytes[i..], Mode::Host);
            }
        } else if let Some(i) = host.rfind(':') {
            // Go 1.26 (urlstrictcolons): one colon at most outside brackets.
            if host[..i].contains(':') || !valid_optional_port(&host[i..]) {
                return false;
            }
        }
        unescape_ok(host.as_bytes(), Mode::Host)
    }

    fn valid_userinfo(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b))
    }

    pub fn parses(raw: &str) -> bool {
        let (u, fragment) = raw.split_once('#').unwrap_or((raw, ""));
        parse(u) && unescape_ok(fragment.as_bytes(), Mode::Fragment)
    }

    fn parse(raw: &str) -> bool {
        if raw.bytes().any(is_ctl) {
            return false;
        }
        if raw == "*" {
            return true;
        }
        let mut scheme = "";
        let mut rest = raw;
        for (i, b) in raw.bytes().enumerate() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' => {}
                b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
                b':' if i == 0 => return false,
                b':' => {
                    scheme = &raw[..i];
                    rest = &raw[i + 1..];
                    break;
                }
                _ => break,
            }
        }
        if rest.ends_with('?') && rest.matches('?').count() == 1 {
            rest = &rest[..rest.len() - 1];
        } else {
            rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        }
        if !rest.starts_with('/') {
            if !scheme.is_empty() {
                return true;
            }
            let segment = rest.split_once('/').map_or(rest, |(s, _)| s);
            if segment.contains(':') {
                return false;
            }
        }
        if (!scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
            let authority_and_path = &rest[2..];
            let (authority, path) = match authority_and_path.find('/') {
                Some(i) => (&authority_and_path[..i], &authority_and_path[i..]),
                None => (authority_and_path, ""),
            };
            let (userinfo, host) = match authority.rfind('@') {
                Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
                None => (None, authority),
            };
            if !host_ok(host) {
                return false;
            }
            if let Some(userinfo) = userinfo {
                if !valid_userinfo(userinfo)
                    || !unescape_ok(userinfo.as_bytes(), Mode::UserPassword)
                {
                    return false;
                }
            }
            rest = path;
        }
        unescape_ok(rest.as_bytes(), Mode::Path)
    }
}

/// Go's `time.Parse(time.RFC3339, v)` followed by `Format(time.RFC3339)`.
mod gotime {
    fn days_in(month: u32, year: u32) -> u32 {
        match month {
            2 if year.is_multiple_of(4)
                && (!year.is_multiple_of(100) || year.is_multiple_of(400)) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    pub fn reformat_rfc3339(value: &str) -> Option<String> {
        let b = value.as_bytes();
        let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        let num = |from: usize, len: usize| -> u32 {
            b[from..from + len]
                .iter()
                .fold(0, |n, d| n * 10 + u32::from(d - b'0'))
        };
        let mut i = 0;
        let fixed = |i: &mut usize, len: usize| -> Option<u32> {
            if (0..len).all(|k| digit(*i + k)) {
                *i += len;
                Some(num(*i - len, len))
            } else {
                None
            }
        };
        let literal =
            |i: &mut usize, c: u8| -> Option<()> { (b.get(*i) == Some(&c)).then(|| *i += 1) };
        let year = fixed(&mut i, 4)?;
        literal(&mut i, b'-')?;
        let month = fixed(&mut i, 2)?;
        literal(&mut i, b'-')?;
        let day = fixed(&mut i, 2)?;
        literal(&mut i, b'T')?;
        // The hour ("15") takes one or two digits.
        let hour_len = if digit(i + 1) { 2 } else { 1 };
        let hour = fixed(&mut i, hour_len)?;
        literal(&mut i, b':')?;
        let minute = fixed(&mut i, 2)?;
        literal(&mut i, b':')?;
        let second = fixed(&mut i, 2)?;
        if matches!(b.get(i), Some(b'.' | b',')) && digit(i + 1) {
            i += 1;
            while digit(i) {
                i += 1;
            }
        }
        let offset_minutes: i64 = if b.get(i) == Some(&b'Z') {
            i += 1;
            0
        } else {
            if b.len() < i + 6 || b[i + 3] != b':' || !(digit(i + 1) && digit(i + 2)) {
                return None;
            }
            if !(digit(i + 4) && digit(i + 5)) {
                return None;
            }
            let (hh, mm) = (num(i + 1, 2), num(i + 4, 2));
            if hh > 24 || mm > 60 {
                return None;
            }
            let minutes = i64::from(hh * 60 + mm);
            let sign = match b[i] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            i += 6;
            sign * minutes
        };
        if i != b.len()
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in(month, year)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let zone = if offset_minutes == 0 {
            "Z".to_string()
        } else {
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let abs = offset_minutes.abs();
            format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
        };
        Some(format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{zone}"
        ))
    }
}

/// Go's `json.Unmarshal` into a `string`.
mod gojson {
    pub fn unmarshal_string(value: &str) -> Option<String> {
        let value = value.trim_matches([' ', '\t', '\n', '\r']);
        if value == "null" {
            // Unmarshalling null into a string leaves it unchanged.
            return Some(String::new());
        }
        let inner = value.strip_prefix('"')?;
        let chars: Vec<char> = inner.chars().collect();
        let hex4 = |at: usize| -> Option<u32> {
            let digits: String = chars.get(at..at + 4)?.iter().collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(&digits, 16).ok()
        };
        let mut out = String::new();
        let mut i = 0;
        loop {
            let c = *chars.get(i)?;
            i += 1;
            match c {
                '"' => return (i == chars.len()).then_some(out),
                '\\' => {
                    let escape = *chars.get(i)?;
                    i += 1;
                    match escape {
                        '"' | '\\' | '/' => out.push(escape),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let first = hex4(i)?;
                            i += 4;
                            if (0xd800..0xe000).contains(&first) {
                                let low = (chars.get(i) == Some(&'\\')
                                    && chars.get(i + 1) == Some(&'u'))
                                .then(|| hex4(i + 2))
                                .flatten();
                                if (0xd800..0xdc00).contains(&first) {
                                    if let Some(low @ 0xdc00..=0xdfff) = low {
                                        let code =
                                            0x10000 + ((first - 0xd800) << 10) + (low - 0xdc00);
                                        out.push(char::from_u32(code)?);
                                        i += 6;
                                        continue;
                                    }
                                }
                                out.push('\u{fffd}');
                            } else {
                                out.push(char::from_u32(first)?);
                            }
                        }
                        _ => return None,
                    }
                }
                c if (c as u32) < 0x20 => return None,
                c => out.push(c),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// GetGitFiles.

/// Reads matched paths of one tree, counting the bytes read.
struct Reader<'r> {
    repo: &'r Repository,
    root: Oid,
    pattern: &'r str,
    limit: u64,
    total: u64,
}

/// What a path of the tree leads to, following symlinks as the kernel
/// (and Go's `filepath.EvalSymlinks`) would in a checkout.
enum Resolved {
    File(Oid),
    /// The tree and the path of the directory, symlinks resolved.
    Dir(Oid, Vec<Vec<u8>>),
    Submodule,
    Missing,
    NotDir,
    /// Leaves the repository (absolute target, or `..` above the root).
    Escapes,
    /// More than 40 symlinks (Linux's limit for one lookup).
    Loop,
}

const SYMLINK_MODE: i32 = 0o120000;
const MAX_SYMLINKS: usize = 40;

fn resolve(repo: &Repository, root: Oid, path: &[u8]) -> Result<Resolved, Error> {
    // Resolved directories below the root: (name, tree).
    let mut stack: Vec<(Vec<u8>, Oid)> = Vec::new();
    let mut pending: Vec<Vec<u8>> = path
        .split(|&c| c == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut links = 0;
    while let Some(component) = pending.pop() {
        match component.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return Ok(Resolved::Escapes);
                }
                continue;
            }
            _ => {}
        }
        let dir = stack.last().map_or(root, |(_, id)| *id);
        let tree = repo.find_tree(dir)?;
        let Some(entry) = tree.get_name_bytes(&component) else {
            return Ok(Resolved::Missing);
        };
        match entry.kind() {
            Some(ObjectType::Tree) => stack.push((component, entry.id())),
            Some(ObjectType::Commit) => match submodule_tree(repo, entry.id()) {
                Some(tree) => stack.push((component, tree)),
                None => return Ok(Resolved::Submodule),
            },
            Some(ObjectType::Blob) if entry.filemode() == SYMLINK_MODE => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Ok(Resolved::Loop);
                }
                let blob = repo.find_blob(entry.id())?;
                let target = blob.content();
                if target.is_empty() {
                    return Ok(Resolved::Missing);
                }
                if target.starts_with(b"/") {
                    return Ok(Resolved::Escapes);
                }
                pending.extend(target.split(|&c| c == b'/').rev().map(<[u8]>::to_vec));
            }
            Some(ObjectType::Blob) => {
                if !pending.is_empty() {
                    return Ok(Resolved::NotDir);
                }
                return Ok(Resolved::File(entry.id()));
            }
            _ => return Ok(Resolved::Missing),
        }
    }
    let tree = stack.last().map_or(root, |(_, id)| *id);
    Ok(Resolved::Dir(
        tree,
        stack.into_iter().map(|(name, _)| name).collect(),
    ))
}

impl Reader<'_> {
    fn read_error(&self, path: &str, why: &str) -> Error {
        Error::Git(format!(
            "unable to read files (pattern {:?}): {path}: {why}",
            self.pattern
        ))
    }

    fn read_blob(
        &mut self,
        path: &str,
        id: Oid,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), Error> {
        let blob = self.repo.find_blob(id)?;
        self.total += blob.size() as u64;
        if self.total > self.limit {
            return Err(Error::Git(format!(
                "the files matching {:?} add up to more than {} bytes",
                self.pattern, self.limit
            )));
        }
        files.insert(path.to_string(), blob.content().to_vec());
        Ok(())
    }

    /// Reads what `path` leads to, as `os.ReadFile` in a checkout would;
    /// `escape_is_error` decides whether a path leaving the repository is an
    /// error or left out.
    fn read_path(
        &mut self,
        path: &str,
        escape_is_error: bool,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), Error> {
        match resolve(self.repo, self.root, path.as_bytes())? {
            Resolved::File(id) => self.read_blob(path, id, files),
            Resolved::Submodule => Ok(()),
            Resolved::Escapes if escape_is_error => {
                Err(self.read_error(path, "symlink points outside the repository"))
            }
            Resolved::Escapes => Ok(()),
            Resolved::Dir(..) => Err(self.read_error(path, "is a directory")),
            Resolved::Missing => {
                Err(self.read_error(path, "no such file or directory (dangling symlink)"))
            }
            Resolved::NotDir => Err(self.read_error(path, "not a directory")),
            Resolved::Loop => Err(self.read_error(path, "too many levels of symbolic links")),
        }
    }
}

/// `git ls-files --full-name -z -- <pattern>` at the root, then
/// `os.ReadFile` of each.
fn legacy_files(mut reader: Reader<'_>) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let spec = pathspec::Pathspec::parse(reader.pattern).map_err(|message| Error::Pattern {
        pattern: reader.pattern.to_string(),
        message,
    })?;
    let mut entries = Vec::new();
    index_entries(reader.repo, reader.root, &mut Vec::new(), &mut entries)?;
    let mut files = BTreeMap::new();
    for (path, kind, id) in entries {
        if !spec.selects(&path, kind == IndexKind::Gitlink) {
            continue;
        }
        let name = String::from_utf8_lossy(&path).into_owned();
        match kind {
            IndexKind::Gitlink => {}
            IndexKind::File => reader.read_blob(&name, id, &mut files)?,
            IndexKind::Symlink => reader.read_path(&name, true, &mut files)?,
        }
    }
    Ok(files)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexKind {
    File,
    Symlink,
    Gitlink,
}

/// What the index of a checkout of the tree holds.
fn index_entries(
    repo: &Repository,
    tree: Oid,
    prefix: &mut Vec<u8>,
    out: &mut Vec<(Vec<u8>, IndexKind, Oid)>,
) -> Result<(), Error> {
    let tree = repo.find_tree(tree)?;
    for entry in tree.iter() {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(entry.name_bytes());
        match entry.kind() {
            Some(ObjectType::Tree) => index_entries(repo, entry.id(), prefix, out)?,
            Some(ObjectType::Commit) => out.push((prefix.clone(), IndexKind::Gitlink, entry.id())),
            Some(ObjectType::Blob) if entry.filemode() == SYMLINK_MODE => {
                out.push((prefix.clone(), IndexKind::Symlink, entry.id()))
            }
            Some(ObjectType::Blob) => out.push((prefix.clone(), IndexKind::File, entry.id())),
            _ => {}
        }
        prefix.truncate(len);
    }
    Ok(())
}

/// Argo CD's new globbing: `doublestar.FilepathGlob(filepath.Join(root,
/// pattern))`, then for each match `filepath.EvalSymlinks` (an error fails
/// the request; a result outside the root is ignored) and `os.ReadFile`.
fn new_glob_files(mut reader: Reader<'_>) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let pattern = reader.pattern;
    let bad = |message: &str| Error::Pattern {
        pattern: pattern.to_string(),
        message: message.to_string(),
    };
    let cleaned = doublestar::clean(pattern.trim_start_matches('/'));
    if cleaned == ".." || cleaned.starts_with("../") {
        // Everything it matches is outside the checkout.
        return Ok(BTreeMap::new());
    }
    if cleaned == "." {
        return Err(reader.read_error(".", "is a directory"));
    }
    let (base, glob) = doublestar::split_pattern(&cleaned);
    if !doublestar::validate(glob) {
        return Err(bad("syntax error in pattern"));
    }
    let alternatives =
        doublestar::expand_alternatives(glob, 4096).ok_or_else(|| bad("too many alternatives"))?;
    let mut globber = Globber {
        repo: reader.repo,
        root: reader.root,
        matches: BTreeSet::new(),
    };
    let base_dir = match base {
        None => Some(Dir {
            path: String::new(),
            tree: reader.root,
            physical: Vec::new(),
        }),
        Some(base) => match resolve(reader.repo, reader.root, base.as_bytes())? {
            Resolved::Dir(tree, physical) => Some(Dir {
                path: base.to_string(),
                tree,
                physical,
            }),
            _ => None,
        },
    };
    if let Some(base_dir) = base_dir {
        for alternative in &alternatives {
            globber.glob(&base_dir, alternative)?;
        }
    }
    let mut files = BTreeMap::new();
    for path in std::mem::take(&mut globber.matches) {
        if path.is_empty() {
            return Err(reader.read_error(".", "is a directory"));
        }
        reader.read_path(&path, false, &mut files)?;
    }
    Ok(files)
}

struct Dir {
    /// As matched ("" for the root), symlinks not resolved.
    path: String,
    tree: Oid,
    /// Symlinks resolved, to find cycles.
    physical: Vec<Vec<u8>>,
}

struct Child {
    name: String,
    path: String,
    dir: Option<Dir>,
    submodule: bool,
}

struct Globber<'r> {
    repo: &'r Repository,
    root: Oid,
    /// Matched paths ("" is the root).
    matches: BTreeSet<String>,
}

impl Globber<'_> {
    /// The entries of `dir`, with those that are directories (or symlinks
    /// to directories inside the repository) opened.
    fn children(&self, dir: &Dir) -> Result<Vec<Child>, Error> {
        let tree = self.repo.find_tree(dir.tree)?;
        let mut children = Vec::new();
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            let path = join(&dir.path, &name);
            let (opened, submodule) = match entry.kind() {
                Some(ObjectType::Tree) => {
                    let mut physical = dir.physical.clone();
                    physical.push(entry.name_bytes().to_vec());
                    let opened = Dir {
                        path: path.clone(),
                        tree: entry.id(),
                        physical,
                    };
                    (Some(opened), false)
                }
                Some(ObjectType::Commit) => match submodule_tree(self.repo, entry.id()) {
                    Some(tree) => {
                        let mut physical = dir.physical.clone();
                        physical.push(entry.name_bytes().to_vec());
                        let opened = Dir {
                            path: path.clone(),
                            tree,
                            physical,
                        };
                        (Some(opened), false)
                    }
                    None => (None, true),
                },
                Some(ObjectType::Blob) if entry.filemode() == SYMLINK_MODE => {
                    match resolve(self.repo, self.root, path.as_bytes())? {
                        Resolved::Dir(tree, physical) => {
                            let opened = Dir {
                                path: path.clone(),
                                tree,
                                physical,
                            };
                            (Some(opened), false)
                        }
                        _ => (None, false),
                    }
                }
                _ => (None, false),
            };
            children.push(Child {
                name,
                path,
                dir: opened,
                submodule,
            });
        }
        Ok(children)
    }

    /// Matches `pattern` (no `{}` left) below `dir`.
    fn glob(&mut self, dir: &Dir, pattern: &str) -> Result<(), Error> {
        if doublestar::index_meta(pattern).is_none() {
            // No wildcard: doublestar stats the path, so a dangling symlink
            // does not match (and neither does an unclean path).
            let path = doublestar::unescape_meta(pattern);
            let clean = !path.is_empty()
                && path
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..");
            if !clean {
                return Ok(());
            }
            let full = join(&dir.path, &path);
            if let Resolved::File(_) | Resolved::Dir(..) | Resolved::Escapes =
                resolve(self.repo, self.root, full.as_bytes())?
            {
                self.matches.insert(full);
            }
            return Ok(());
        }
        let segments = doublestar::split_segments(pattern);
        self.walk(dir, &segments)
    }

    fn walk(&mut self, dir: &Dir, segments: &[&str]) -> Result<(), Error> {
        let Some((segment, rest)) = segments.split_first() else {
            return Ok(());
        };
        if *segment == "**" {
            let mut chain = vec![dir.physical.clone()];
            if rest.is_empty() {
                return self.everything_below(dir, &mut chain);
            }
            // Zero or more directories.
            self.walk(dir, rest)?;
            return self.walk_directories_below(dir, rest, &mut chain);
        }
        let last = rest.is_empty();
        for child in self.children(dir)? {
            if child.submodule || !doublestar::match_segment(segment, &child.name) {
                continue;
            }
            if last {
                self.matches.insert(child.path);
            } else if let Some(child_dir) = child.dir {
                self.walk(&child_dir, rest)?;
            }
        }
        Ok(())
    }

    /// Whether descending into `child` would revisit a directory of
    /// `chain` (through a symlink): Argo CD would then list the same files
    /// again under ever longer paths until the kernel's symlink limit;
    /// such a directory is not descended into.
    fn is_cycle(chain: &[Vec<Vec<u8>>], child: &Dir) -> bool {
        chain.iter().any(|p| p.starts_with(&child.physical))
    }

    fn walk_directories_below(
        &mut self,
        dir: &Dir,
        rest: &[&str],
        chain: &mut Vec<Vec<Vec<u8>>>,
    ) -> Result<(), Error> {
        for child in self.children(dir)? {
            let Some(child_dir) = child.dir else { continue };
            if Self::is_cycle(chain, &child_dir) {
                continue;
            }
            self.walk(&child_dir, rest)?;
            chain.push(child_dir.physical.clone());
            self.walk_directories_below(&child_dir, rest, chain)?;
            chain.pop();
        }
        Ok(())
    }

    /// A trailing `**`: the directory itself and everything below it.
    fn everything_below(&mut self, dir: &Dir, chain: &mut Vec<Vec<Vec<u8>>>) -> Result<(), Error> {
        self.matches.insert(dir.path.clone());
        for child in self.children(dir)? {
            if child.submodule {
                continue;
            }
            match child.dir {
                Some(child_dir) => {
                    if Self::is_cycle(chain, &child_dir) {
                        continue;
                    }
                    chain.push(child_dir.physical.clone());
                    self.everything_below(&child_dir, chain)?;
                    chain.pop();
                }
                None => {
                    self.matches.insert(child.path);
                }
            }
        }
        Ok(())
    }
}

/// git pathspecs as `git ls-files -- <pathspec>` applies them at the top of
/// the work tree (`pathspec.c`, `dir.c:match_pathspec_item`, `wildmatch.c`).
mod pathspec {
    pub struct Pathspec {
        /// Normalised, magic removed.
        pattern: Vec<u8>,
        /// Length of the leading part without wildcards.
        nowildcard: usize,
        glob: bool,
        icase: bool,
        exclude: bool,
        /// `*` followed by no other wildcard: a suffix match.
        onestar: bool,
    }

    /// git's `GIT_PATHSPEC_MAGIC` characters.
    fn is_magic_char(c: u8) -> bool {
        b"!\"#%&',-/:;<=>@_`~".contains(&c)
    }

    fn is_glob_special(c: u8) -> bool {
        matches!(c, b'*' | b'?' | b'[' | b'\\')
    }

    fn simple_length(s: &[u8]) -> usize {
        s.iter()
            .position(|&c| is_glob_special(c))
            .unwrap_or(s.len())
    }

    /// `strcspn_escaped(s, ",)")`.
    fn magic_word_length(s: &[u8]) -> usize {
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'\\' && i + 1 < s.len() {
                i += 2;
                continue;
            }
            if s[i] == b',' || s[i] == b')' {
                break;
            }
            i += 1;
        }
        i.min(s.len())
    }

    /// `normalize_path_copy_len` for a relative path: `None` when `..`
    /// climbs above the top.
    fn normalize(src: &[u8]) -> Option<Vec<u8>> {
        let at = |i: usize| src.get(i).copied().unwrap_or(0);
        let mut dst: Vec<u8> = Vec::new();
        let mut i = 0;
        while at(i) == b'/' {
            i += 1;
        }
        loop {
            let mut up = false;
            if at(i) == b'.' {
                match at(i + 1) {
                    0 => return Some(dst),
                    b'/' => {
                        i += 2;
                        while at(i) == b'/' {
                            i += 1;
                        }
                        continue;
                    }
                    b'.' if at(i + 2) == 0 => {
                        i += 2;
                        up = true;
                    }
                    b'.' if at(i + 2) == b'/' => {
                        i += 3;
                        while at(i) == b'/' {
                            i += 1;
                        }
                        up = true;
                    }
                    _ => {}
                }
            }
            if up {
                if dst.len() <= 1 {
                    return None;
                }
                dst.pop();
                while !dst.is_empty() && dst[dst.len() - 1] != b'/' {
                    dst.pop();
                }
                continue;
            }
            while at(i) != 0 && at(i) != b'/' {
                dst.push(at(i));
                i += 1;
            }
            if at(i) == b'/' {
                dst.push(b'/');
                while at(i) == b'/' {
                    i += 1;
                }
                continue;
            }
            return Some(dst);
        }
    }

    impl Pathspec {
        pub fn parse(element: &str) -> Result<Pathspec, String> {
            let b = element.as_bytes();
            let (mut top, mut literal, mut glob, mut icase, mut exclude) =
                (false, false, false, false, false);
            let mut rest = b;
            if b.first() == Some(&b':') {
                if b.get(1) == Some(&b'(') {
                    let mut pos = 2;
                    while pos < b.len() && b[pos] != b')' {
                        let len = magic_word_length(&b[pos..]);
                        let next = if b.get(pos + len) == Some(&b',') {
                            pos + len + 1
                        } else {
                            pos + len
                        };
                        let word = &b[pos..pos + len];
                        pos = next;
                        match word {
                            b"" => {}
                            b"top" => top = true,
                            b"literal" => literal = true,
                            b"glob" => glob = true,
                            b"icase" => icase = true,
                            b"exclude" => exclude = true,
                            _ if word.starts_with(b"attr:") || word == b"attr" => {
                                return Err("attr pathspec magic is not supported".into());
                            }
                            _ => {
                                return Err(format!(
                                    "Invalid pathspec magic '{}' in '{element}'",
                                    String::from_utf8_lossy(word)
                                ));
                            }
                        }
                    }
                    if b.get(pos) != Some(&b')') {
                        return Err(format!(
                            "Missing ')' at the end of pathspec magic in '{element}'"
                        ));
                    }
                    rest = &b[pos + 1..];
                } else {
                    let mut pos = 1;
                    while pos < b.len() && b[pos] != b':' {
                        match b[pos] {
                            b'^' | b'!' => exclude = true,
                            b'/' => top = true,
                            c if is_magic_char(c) => {
                                return Err(format!(
                                    "Unimplemented pathspec magic '{}' in '{element}'",
                                    c as char
                                ));
                            }
                            _ => break,
                        }
                        pos += 1;
                    }
                    if b.get(pos) == Some(&b':') {
                        pos += 1;
                    }
                    rest = &b[pos..];
                }
            }
            if literal && glob {
                return Err(format!("{element}: 'literal' and 'glob' are incompatible"));
            }
            let pattern = if top {
                rest.to_vec()
            } else if rest.starts_with(b"/") {
                return Err(format!("{element}: is outside repository"));
            } else {
                normalize(rest).ok_or_else(|| format!("{element}: is outside repository"))?
            };
            let nowildcard = if literal {
                pattern.len()
            } else {
                simple_length(&pattern)
            };
            let onestar = !glob
                && nowildcard < pattern.len()
                && pattern[nowildcard] == b'*'
                && simple_length(&pattern[nowildcard + 1..]) == pattern.len() - nowildcard - 1;
            Ok(Pathspec {
                pattern,
                nowildcard,
                glob,
                icase,
                exclude,
                onestar,
            })
        }

        /// Whether `git ls-files` lists the index entry `name` (`is_dir`
        /// for a submodule).
        pub fn selects(&self, name: &[u8], is_dir: bool) -> bool {
            // An exclusion alone comes with an implicit "everything".
            self.matches(name, is_dir) != self.exclude
        }

        fn eq(&self, a: &[u8], b: &[u8]) -> bool {
            if self.icase {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        }

        fn matches(&self, name: &[u8], is_dir: bool) -> bool {
            let m = &self.pattern;
            if m.is_empty() {
                return true;
            }
            let (ml, nl) = (m.len(), name.len());
            if ml <= nl && self.eq(m, &name[..ml]) {
                if ml == nl || m[ml - 1] == b'/' || name[ml] == b'/' {
                    return true;
                }
            } else if is_dir && m[ml - 1] == b'/' && nl == ml - 1 && self.eq(&m[..nl], name) {
                return true;
            }
            self.nowildcard < ml && self.fnmatch(name)
        }

        /// `git_fnmatch`.
        fn fnmatch(&self, name: &[u8]) -> bool {
            let prefix = self.nowildcard;
            if name.len() < prefix || !self.eq(&self.pattern[..prefix], &name[..prefix]) {
                return false;
            }
            let (pattern, name) = (&self.pattern[prefix..], &name[prefix..]);
            if self.onestar {
                let suffix = &pattern[1..];
                return name.len() >= suffix.len()
                    && self.eq(suffix, &name[name.len() - suffix.len()..]);
            }
            super::wildmatch::wildmatch(pattern, name, self.glob, self.icase)
        }
    }
}

/// git's `wildmatch.c` (`WM_PATHNAME` for `:(glob)`, `WM_CASEFOLD` for
/// `:(icase)`).
mod wildmatch {
    const MATCH: i32 = 0;
    const NOMATCH: i32 = 1;
    const ABORT_ALL: i32 = -1;
    const ABORT_TO_STARSTAR: i32 = -2;

    pub fn wildmatch(pattern: &[u8], text: &[u8], pathname: bool, casefold: bool) -> bool {
        let m = Matcher {
            pattern,
            text,
            pathname,
            casefold,
        };
        m.dowild(0, 0) == MATCH
    }

    struct Matcher<'a> {
        pattern: &'a [u8],
        text: &'a [u8],
        pathname: bool,
        casefold: bool,
    }

    fn is_glob_special(c: u8) -> bool {
        matches!(c, b'*' | b'?' | b'[' | b'\\')
    }

    impl Matcher<'_> {
        fn p(&self, i: usize) -> u8 {
            self.pattern.get(i).copied().unwrap_or(0)
        }

        fn t(&self, i: usize) -> u8 {
            self.text.get(i).copied().unwrap_or(0)
        }

        fn fold(&self, c: u8) -> u8 {
            if self.casefold {
                c.to_ascii_lowercase()
            } else {
                c
            }
        }

        fn class(&self, name: &[u8], t_ch: u8) -> Option<bool> {
            Some(match name {
                b"alnum" => t_ch.is_ascii_alphanumeric(),
                b"alpha" => t_ch.is_ascii_alphabetic(),
                b"blank" => t_ch == b' ' || t_ch == b'\t',
                b"cntrl" => t_ch.is_ascii_control(),
                b"digit" => t_ch.is_ascii_digit(),
                b"graph" => t_ch.is_ascii_graphic(),
                b"lower" => t_ch.is_ascii_lowercase(),
                b"print" => (0x20..=0x7e).contains(&t_ch),
                b"punct" => t_ch.is_ascii_punctuation(),
                b"space" => matches!(t_ch, b' ' | b'\t' | b'\n' | b'\r'),
                b"upper" => {
                    t_ch.is_ascii_uppercase() || (self.casefold && t_ch.is_ascii_lowercase())
                }
                b"xdigit" => t_ch.is_ascii_hexdigit(),
                _ => return None,
            })
        }

        /// `dowild(p, text)`; `start` is where this (sub)pattern begins.
        fn dowild(&self, start: usize, text_start: usize) -> i32 {
            let mut p = start;
            let mut t = text_start;
            loop {
                let mut p_ch = self.p(p);
                if p_ch == 0 {
                    break;
                }
                let mut t_ch = self.t(t);
                if t_ch == 0 && p_ch != b'*' {
                    return ABORT_ALL;
                }
                t_ch = self.fold(t_ch);
                p_ch = self.fold(p_ch);
                match p_ch {
                    b'?' => {
                        if self.pathname && t_ch == b'/' {
                            return NOMATCH;
                        }
                    }
                    b'*' => {
                        let match_slash;
                        p += 1;
                        if self.p(p) == b'*' {
                            let first_star = p - 1;
                            while self.p(p) == b'*' {
                                p += 1;
                            }
                            let at_segment_start =
                                first_star == start || self.p(first_star - 1) == b'/';
                            let before_slash = self.p(p) == 0
                                || self.p(p) == b'/'
                                || (self.p(p) == b'\\' && self.p(p + 1) == b'/');
                            if !self.pathname {
                                match_slash = true;
                            } else if at_segment_start && before_slash {
                                if self.p(p) == b'/' && self.dowild(p + 1, t) == MATCH {
                                    return MATCH;
                                }
                                match_slash = true;
                            } else {
                                match_slash = false;
                            }
                        } else {
                            match_slash = !self.pathname;
                        }
                        if self.p(p) == 0 {
                            if !match_slash && self.text[t..].contains(&b'/') {
                                return NOMATCH;
                            }
                            return MATCH;
                        } else if !match_slash && self.p(p) == b'/' {
                            match self.text[t..].iter().position(|&c| c == b'/') {
                                Some(i) => t += i,
                                None => return NOMATCH,
                            }
                        } else {
                            loop {
                                if t_ch == 0 {
                                    break;
                                }
                                if !is_glob_special(self.p(p)) {
                                    let want = self.fold(self.p(p));
                                    loop {
                                        t_ch = self.t(t);
                                        if t_ch == 0 || !(match_slash || t_ch != b'/') {
                                            break;
                                        }
                                        t_ch = self.fold(t_ch);
                                        if t_ch == want {
                                            break;
                                        }
                                        t += 1;
                                    }
                                    if t_ch != want {
                                        return NOMATCH;
                                    }
                                }
                                let matched = self.dowild(p, t);
                                if matched != NOMATCH {
                                    if !match_slash || matched != ABORT_TO_STARSTAR {
                                        return matched;
                                    }
                                } else if !match_slash && t_ch == b'/' {
                                    return ABORT_TO_STARSTAR;
                                }
                                t += 1;
                                t_ch = self.t(t);
                            }
                            return ABORT_ALL;
                        }
                    }
                    b'[' => {
                        p += 1;
                        p_ch = self.p(p);
                        if p_ch == b'^' {
                            p_ch = b'!';
                        }
                        let negated = p_ch == b'!';
                        if negated {
                            p += 1;
                            p_ch = self.p(p);
                        }
                        let mut prev_ch = 0u8;
                        let mut matched = false;
                        loop {
                            if p_ch == 0 {
                                return ABORT_ALL;
                            }
                            if p_ch == b'\\' {
                                p += 1;
                                p_ch = self.p(p);
                                if p_ch == 0 {
                                    return ABORT_ALL;
                                }
                                if t_ch == p_ch {
                                    matched = true;
                                }
                            } else if p_ch == b'-'
                                && prev_ch != 0
                                && self.p(p + 1) != 0
                                && self.p(p + 1) != b']'
                            {
                                p += 1;
                                p_ch = self.p(p);
                                if p_ch == b'\\' {
                                    p += 1;
                                    p_ch = self.p(p);
                                    if p_ch == 0 {
                                        return ABORT_ALL;
                                    }
                                }
                                if t_ch <= p_ch && t_ch >= prev_ch {
                                    matched = true;
                                } else if self.casefold && t_ch.is_ascii_lowercase() {
                                    let upper = t_ch.to_ascii_uppercase();
                                    if upper <= p_ch && upper >= prev_ch {
                                        matched = true;
                                    }
                                }
                                p_ch = 0;
                            } else if p_ch == b'[' && self.p(p + 1) == b':' {
                                let s = p + 2;
                                p = s;
                                loop {
                                    p_ch = self.p(p);
                                    if p_ch == 0 || p_ch == b']' {
                                        break;
                                    }
                                    p += 1;
                                }
                                if p_ch == 0 {
                                    return ABORT_ALL;
                                }
                                if p < s + 1 || self.p(p - 1) != b':' {
                                    // Not "[:...:]": a plain '['.
                                    p = s - 2;
                                    p_ch = b'[';
                                    if t_ch == p_ch {
                                        matched = true;
                                    }
                                } else {
                                    match self.class(&self.pattern[s..p - 1], t_ch) {
                                        Some(true) => matched = true,
                                        Some(false) => {}
                                        None => return ABORT_ALL,
                                    }
                                    p_ch = 0;
                                }
                            } else if t_ch == p_ch {
                                matched = true;
                            }
                            prev_ch = p_ch;
                            p += 1;
                            p_ch = self.p(p);
                            if p_ch == b']' {
                                break;
                            }
                        }
                        if matched == negated || (self.pathname && t_ch == b'/') {
                            return NOMATCH;
                        }
                    }
                    b'\\' => {
                        p += 1;
                        // The escaped character is compared as is.
                        if t_ch != self.p(p) {
                            return NOMATCH;
                        }
                    }
                    _ => {
                        if t_ch != p_ch {
                            return NOMATCH;
                        }
                    }
                }
                p += 1;
                t += 1;
            }
            if self.t(t) != 0 {
                NOMATCH
            } else {
                MATCH
            }
        }
    }
}

/// The parts of bmatcuk/doublestar v4 (`FilepathGlob`, `Match`) and Go's
/// `path.Clean` that Argo CD's new globbing relies on.
mod doublestar {
    /// `path.Clean` of a relative path.
    pub fn clean(path: &str) -> String {
        let b = path.as_bytes();
        let n = b.len();
        let mut out: Vec<u8> = Vec::new();
        let (mut r, mut dotdot) = (0, 0);
        while r < n {
            if b[r] == b'/' || (b[r] == b'.' && (r + 1 == n || b[r + 1] == b'/')) {
                // Empty or `.` element.
                r += 1;
            } else if b[r] == b'.'
                && b.get(r + 1) == Some(&b'.')
                && (r + 2 == n || b[r + 2] == b'/')
            {
                r += 2;
                if out.len() > dotdot {
                    let mut w = out.len() - 1;
                    while w > dotdot && out[w] != b'/' {
                        w -= 1;
                    }
                    out.truncate(w);
                } else {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(b"..");
                    dotdot = out.len();
                }
            } else {
                if !out.is_empty() {
                    out.push(b'/');
                }
                while r < n && b[r] != b'/' {
                    out.push(b[r]);
                    r += 1;
                }
            }
        }
        if out.is_empty() {
            return ".".to_string();
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `SplitPattern`: the directory before the first wildcard (`None` for
    /// the root) and the pattern below it.
    pub fn split_pattern(p: &str) -> (Option<&str>, &str) {
        let b = p.as_bytes();
        let mut split = None;
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'/' => split = Some(i),
                b'*' | b'?' | b'[' | b'{' => break,
                _ => {}
            }
            i += 1;
        }
        match split {
            Some(i) => (Some(&p[..i]), &p[i + 1..]),
            None => (None, p),
        }
    }

    /// `ValidatePattern`.
    pub fn validate(s: &str) -> bool {
        let b = s.as_bytes();
        let mut depth = 0;
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => {
                    i += 1;
                    if i >= b.len() {
                        return false;
                    }
                }
                b'[' => {
                    i += 1;
                    if i < b.len() && (b[i] == b'^' || b[i] == b'!') {
                        i += 1;
                    }
                    if i >= b.len() || b[i] == b']' {
                        return false;
                    }
                    loop {
                        if i >= b.len() {
                            return false;
                        }
                        if b[i] == b'\\' {
                            i += 1;
                        } else if b[i] == b']' {
                            break;
                        }
                        i += 1;
                    }
                }
                b'{' => depth += 1,
                b'}' => {
                    if depth == 0 {
                        return false;
                    }
                    depth -= 1;
                }
                _ => {}
            }
            i += 1;
        }
        depth == 0
    }

    /// `indexMeta`.
    pub fn index_meta(s: &str) -> Option<usize> {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'*' | b'?' | b'[' | b'{' => return Some(i),
                b'\\' => i += 1,
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// `unescapeMeta`.
    pub fn unescape_meta(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The index of the `}` closing the `{` just before `s`.
    fn closing_alt(s: &[u8]) -> Option<usize> {
        let mut depth = 1;
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'\\' => i += 1,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// The top-level commas of a `{...}` body.
    fn split_alts(s: &str) -> Vec<&str> {
        let b = s.as_bytes();
        let (mut depth, mut start, mut i) = (1, 0, 0);
        let mut alts = Vec::new();
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'{' => depth += 1,
                b'}' => depth -= 1,
                b',' if depth == 1 => {
                    alts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        alts.push(&s[start..]);
        alts
    }

    /// Every pattern `{a,b}` alternatives stand for (a validated pattern);
    /// `None` beyond `limit` patterns.
    pub fn expand_alternatives(pattern: &str, limit: usize) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut todo = vec![pattern.to_string()];
        while let Some(p) = todo.pop() {
            let b = p.as_bytes();
            let mut open = None;
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 1,
                    b'{' => {
                        open = Some(i);
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let Some(open) = open else {
                out.push(p);
                if out.len() > limit {
                    return None;
                }
                continue;
            };
            let close = open + 1 + closing_alt(&b[open + 1..])?;
            for alt in split_alts(&p[open + 1..close]).into_iter().rev() {
                todo.push(format!("{}{}{}", &p[..open], alt, &p[close + 1..]));
            }
            if todo.len() > limit {
                return None;
            }
        }
        out.sort();
        out.dedup();
        Some(out)
    }

    /// The `/`-separated segments (an escaped `/` does not separate).
    pub fn split_segments(pattern: &str) -> Vec<&str> {
        let b = pattern.as_bytes();
        let mut segments = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'/' => {
                    segments.push(&pattern[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        segments.push(&pattern[start.min(pattern.len())..]);
        segments
    }

    /// One pattern character (or class) against `c`: whether it matches
    /// and how many pattern characters it takes.
    fn match_one(p: &[char], i: usize, c: char) -> (bool, usize) {
        match p[i] {
            '?' => (true, 1),
            '\\' => (p.get(i + 1) == Some(&c), 2),
            '[' => {
                let mut j = i + 1;
                let negate = matches!(p.get(j), Some('!' | '^'));
                if negate {
                    j += 1;
                }
                let mut matched = false;
                let mut last: Option<char> = None;
                while j < p.len() && p[j] != ']' {
                    let mut r = p[j];
                    j += 1;
                    if let Some(lo) = last {
                        if r == '-' && j < p.len() && p[j] != ']' {
                            let mut hi = p[j];
                            if hi == '\\' {
                                j += 1;
                                hi = p.get(j).copied().unwrap_or(hi);
                            }
                            j += 1;
                            if lo <= c && c <= hi {
                                matched = true;
                            }
                            last = None;
                            continue;
                        }
                    }
                    if r == '\\' {
                        r = p.get(j).copied().unwrap_or(r);
                        j += 1;
                    }
                    if r == c {
                        matched = true;
                    }
                    last = Some(r);
                }
                (matched != negate, j + 1 - i)
            }
            other => (other == c, 1),
        }
    }

    /// doublestar's `Match` of one path segment (no `/`, no `{}`): `*` (and
    /// `**` within a segment) matches any run, `?` one character, `[...]`
    /// a class, `\` escapes.
    pub fn match_segment(pattern: &str, name: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        let (mut pi, mut ni) = (0, 0);
        let mut backtrack: Option<(usize, usize)> = None;
        while pi < p.len() || ni < n.len() {
            if pi < p.len() {
                if p[pi] == '*' {
                    while pi < p.len() && p[pi] == '*' {
                        pi += 1;
                    }
                    backtrack = Some((pi, ni));
                    continue;
                }
                if ni < n.len() {
                    let (matched, len) = match_one(&p, pi, n[ni]);
                    if matched {
                        pi += len;
                        ni += 1;
                        continue;
                    }
                }
            }
            match backtrack {
                Some((bp, bn)) if bn < n.len() => {
                    backtrack = Some((bp, bn + 1));
                    pi = bp;
                    ni = bn + 1;
                }
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write as _;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    /// 2021-06-05 20:00:00 +02:00.
    const DATE: &str = "2021-06-05T20:00:00+02:00";

    fn git_command(dir: &Path) -> Command {
        let mut command = Command::new("git");
        command
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", DATE)
            .env("GIT_COMMITTER_DATE", DATE)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .args([
                "-c",
                "user.name=Test Author",
                "-c",
                "user.email=author@example.com",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "tag.gpgsign=false",
                "-c",
                "core.symlinks=true",
                "-c",
                "advice.nestedTag=false",
                "-c",
                "protocol.file.allow=always",
            ]);
        command
    }

    fn run(mut command: Command, stdin: &[u8]) -> Vec<u8> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git runs");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    struct Fixture {
        dir: tempfile::TempDir,
        work: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let work = dir.path().join("work");
            fs::create_dir(&work).unwrap();
            let fixture = Fixture { dir, work };
            fixture.git(&["init", "-q", "--initial-branch=main"]);
            fixture
        }

        fn git(&self, args: &[&str]) -> String {
            let mut command = git_command(&self.work);
            command.args(args);
            String::from_utf8(run(command, b""))
                .unwrap()
                .trim()
                .to_string()
        }

        fn write(&self, path: &str, content: &str) {
            let path = self.work.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn symlink(&self, path: &str, target: &str) {
            let path = self.work.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }

        /// A gitlink (submodule entry) without the submodule.
        fn gitlink(&self, path: &str) {
            let commit = "1111111111111111111111111111111111111111";
            self.git(&[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{commit},{path}"),
            ]);
        }

        fn commit(&self, message: &str) -> String {
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "--allow-empty", "-m", message]);
            self.git(&["rev-parse", "HEAD"])
        }

        /// The work tree's git directory (open_bare works on it).
        fn store(&self) -> PathBuf {
            self.work.join(".git")
        }

        /// A bare clone, as the object store is.
        fn bare(&self) -> PathBuf {
            let bare = self.dir.path().join("bare.git");
            let mut command = git_command(self.dir.path());
            command.args(["clone", "-q", "--bare", "work", "bare.git"]);
            run(command, b"");
            bare
        }
    }

    fn keys(files: &BTreeMap<String, Vec<u8>>) -> Vec<&str> {
        files.keys().map(String::as_str).collect()
    }

    // --- revision metadata ------------------------------------------------

    #[test]
    fn metadata_reports_author_date_message_and_tags() {
        let fx = Fixture::new();
        fx.write("a.txt", "a");
        let first = fx.commit("first");
        fx.git(&["tag", "old"]);
        fx.write("b.txt", "b");
        fx.git(&["add", "-A"]);
        fx.git(&[
            "commit",
            "-q",
            "--cleanup=verbatim",
            "-m",
            "\n  Subject line\n\nBody text.\n\n\t",
        ]);
        let second = fx.git(&["rev-parse", "HEAD"]);
        fx.git(&["tag", "v1.0.0"]);
        fx.git(&["tag", "-a", "-m", "annotated", "release"]);
        // A tag of a tag: git >= 2.42 peels it for --points-at.
        fx.git(&["tag", "-a", "-m", "nested", "nested", "release"]);
        fx.git(&["tag", "-a", "-m", "elsewhere", "z-elsewhere", &first]);
        fx.git(&["tag", "group/v2"]);
        let store = fx.bare();

        let meta = revision_metadata(&store, &second).unwrap();
        assert_eq!(meta.author, "Test Author <author@example.com>");
        assert_eq!(meta.date_seconds, 1_622_916_000);
        assert_eq!(meta.date_offset_minutes, 120);
        assert_eq!(meta.message, "Subject line\n\nBody text.");
        assert_eq!(meta.tags, ["group/v2", "nested", "release", "v1.0.0"]);
        assert!(meta.references.is_empty());
        // Same as git itself.
        let expected = fx.git(&["tag", "--points-at", &second]);
        assert_eq!(meta.tags.join("\n"), expected);

        let meta = revision_metadata(&store, &first).unwrap();
        assert_eq!(meta.tags, ["old", "z-elsewhere"]);
        assert_eq!(meta.message, "first");
    }

    /// Argo CD's `Test_nativeGitClient_RevisionMetadata` (util/git/client_test.go).
    #[test]
    fn metadata_matches_argo_cd_client_test() {
        let fx = Fixture::new();
        fx.write("README", "Hello.");
        fx.git(&["add", "README"]);
        let mut command = git_command(&fx.work);
        command.args([
            "-c",
            "user.name=FooBar ||| something\nelse",
            "-c",
            "user.email=foo@foo.com",
            "commit",
            "-q",
            "-m",
            "| Initial commit |\n\n\n(╯°□°)╯︵ ┻━┻\n\t\t",
            "--trailer",
            "Argocd-reference-commit-author: test-author <test@email.com>",
            "--trailer",
            "Argocd-reference-commit-date: 2024-01-02T03:04:05+01:00",
            "--trailer",
            "Argocd-reference-commit-subject: chore: make a change",
            "--trailer",
            "Argocd-reference-commit-sha: abc123",
            "--trailer",
            "Argocd-reference-commit-repourl: https://git.example.com/test/repo.git",
        ]);
        run(command, b"");
        let sha = fx.git(&["rev-parse", "HEAD"]);

        let meta = revision_metadata(&fx.store(), &sha).unwrap();
        assert_eq!(meta.author, "FooBar ||| somethingelse <foo@foo.com>");
        assert!(meta.tags.is_empty());
        assert_eq!(
            meta.message,
            "| Initial commit |\n\n(╯°□°)╯︵ ┻━┻\n\n\
             Argocd-reference-commit-author: test-author <test@email.com>\n\
             Argocd-reference-commit-date: 2024-01-02T03:04:05+01:00\n\
             Argocd-reference-commit-subject: chore: make a change\n\
             Argocd-reference-commit-sha: abc123\n\
             Argocd-reference-commit-repourl: https://git.example.com/test/repo.git"
        );
        assert_eq!(
            meta.references,
            [RevisionReference {
                commit: Some(CommitMetadata {
                    author: "\"test-author\" <test@email.com>".into(),
                    date: "2024-01-02T03:04:05+01:00".into(),
                    subject: "chore: make a change".into(),
                    body: String::new(),
                    sha: "abc123".into(),
                    repo_url: "https://git.example.com/test/repo.git".into(),
                })
            }]
        );
    }

    /// The trailers of the source hydrator's documentation
    /// (docs/user-guide/source-hydrator.md, "Commit Tracing").
    #[test]
    fn metadata_parses_hydrator_reference_trailers() {
        let fx = Fixture::new();
        fx.write("a.yaml", "a: 1\n");
        fx.git(&["add", "-A"]);
        fx.git(&[
            "commit",
            "-q",
            "-m",
            "Bump image to v1.2.3",
            "--trailer",
            "Argocd-reference-commit-author: Author Name <author@example.com>",
            "--trailer",
            "Argocd-reference-commit-sha: b82add298aa045d3672880802d5305c5a8aaa46e",
            "--trailer",
            "Argocd-reference-commit-subject: chore: make a change",
            "--trailer",
            "Argocd-reference-commit-body: \"make a change\\n\\nSigned-off-by: Author Name <author@example.com>\"",
            "--trailer",
            "Argocd-reference-commit-repourl: https://git.example.com/owner/repo",
            "--trailer",
            "Argocd-reference-commit-date: 2025-06-09T13:50:18.123-04:00",
        ]);
        let sha = fx.git(&["rev-parse", "HEAD"]);
        let meta = revision_metadata(&fx.store(), &sha).unwrap();
        let commit = meta.references[0].commit.clone().unwrap();
        assert_eq!(meta.references.len(), 1);
        assert_eq!(commit.author, "\"Author Name\" <author@example.com>");
        assert_eq!(commit.sha, "b82add298aa045d3672880802d5305c5a8aaa46e");
        assert_eq!(commit.subject, "chore: make a change");
        assert_eq!(
            commit.body,
            "make a change\n\nSigned-off-by: Author Name <author@example.com>"
        );
        assert_eq!(commit.repo_url, "https://git.example.com/owner/repo");
        // Re-formatted as Go's RFC 3339 (no fraction).
        assert_eq!(commit.date, "2025-06-09T13:50:18-04:00");
        assert!(meta
            .message
            .starts_with("Bump image to v1.2.3\n\nArgocd-reference-commit-author"));
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    /// Argo CD's `Test_GetReferences` cases (the trailer lines as
    /// interpret-trailers prints them).
    #[test]
    fn references_follow_argo_cd_get_references() {
        assert!(references_from_trailer_lines(&lines(
            "This is a commit message without trailers."
        ))
        .is_empty());
        let invalid = "Argocd-reference-commit-repourl: % invalid %\n\
                       Argocd-reference-commit-date: invalid-date\n\
                       Argocd-reference-commit-sha: xyz123\n\
                       Argocd-reference-commit-body: this isn't json\n\
                       Argocd-reference-commit-author: % not email %\n\
                       Argocd-reference-commit-bogus:";
        assert!(references_from_trailer_lines(&lines(invalid)).is_empty());
        assert!(
            references_from_trailer_lines(&lines("Argocd-reference-commit-unknown: foobar"))
                .is_empty()
        );

        // Only the valid one is kept; the author is the zero mail.Address.
        let some = "Argocd-reference-commit-sha: abc123\n\
                    Argocd-reference-commit-repourl: % invalid %\n\
                    Argocd-reference-commit-date: invalid-date";
        let commit = CommitMetadata {
            author: "<@>".into(),
            sha: "abc123".into(),
            ..Default::default()
        };
        assert_eq!(
            references_from_trailer_lines(&lines(some)),
            [RevisionReference {
                commit: Some(commit)
            }]
        );

        let valid = "Argocd-reference-commit-repourl: https://github.com/org/repo.git\n\
                     Argocd-reference-commit-author: John Doe <john.doe@example.com>\n\
                     Argocd-reference-commit-date: 2024-05-06T07:08:09Z\n\
                     Argocd-reference-commit-subject: Fix bug\n\
                     Argocd-reference-commit-body: \"Fix bug\\n\\nSome: trailer\"\n\
                     Argocd-reference-commit-sha: abc123";
        let commit = CommitMetadata {
            author: "\"John Doe\" <john.doe@example.com>".into(),
            date: "2024-05-06T07:08:09Z".into(),
            subject: "Fix bug".into(),
            body: "Fix bug\n\nSome: trailer".into(),
            sha: "abc123".into(),
            repo_url: "https://github.com/org/repo.git".into(),
        };
        assert_eq!(
            references_from_trailer_lines(&lines(valid)),
            [RevisionReference {
                commit: Some(commit)
            }]
        );

        // The last valid duplicate wins.
        let duplicate = "Argocd-reference-commit-repourl: https://github.com/org/repo.git\n\
                         Argocd-reference-commit-repourl: https://github.com/another/repo.git\n\
                         Argocd-reference-commit-sha: NOT-A-SHA";
        let refs = references_from_trailer_lines(&lines(duplicate));
        assert_eq!(
            refs[0].commit.as_ref().unwrap().repo_url,
            "https://github.com/another/repo.git"
        );
        assert_eq!(refs[0].commit.as_ref().unwrap().sha, "");
    }

    #[test]
    fn references_come_only_from_the_trailer_block() {
        // The title paragraph is never a trailer block.
        assert!(references_from_message("Argocd-reference-commit-sha: abc123").is_empty());
        // Not the last paragraph.
        let message = "Subject\n\nArgocd-reference-commit-sha: abc123\n\nSome text.";
        assert!(references_from_message(message).is_empty());
        // A paragraph mixing text and trailers (no git-generated trailer).
        let message = "Subject\n\nSome text\nArgocd-reference-commit-sha: abc123";
        assert!(references_from_message(message).is_empty());
        // With a Signed-off-by, 25% trailers are enough.
        let message =
            "Subject\n\ntext\nSigned-off-by: A <a@b.c>\nArgocd-reference-commit-sha: abc123";
        assert_eq!(
            references_from_message(message)[0]
                .commit
                .as_ref()
                .unwrap()
                .sha,
            "abc123"
        );
        // A JSON null body is accepted and leaves the body empty.
        let message = "Subject\n\nArgocd-reference-commit-body: null";
        assert!(references_from_message(message).is_empty());
    }

    /// Compares the trailer parser with `git interpret-trailers --parse`.
    #[test]
    fn trailer_lines_match_git_interpret_trailers() {
        let dir = tempfile::tempdir().unwrap();
        let messages = [
            "Subject\n\nKey: value",
            "Subject\n\nArgocd-reference-commit-sha: abc123\nArgocd-reference-commit-subject: hi: there",
            "Only: a title",
            "Subject\n\nbody line\nKey: value",
            "Subject\n\nbody\n\nSigned-off-by: A <a@b>\nnot a trailer\nmore text",
            "Subject\n\nbody\n\nSigned-off-by: A <a@b>\nKey: v\none\ntwo\nthree",
            "Subject\n\nKey: value\n  continued here\n\tand here\nOther : spaced",
            "Subject\n\nKey: value\n# comment\nK2: v2",
            "Subject\n\nKey: value\n---\nAfter: divider",
            "Subject\n\nKey: v\n--- \nx: y",
            "Subject\n\nA: 1\n\n# trailing comment",
            "Subject\n\nBug #43: hash separator",
            "Subject\n\n(cherry picked from commit abc)\nbody text",
            "Subject\n\nKey:no-space\nEmpty:\nDash-ed-key:  padded  ",
            "Subject\n\nfoo bar: baz",
            "Subject\n\nKey: value\r\nK2: v2",
            "Subject\n\n# ------------------------ >8 ------------------------\nKey: v",
            "Subject\n\nKey: v\n# ------------------------ >8 ------------------------\nignored: x",
            "Subject\n\nConflicts:\n\tfile\nKey: v",
            "Subject\n\n  Indented: not a trailer\nKey: v",
            "Subject\n\nKey: value\n\t\tcont1\n \nK: w",
            "# comment title\n\nKey: v",
            "Subject\nsecond title line\n\nKey: v\n\n\n",
            "Subject\n\n:no token\nKey: v",
            "Subject\n\nKey: v\nJSON-Body: \"a\\nb\"",
            "Subject\n\n\u{e9}t\u{e9}: v\nKey: w",
            "",
        ];
        for message in messages {
            let message = message.trim();
            let mut command = git_command(dir.path());
            command.args(["interpret-trailers", "--parse"]);
            let output = String::from_utf8(run(command, message.as_bytes())).unwrap();
            let expected: Vec<String> = output.lines().map(str::to_string).collect();
            assert_eq!(trailer_lines(message), expected, "message {message:?}");
        }
    }

    #[test]
    fn go_mail_address_parsing_and_printing() {
        let show = |s: &str| gomail::parse_address(s).map(|a| a.to_string());
        assert_eq!(
            show("John Doe <john.doe@example.com>").unwrap(),
            "\"John Doe\" <john.doe@example.com>"
        );
        assert_eq!(
            show("john.doe@example.com").unwrap(),
            "<john.doe@example.com>"
        );
        assert_eq!(show("<a@b.c>").unwrap(), "<a@b.c>");
        assert_eq!(
            show("\"Doe, John\" <j@x.org>").unwrap(),
            "\"Doe, John\" <j@x.org>"
        );
        assert_eq!(
            show("a@b.c (Comment Name)").unwrap(),
            "\"Comment Name\" <a@b.c>"
        );
        assert_eq!(
            show("Jörg Müller <j@x.de>").unwrap(),
            "=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <j@x.de>"
        );
        assert_eq!(
            show("=?utf-8?q?J=C3=B6rg?= <j@x.de>").unwrap(),
            "=?utf-8?q?J=C3=B6rg?= <j@x.de>"
        );
        assert_eq!(
            show("=?ISO-8859-1?Q?J=F6rg?= <j@x.de>").unwrap(),
            "=?utf-8?q?J=C3=B6rg?= <j@x.de>"
        );
        // Characters that may not appear in a Q word: base64.
        assert_eq!(
            show("Jörg O'Neil <j@x.de>").unwrap(),
            "=?utf-8?b?SsO2cmcgTydOZWls?= <j@x.de>"
        );
        assert_eq!(
            show("\"a b\"@example.com").unwrap(),
            "<\"a b\"@example.com>"
        );
        assert_eq!(show("x@[192.168.0.1]").unwrap(), "<x@[192.168.0.1]>");
        assert_eq!(show("Group: a@b.c;").unwrap(), "<a@b.c>");
        for invalid in [
            "% not email %",
            "Doe, John <j@x.org>",
            "test-author",
            "a@b.c, d@e.f",
            "<a@b.c",
            "a..b@c.d",
            "x@[not-an-ip]",
            "=?koi8-r?q?abc?= <a@b.c>",
            "",
        ] {
            assert!(gomail::parse_address(invalid).is_err(), "{invalid:?}");
        }
        // Long names are split into several encoded words.
        let long = gomail::Address {
            name: "é".repeat(30),
            address: "a@b.c".into(),
        };
        let printed = long.to_string();
        assert_eq!(printed.matches("=?utf-8?q?").count(), 3, "{printed}");
        assert_eq!(gomail::Address::default().to_string(), "<@>");
    }

    #[test]
    fn go_rfc3339_dates() {
        let cases = [
            (
                "2025-06-09T13:50:18-04:00",
                Some("2025-06-09T13:50:18-04:00"),
            ),
            (
                "2025-06-09T13:50:18.999999999Z",
                Some("2025-06-09T13:50:18Z"),
            ),
            ("2025-06-09T13:50:18,5+00:00", Some("2025-06-09T13:50:18Z")),
            ("2025-06-09T1:50:18Z", Some("2025-06-09T01:50:18Z")),
            (
                "2024-02-29T00:00:00+24:00",
                Some("2024-02-29T00:00:00+24:00"),
            ),
            ("2023-02-29T00:00:00Z", None),
            ("2025-06-09 13:50:18Z", None),
            ("2025-06-09T13:50:18", None),
            ("2025-06-09T13:50:18+0400", None),
            ("2025-06-09T24:00:00Z", None),
            ("2025-06-09T13:50:18Z ", None),
            ("invalid-date", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                gotime::reformat_rfc3339(input).as_deref(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn go_url_parse_acceptance() {
        for ok in [
            "https://github.com/org/repo.git",
            "ssh://git@github.com/org/repo",
            "http://[::1]:8080/x",
            "https://user:p%40ss@host:443/p?q#frag",
            "relative/path",
            "",
        ] {
            assert!(gourl::parses(ok), "{ok:?}");
        }
        for bad in [
            "% invalid %",
            // scp-like: the first path segment holds a colon.
            "git@github.com:org/repo.git",
            "http://a b/",
            "http://host:port/",
            "https://x/%zz",
            "http://localhost:80:80/",
            "line\nbreak",
            ":nothing",
        ] {
            assert!(!gourl::parses(bad), "{bad:?}");
        }
    }

    #[test]
    fn go_json_string_unmarshalling() {
        let cases = [
            ("\"a\\nb\"", Some("a\nb")),
            (" null ", Some("")),
            ("\"\\ud83d\\ude00 \\u00e9\\/\"", Some("\u{1f600} é/")),
            ("\"\\ud800x\"", Some("\u{fffd}x")),
            ("this isn't json", None),
            ("5", None),
            ("\"unterminated", None),
            ("\"a\" x", None),
            ("\"tab\there\"", None),
            ("\"\\x\"", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                gojson::unmarshal_string(input).as_deref(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn is_signed_reads_the_gpgsig_header() {
        let fx = Fixture::new();
        fx.write("a", "a");
        let sha = fx.commit("plain");
        assert!(!is_signed(&fx.store(), &sha).unwrap());
        let tree = fx.git(&["rev-parse", "HEAD^{tree}"]);
        let object = format!(
            "tree {tree}\nauthor A <a@b> 1600000000 +0000\ncommitter A <a@b> 1600000000 +0000\n\
             gpgsig -----BEGIN PGP SIGNATURE-----\n \n dGVzdA==\n -----END PGP SIGNATURE-----\n\nsigned\n"
        );
        let mut command = git_command(&fx.work);
        command.args(["hash-object", "-t", "commit", "-w", "--stdin"]);
        let signed = String::from_utf8(run(command, object.as_bytes())).unwrap();
        assert!(is_signed(&fx.store(), signed.trim()).unwrap());
    }

    #[test]
    fn unknown_commits_are_not_found() {
        let fx = Fixture::new();
        fx.write("a", "a");
        let sha = fx.commit("one");
        let tree = fx.git(&["rev-parse", "HEAD^{tree}"]);
        let store = fx.store();
        for bad in [
            "0123456789012345678901234567890123456789",
            &tree,
            &sha[..12],
            "main",
            "",
        ] {
            assert!(
                matches!(revision_metadata(&store, bad), Err(Error::CommitNotFound(s)) if s == bad)
            );
            assert!(matches!(
                is_signed(&store, bad),
                Err(Error::CommitNotFound(_))
            ));
            assert!(matches!(
                git_files(&store, &[], bad, "*", false, 1 << 20),
                Err(Error::CommitNotFound(_))
            ));
            assert!(matches!(
                git_directories(&store, &[], bad, true),
                Err(Error::CommitNotFound(_))
            ));
        }
    }

    // --- GetGitFiles / GetGitDirectories ------------------------------------

    /// reposerver/repository/testdata/git-files-dirs.
    fn argo_git_files_dirs() -> (Fixture, String) {
        let fx = Fixture::new();
        fx.write("app/bar/.hidden/.keep", "");
        fx.write("app/bar/.keep", "");
        fx.write("app/foo/bar/config.yaml", "foo-bar\n");
        fx.write("app/foo/config.yaml", "foo\n");
        fx.write("config.yaml", "root\n");
        fx.write("somedir/config.yaml", "somedir\n");
        let sha = fx.commit("git-files-dirs");
        (fx, sha)
    }

    /// `TestGetGitDirectories` and `TestGetGitDirectoriesWithHiddenDirSupported`.
    #[test]
    fn directories_match_argo_cd_tests() {
        let (fx, sha) = argo_git_files_dirs();
        assert_eq!(
            git_directories(&fx.store(), &[], &sha, false).unwrap(),
            ["app", "app/bar", "app/foo", "app/foo/bar", "somedir"]
        );
        assert_eq!(
            git_directories(&fx.store(), &[], &sha, true).unwrap(),
            [
                "app",
                "app/bar",
                "app/bar/.hidden",
                "app/foo",
                "app/foo/bar",
                "somedir"
            ]
        );
    }

    #[test]
    fn files_over_argo_cd_testdata_in_both_modes() {
        let (fx, sha) = argo_git_files_dirs();
        let store = fx.store();
        // doublestar: `**/` also matches no directory at all.
        let new = git_files(&store, &[], &sha, "**/config.yaml", true, 1 << 20).unwrap();
        assert_eq!(
            keys(&new),
            [
                "app/foo/bar/config.yaml",
                "app/foo/config.yaml",
                "config.yaml",
                "somedir/config.yaml"
            ]
        );
        assert_eq!(new["app/foo/config.yaml"], b"foo\n");
        // git pathspec: `**/` needs a slash.
        let legacy = git_files(&store, &[], &sha, "**/config.yaml", false, 1 << 20).unwrap();
        assert_eq!(
            keys(&legacy),
            [
                "app/foo/bar/config.yaml",
                "app/foo/config.yaml",
                "somedir/config.yaml"
            ]
        );
        // The default path "." (empty pattern) lists everything (legacy) ...
        let all = git_files(&store, &[], &sha, "", false, 1 << 20).unwrap();
        assert_eq!(all.len(), 6);
        // ... and is the root directory itself with new globbing.
        assert!(git_files(&store, &[], &sha, "", true, 1 << 20).is_err());
    }

    fn big_fixture() -> (Fixture, String) {
        let fx = Fixture::new();
        fx.write("config.yaml", "root-yaml\n");
        fx.write("config.json", "{\"root\":true}\n");
        fx.write("apps/a/values.yaml", "a\n");
        fx.write("apps/b/c/values.yaml", "bc\n");
        fx.write("apps/README.md", "readme\n");
        fx.write("cluster-config/x/config.json", "{\"x\":1}\n");
        fx.write("cluster-config/y/z/config.json", "{\"z\":1}\n");
        fx.write(".github/workflows/ci.yaml", "ci\n");
        fx.write("app/.hidden/x/config.json", "{\"hidden\":1}\n");
        fx.write("a/b/x.txt", "x\n");
        fx.write("a-c/y.txt", "y\n");
        fx.symlink("links/inside.yaml", "../config.yaml");
        fx.symlink("links/dir", "../apps");
        fx.symlink("escape/up.yaml", "../../outside.yaml");
        fx.symlink("escape/abs.yaml", "/etc/hostname");
        fx.symlink("dangling/gone.yaml", "missing.yaml");
        fx.git(&["add", "-A"]);
        fx.gitlink("vendor/sub");
        // Not `commit()`: `add -A` would drop the gitlink again.
        fx.git(&["commit", "-q", "-m", "big"]);
        let sha = fx.git(&["rev-parse", "HEAD"]);
        assert!(fx.git(&["ls-tree", "-r", &sha]).contains("160000 commit"));
        (fx, sha)
    }

    #[test]
    fn globbing_modes_differ_as_in_argo_cd() {
        let (fx, sha) = big_fixture();
        let store = fx.store();
        let files = |pattern: &str, new: bool| git_files(&store, &[], &sha, pattern, new, 1 << 20);

        // `*` crosses directories in a pathspec, not in doublestar.
        let legacy = files("*.yaml", false);
        assert!(
            legacy.is_err(),
            "escape/up.yaml is a symlink leaving the repository"
        );
        let legacy = files("apps/*.yaml", false).unwrap();
        assert_eq!(
            keys(&legacy),
            ["apps/a/values.yaml", "apps/b/c/values.yaml"]
        );
        let new = files("*.yaml", true).unwrap();
        assert_eq!(keys(&new), ["config.yaml"]);

        let legacy = files("**/config.json", false).unwrap();
        assert_eq!(
            keys(&legacy),
            [
                "app/.hidden/x/config.json",
                "cluster-config/x/config.json",
                "cluster-config/y/z/config.json"
            ]
        );
        let new = files("**/config.json", true).unwrap();
        assert_eq!(
            keys(&new),
            [
                "app/.hidden/x/config.json",
                "cluster-config/x/config.json",
                "cluster-config/y/z/config.json",
                "config.json"
            ]
        );
        // `:(glob)` makes a pathspec behave like a shell glob.
        let glob = files(":(glob)**/config.json", false).unwrap();
        assert_eq!(keys(&glob), keys(&new));

        let legacy = files("apps/*/values.yaml", false).unwrap();
        assert_eq!(
            keys(&legacy),
            ["apps/a/values.yaml", "apps/b/c/values.yaml"]
        );
        let new = files("apps/*/values.yaml", true).unwrap();
        assert_eq!(keys(&new), ["apps/a/values.yaml"]);

        // A directory name selects everything below it in a pathspec.
        let legacy = files("cluster-config", false).unwrap();
        assert_eq!(
            keys(&legacy),
            [
                "cluster-config/x/config.json",
                "cluster-config/y/z/config.json"
            ]
        );
        let new = files("cluster-config", true);
        assert!(new.is_err(), "a directory matched by a glob cannot be read");

        // Hidden files are matched like any other.
        assert_eq!(
            keys(&files(".github/**/*.yaml", true).unwrap()),
            [".github/workflows/ci.yaml"]
        );
        assert_eq!(
            keys(&files(".github", false).unwrap()),
            [".github/workflows/ci.yaml"]
        );

        // doublestar alternatives.
        let new = files("{apps,cluster-config}/**/*.{yaml,json}", true).unwrap();
        assert_eq!(
            keys(&new),
            [
                "apps/a/values.yaml",
                "apps/b/c/values.yaml",
                "cluster-config/x/config.json",
                "cluster-config/y/z/config.json"
            ]
        );
        // A trailing `**` matches its directory too, which Argo CD then
        // fails to read.
        assert!(files("apps/**", true).is_err());
        // Exclusion magic.
        let legacy = files(":!*.{yaml,json}", false);
        assert!(
            legacy.is_err(),
            "everything, including the escaping symlinks"
        );
        let (fx, sha) = argo_git_files_dirs();
        let legacy = git_files(&fx.store(), &[], &sha, ":!*.yaml", false, 1 << 20).unwrap();
        assert_eq!(keys(&legacy), ["app/bar/.hidden/.keep", "app/bar/.keep"]);
    }

    #[test]
    fn symlinks_are_read_through_inside_the_repository() {
        let (fx, sha) = big_fixture();
        let store = fx.store();
        let files = |pattern: &str, new: bool| git_files(&store, &[], &sha, pattern, new, 1 << 20);

        for new in [false, true] {
            let inside = files("links/inside.yaml", new).unwrap();
            assert_eq!(inside["links/inside.yaml"], b"root-yaml\n");
        }
        // A symlinked directory is followed by doublestar ...
        let new = files("links/dir/*/values.yaml", true).unwrap();
        assert_eq!(keys(&new), ["links/dir/a/values.yaml"]);
        assert_eq!(new["links/dir/a/values.yaml"], b"a\n");
        let new = files("links/**/values.yaml", true).unwrap();
        assert_eq!(
            keys(&new),
            ["links/dir/a/values.yaml", "links/dir/b/c/values.yaml"]
        );
        // ... while ls-files lists the link itself, a directory to read.
        let err = files("links/dir", false).unwrap_err().to_string();
        assert!(
            err.contains("links/dir") && err.contains("is a directory"),
            "{err}"
        );
    }

    #[test]
    fn symlinks_leaving_the_repository_are_not_followed() {
        let (fx, sha) = big_fixture();
        let store = fx.store();
        let files = |pattern: &str, new: bool| git_files(&store, &[], &sha, pattern, new, 1 << 20);

        for link in ["escape/up.yaml", "escape/abs.yaml"] {
            let err = files(link, false).unwrap_err().to_string();
            assert!(
                err.contains(link) && err.contains("outside the repository"),
                "{err}"
            );
        }
        // New globbing ignores them, as Argo CD does ("is outside of
        // repository, ignoring it").
        assert!(files("escape/*", true).unwrap().is_empty());
        assert!(files("escape/up.yaml", true).unwrap().is_empty());
        // A dangling symlink cannot be read (Argo CD: EvalSymlinks/ReadFile
        // fail) ...
        assert!(files("dangling/*", true).is_err());
        assert!(files("dangling/gone.yaml", false).is_err());
        // ... except that doublestar stats a path without wildcards, so it
        // does not match at all.
        assert!(files("dangling/gone.yaml", true).unwrap().is_empty());
        // Patterns leading out of the root match nothing.
        assert!(files("../*", true).unwrap().is_empty());
        assert!(matches!(files("../*", false), Err(Error::Pattern { .. })));
    }

    #[test]
    fn doublestar_follows_symlinked_directories_but_not_cycles() {
        let (fx, sha) = big_fixture();
        let new = git_files(&fx.store(), &[], &sha, "**/values.yaml", true, 1 << 20).unwrap();
        assert_eq!(
            keys(&new),
            [
                "apps/a/values.yaml",
                "apps/b/c/values.yaml",
                "links/dir/a/values.yaml",
                "links/dir/b/c/values.yaml"
            ]
        );

        let fx = Fixture::new();
        fx.write("loop/a.txt", "a\n");
        fx.symlink("loop/self", ".");
        fx.symlink("loop/up", "..");
        fx.write("other/b.txt", "b\n");
        let sha = fx.commit("loops");
        // Argo CD would list loop/self/a.txt, loop/self/self/a.txt, ... up
        // to the kernel's symlink limit; a cycle is not descended into.
        let new = git_files(&fx.store(), &[], &sha, "loop/**/*.txt", true, 1 << 20).unwrap();
        assert_eq!(keys(&new), ["loop/a.txt"]);
        let new = git_files(&fx.store(), &[], &sha, "loop/*/*.txt", true, 1 << 20).unwrap();
        assert_eq!(keys(&new), ["loop/self/a.txt"]);
        let new = git_files(&fx.store(), &[], &sha, "loop/up/*/*.txt", true, 1 << 20).unwrap();
        assert_eq!(keys(&new), ["loop/up/loop/a.txt", "loop/up/other/b.txt"]);
    }

    #[test]
    fn submodules_are_skipped() {
        let (fx, sha) = big_fixture();
        let store = fx.store();
        assert!(git_files(&store, &[], &sha, "vendor", false, 1 << 20)
            .unwrap()
            .is_empty());
        assert!(git_files(&store, &[], &sha, "vendor/*", true, 1 << 20)
            .unwrap()
            .is_empty());
        assert!(git_files(&store, &[], &sha, "vendor/**/*", true, 1 << 20)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_byte_cap_stops_reading() {
        let (fx, sha) = big_fixture();
        let store = fx.store();
        // apps/a/values.yaml + apps/b/c/values.yaml = 2 + 3 bytes.
        assert_eq!(
            git_files(&store, &[], &sha, "apps/*/values.yaml", false, 5)
                .unwrap()
                .len(),
            2
        );
        let err = git_files(&store, &[], &sha, "apps/*/values.yaml", false, 4).unwrap_err();
        assert!(err.to_string().contains("more than 4 bytes"), "{err}");
        assert!(git_files(&store, &[], &sha, "apps/**/values.yaml", true, 4).is_err());
    }

    #[test]
    fn invalid_patterns_are_reported() {
        let (fx, sha) = argo_git_files_dirs();
        let store = fx.store();
        for (pattern, new) in [
            ("app/[", true),
            ("{app", true),
            ("app}", true),
            ("app\\", true),
            (":(nonsense)x", false),
            (":(literal,glob)x", false),
            (":(glob", false),
            ("/abs/path", false),
            ("a/../../x", false),
        ] {
            let result = git_files(&store, &[], &sha, pattern, new, 1 << 20);
            assert!(
                matches!(result, Err(Error::Pattern { .. })),
                "{pattern}: {result:?}"
            );
        }
    }

    #[test]
    fn directories_follow_walkdir() {
        let (fx, sha) = big_fixture();
        let store = fx.store();
        assert_eq!(
            git_directories(&store, &[], &sha, false).unwrap(),
            [
                "a",
                "a/b",
                "a-c",
                "app",
                "apps",
                "apps/a",
                "apps/b",
                "apps/b/c",
                "cluster-config",
                "cluster-config/x",
                "cluster-config/y",
                "cluster-config/y/z",
                "dangling",
                "escape",
                "links",
                "vendor",
                "vendor/sub",
            ]
        );
        let with_hidden = git_directories(&store, &[], &sha, true).unwrap();
        assert_eq!(
            &with_hidden[..4],
            [".github", ".github/workflows", "a", "a/b"]
        );
        assert!(with_hidden.contains(&"app/.hidden/x".to_string()));
        assert!(with_hidden.contains(&"app/.hidden".to_string()));
        assert!(!with_hidden.contains(&"links/dir".to_string()));
        assert_eq!(with_hidden.len(), 17 + 4);

        let fx = Fixture::new();
        fx.write("README.md", "only root files\n");
        fx.write(".hidden-file", "x\n");
        let sha = fx.commit("flat");
        assert!(git_directories(&fx.store(), &[], &sha, true)
            .unwrap()
            .is_empty());
    }

    /// Compares the pathspec matcher with `git ls-files` on a work tree.
    #[test]
    fn pathspecs_match_git_ls_files() {
        let (fx, sha) = big_fixture();
        let repo = Repository::open_bare(fx.store()).unwrap();
        let root = repo
            .find_commit(Oid::from_str(&sha).unwrap())
            .unwrap()
            .tree_id();
        let mut entries = Vec::new();
        index_entries(&repo, root, &mut Vec::new(), &mut entries).unwrap();
        let patterns = [
            "*.yaml",
            "**/config.json",
            "apps/*/values.yaml",
            "app",
            "app/",
            "apps/a",
            "apps/a/",
            "*",
            ".",
            "./apps/../config.yaml",
            "config.yaml",
            "?onfig.yaml",
            "[ac]*/config.json",
            "[!a]*",
            "[[:upper:][:punct:]]*",
            "*[[:digit:]x]*",
            ":(glob)**/config.json",
            ":(glob)*.yaml",
            ":(glob)apps/*/values.yaml",
            ":(glob)apps/**",
            ":(glob)**/",
            ":(glob)apps/**/values.yaml",
            ":(glob,icase)APPS/*/VALUES.YAML",
            ":(icase)CLUSTER-config",
            ":(icase)*.JSON",
            ":(literal)*.yaml",
            ":(literal)config.yaml",
            ":!*.yaml",
            ":^apps",
            ":/apps",
            ":(top)links",
            ":(exclude)apps/**",
            ":!:*.json",
            "app*/*",
            "a*/**/*.yaml",
            "apps/**/*.yaml",
            "**",
            "*/config.yaml",
            "*config*",
            "\\*.yaml",
            "vendor/sub/",
            "vendor/sub",
            "vendor/",
            "vendor/*",
            "links/dir/",
            "links/dir",
            ".github",
            ".*",
            "*/.*/*",
            "a/b",
            "a-c",
            "a",
            "cluster-config/**",
            "cluster-config/*/z",
            "nothing-matches",
        ];
        for pattern in patterns {
            let spec = pathspec::Pathspec::parse(pattern).unwrap();
            let mine: Vec<String> = entries
                .iter()
                .filter(|(path, kind, _)| spec.selects(path, *kind == IndexKind::Gitlink))
                .map(|(path, _, _)| String::from_utf8_lossy(path).into_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut command = git_command(&fx.work);
            command.args(["ls-files", "--full-name", "-z", "--", pattern]);
            let output = run(command, b"");
            let git: Vec<String> = output
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(mine, git, "pattern {pattern:?}");
        }
    }

    #[test]
    fn doublestar_segment_matching() {
        let cases = [
            ("*.yaml", "a.yaml", true),
            ("*.yaml", ".hidden.yaml", true),
            ("**.yaml", "a.yaml", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[!a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("[\\]]", "]", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("v[0-9].*", "v1.2", true),
            ("é*", "été", true),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b", "xxaxxbxx", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                doublestar::match_segment(pattern, name),
                expected,
                "{pattern} ~ {name}"
            );
        }
        assert_eq!(doublestar::clean("a/../../b/./c//"), "../b/c");
        assert_eq!(doublestar::clean("./"), ".");
        assert_eq!(doublestar::clean("a/b/.."), "a");
        assert_eq!(
            doublestar::expand_alternatives("{a,b{c,d}}/{x,}", 100).unwrap(),
            ["a/", "a/x", "bc/", "bc/x", "bd/", "bd/x"]
        );
    }
}
