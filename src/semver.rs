//! Semantic versions and constraints, resolved exactly as Argo CD does.
//!
//! Argo CD resolves a `targetRevision` that is a semver constraint (git:
//! against tags, `util/versions/tags.go` `MaxVersion`; Helm: against the
//! chart versions of `index.yaml`) with github.com/Masterminds/semver/v3,
//! pinned at v3.4.0 in its go.mod. This module is a port of that release's
//! `version.go` and `constraints.go`, including their regular expressions:
//! constraint parsing is regex-driven (leftmost-first matching, alternatives
//! tried in order, `|` inside the version character class), and the only
//! faithful way to match every odd input is to run the same expressions. The
//! small engine in [`re`] does that in linear time (a Pike VM, the algorithm
//! Go's own `regexp` uses, which gives the same submatches).
//!
//! # Versions (`semver.NewVersion`, `CoerceNewVersion = true`, the default)
//! - `v?N(.N)?(.N)?(-pre)?(+meta)?`, whole string, no surrounding whitespace,
//!   lowercase `v` only; missing minor/patch are 0 (`1.2` is 1.2.0).
//! - Leading zeros in major/minor/patch are accepted and coerced (`1.02` is
//!   1.2.0); a numeric *prerelease* identifier with a leading zero
//!   (`1.0.0-01`) and a numeric part above `u64::MAX` are errors, but not the
//!   "invalid semantic version" error (see [`try_max_satisfying`]).
//! - Precedence: major, minor, patch; a release beats its prereleases;
//!   prerelease identifiers compare numerically when both are numbers (that fit
//!   in u64), a number is below a non-number, strings compare bytewise, and a
//!   shorter list of identifiers is lower when the other starts with it.
//!   Build metadata is ignored.
//!
//! # Constraints (`semver.NewConstraint`)
//! - `a - b` (whitespace around `-` required) is rewritten to `>= a, <= b`
//!   first; then the text is split on `||`; each part is a list of
//!   comparators separated by whitespace or commas, all of which must hold.
//! - Operators: none or `=` (equal; with a wildcard or partial version it
//!   behaves as `~`), `!=`, `>`, `<`, `>=`/`=>`, `<=`/`=<`, `~`/`~>`, `^`.
//!   Wildcards `x`, `X`, `*` may stand for any part; parts after a wildcard
//!   are ignored (`1.x.3` is `1.x`, `x.2.3` is `*`); a missing part counts as
//!   a wildcard (`>1.2` means minor > 2, `<=2` means major <= 2, `~1` is
//!   `>=1.0.0 <2.0.0`, `~1.2`/`~1.2.3` stay within 1.2, `^1.2.3` within 1.x,
//!   `^0.2.3` within 0.2, `^0.0.3` only 0.0.3).
//! - Prereleases: within one `||` alternative, if any comparator's version
//!   has a prerelease then prerelease versions are considered by *all* its
//!   comparators (with plain precedence, so `>=1.0.0-0 <2.0.0` admits
//!   `2.0.0-rc.1` and `~1.2.3-beta.2` admits `1.2.4-beta.2`, unlike npm);
//!   otherwise no prerelease version satisfies that alternative.
//! - Faithful quirks: `^*` matches only 0.0.0; `~0.0.0` and `~*` match every
//!   release; `<=*` matches only 0.0.z; `>*` is `>0.0.0`; `x` alone is a
//!   valid constraint (any release); `1 2` is valid and matches nothing;
//!   `1.2-1.4` is the version 1.2.0 with prerelease `1.4`, not a range; the
//!   empty string is an error ("improper constraint: ").

use std::cmp::Ordering;
use std::fmt;
use std::sync::LazyLock;

/// Why a string is not a version: Masterminds' `NewVersion` errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// `ErrInvalidSemVer`: not shaped like a version. Argo CD skips such tags.
    #[error("invalid semantic version")]
    Invalid,
    /// `ErrSegmentStartsZero`: a numeric prerelease identifier with a leading
    /// zero (`1.0.0-01`).
    #[error("version segment starts with 0")]
    SegmentStartsZero,
    /// A major, minor or patch number above `u64::MAX`.
    #[error("error parsing version segment: strconv.ParseUint: parsing {0:?}: value out of range")]
    OutOfRange(String),
}

/// A version as `semver.NewVersion` parses it.
///
/// Equality is textual (two spellings of one version differ); use
/// [`Version::cmp_precedence`] for semver equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: String,
    metadata: String,
    original: String,
}

impl Version {
    /// `text` as a version, or `None` when `semver.NewVersion` fails.
    pub fn parse(text: &str) -> Option<Version> {
        Self::try_parse(text).ok()
    }

    /// `text` as a version, with `semver.NewVersion`'s error kinds.
    pub fn try_parse(text: &str) -> Result<Version, VersionError> {
        if text.len() > MAX_TEXT {
            return Err(VersionError::Invalid);
        }
        let m = LOOSE_VERSION.captures(text).ok_or(VersionError::Invalid)?;
        let major = parse_number(m[1])?;
        let minor = match m[2].strip_prefix('.') {
            Some(digits) => parse_number(digits)?,
            None => 0,
        };
        let patch = match m[3].strip_prefix('.') {
            Some(digits) => parse_number(digits)?,
            None => 0,
        };
        let pre = m[5];
        if !pre.is_empty() {
            validate_prerelease(pre)?;
        }
        // The expression already restricts metadata to non-empty identifiers
        // of [0-9A-Za-z-], which is all `validateMetadata` checks.
        Ok(Version {
            major,
            minor,
            patch,
            pre: pre.to_owned(),
            metadata: m[8].to_owned(),
            original: text.to_owned(),
        })
    }

    /// The text this version was parsed from (with its `v`, zeros, metadata).
    pub fn original(&self) -> &str {
        &self.original
    }

    pub fn major(&self) -> u64 {
        self.major
    }

    pub fn minor(&self) -> u64 {
        self.minor
    }

    pub fn patch(&self) -> u64 {
        self.patch
    }

    /// The prerelease without its `-` (empty for a release).
    pub fn prerelease(&self) -> &str {
        &self.pre
    }

    /// The build metadata without its `+`.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// SemVer precedence (Masterminds' `Compare`): metadata is ignored, so
    /// `v1.0.0`, `1.0` and `1.0.0+x` are all equal.
    pub fn cmp_precedence(&self, other: &Version) -> Ordering {
        self.major
            .cmp(&other.major)
            .then(self.minor.cmp(&other.minor))
            .then(self.patch.cmp(&other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_prerelease(&self.pre, &other.pre),
            })
    }
}

/// Precedence, then the original text, so that sorting is total and stable.
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_precedence(other)
            .then_with(|| self.original.cmp(&other.original))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The normalised form (Go's `String()`): `1.2.0-rc.1+meta`, no `v`.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.metadata.is_empty() {
            write!(f, "+{}", self.metadata)?;
        }
        Ok(())
    }
}

/// A parsed `semver.NewConstraint`: alternatives (`||`) of comparators that
/// must all hold.
#[derive(Debug, Clone)]
pub struct Constraint {
    groups: Vec<Group>,
}

#[derive(Debug, Clone)]
struct Group {
    comparators: Vec<Comparator>,
    /// Some comparator's version has a prerelease: prerelease versions are
    /// then considered by the whole group.
    contains_pre: bool,
}

impl Constraint {
    /// Parses like `semver.NewConstraint`; the error is its message
    /// (`improper constraint: <part>` or `constraint parser error`).
    pub fn parse(text: &str) -> Result<Constraint, String> {
        // Revisions come from users; parsing is superlinear in the length.
        if text.len() > MAX_TEXT {
            return Err(format!("constraint longer than {MAX_TEXT} bytes"));
        }
        let rewritten = rewrite_range(text);
        let mut groups = Vec::new();
        for part in rewritten.split("||") {
            if !VALID_CONSTRAINT.is_match(part) {
                return Err(format!("improper constraint: {part}"));
            }
            let mut found = FIND_CONSTRAINT.find_all(part);
            if found.is_empty() {
                found.push(part);
            }
            let mut comparators = Vec::with_capacity(found.len());
            let mut contains_pre = false;
            for item in found {
                let comparator = Comparator::parse(item)?;
                contains_pre |= !comparator.con.pre.is_empty();
                comparators.push(comparator);
            }
            groups.push(Group {
                comparators,
                contains_pre,
            });
        }
        Ok(Constraint { groups })
    }

    /// Whether `version` satisfies the constraint (`Constraints.Check`, with
    /// `IncludePrerelease` false as Argo CD leaves it).
    pub fn matches(&self, version: &Version) -> bool {
        self.groups.iter().any(|group| {
            group
                .comparators
                .iter()
                .all(|c| c.check(version, group.contains_pre))
        })
    }
}

/// Go's `Constraints.String()`: `>=1.2 <2 || ~3`.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(" || ")?;
            }
            for (j, c) in group.comparators.iter().enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{}{}", c.op_text, c.orig)?;
            }
        }
        Ok(())
    }
}

/// The highest of `candidates` (version strings) satisfying `constraint`,
/// returning the candidate's original text; strings that don't parse as
/// versions are skipped. Among candidates of equal precedence (`v1.0.0` and
/// `1.0.0`, or differing only in metadata) the first wins, as in Argo CD's
/// loop.
pub fn max_satisfying<'a>(
    constraint: &Constraint,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(Version, &'a str)> = None;
    for candidate in candidates {
        let Some(version) = Version::parse(candidate) else {
            continue;
        };
        consider(constraint, &mut best, version, candidate);
    }
    best.map(|(_, text)| text)
}

/// [`max_satisfying`] exactly as Argo CD's `MaxVersion` loop: a candidate
/// that is not shaped like a version is skipped, but one that fails with a
/// more specific error (a prerelease number with a leading zero, a number
/// beyond u64) aborts the whole resolution with that error
/// ("invalid semver version in tags: ...").
pub fn try_max_satisfying<'a>(
    constraint: &Constraint,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Result<Option<&'a str>, VersionError> {
    let mut best: Option<(Version, &'a str)> = None;
    for candidate in candidates {
        let version = match Version::try_parse(candidate) {
            Ok(version) => version,
            Err(VersionError::Invalid) => continue,
            Err(error) => return Err(error),
        };
        consider(constraint, &mut best, version, candidate);
    }
    Ok(best.map(|(_, text)| text))
}

fn consider<'a>(
    constraint: &Constraint,
    best: &mut Option<(Version, &'a str)>,
    version: Version,
    text: &'a str,
) {
    if constraint.matches(&version)
        && best
            .as_ref()
            .is_none_or(|(b, _)| version.cmp_precedence(b) == Ordering::Greater)
    {
        *best = Some((version, text));
    }
}

/// Whether `text` parses as a version (then Argo CD uses it literally,
/// without consulting tags/indexes).
/// Longest version or constraint text parsed; anything longer is neither
/// (a revision that long is a ref name at most).
pub const MAX_TEXT: usize = 256;

pub fn is_version(text: &str) -> bool {
    Version::try_parse(text).is_ok()
}

/// Argo CD's `versions.IsConstraint`: not a version, but a valid constraint.
pub fn is_constraint(text: &str) -> bool {
    !is_version(text) && Constraint::parse(text).is_ok()
}

// ---------------------------------------------------------------------------
// Masterminds' expressions, verbatim (Go syntax).

/// `looseSemVerRegex`, anchored: what `NewVersion` accepts.
static LOOSE_VERSION: LazyLock<re::Regex> = LazyLock::new(|| {
    re::Regex::new(
        r"^v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?$",
    )
});

/// `cvRegex`: a version inside a constraint (`|` in the class is literal,
/// as in the original).
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";

/// The operators, in the original order (the second alternative is empty).
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

/// `constraintRegex`: one comparator. Groups: 1 operator, 2 version,
/// 3 major, 4 `.minor`, 5 `.patch`, 6 `-prerelease`.
static CONSTRAINT: LazyLock<re::Regex> =
    LazyLock::new(|| re::Regex::new(&format!(r"^\s*({OPS})\s*({CV})\s*$")));

/// `constraintRangeRegex`: `a - b`; groups 1 and 11 are the two versions.
static CONSTRAINT_RANGE: LazyLock<re::Regex> =
    LazyLock::new(|| re::Regex::new(&format!(r"\s*({CV})\s+-\s+({CV})\s*")));

/// `findConstraintRegex`: the comparators of one `||` part.
static FIND_CONSTRAINT: LazyLock<re::Regex> =
    LazyLock::new(|| re::Regex::new(&format!(r"({OPS})\s*({CV})")));

/// `validConstraintRegex`: a well-formed `||` part.
static VALID_CONSTRAINT: LazyLock<re::Regex> = LazyLock::new(|| {
    re::Regex::new(&format!(
        r"^(\s*({OPS})\s*({CV})\s*)((?:\s+|,\s*)({OPS})\s*({CV})\s*)*$"
    ))
});

/// `rewriteRange`: every `a - b` becomes `>= a, <= b ` (matches found in the
/// original, each replacing the first occurrence of its text, as in Go).
fn rewrite_range(text: &str) -> String {
    let mut out = text.to_owned();
    for m in CONSTRAINT_RANGE.find_all_captures(text) {
        out = out.replacen(m[0], &format!(">= {}, <= {} ", m[1], m[11]), 1);
    }
    out
}

// ---------------------------------------------------------------------------
// Versions.

fn parse_number(digits: &str) -> Result<u64, VersionError> {
    digits
        .parse()
        .map_err(|_| VersionError::OutOfRange(digits.to_owned()))
}

/// `validatePrerelease`, past what the expression already guarantees.
fn validate_prerelease(pre: &str) -> Result<(), VersionError> {
    for part in pre.split('.') {
        if part.len() > 1 && part.starts_with('0') && part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VersionError::SegmentStartsZero);
        }
    }
    Ok(())
}

/// Go's `strconv.ParseUint(s, 10, 64)` success.
fn go_parse_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `comparePrerelease`: identifier by identifier, a missing one lowest.
fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let left: Vec<&str> = a.split('.').collect();
    let right: Vec<&str> = b.split('.').collect();
    for i in 0..left.len().max(right.len()) {
        let s = left.get(i).copied().unwrap_or("");
        let o = right.get(i).copied().unwrap_or("");
        let d = compare_pre_part(s, o);
        if d != Ordering::Equal {
            return d;
        }
    }
    Ordering::Equal
}

/// `comparePrePart`.
fn compare_pre_part(s: &str, o: &str) -> Ordering {
    if s == o {
        return Ordering::Equal;
    }
    if s.is_empty() {
        return Ordering::Less;
    }
    if o.is_empty() {
        return Ordering::Greater;
    }
    match (go_parse_uint(s), go_parse_uint(o)) {
        (None, None) => {
            if s > o {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(si), Some(oi)) => {
            if si > oi {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Comparators.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    TildeOrEqual,
    NotEqual,
    GreaterThan,
    LessThan,
    GreaterThanEqual,
    LessThanEqual,
    Tilde,
    Caret,
}

impl Op {
    fn from_text(text: &str) -> Option<Op> {
        Some(match text {
            "" | "=" => Op::TildeOrEqual,
            "!=" => Op::NotEqual,
            ">" => Op::GreaterThan,
            "<" => Op::LessThan,
            ">=" | "=>" => Op::GreaterThanEqual,
            "<=" | "=<" => Op::LessThanEqual,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            _ => return None,
        })
    }
}

/// One `constraint` of Masterminds.
#[derive(Debug, Clone)]
struct Comparator {
    op: Op,
    /// The operator as written (`origfunc`).
    op_text: String,
    /// The version as written (`orig`), e.g. `4.x`.
    orig: String,
    /// The version with wildcards and missing parts as zeros.
    con: Version,
    /// Some part is a wildcard or missing.
    dirty: bool,
    /// The minor part (and so the patch) is a wildcard or missing.
    minor_dirty: bool,
    /// The patch part (only) is a wildcard or missing.
    patch_dirty: bool,
}

impl Comparator {
    /// `parseConstraint`.
    fn parse(text: &str) -> Result<Comparator, String> {
        if text.is_empty() {
            // Unreachable from `Constraint::parse` (the validity check
            // rejects an empty part) but kept as in the original: `*`.
            return Ok(Comparator {
                op: Op::TildeOrEqual,
                op_text: String::new(),
                orig: String::new(),
                con: Version::try_parse("0.0.0").map_err(|_| "constraint parser error")?,
                dirty: true,
                minor_dirty: false,
                patch_dirty: false,
            });
        }
        let m = CONSTRAINT
            .captures(text)
            .ok_or_else(|| format!("improper constraint: {text}"))?;
        let op = Op::from_text(m[1]).ok_or_else(|| format!("improper constraint: {text}"))?;
        let (major, minor, patch, pre) = (m[3], m[4], m[5], m[6]);
        let wild = |part: &str| part.is_empty() || is_x(part.strip_prefix('.').unwrap_or(part));
        let (ver, dirty, minor_dirty, patch_dirty) = if wild(major) {
            (format!("0.0.0{pre}"), true, false, false)
        } else if wild(minor) {
            (format!("{major}.0.0{pre}"), true, true, false)
        } else if wild(patch) {
            (format!("{major}{minor}.0{pre}"), true, false, true)
        } else {
            (m[2].to_owned(), false, false, false)
        };
        let con = Version::try_parse(&ver).map_err(|_| "constraint parser error".to_owned())?;
        Ok(Comparator {
            op,
            op_text: m[1].to_owned(),
            orig: m[2].to_owned(),
            con,
            dirty,
            minor_dirty,
            patch_dirty,
        })
    }

    /// The `constraint*` functions of constraints.go.
    fn check(&self, v: &Version, include_pre: bool) -> bool {
        if !v.pre.is_empty() && !include_pre {
            return false;
        }
        let c = &self.con;
        let cmp = v.cmp_precedence(c);
        match self.op {
            Op::TildeOrEqual if self.dirty => self.tilde(v),
            Op::TildeOrEqual => cmp == Ordering::Equal,
            Op::Tilde => self.tilde(v),
            Op::NotEqual => {
                if self.dirty {
                    if c.major != v.major {
                        return true;
                    }
                    if c.minor != v.minor && !self.minor_dirty {
                        return true;
                    } else if self.minor_dirty {
                        return false;
                    } else if c.patch != v.patch && !self.patch_dirty {
                        return true;
                    } else if self.patch_dirty {
                        if !v.pre.is_empty() || !c.pre.is_empty() {
                            return compare_prerelease(&v.pre, &c.pre) != Ordering::Equal;
                        }
                        return false;
                    }
                }
                cmp != Ordering::Equal
            }
            Op::GreaterThan => {
                if !self.dirty {
                    return cmp == Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major > c.major;
                }
                if self.minor_dirty {
                    // `>11`: 11.1.0 is not greater, 12 is.
                    return false;
                }
                if self.patch_dirty {
                    // `>11.1`: 11.1.1 is not greater, 11.2.0 is.
                    return v.minor > c.minor;
                }
                cmp == Ordering::Greater
            }
            Op::LessThan => cmp == Ordering::Less,
            Op::GreaterThanEqual => cmp != Ordering::Less,
            Op::LessThanEqual => {
                if !self.dirty {
                    return cmp != Ordering::Greater;
                }
                !(v.major > c.major
                    || (v.major == c.major && v.minor > c.minor && !self.minor_dirty))
            }
            Op::Caret => {
                if cmp == Ordering::Less {
                    return false;
                }
                if c.major > 0 || self.minor_dirty {
                    return v.major == c.major;
                }
                if v.major > 0 {
                    return false;
                }
                if c.minor > 0 || self.patch_dirty {
                    return v.minor == c.minor;
                }
                if v.minor > 0 {
                    return false;
                }
                c.patch == v.patch
            }
        }
    }

    /// `constraintTilde` (past the prerelease gate).
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if v.cmp_precedence(c) == Ordering::Less {
            return false;
        }
        // `~0.0.0` (and `~*`) accept everything.
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        v.major == c.major && (v.minor == c.minor || self.minor_dirty)
    }
}

fn is_x(part: &str) -> bool {
    matches!(part, "x" | "X" | "*")
}

// ---------------------------------------------------------------------------

/// A regular-expression engine for the fixed expressions above: the subset
/// of Go's syntax they use (literals, escapes, ASCII classes, `\s`, `\d`,
/// capturing and `(?:` groups, `|`, greedy `?` `*` `+`, `^` and `$` as text
/// start and end), with Go's leftmost-first semantics, run as a Pike VM
/// (linear in the input; threads in priority order). The expressions are
/// constants, so unsupported syntax panics when they are first used, which
/// the tests do.
mod re {
    /// A compiled expression.
    pub(super) struct Regex {
        prog: Vec<Inst>,
        groups: usize,
    }

    #[derive(Debug, Clone, Copy)]
    enum Inst {
        /// Consume one ASCII byte in the set.
        Byte(u128),
        /// Continue at both, the first preferred.
        Split(usize, usize),
        Jmp(usize),
        Save(usize),
        Begin,
        End,
        Match,
    }

    enum Node {
        Set(u128),
        Cat(Vec<Node>),
        Alt(Vec<Node>),
        Quest(Box<Node>),
        Star(Box<Node>),
        Plus(Box<Node>),
        Group(Option<usize>, Box<Node>),
        Begin,
        End,
    }

    type Slots = Vec<Option<usize>>;

    impl Regex {
        pub(super) fn new(pattern: &str) -> Regex {
            let mut parser = Parser {
                src: pattern.as_bytes(),
                at: 0,
                groups: 0,
            };
            let node = parser.alternation();
            assert!(parser.at == parser.src.len(), "unbalanced ')' in {pattern}");
            let mut prog = vec![Inst::Save(0)];
            compile(&node, &mut prog);
            prog.push(Inst::Save(1));
            prog.push(Inst::Match);
            Regex {
                prog,
                groups: parser.groups,
            }
        }

        /// Whether the expression matches somewhere in `text`.
        pub(super) fn is_match(&self, text: &str) -> bool {
            self.exec(text.as_bytes(), 0, 2).is_some()
        }

        /// Go's `FindStringSubmatch`: the leftmost-first match and its groups
        /// (`""` for a group that did not participate).
        pub(super) fn captures<'t>(&self, text: &'t str) -> Option<Vec<&'t str>> {
            let slots = self.exec(text.as_bytes(), 0, 2 * (self.groups + 1))?;
            Some(strings(text, &slots))
        }

        /// Go's `FindAllStringSubmatch(text, -1)`.
        pub(super) fn find_all_captures<'t>(&self, text: &'t str) -> Vec<Vec<&'t str>> {
            self.find_all_slots(text, 2 * (self.groups + 1))
                .iter()
                .map(|slots| strings(text, slots))
                .collect()
        }

        /// Go's `FindAllString(text, -1)`.
        pub(super) fn find_all<'t>(&self, text: &'t str) -> Vec<&'t str> {
            self.find_all_slots(text, 2)
                .iter()
                .map(|slots| strings(text, slots)[0])
                .collect()
        }

        /// Successive non-overlapping matches; an empty match right after
        /// the previous one is dropped (Go's `allMatches`).
        fn find_all_slots(&self, text: &str, slots: usize) -> Vec<Slots> {
            let input = text.as_bytes();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut previous_end = None;
            while pos <= input.len() {
                let Some(found) = self.exec(input, pos, slots) else {
                    break;
                };
                let (start, end) = (found[0].unwrap_or(pos), found[1].unwrap_or(pos));
                let mut accept = true;
                if end == pos {
                    if previous_end == Some(start) {
                        accept = false;
                    }
                    pos += 1;
                    while pos < input.len() && !text.is_char_boundary(pos) {
                        pos += 1;
                    }
                } else {
                    pos = end;
                }
                previous_end = Some(end);
                if accept {
                    out.push(found);
                }
            }
            out
        }

        /// The leftmost-first match starting at or after `start`, recording
        /// the first `slots` capture positions.
        fn exec(&self, input: &[u8], start: usize, slots: usize) -> Option<Slots> {
            let mut current: Vec<(usize, Slots)> = Vec::new();
            let mut next: Vec<(usize, Slots)> = Vec::new();
            let mut current_seen = vec![false; self.prog.len()];
            let mut next_seen = vec![false; self.prog.len()];
            let mut matched = None;
            let mut pos = start;
            loop {
                if matched.is_none() {
                    // A new attempt starting here, below every older thread.
                    let fresh = vec![None; slots];
                    self.add(&mut current, &mut current_seen, 0, pos, input.len(), fresh);
                } else if current.is_empty() {
                    break;
                }
                for (pc, slots) in current.drain(..) {
                    match self.prog[pc] {
                        Inst::Byte(set) => {
                            if let Some(&b) = input.get(pos) {
                                if b < 128 && (set & (1u128 << b)) != 0 {
                                    self.add(
                                        &mut next,
                                        &mut next_seen,
                                        pc + 1,
                                        pos + 1,
                                        input.len(),
                                        slots,
                                    );
                                }
                            }
                        }
                        Inst::Match => {
                            // Lower-priority threads are cut off.
                            matched = Some(slots);
                            break;
                        }
                        _ => unreachable!("only Byte and Match threads are queued"),
                    }
                }
                if pos >= input.len() {
                    break;
                }
                pos += 1;
                std::mem::swap(&mut current, &mut next);
                std::mem::swap(&mut current_seen, &mut next_seen);
                next_seen.fill(false);
            }
            matched
        }

        /// Follows the empty-width instructions from `pc` in priority order,
        /// queueing the threads that wait on input.
        fn add(
            &self,
            list: &mut Vec<(usize, Slots)>,
            seen: &mut [bool],
            pc: usize,
            pos: usize,
            len: usize,
            mut slots: Slots,
        ) {
            if seen[pc] {
                return;
            }
            seen[pc] = true;
            match self.prog[pc] {
                Inst::Jmp(to) => self.add(list, seen, to, pos, len, slots),
                Inst::Split(first, second) => {
                    self.add(list, seen, first, pos, len, slots.clone());
                    self.add(list, seen, second, pos, len, slots);
                }
                Inst::Save(slot) => {
                    if let Some(s) = slots.get_mut(slot) {
                        *s = Some(pos);
                    }
                    self.add(list, seen, pc + 1, pos, len, slots);
                }
                Inst::Begin => {
                    if pos == 0 {
                        self.add(list, seen, pc + 1, pos, len, slots);
                    }
                }
                Inst::End => {
                    if pos == len {
                        self.add(list, seen, pc + 1, pos, len, slots);
                    }
                }
                Inst::Byte(_) | Inst::Match => list.push((pc, slots)),
            }
        }
    }

    /// Match boundaries always sit next to matched ASCII bytes, so they are
    /// character boundaries; `get` only guards against surprises.
    fn strings<'t>(text: &'t str, slots: &[Option<usize>]) -> Vec<&'t str> {
        slots
            .chunks(2)
            .map(|pair| match pair {
                [Some(a), Some(b)] => text.get(*a..*b).unwrap_or(""),
                _ => "",
            })
            .collect()
    }

    fn compile(node: &Node, prog: &mut Vec<Inst>) {
        match node {
            Node::Set(set) => prog.push(Inst::Byte(*set)),
            Node::Cat(items) => items.iter().for_each(|item| compile(item, prog)),
            Node::Alt(alternatives) => {
                let mut jumps = Vec::new();
                let last = alternatives.len() - 1;
                for (i, alternative) in alternatives.iter().enumerate() {
                    if i == last {
                        compile(alternative, prog);
                    } else {
                        let split = prog.len();
                        prog.push(Inst::Split(0, 0));
                        compile(alternative, prog);
                        jumps.push(prog.len());
                        prog.push(Inst::Jmp(0));
                        prog[split] = Inst::Split(split + 1, prog.len());
                    }
                }
                let end = prog.len();
                for jump in jumps {
                    prog[jump] = Inst::Jmp(end);
                }
            }
            Node::Quest(inner) => {
                let split = prog.len();
                prog.push(Inst::Split(0, 0));
                compile(inner, prog);
                prog[split] = Inst::Split(split + 1, prog.len());
            }
            Node::Star(inner) => {
                let split = prog.len();
                prog.push(Inst::Split(0, 0));
                compile(inner, prog);
                prog.push(Inst::Jmp(split));
                prog[split] = Inst::Split(split + 1, prog.len());
            }
            Node::Plus(inner) => {
                let start = prog.len();
                compile(inner, prog);
                prog.push(Inst::Split(start, prog.len() + 1));
            }
            Node::Group(Some(index), inner) => {
                prog.push(Inst::Save(2 * index));
                compile(inner, prog);
                prog.push(Inst::Save(2 * index + 1));
            }
            Node::Group(None, inner) => compile(inner, prog),
            Node::Begin => prog.push(Inst::Begin),
            Node::End => prog.push(Inst::End),
        }
    }

    fn bit(b: u8) -> u128 {
        assert!(b < 128, "non-ASCII byte in an expression");
        1u128 << b
    }

    /// `\s` in Go: `[\t\n\f\r ]`.
    const SPACE: u128 = (1 << b'\t') | (1 << b'\n') | (1 << 0x0c) | (1 << b'\r') | (1 << b' ');
    const DIGIT: u128 = ((1 << 10) - 1) << b'0';

    struct Parser<'p> {
        src: &'p [u8],
        at: usize,
        groups: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.src.get(self.at).copied()
        }

        fn bump(&mut self) -> u8 {
            let b = *self.src.get(self.at).expect("unexpected end of expression");
            self.at += 1;
            b
        }

        fn alternation(&mut self) -> Node {
            let mut alternatives = vec![self.concatenation()];
            while self.peek() == Some(b'|') {
                self.at += 1;
                alternatives.push(self.concatenation());
            }
            if alternatives.len() == 1 {
                alternatives.remove(0)
            } else {
                Node::Alt(alternatives)
            }
        }

        fn concatenation(&mut self) -> Node {
            let mut items = Vec::new();
            while let Some(b) = self.peek() {
                if b == b'|' || b == b')' {
                    break;
                }
                items.push(self.repetition());
            }
            Node::Cat(items)
        }

        fn repetition(&mut self) -> Node {
            let atom = self.atom();
            let node = match self.peek() {
                Some(b'?') => Node::Quest(Box::new(atom)),
                Some(b'*') => Node::Star(Box::new(atom)),
                Some(b'+') => Node::Plus(Box::new(atom)),
                _ => return atom,
            };
            self.at += 1;
            assert!(
                !matches!(self.peek(), Some(b'?' | b'*' | b'+' | b'{')),
                "non-greedy or nested repetition is not supported"
            );
            node
        }

        fn atom(&mut self) -> Node {
            match self.bump() {
                b'(' => {
                    let index = if self.src[self.at..].starts_with(b"?:") {
                        self.at += 2;
                        None
                    } else {
                        self.groups += 1;
                        Some(self.groups)
                    };
                    let inner = self.alternation();
                    assert_eq!(self.bump(), b')', "missing ')'");
                    Node::Group(index, Box::new(inner))
                }
                b'[' => self.class(),
                b'\\' => {
                    let b = self.bump();
                    Node::Set(escape(b))
                }
                b'^' => Node::Begin,
                b'$' => Node::End,
                b @ (b'.' | b'*' | b'+' | b'?' | b'{' | b'}' | b']' | b')') => {
                    panic!("unsupported syntax {:?} in expression", b as char)
                }
                b => Node::Set(bit(b)),
            }
        }

        fn class(&mut self) -> Node {
            assert!(
                self.peek() != Some(b'^'),
                "negated classes are not supported"
            );
            let mut set = 0u128;
            loop {
                let b = self.bump();
                if b == b']' {
                    break;
                }
                let (single, lo) = if b == b'\\' {
                    let e = self.bump();
                    (escape(e), e)
                } else {
                    (bit(b), b)
                };
                if self.peek() == Some(b'-') && self.src.get(self.at + 1) != Some(&b']') {
                    self.at += 1;
                    let mut hi = self.bump();
                    if hi == b'\\' {
                        hi = self.bump();
                    }
                    assert!(single.count_ones() == 1 && lo <= hi, "bad class range");
                    for c in lo..=hi {
                        set |= bit(c);
                    }
                } else {
                    set |= single;
                }
            }
            Node::Set(set)
        }
    }

    fn escape(b: u8) -> u128 {
        match b {
            b's' => SPACE,
            b'd' => DIGIT,
            b if b.is_ascii_punctuation() => bit(b),
            b => panic!("unsupported escape \\{}", b as char),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::Regex;

        #[test]
        fn alternatives_and_groups_are_leftmost_first() {
            // A backtracking engine takes "a" first, then has to take "bcd".
            let re = Regex::new("(a|ab)(c|bcd)(d*)");
            assert_eq!(re.captures("abcd").unwrap(), ["abcd", "a", "bcd", ""]);
            // The empty alternative comes before "b", so it wins when it can.
            let re = Regex::new("^(a|)(b?)$");
            assert_eq!(re.captures("b").unwrap(), ["b", "", "b"]);
            // Greedy quantifiers, non-participating groups as "".
            let re = Regex::new(r"^(x+)(x*)(-(y))?$");
            assert_eq!(re.captures("xxx").unwrap(), ["xxx", "xxx", "", "", ""]);
            assert!(re.captures("xxx-").is_none());
        }

        #[test]
        fn unanchored_search_and_find_all() {
            let re = Regex::new(r"[0-9]+(\.[0-9]+)?");
            assert_eq!(re.find_all("a1.5 b22 é3."), ["1.5", "22", "3"]);
            assert!(re.is_match("é9"));
            assert!(!Regex::new(r"^\s*$").is_match(" x "));
            assert!(Regex::new(r"^\s*$").is_match(" \t\r\n\x0c"));
            // `$` is the end of the text only.
            assert!(!Regex::new("^a$").is_match("a\n"));
            let re = Regex::new(r"[0-9|x|X|\*]+");
            assert_eq!(re.find_all("1|x*-X"), ["1|x*", "X"]);
        }
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::try_parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn check_table(cases: &[(&str, &str, bool)]) {
        let mut failures = Vec::new();
        for &(constraint, version, expected) in cases {
            let parsed = Constraint::parse(constraint)
                .unwrap_or_else(|e| panic!("constraint {constraint:?}: {e}"));
            if parsed.matches(&v(version)) != expected {
                failures.push(format!(
                    "{constraint:?} vs {version:?}: expected {expected}"
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn parses_versions_like_new_version() {
        // From Masterminds/semver v3.4.0 version_test.go, TestNewVersion
        // ("With loose NewVersion", the default that Argo CD uses).
        let masterminds = [
            ("1.2.3", true),
            ("1.2.3-alpha.01", false),
            ("1.2.3+test.01", true),
            ("1.2.3-alpha.-1", true),
            ("v1.2.3", true),
            ("1.0", true),
            ("v1.0", true),
            ("1", true),
            ("v1", true),
            ("1.2.beta", false),
            ("v1.2.beta", false),
            ("foo", false),
            ("1.2-5", true),
            ("v1.2-5", true),
            ("1.2-beta.5", true),
            ("v1.2-beta.5", true),
            ("\n1.2", false),
            ("\nv1.2", false),
            ("1.2.0-x.Y.0+metadata", true),
            ("v1.2.0-x.Y.0+metadata", true),
            ("1.2.0-x.Y.0+metadata-width-hypen", true),
            ("v1.2.0-x.Y.0+metadata-width-hypen", true),
            ("1.2.3-rc1-with-hypen", true),
            ("v1.2.3-rc1-with-hypen", true),
            ("1.2.3.4", false),
            ("v1.2.3.4", false),
            ("1.2.2147483648", true),
            ("1.2147483648.3", true),
            ("2147483648.3.0", true),
            ("12.3.4.1234", false),
            ("12.23.4.1234", false),
            ("12.3.34.1234", false),
            ("20221209-update-renovatejson-v4", true),
            ("1.1.2+.123", false),
            ("1.0.0-alpha_beta", false),
            ("1.0.0-alpha..", false),
            ("1.0.0-alpha..1", false),
            ("9.8.7+meta+meta", false),
            ("1.2.31----RC-SNAPSHOT.12.09.1--.12+788", false),
            ("01.1.1", true),
            ("1.01.1", true),
            ("1.1.01", true),
        ];
        let ours = [
            ("", false),
            ("v", false),
            ("V1.0.0", false),
            (" 1.0.0", false),
            ("1.0.0 ", false),
            ("1.0.0\n", false),
            ("1.0.0-", false),
            ("1.0.0+", false),
            ("1.0.", false),
            (".1", false),
            ("vv1", false),
            ("1.x", false),
            (">=1.0", false),
            ("latest", false),
            ("HEAD", false),
            ("main", false),
            ("release-1", false),
            ("refs/tags/v1.0.0", false),
            ("1.0.0-00", false),
            ("1.0.0-0", true),
            ("1.0.0+01", true),
            ("1-2", true),
            ("1234567", true),
            ("2024.03-LTS-RC19", true),
            ("18446744073709551615.0.0", true),
            ("18446744073709551616.0.0", false),
            ("1.0.0-99999999999999999999", true),
            ("1.0.0-é", false),
        ];
        for (text, ok) in masterminds.into_iter().chain(ours) {
            assert_eq!(is_version(text), ok, "{text:?}");
            assert_eq!(Version::parse(text).is_some(), ok, "{text:?}");
        }
    }

    #[test]
    fn version_errors_distinguish_invalid_from_detailed() {
        assert_eq!(Version::try_parse("latest"), Err(VersionError::Invalid));
        assert_eq!(Version::try_parse("1.2.3.4"), Err(VersionError::Invalid));
        assert_eq!(
            Version::try_parse("1.2.3-dev.01"),
            Err(VersionError::SegmentStartsZero)
        );
        assert_eq!(
            Version::try_parse("1.2.31----RC-SNAPSHOT.12.09.1--.12+788"),
            Err(VersionError::SegmentStartsZero)
        );
        let overflow = Version::try_parse("1.99999999999999999999").unwrap_err();
        assert_eq!(
            overflow,
            VersionError::OutOfRange("99999999999999999999".into())
        );
        assert_eq!(
            overflow.to_string(),
            "error parsing version segment: strconv.ParseUint: parsing \"99999999999999999999\": value out of range"
        );
        assert_eq!(
            VersionError::Invalid.to_string(),
            "invalid semantic version"
        );
    }

    #[test]
    fn version_parts_and_display() {
        let cases = [
            ("v1.2", (1, 2, 0, "", ""), "1.2.0"),
            ("1", (1, 0, 0, "", ""), "1.0.0"),
            ("1.02.003", (1, 2, 3, "", ""), "1.2.3"),
            ("1-2", (1, 0, 0, "2", ""), "1.0.0-2"),
            (
                "v1.2.3-rc.1+build.7",
                (1, 2, 3, "rc.1", "build.7"),
                "1.2.3-rc.1+build.7",
            ),
            (
                "2024.03-LTS-RC19",
                (2024, 3, 0, "LTS-RC19", ""),
                "2024.3.0-LTS-RC19",
            ),
            ("1.2+meta", (1, 2, 0, "", "meta"), "1.2.0+meta"),
        ];
        for (text, (major, minor, patch, pre, meta), display) in cases {
            let version = v(text);
            assert_eq!(
                (
                    version.major(),
                    version.minor(),
                    version.patch(),
                    version.prerelease(),
                    version.metadata()
                ),
                (major, minor, patch, pre, meta),
                "{text}"
            );
            assert_eq!(version.original(), text);
            assert_eq!(version.to_string(), display);
        }
    }

    #[test]
    fn compares_by_precedence() {
        // From Masterminds/semver v3.4.0 version_test.go, TestCompare.
        let cases = [
            ("1.2.3", "1.5.1", -1),
            ("2.2.3", "1.5.1", 1),
            ("2.2.3", "2.2.2", 1),
            ("3.2-beta", "3.2-beta", 0),
            ("1.3", "1.1.4", 1),
            ("4.2", "4.2-beta", 1),
            ("4.2-beta", "4.2", -1),
            ("4.2-alpha", "4.2-beta", -1),
            ("4.2-alpha", "4.2-alpha", 0),
            ("4.2-beta.2", "4.2-beta.1", 1),
            ("4.2-beta2", "4.2-beta1", 1),
            ("4.2-beta", "4.2-beta.2", -1),
            ("4.2-beta", "4.2-beta.foo", -1),
            ("4.2-beta.2", "4.2-beta", 1),
            ("4.2-beta.foo", "4.2-beta", 1),
            ("1.2+bar", "1.2+baz", 0),
            ("1.0.0-beta.4", "1.0.0-beta.-2", -1),
            ("1.0.0-beta.-2", "1.0.0-beta.-3", -1),
            ("1.0.0-beta.-3", "1.0.0-beta.5", 1),
            // Ours.
            ("1.10.0", "1.9.0", 1),
            ("v1.0.0", "1.0", 0),
            ("1.0.0-rc.10", "1.0.0-rc.9", 1),
            ("1.0.0-rc10", "1.0.0-rc9", -1),
            ("1.0.0-1", "1.0.0-a", -1),
            ("1.0.0-99999999999999999999", "1.0.0-1", 1),
            ("1.0.0-99999999999999999999", "1.0.0-a", -1),
        ];
        for (a, b, expected) in cases {
            let got = match v(a).cmp_precedence(&v(b)) {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            };
            assert_eq!(got, expected, "{a} vs {b}");
        }
    }

    #[test]
    fn orders_prereleases_and_sorts_stably() {
        // The SemVer 2.0 specification's example chain.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.9.0",
            "1.10.0",
            "2.0.0",
        ];
        for pair in chain.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert_eq!(v(pair[0]).cmp_precedence(&v(pair[1])), Ordering::Less);
        }
        let mut shuffled: Vec<Version> = [
            "v2.0.0", "1.0.0+b", "1.10.0", "1.0.0+a", "1.9.0", "v1.0.0", "1.0.0",
        ]
        .into_iter()
        .map(v)
        .collect();
        shuffled.sort();
        let sorted: Vec<&str> = shuffled.iter().map(Version::original).collect();
        assert_eq!(
            sorted,
            ["1.0.0", "1.0.0+a", "1.0.0+b", "v1.0.0", "1.9.0", "1.10.0", "v2.0.0"]
        );
        assert_ne!(v("v1.0.0"), v("1.0.0"));
        assert_eq!(v("v1.0.0").cmp_precedence(&v("1.0.0")), Ordering::Equal);
    }

    #[test]
    fn parses_single_comparators() {
        // From Masterminds/semver v3.4.0 constraints_test.go, TestParseConstraint.
        let cases = [
            (">= 1.2", Some((Op::GreaterThanEqual, "1.2.0"))),
            ("1.0", Some((Op::TildeOrEqual, "1.0.0"))),
            ("foo", None),
            ("<= 1.2", Some((Op::LessThanEqual, "1.2.0"))),
            ("=< 1.2", Some((Op::LessThanEqual, "1.2.0"))),
            ("=> 1.2", Some((Op::GreaterThanEqual, "1.2.0"))),
            ("v1.2", Some((Op::TildeOrEqual, "1.2.0"))),
            ("=1.5", Some((Op::TildeOrEqual, "1.5.0"))),
            ("> 1.3", Some((Op::GreaterThan, "1.3.0"))),
            ("< 1.4.1", Some((Op::LessThan, "1.4.1"))),
            ("< 40.50.10", Some((Op::LessThan, "40.50.10"))),
            // Ours.
            ("~> 1.2.x", Some((Op::Tilde, "1.2.0"))),
            ("^ 1", Some((Op::Caret, "1.0.0"))),
            ("!=4.x-beta", Some((Op::NotEqual, "4.0.0-beta"))),
            ("x.2.3", Some((Op::TildeOrEqual, "0.0.0"))),
            ("1.x.3", Some((Op::TildeOrEqual, "1.0.0"))),
            ("1.2.3+meta", Some((Op::TildeOrEqual, "1.2.3+meta"))),
        ];
        for (text, expected) in cases {
            let got = Comparator::parse(text)
                .ok()
                .map(|c| (c.op, c.con.to_string()));
            assert_eq!(
                got,
                expected.map(|(op, con)| (op, con.to_string())),
                "{text:?}"
            );
        }
        let dirt = |text: &str| {
            let c = Comparator::parse(text).unwrap();
            (c.dirty, c.minor_dirty, c.patch_dirty)
        };
        assert_eq!(dirt("1.2.3"), (false, false, false));
        assert_eq!(dirt("1.2"), (true, false, true));
        assert_eq!(dirt("1.2.X"), (true, false, true));
        assert_eq!(dirt("1"), (true, true, false));
        assert_eq!(dirt("1.*.3"), (true, true, false));
        assert_eq!(dirt("*"), (true, false, false));
        assert_eq!(
            Comparator::parse("xx").unwrap_err(),
            "constraint parser error"
        );
        assert_eq!(
            Comparator::parse("1.2.xx").unwrap_err(),
            "constraint parser error"
        );
    }

    #[test]
    fn single_comparator_checks() {
        // From Masterminds/semver v3.4.0 constraints_test.go, TestConstraintCheck
        // (one comparator; prereleases included when it has one).
        let cases = [
            ("=2.0.0", "1.2.3", false),
            ("=2.0.0", "2.0.0", true),
            ("=2.0", "1.2.3", false),
            ("=2.0", "2.0.0", true),
            ("=2.0", "2.0.1", true),
            ("4.1", "4.1.0", true),
            ("!=4.1.0", "4.1.0", false),
            ("!=4.1.0", "4.1.1", true),
            ("!=4.1", "4.1.0", false),
            ("!=4.1", "4.1.1", false),
            ("!=4.1", "5.1.0-alpha.1", false),
            ("!=4.1.0", "5.1.0-alpha.1", false),
            ("!=4.1-alpha", "4.1.0", true),
            ("!=4.1", "5.1.0", true),
            ("<11", "0.1.0", true),
            ("<11", "11.1.0", false),
            ("<1.1", "0.1.0", true),
            ("<1.1", "1.1.0", false),
            ("<1.1", "1.1.1", false),
            ("<=11", "1.2.3", true),
            ("<=11", "12.2.3", false),
            ("<=11", "11.2.3", true),
            ("<=1.1", "1.2.3", false),
            ("<=1.1", "0.1.0", true),
            ("<=1.1", "1.1.0", true),
            ("<=1.1", "1.1.1", true),
            (">1.1", "4.1.0", true),
            (">1.1", "1.1.0", false),
            (">0", "0", false),
            (">0", "1", true),
            (">0", "0.0.1-alpha", false),
            (">0.0", "0.0.1-alpha", false),
            (">0-0", "0.0.1-alpha", false),
            (">0.0-0", "0.0.1-alpha", false),
            (">0", "0.0.0-alpha", false),
            (">0-0", "0.0.0-alpha", false),
            (">0.0.0-0", "0.0.0-alpha", true),
            (">1.2.3-alpha.1", "1.2.3-alpha.2", true),
            (">1.2.3-alpha.1", "1.3.3-alpha.2", true),
            (">11", "11.1.0", false),
            (">11.1", "11.1.0", false),
            (">11.1", "11.1.1", false),
            (">11.1", "11.2.1", true),
            (">=11", "11.1.2", true),
            (">=11.1", "11.1.2", true),
            (">=11.1", "11.0.2", false),
            (">=1.1", "4.1.0", true),
            (">=1.1", "1.1.0", true),
            (">=1.1", "0.0.9", false),
            (">=0", "0.0.1-alpha", false),
            (">=0.0", "0.0.1-alpha", false),
            (">=0-0", "0.0.1-alpha", true),
            (">=0.0-0", "0.0.1-alpha", true),
            (">=0", "0.0.0-alpha", false),
            (">=0-0", "0.0.0-alpha", true),
            (">=0.0.0-0", "0.0.0-alpha", true),
            (">=0.0.0-0", "1.2.3", true),
            (">=0.0.0-0", "3.4.5-beta.1", true),
            ("<0", "0.0.0-alpha", false),
            ("<0-z", "0.0.0-alpha", true),
            (">=0", "0", true),
            ("=0", "1", false),
            ("*", "1", true),
            ("*", "4.5.6", true),
            ("*", "1.2.3-alpha.1", false),
            ("*-0", "1.2.3-alpha.1", true),
            ("2.*", "1", false),
            ("2.*", "3.4.5", false),
            ("2.*", "2.1.1", true),
            ("2.1.*", "2.1.1", true),
            ("2.1.*", "2.2.1", false),
            ("", "1", true),
            ("", "4.5.6", true),
            ("", "1.2.3-alpha.1", false),
            ("2", "1", false),
            ("2", "3.4.5", false),
            ("2", "2.1.1", true),
            ("2.1", "2.1.1", true),
            ("2.1", "2.2.1", false),
            ("~1.2.3", "1.2.4", true),
            ("~1.2.3", "1.3.4", false),
            ("~1.2", "1.2.4", true),
            ("~1.2", "1.3.4", false),
            ("~1", "1.2.4", true),
            ("~1", "2.3.4", false),
            ("~0.2.3", "0.2.5", true),
            ("~0.2.3", "0.3.5", false),
            ("~1.2.3-beta.2", "1.2.3-beta.4", true),
            ("~1.2.3-beta.2", "1.2.4-beta.2", true),
            ("~1.2.3-beta.2", "1.3.4-beta.2", false),
            ("^1.2.3", "1.8.9", true),
            ("^1.2.3", "2.8.9", false),
            ("^1.2.3", "1.2.1", false),
            ("^1.1.0", "2.1.0", false),
            ("^1.2.0", "2.2.1", false),
            ("^1.2.0", "1.2.1-alpha.1", false),
            ("^1.2.0-alpha.0", "1.2.1-alpha.1", true),
            ("^1.2.0-alpha.0", "1.2.1-alpha.0", true),
            ("^1.2.0-alpha.2", "1.2.0-alpha.1", false),
            ("^1.2", "1.8.9", true),
            ("^1.2", "2.8.9", false),
            ("^1", "1.8.9", true),
            ("^1", "2.8.9", false),
            ("^0.2.3", "0.2.5", true),
            ("^0.2.3", "0.5.6", false),
            ("^0.2", "0.2.5", true),
            ("^0.2", "0.5.6", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0.0", "0.0.3", true),
            ("^0.0", "0.1.4", false),
            ("^0.0", "1.0.4", false),
            ("^0", "0.2.3", true),
            ("^0", "1.1.4", false),
            ("^0.2.3-beta.2", "0.2.3-beta.4", true),
            ("^0.2.3-beta.2", "0.2.4-beta.2", true),
            ("^0.2.3-beta.2", "0.3.4-beta.2", false),
            ("^0.2.3-beta.2", "0.2.3-beta.2", true),
        ];
        let mut failures = Vec::new();
        for (constraint, version, expected) in cases {
            let c = Comparator::parse(constraint).unwrap_or_else(|e| panic!("{constraint:?}: {e}"));
            let include_pre = !c.con.pre.is_empty();
            if c.check(&v(version), include_pre) != expected {
                failures.push(format!(
                    "{constraint:?} vs {version:?}: expected {expected}"
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn constraint_shapes() {
        // From Masterminds/semver v3.4.0 constraints_test.go, TestNewConstraint:
        // (input, ORs, comparators in the first OR) or an error.
        let cases = [
            (">= 1.1", Some((1, 1))),
            (">40.50.60, < 50.70", Some((1, 2))),
            ("2.0", Some((1, 1))),
            ("v2.3.5-20161202202307-sha.e8fc5e5", Some((1, 1))),
            (">= bar", None),
            ("BAR >= 1.2.3", None),
            (">= 1.2.3 < 2.0", Some((1, 2))),
            (">= 1.2.3 < 2.0 || => 3.0 < 4", Some((2, 2))),
            (">= 1.2.3, < 2.0", Some((1, 2))),
            (">= 1.2.3, < 2.0 || => 3.0, < 4", Some((2, 2))),
            ("3 - 4 || => 3.0, < 4", Some((2, 2))),
            ("12.3.4.1234", None),
            ("12.23.4.1234", None),
            ("12.3.34.1234", None),
            ("12.3.34 ~1.2.3", Some((1, 2))),
            ("12.3.34~ 1.2.3", None),
            ("1.0.0 - 2.0.0, <=2.0.0", Some((1, 3))),
            // Ours.
            ("1 2", Some((1, 2))),
            ("  >=  1.2  ", Some((1, 1))),
            ("\t>=1.2,\n<2\r", Some((1, 2))),
            (">= 1.0 , < 2", Some((1, 2))),
            (">=1.2,,<2", None),
            (">=1.2<2", None),
            ("1 - 2||3", Some((2, 2))),
            ("a || 1", None),
        ];
        for (text, expected) in cases {
            let got = Constraint::parse(text)
                .ok()
                .map(|c| (c.groups.len(), c.groups[0].comparators.len()));
            assert_eq!(got, expected, "{text:?}");
        }
    }

    #[test]
    fn constraints_check() {
        // From Masterminds/semver v3.4.0 constraints_test.go, TestConstraintsCheck.
        check_table(&[
            ("*", "1.2.3", true),
            ("~0.0.0", "1.2.3", true),
            ("0.x.x", "1.2.3", false),
            ("0.0.x", "1.2.3", false),
            ("0.0.0", "1.2.3", false),
            ("^0.0.0", "1.2.3", false),
            ("= 2.0", "1.2.3", false),
            ("= 2.0", "2.0.0", true),
            ("4.1", "4.1.0", true),
            ("4.1.x", "4.1.3", true),
            ("1.x", "1.4", true),
            ("!=4.1", "4.1.0", false),
            ("!=4.1-alpha", "4.1.0-alpha", false),
            ("!=4.1-alpha", "4.1.1-alpha", false),
            ("!=4.1-alpha", "4.1.0", true),
            ("!=4.1", "5.1.0", true),
            ("!=4.x", "5.1.0", true),
            ("!=4.x", "4.1.0", false),
            ("!=4.1.x", "4.2.0", true),
            ("!=4.2.x", "4.2.3", false),
            (">1.1", "4.1.0", true),
            (">1.1", "1.1.0", false),
            ("<1.1", "0.1.0", true),
            ("<1.1", "1.1.0", false),
            ("<1.1", "1.1.1", false),
            ("<1.x", "1.1.1", false),
            ("<1.x", "0.1.1", true),
            ("<1.x", "2.0.0", false),
            ("<1.1.x", "1.2.1", false),
            ("<1.1.x", "1.1.500", false),
            ("<1.1.x", "1.0.500", true),
            ("<1.2.x", "1.1.1", true),
            (">=1.1", "4.1.0", true),
            (">=1.1", "4.1.0-beta", false),
            (">=1.1", "1.1.0", true),
            (">=1.1", "0.0.9", false),
            ("<=1.1", "0.1.0", true),
            ("<=1.1", "0.1.0-alpha", false),
            ("<=1.1-a", "0.1.0-alpha", true),
            ("<=1.1", "1.1.0", true),
            ("<=1.x", "1.1.0", true),
            ("<=2.x", "3.0.0", false),
            ("<=1.1", "1.1.1", true),
            ("<=1.1.x", "1.2.500", false),
            ("<=4.5", "3.4.0", true),
            ("<=4.5", "3.7.0", true),
            ("<=4.5", "4.6.3", false),
            (">1.1, <2", "1.1.1", false),
            (">1.1, <2", "1.2.1", true),
            (">1.1, <3", "4.3.2", false),
            (">=1.1, <2, !=1.2.3", "1.2.3", false),
            (">1.1 <2", "1.1.1", false),
            (">1.1 <2", "1.2.1", true),
            (">1.1    <3", "4.3.2", false),
            (">=1.1    <2    !=1.2.3", "1.2.3", false),
            (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
            (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", false),
            (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", true),
            (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
            (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
            (">=1.1 <2 !=1.2.3", "1.2.3", false),
            (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", true),
            (">=1.1 <2 !=1.2.3 || > 3", "3.1.2", false),
            (">=1.1 <2 !=1.2.3 || >= 3", "3.0.0", true),
            (">=1.1 <2 !=1.2.3 || > 3", "3.0.0", false),
            (">=1.1 <2 !=1.2.3 || > 3", "1.2.3", false),
            ("> 1.1, <     2", "1.1.1", false),
            (">   1.1, <2", "1.2.1", true),
            (">1.1, <  3", "4.3.2", false),
            (">= 1.1, <     2, !=1.2.3", "1.2.3", false),
            ("> 1.1 < 2", "1.1.1", false),
            (">1.1 < 2", "1.2.1", true),
            ("> 1.1    <3", "4.3.2", false),
            (">=1.1    < 2    != 1.2.3", "1.2.3", false),
            (">= 1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
            (">= 1.1, <2, != 1.2.3 || > 3", "3.1.2", false),
            (">= 1.1, <2, != 1.2.3 || >= 3", "3.0.0", true),
            (">= 1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
            (">= 1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
            (">= 1.1 <2 != 1.2.3", "1.2.3", false),
            (">= 1.1 <2 != 1.2.3 || > 3", "4.1.2", true),
            (">= 1.1 <2 != 1.2.3 || > 3", "3.1.2", false),
            (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", true),
            (">= 1.1 < 2 !=1.2.3 || > 3", "3.0.0", false),
            (">=1.1 < 2 !=1.2.3 || > 3", "1.2.3", false),
            (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", true),
            (">= 1.0.0  <= 2.0.0-beta", "1.0.1", true),
            (">= 1.0.0  <= 2.0.0-beta", "3.0.0", false),
            (">= 1.0.0  <= 2.0.0-beta || > 3", "1.0.1-beta", true),
            (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", false),
            (
                ">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3",
                "1.0.1-beta",
                true,
            ),
            (
                ">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3",
                "1.0.1-beta",
                false,
            ),
            (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", true),
            ("1.1 - 2", "1.1.1", true),
            ("1.5.0 - 4.5", "3.7.0", true),
            ("1.1-3", "4.3.2", false),
            ("^1.1", "1.1.1", true),
            ("^1.1", "4.3.2", false),
            ("^1.x", "1.1.1", true),
            ("^2.x", "1.1.1", false),
            ("^1.x", "2.1.1", false),
            ("^1.x", "1.1.1-beta1", false),
            ("^1.1.2-alpha", "1.2.1-beta1", true),
            ("^1.2.x-alpha", "1.1.1-beta1", false),
            ("^0.0.1", "0.0.1", true),
            ("^0.0.1", "0.3.1", false),
            ("~*", "2.1.1", true),
            ("~1", "2.1.1", false),
            ("~1", "1.3.5", true),
            ("~1", "1.4", true),
            ("~1.x", "2.1.1", false),
            ("~1.x", "1.3.5", true),
            ("~1.x", "1.4", true),
            ("~1.1", "1.1.1", true),
            ("~1.1", "1.1.1-alpha", false),
            ("~1.1-alpha", "1.1.1-beta", true),
            ("~1.1.1-beta", "1.1.1-alpha", false),
            ("~1.1.1-beta", "1.1.1", true),
            ("~1.2.3", "1.2.5", true),
            ("~1.2.3", "1.2.2", false),
            ("~1.2.3", "1.3.2", false),
            ("~1.1", "1.2.3", false),
            ("~1.3", "2.4.5", false),
            ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", true),
            ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", true),
            // From TestConstraintsValidate (same semantics through Validate).
            ("<2.x", "1.1.1", true),
            ("<1.x", "2.1.1", false),
            ("<=2.x", "3.1.0", false),
            ("^1.1", "1.1.1-alpha", false),
            ("^1.1.1-alpha", "1.1.1-beta", true),
            ("^1.1.1-beta", "1.1.1-alpha", false),
            ("^0.0.1", "0.1.3", false),
            ("~1", "1.3.5-beta", false),
            ("~1.x", "1.3.5-beta", false),
            ("~1.3.6-alpha", "1.3.5-beta", false),
            ("~1.3.5-alpha", "1.3.5-beta", true),
            ("~1.3.5-beta", "1.3.5-alpha", false),
            ("1.1 - 3", "4.3.2", false),
            ("^1.12.7", "1.6.6", false),
            ("^0.2", "0.3.0", false),
            ("^0.2", "0.1.1", false),
            ("^0.0.3", "0.1.1", false),
            ("^0.0.3", "0.0.2", false),
            ("> 1.2.3", "1.2.3-beta.1", false),
        ]);
    }

    #[test]
    fn rewrites_ranges() {
        // From Masterminds/semver v3.4.0 constraints_test.go, TestRewriteRange.
        let cases = [
            ("2 - 3", ">= 2, <= 3 "),
            ("2 - 3, 2 - 3", ">= 2, <= 3 ,>= 2, <= 3 "),
            ("2 - 3, 4.0.0 - 5.1", ">= 2, <= 3 ,>= 4.0.0, <= 5.1 "),
            ("2 - 3 4.0.0 - 5.1", ">= 2, <= 3 >= 4.0.0, <= 5.1 "),
            ("1.0.0 - 2.0.0 <=2.0.0", ">= 1.0.0, <= 2.0.0 <=2.0.0"),
            // Ours: `|` is in the version class, and `-` needs spaces.
            ("1 - 2||3", ">= 1, <= 2||3 "),
            ("1.2-1.4", "1.2-1.4"),
            ("v1.2.3-rc.1 - v2", ">= v1.2.3-rc.1, <= v2 "),
        ];
        for (input, expected) in cases {
            assert_eq!(rewrite_range(input), expected, "{input:?}");
        }
    }

    #[test]
    fn operators_wildcards_and_partial_versions() {
        check_table(&[
            // Equality, with and without `=`, `v` on either side, metadata ignored.
            ("=1.2.3", "1.2.3", true),
            ("=1.2.3", "1.2.4", false),
            ("1.2.3", "v1.2.3", true),
            ("v1.2.3", "1.2.3", true),
            ("1.2.3+build", "1.2.3+other", true),
            ("!=1.2.3", "1.2.4", true),
            ("!=1.2.3", "1.2.3", false),
            // > and < with full and partial versions.
            (">1.2.3", "1.2.4", true),
            (">1.2.3", "1.2.3", false),
            (">1.2", "1.2.9", false),
            (">1.2", "1.3.0", true),
            (">1", "1.9.9", false),
            (">1", "2.0.0", true),
            ("<1.2.3", "1.2.2", true),
            ("<1.2.3", "1.2.3", false),
            ("<1.2", "1.1.9", true),
            ("<1.2", "1.2.0", false),
            // >= and <= and their spellings.
            (">=1.2.3", "1.2.3", true),
            (">=1.2.3", "1.2.2", false),
            ("=>1.2", "1.2.0", true),
            (">= 1.2.x", "1.2.0", true),
            (">= 1.2.x", "1.1.9", false),
            ("<=1.2.3", "1.2.3", true),
            ("<=1.2.3", "1.2.4", false),
            ("=<1.2", "1.2.99", true),
            ("<=1.2", "1.3.0", false),
            ("<= 2.x", "2.99.0", true),
            ("<= 2.x", "3.0.0", false),
            // Tilde.
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.3.0", false),
            ("~>1.2.3", "1.2.4", true),
            ("~> 1.2", "1.2.0", true),
            ("~1.2", "1.3.0", false),
            ("~1", "1.99.0", true),
            ("~1", "2.0.0", false),
            ("~1", "0.9.0", false),
            ("~1.x", "1.5.0", true),
            ("~1.2.x", "1.2.7", true),
            // Caret.
            ("^1.2.3", "1.9.0", true),
            ("^1.2.3", "2.0.0", false),
            ("^1.2.3", "1.2.2", false),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.2.3", "0.2.2", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0.0", "0.0.9", true),
            ("^0.0", "0.1.0", false),
            ("^0", "0.9.9", true),
            ("^0", "1.0.0", false),
            ("^0.x", "0.9.0", true),
            ("^2.x", "2.5.0", true),
            ("^1.2.x", "1.9.0", true),
            ("^1.2.x", "1.1.0", false),
            // Wildcards in every position.
            ("1.2.x", "1.2.9", true),
            ("1.2.x", "1.3.0", false),
            ("1.2.*", "1.2.0", true),
            ("1.2.X", "1.2.5", true),
            ("1.x", "1.0.0", true),
            ("1.x.x", "1.9.9", true),
            ("1.x", "2.0.0", false),
            ("v1.x", "1.4.0", true),
            ("1.x.3", "1.5.0", true),
            ("*", "0.0.0", true),
            ("x", "3.2.1", true),
            ("X", "3.2.1", true),
            ("*.*.*", "3.2.1", true),
            ("x.2.3", "9.0.0", true),
            // Hyphen ranges: inclusive, a partial upper bound covers its range.
            ("1.2 - 1.4.5", "1.2.0", true),
            ("1.2 - 1.4.5", "1.4.5", true),
            ("1.2 - 1.4.5", "1.4.6", false),
            ("1.2 - 1.4.5", "1.1.9", false),
            ("2.3.4 - 4.5", "4.5.9", true),
            ("2.3.4 - 4.5", "4.6.0", false),
            ("2.3.4 - 4.5", "2.3.3", false),
            ("1 - 2", "2.9.9", true),
            ("1 - 2", "3.0.0", false),
            // AND by spaces and commas, OR by `||`, whitespace anywhere.
            (">=1.0 <2 || >=3.0", "2.5.0", false),
            (">=1.0 <2 || >=3.0", "3.1.0", true),
            (">=1.0,<2", "1.5.0", true),
            (">=1.0, <2", "2.0.0", false),
            (">= 1.0 , < 2", "1.5.0", true),
            ("  >=  1.2  ", "1.2.0", true),
            ("\t>=1.2\n", "1.3.0", true),
            ("<1||>2", "1.5.0", false),
            ("<1||>2", "3.0.0", true),
        ]);
    }

    #[test]
    fn prereleases_only_when_the_or_group_asks() {
        check_table(&[
            (">=1.0.0", "1.5.0-rc.1", false),
            (">=1.0.0-0", "1.5.0-rc.1", true),
            // The flag covers the whole group, with plain precedence.
            (">=1.0.0-0 <2.0.0", "1.5.0-rc.1", true),
            (">=1.0.0-0 <2.0.0", "2.0.0-rc.1", true),
            (">=1.0.0-0 <2.0.0", "2.0.0", false),
            // ...but not other groups.
            ("<2.0.0-0 || >=1.0.0", "1.5.0-rc", true),
            ("<2.0.0-0 || >=1.0.0", "2.5.0-rc", false),
            ("<2.0.0-0 || >=1.0.0", "2.5.0", true),
            // Not limited to the same major.minor.patch (unlike npm).
            ("~1.2.3-beta.2", "1.2.4-beta.2", true),
            ("^1.2.0-alpha.0", "1.9.0-beta", true),
            ("1.x-beta", "1.5.0-rc", true),
            ("*", "1.0.0-rc.1", false),
            ("*-0", "1.0.0-rc.1", true),
            ("1.2.3-beta", "1.2.3-beta", true),
            ("1.2.3-beta", "1.2.3-beta.1", false),
            ("=1.2.3-beta+meta", "v1.2.3-beta+other", true),
        ]);
    }

    #[test]
    fn reproduces_masterminds_quirks() {
        check_table(&[
            ("^*", "1.2.3", false),
            ("^*", "0.0.0", true),
            ("^*", "0.0.1", false),
            ("~0.0.0", "5.0.0", true),
            ("~0", "1.0.0", false),
            ("~0.0", "0.1.0", false),
            ("<=*", "0.0.7", true),
            ("<=*", "0.1.0", false),
            ("<=*", "1.0.0", false),
            (">*", "0.0.1", true),
            (">*", "0.0.0", false),
            ("!=*", "0.0.0", false),
            ("!=*", "1.0.0", true),
            ("1 - 2||3", "2.5.0", true),
            ("1 - 2||3", "3.5.0", true),
            ("1 - 2||3", "4.0.0", false),
            ("1 2", "1.0.0", false),
            ("1 2", "2.0.0", false),
            ("1.2-1.4", "1.2.5", true),
            ("1.2-1.4", "1.4.0", false),
        ]);
    }

    #[test]
    fn rejects_invalid_constraints() {
        let cases = [
            ("", "improper constraint: "),
            (" ", "improper constraint:  "),
            ("||", "improper constraint: "),
            (">=1 ||", "improper constraint: "),
            ("foo", "improper constraint: foo"),
            (">= bar", "improper constraint: >= bar"),
            ("BAR >= 1.2.3", "improper constraint: BAR >= 1.2.3"),
            ("12.3.4.1234", "improper constraint: 12.3.4.1234"),
            ("12.3.34~ 1.2.3", "improper constraint: 12.3.34~ 1.2.3"),
            (">=1.2<2", "improper constraint: >=1.2<2"),
            (">== 1", "improper constraint: >== 1"),
            ("<>1", "improper constraint: <>1"),
            ("latest", "improper constraint: latest"),
            ("main", "improper constraint: main"),
            ("HEAD", "improper constraint: HEAD"),
            ("release-1", "improper constraint: release-1"),
            ("V1.x", "improper constraint: V1.x"),
            ("xx", "constraint parser error"),
            ("1.2.xx", "constraint parser error"),
            ("1.0.0-01", "constraint parser error"),
            (">=1.0.0-rc.01", "constraint parser error"),
        ];
        for (text, message) in cases {
            assert_eq!(Constraint::parse(text).unwrap_err(), message, "{text:?}");
        }
    }

    #[test]
    fn version_and_constraint_predicates() {
        // From Argo CD util/versions/tags_test.go, TestTags_IsConstraint.
        assert!(!is_constraint("0.5.3"));
        assert!(!is_constraint("2024.03-LTS-RC19"));
        assert!(is_constraint("= 0.5.3"));
        assert!(is_constraint("> 0.5.3"));
        assert!(is_constraint(">0.5.0,<0.7.0"));
        assert!(is_constraint("0.7.*"));
        assert!(is_constraint("*"));
        // Ours.
        assert!(is_constraint("x"));
        assert!(is_constraint("1.x"));
        assert!(is_constraint(">=1.0 <2"));
        assert!(!is_constraint("v1.0"));
        assert!(!is_constraint("latest"));
        assert!(!is_constraint(""));
        assert!(!is_constraint("1.0.0-01"));
        assert!(is_version("v1.2") && is_version("1.0.0") && is_version("2024.03-LTS-RC19"));
        assert!(!is_version("1.x") && !is_version("latest"));
    }

    #[test]
    fn max_satisfying_over_a_tag_list() {
        let tags = [
            "v1.0.0",
            "v1.2.3",
            "v1.10.0",
            "v2.0.0-rc.1",
            "v2.0.0",
            "latest",
            "release-1",
        ];
        let cases = [
            ("*", Some("v2.0.0")),
            ("x", Some("v2.0.0")),
            ("1.x", Some("v1.10.0")),
            ("v1.x", Some("v1.10.0")),
            ("1", Some("v1.10.0")),
            ("^1", Some("v1.10.0")),
            ("~1", Some("v1.10.0")),
            ("^1.2.3", Some("v1.10.0")),
            (">=1.0 <2", Some("v1.10.0")),
            ("<2.0.0", Some("v1.10.0")),
            ("!=2.0.0", Some("v1.10.0")),
            ("~1.2", Some("v1.2.3")),
            ("~1.2.0", Some("v1.2.3")),
            ("1.2 - 1.4.5", Some("v1.2.3")),
            (">1.0.0 <1.10.0 || >=3", Some("v1.2.3")),
            ("1.0.0", Some("v1.0.0")),
            ("~2", Some("v2.0.0")),
            (">=2.0.0-0", Some("v2.0.0")),
            (">=2.0.0-rc.0 <2.0.0", Some("v2.0.0-rc.1")),
            ("=2.0.0-rc.1", Some("v2.0.0-rc.1")),
            (">2", None),
            ("^0.1", None),
            ("3.x", None),
        ];
        for (constraint, expected) in cases {
            let parsed = Constraint::parse(constraint).unwrap();
            assert_eq!(max_satisfying(&parsed, tags), expected, "{constraint:?}");
            assert_eq!(
                try_max_satisfying(&parsed, tags),
                Ok(expected),
                "{constraint:?}"
            );
        }
    }

    #[test]
    fn max_satisfying_like_argo_cd_max_version() {
        // From Argo CD util/versions/tags_test.go, TestTags_MaxVersion and
        // TestMaxVersion_WithTagPrefix (prefix already stripped).
        let tags = [
            "0.7.1",
            "0.5.4",
            "0.5.3",
            "0.7.2",
            "0.5.2",
            "0.5.1",
            "0.5.0",
            "2024.03-LTS-RC19",
        ];
        let best = |constraint: &str, tags: &[&'static str]| {
            max_satisfying(
                &Constraint::parse(constraint).unwrap(),
                tags.iter().copied(),
            )
        };
        assert_eq!(best("> 0.5.3", &tags), Some("0.7.2"));
        assert_eq!(best("> 0.0.0", &tags), Some("0.7.2"));
        assert_eq!(best(">0.5.0,<0.7.0", &tags), Some("0.5.4"));
        assert_eq!(best("0.7.*", &tags), Some("0.7.2"));
        assert_eq!(best("*", &tags), Some("0.7.2"));
        assert_eq!(best("0.7.*", &[]), None);
        let prefixed = ["v1.0.0", "v1.0.1", "v1.1.0"];
        assert_eq!(best("v1.0.*", &prefixed), Some("v1.0.1"));
        assert_eq!(best("v1.*", &prefixed), Some("v1.1.0"));
        assert_eq!(best("v1.x.x", &prefixed), Some("v1.1.0"));
        assert_eq!(best("v1.0.x", &prefixed), Some("v1.0.1"));
    }

    #[test]
    fn first_of_equal_precedence_wins() {
        let any = Constraint::parse("*").unwrap();
        assert_eq!(max_satisfying(&any, ["1.0.0", "v1.0.0"]), Some("1.0.0"));
        assert_eq!(max_satisfying(&any, ["v1.0.0", "1.0.0"]), Some("v1.0.0"));
        assert_eq!(
            max_satisfying(&any, ["1.0.0+b", "0.9.0", "1.0.0+a"]),
            Some("1.0.0+b")
        );
        assert_eq!(max_satisfying(&any, ["1.0", "1.0.0"]), Some("1.0"));
        assert_eq!(max_satisfying(&any, Vec::<&str>::new()), None);
    }

    #[test]
    fn detailed_version_errors_abort_like_argo_cd() {
        let any = Constraint::parse("*").unwrap();
        let tags = ["1.0.0", "latest", "2.0.0-rc.01", "1.5.0"];
        assert_eq!(max_satisfying(&any, tags), Some("1.5.0"));
        assert_eq!(
            try_max_satisfying(&any, tags),
            Err(VersionError::SegmentStartsZero)
        );
        let tags = ["1.0.0", "99999999999999999999.0.0"];
        assert_eq!(max_satisfying(&any, tags), Some("1.0.0"));
        assert!(matches!(
            try_max_satisfying(&any, tags),
            Err(VersionError::OutOfRange(_))
        ));
        assert_eq!(try_max_satisfying(&any, ["latest", "main"]), Ok(None));
    }

    #[test]
    fn displays_like_go() {
        let cases = [
            (">= 1.2, <2 || ~3", ">=1.2 <2 || ~3"),
            ("1 - 2", ">=1 <=2"),
            ("=> v1.x", "=>v1.x"),
            ("*", "*"),
        ];
        for (input, expected) in cases {
            assert_eq!(Constraint::parse(input).unwrap().to_string(), expected);
        }
    }
}
