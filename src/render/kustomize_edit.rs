//! `kustomize edit` semantics applied in-process to a kustomization.
//!
//! Argo CD applies a source's Kustomize overrides by running `kustomize edit
//! ...` commands in the app directory (util/kustomize/kustomize.go), and by
//! re-marshalling kustomization.yaml with `patches` appended. The machine has
//! no `kustomize edit`, so [`apply`] reproduces the effect of each command on
//! the parsed kustomization instead. The reference is kustomize v5.8.1, the
//! version Argo CD bundles (hack/tool-versions.sh); files below are relative
//! to the kustomize repository.
//!
//! Every command is modelled as kustomize runs it:
//!
//! 1. the command line is the one Argo CD builds, and it is parsed the way
//!    cobra/pflag would (so an argument starting with `-` is a flag);
//! 2. the arguments are validated (`Validate` in `commands/edit/...`);
//! 3. the kustomization is read (`commands/internal/kustfile`): strict JSON
//!    decoding into `types.Kustomization` (unknown fields and type mismatches
//!    are errors, keys match case-insensitively), then `FixKustomization`
//!    (`api/types/kustomization.go`);
//! 4. the edit is applied;
//! 5. the kustomization is written back: only non-empty fields survive.
//!
//! Deliberately not reproduced (all of them either have no effect on what
//! `kustomize build` produces, or only change an error message):
//!
//! - comment and field-order preservation of the written file;
//! - the parts of `FixKustomization` that `kustomize build` redoes itself
//!   with the same result: `env` -> `envs` in generators and the
//!   `helmChartInflationGenerator` split;
//! - strict decoding below the top level, except for the entries of
//!   `images`, `imageTags`, `replicas` and `labels`, which the edits rewrite;
//! - Go's document order when choosing which problem to report first, and
//!   when two keys differ only in case (serde_json maps are sorted);
//! - cobra's usage text, which kustomize prints after an error;
//! - `kustomize edit add component` with a remote URL clones it to validate
//!   it; here anything that looks like a remote URL is accepted unchecked;
//! - flags that Go's `flag.CommandLine` may add to the kustomize binary;
//! - Argo CD's patches step re-marshals the file through `any`, turning
//!   integers into float64 (large integers lose precision).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// What Argo CD reports, in place of a command line, for the patches step.
pub const PATCHES_COMMAND_LINE: &str = "# kustomization.yaml updated with patches. There is no `kustomize edit` command for adding patches. In order to generate the manifests in your local environment, you will need to copy the patches into kustomization.yaml manually.";

/// The binary name Argo CD runs (`getBinaryPath` without a configured path).
const KUSTOMIZE: &str = "kustomize";

/// `konfig.RecognizedKustomizationFileNames()`, in kustomize's order.
const KUSTOMIZATION_FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// One override set, in Argo CD's order of application.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    /// `edit set nameprefix -- <p>` when non-empty.
    pub name_prefix: String,
    /// `edit set namesuffix -- <s>` when non-empty.
    pub name_suffix: String,
    /// `edit set image <img>...` (already env-substituted).
    pub images: Vec<String>,
    /// `edit set replicas name=count...`.
    pub replicas: Vec<(String, i64)>,
    /// `edit add label [--force] [--without-selector] [--include-templates] k:v...`
    /// (values already substituted), in the caller's order.
    pub labels: Vec<(String, String)>,
    pub force_labels: bool,
    pub label_without_selector: bool,
    pub label_include_templates: bool,
    /// `edit add annotation [--force] k:v...`, in the caller's order.
    pub annotations: Vec<(String, String)>,
    pub force_annotations: bool,
    /// `edit set namespace -- <ns>` when non-empty.
    pub namespace: String,
    /// Appended to `patches:` (Argo CD re-marshals the file; no kustomize edit).
    pub patches: Vec<Value>,
    /// `edit add component <c>...` (after Argo's ignoreMissingComponents
    /// filtering, done by the caller).
    pub components: Vec<String>,
}

/// A failed step.
///
/// For a `kustomize edit` command, `command` is the command line as Argo CD
/// logs it (`GetCommandArgsToLog`), `args` the raw argv (Argo CD's `CmdError`
/// joins it with spaces, unquoted), `exit_code` the exit status kustomize
/// would have had (1 for an error, 2 for a Go panic) and `message` what
/// kustomize prints after `Error: ` (or the panic text).
///
/// For the patches step (no process), `command` is empty, `args` is empty,
/// `exit_code` is `None` and `message` is Argo CD's whole error message.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_error(.command, .message))]
pub struct EditError {
    pub command: String,
    pub message: String,
    pub args: Vec<String>,
    pub exit_code: Option<i32>,
}

fn render_error(command: &str, message: &str) -> String {
    if command.is_empty() {
        message.to_string()
    } else {
        format!("{command}: {message}")
    }
}

/// The command lines Argo CD reports for `edits`, one per step that runs,
/// in order.
pub fn command_lines(edits: &Edits) -> Vec<String> {
    plan(edits)
        .iter()
        .map(|step| match step.kind {
            StepKind::Patches => PATCHES_COMMAND_LINE.to_string(),
            _ => command_line_to_log(&step.argv),
        })
        .collect()
}

/// Applies `edits` to the kustomization document `kustomization` (parsed
/// from YAML into JSON values), in Argo CD's order: nameprefix, namesuffix,
/// images, replicas, labels, annotations, namespace, patches, components.
/// `kustomization_dir` is the directory holding the kustomization file: it is
/// where component paths are resolved, and where kustomize checks that
/// exactly one kustomization file exists.
///
/// On error the document may hold the result of the steps before the failing
/// one (as the file would on disk); the failing step leaves it untouched.
pub fn apply(
    kustomization: &mut Value,
    edits: &Edits,
    kustomization_dir: &Path,
) -> Result<(), EditError> {
    for step in plan(edits) {
        match step.kind {
            StepKind::Patches => {
                append_patches(kustomization, &edits.patches).map_err(|message| EditError {
                    command: String::new(),
                    message,
                    args: Vec::new(),
                    exit_code: None,
                })?
            }
            _ => run_command(kustomization, &step, kustomization_dir).map_err(|failure| {
                EditError {
                    command: command_line_to_log(&step.argv),
                    message: failure.message,
                    args: step.argv.clone(),
                    exit_code: Some(failure.exit_code),
                }
            })?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Steps and command lines (argo-cd util/kustomize/kustomize.go).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    NamePrefix,
    NameSuffix,
    Images,
    Replicas,
    Labels,
    Annotations,
    Namespace,
    Patches,
    Components,
}

struct Step {
    kind: StepKind,
    /// The full argv, starting with `kustomize`; empty for the patches step.
    argv: Vec<String>,
}

/// Number of leading argv words naming the command (`kustomize edit set x`).
const COMMAND_WORDS: usize = 4;

fn argv(words: &[&str], rest: impl IntoIterator<Item = String>) -> Vec<String> {
    std::iter::once(KUSTOMIZE)
        .chain(words.iter().copied())
        .map(String::from)
        .chain(rest)
        .collect()
}

fn plan(edits: &Edits) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut push = |kind, argv| steps.push(Step { kind, argv });
    if !edits.name_prefix.is_empty() {
        push(
            StepKind::NamePrefix,
            argv(
                &["edit", "set", "nameprefix", "--"],
                [edits.name_prefix.clone()],
            ),
        );
    }
    if !edits.name_suffix.is_empty() {
        push(
            StepKind::NameSuffix,
            argv(
                &["edit", "set", "namesuffix", "--"],
                [edits.name_suffix.clone()],
            ),
        );
    }
    if !edits.images.is_empty() {
        push(
            StepKind::Images,
            argv(&["edit", "set", "image"], edits.images.iter().cloned()),
        );
    }
    if !edits.replicas.is_empty() {
        push(
            StepKind::Replicas,
            argv(
                &["edit", "set", "replicas"],
                edits
                    .replicas
                    .iter()
                    .map(|(name, count)| format!("{name}={count}")),
            ),
        );
    }
    if !edits.labels.is_empty() {
        let flags = [
            (edits.force_labels, "--force"),
            (edits.label_without_selector, "--without-selector"),
            (edits.label_include_templates, "--include-templates"),
        ];
        push(
            StepKind::Labels,
            argv(
                &["edit", "add", "label"],
                flags
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, flag)| flag.to_string())
                    .chain(edits.labels.iter().map(|(k, v)| format!("{k}:{v}"))),
            ),
        );
    }
    if !edits.annotations.is_empty() {
        push(
            StepKind::Annotations,
            argv(
                &["edit", "add", "annotation"],
                edits
                    .force_annotations
                    .then(|| "--force".to_string())
                    .into_iter()
                    .chain(edits.annotations.iter().map(|(k, v)| format!("{k}:{v}"))),
            ),
        );
    }
    if !edits.namespace.is_empty() {
        push(
            StepKind::Namespace,
            argv(
                &["edit", "set", "namespace", "--"],
                [edits.namespace.clone()],
            ),
        );
    }
    if !edits.patches.is_empty() {
        push(StepKind::Patches, Vec::new());
    }
    if !edits.components.is_empty() {
        push(
            StepKind::Components,
            argv(
                &["edit", "add", "component"],
                edits.components.iter().cloned(),
            ),
        );
    }
    steps
}

/// argo-cd util/exec/exec.go `GetCommandArgsToLog`.
fn command_line_to_log(argv: &[String]) -> String {
    match argv.split_first() {
        Some((program, args)) => super::env::command_line(program, args),
        None => String::new(),
    }
}

/// Go's `strconv.Quote`.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ if is_go_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            _ if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            _ if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// U+0020. Approximated without Unicode category tables: controls, white
/// space, format characters, private use and non-characters are not
/// printable (unassigned code points are treated as printable).
fn is_go_print(c: char) -> bool {
    let u = c as u32;
    if u < 0x80 {
        return (0x20..0x7f).contains(&u);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    const FORMAT: &[(u32, u32)] = &[
        (0x00ad, 0x00ad),
        (0x0600, 0x0605),
        (0x061c, 0x061c),
        (0x06dd, 0x06dd),
        (0x070f, 0x070f),
        (0x0890, 0x0891),
        (0x08e2, 0x08e2),
        (0x180e, 0x180e),
        (0x200b, 0x200f),
        (0x202a, 0x202e),
        (0x2060, 0x2064),
        (0x2066, 0x206f),
        (0xe000, 0xf8ff),
        (0xfeff, 0xfeff),
        (0xfff9, 0xfffb),
        (0x110bd, 0x110bd),
        (0x110cd, 0x110cd),
        (0x13430, 0x1343f),
        (0x1bca0, 0x1bca3),
        (0x1d173, 0x1d17a),
        (0xe0001, 0xe0001),
        (0xe0020, 0xe007f),
        (0xf0000, 0x10ffff),
    ];
    if FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&u)) {
        return false;
    }
    !matches!(u & 0xffff, 0xfffe | 0xffff)
}

// ---------------------------------------------------------------------------
// Running one `kustomize edit` command.

/// Why a command failed, as kustomize reports it.
#[derive(Debug)]
struct Failure {
    message: String,
    exit_code: i32,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        exit_code: 1,
    }
}

/// A Go runtime panic (kustomize exits with status 2).
fn panic_failure(message: &str) -> Failure {
    Failure {
        message: format!("panic: {message}"),
        exit_code: 2,
    }
}

/// `errors.WrapPrefixf(err, "invalid Kustomization")` around a decode error.
fn invalid(message: impl std::fmt::Display) -> Failure {
    fail(format!("invalid Kustomization: {message}"))
}

fn run_command(doc: &mut Value, step: &Step, dir: &Path) -> Result<(), Failure> {
    let extra_flags: &[FlagDef] = match step.kind {
        StepKind::Labels => &[FORCE, WITHOUT_SELECTOR, INCLUDE_TEMPLATES],
        StepKind::Annotations => &[FORCE],
        _ => &[],
    };
    let cli = parse_cli(&step.argv[COMMAND_WORDS..], extra_flags)?;
    if cli.flag(HELP.long) {
        // cobra prints the help text and exits 0 without running the command.
        return Ok(());
    }
    let args = &cli.positionals;
    match step.kind {
        StepKind::NamePrefix => {
            let value = exactly_one(args, "must specify exactly one prefix value")?;
            edit_file(doc, dir, |k| {
                k.insert("namePrefix".into(), Value::String(value));
                Ok(())
            })
        }
        StepKind::NameSuffix => {
            let value = exactly_one(args, "must specify exactly one suffix value")?;
            edit_file(doc, dir, |k| {
                k.insert("nameSuffix".into(), Value::String(value));
                Ok(())
            })
        }
        StepKind::Namespace => {
            // The validator kustomize passes (api/internal/validate
            // FieldValidator.ValidateNamespace) accepts every name.
            let value = exactly_one(args, "must specify exactly one namespace value")?;
            edit_file(doc, dir, |k| {
                k.insert("namespace".into(), Value::String(value));
                Ok(())
            })
        }
        StepKind::Images => {
            if args.is_empty() {
                return Err(fail("no image specified"));
            }
            let parsed = args
                .iter()
                .map(|arg| parse_image_arg(arg))
                .collect::<Result<Vec<_>, _>>()?;
            edit_file(doc, dir, |k| {
                set_images(k, parsed);
                Ok(())
            })
        }
        StepKind::Replicas => {
            if args.is_empty() {
                return Err(fail("no replicas specified"));
            }
            let parsed = args
                .iter()
                .map(|arg| parse_replica_arg(arg))
                .collect::<Result<Vec<_>, _>>()?;
            edit_file(doc, dir, |k| {
                set_replicas(k, parsed);
                Ok(())
            })
        }
        StepKind::Labels | StepKind::Annotations => {
            let kind = if step.kind == StepKind::Labels {
                "label"
            } else {
                "annotation"
            };
            let options = MetadataOptions {
                kind,
                force: cli.flag(FORCE.long),
                without_selector: cli.flag(WITHOUT_SELECTOR.long),
                include_templates: cli.flag(INCLUDE_TEMPLATES.long),
            };
            let pairs = options.validate_and_parse(args)?;
            edit_file(doc, dir, |k| {
                if step.kind == StepKind::Labels {
                    options.add_labels(k, &pairs)
                } else {
                    let map = map_field(k, "commonAnnotations");
                    options.write_to_map(map, &pairs)
                }
            })
        }
        StepKind::Components => {
            if args.is_empty() {
                return Err(fail("must specify a component file"));
            }
            let components = glob_patterns_with_loader(dir, args)?;
            if components.is_empty() {
                return Ok(());
            }
            let file_name = kustomization_file_name(dir)?;
            edit_file(doc, dir, |k| {
                let list = list_field(k, "components");
                for component in components {
                    if component == file_name {
                        continue;
                    }
                    // kustomize logs "component ... already in kustomization file".
                    if list.iter().any(|c| c.as_str() == Some(component.as_str())) {
                        continue;
                    }
                    list.push(Value::String(component));
                }
                Ok(())
            })
        }
        StepKind::Patches => unreachable!("the patches step is not a kustomize command"),
    }
}

fn exactly_one(args: &[String], message: &str) -> Result<String, Failure> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(fail(message)),
    }
}

/// `kustfile.NewKustomizationFile` + `Read`, the edit, then `Write`.
fn edit_file(
    doc: &mut Value,
    dir: &Path,
    edit: impl FnOnce(&mut Map<String, Value>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    kustomization_file_name(dir)?;
    let mut kustomization = read_kustomization(doc)?;
    edit(&mut kustomization)?;
    *doc = write_kustomization(kustomization);
    Ok(())
}

/// `kustomizationFile.validate`: the kustomization file kustomize edits.
/// Kustomize fails when there are several; when there is none (the caller
/// holds the document in memory) the default name is assumed.
fn kustomization_file_name(dir: &Path) -> Result<&'static str, Failure> {
    let found: Vec<&'static str> = KUSTOMIZATION_FILE_NAMES
        .iter()
        .copied()
        .filter(|name| dir.join(name).exists())
        .collect();
    match found.as_slice() {
        [] => Ok(KUSTOMIZATION_FILE_NAMES[0]),
        [one] => Ok(one),
        many => Err(fail(format!(
            "Found multiple kustomization file: [{}]",
            many.join(" ")
        ))),
    }
}

// ---------------------------------------------------------------------------
// Command-line parsing (spf13/pflag as configured by cobra).

struct FlagDef {
    long: &'static str,
    short: Option<char>,
}

const HELP: FlagDef = FlagDef {
    long: "help",
    short: Some('h'),
};
/// kustomize's persistent root flag (cmd/config/configcobra/cmds.go).
const STACK_TRACE: FlagDef = FlagDef {
    long: "stack-trace",
    short: None,
};
const FORCE: FlagDef = FlagDef {
    long: "force",
    short: Some('f'),
};
const WITHOUT_SELECTOR: FlagDef = FlagDef {
    long: "without-selector",
    short: None,
};
const INCLUDE_TEMPLATES: FlagDef = FlagDef {
    long: "include-templates",
    short: None,
};

#[derive(Default)]
struct Cli {
    positionals: Vec<String>,
    flags: HashMap<&'static str, bool>,
}

impl Cli {
    fn flag(&self, long: &str) -> bool {
        self.flags.get(long).copied().unwrap_or(false)
    }
}

/// Parses the arguments after the command words; every flag is boolean.
fn parse_cli(args: &[String], extra: &[FlagDef]) -> Result<Cli, Failure> {
    let defs: Vec<&FlagDef> = extra.iter().chain([&HELP, &STACK_TRACE]).collect();
    let mut cli = Cli::default();
    for (i, arg) in args.iter().enumerate() {
        if arg.len() < 2 || !arg.starts_with('-') {
            cli.positionals.push(arg.clone());
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if long.is_empty() {
                cli.positionals.extend(args[i + 1..].iter().cloned());
                break;
            }
            if long.starts_with('-') || long.starts_with('=') {
                return Err(fail(format!("bad flag syntax: {arg}")));
            }
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let Some(def) = defs.iter().find(|d| d.long == name) else {
                return Err(fail(format!("unknown flag: --{name}")));
            };
            set_bool_flag(&mut cli, def, value.unwrap_or("true"))?;
        } else {
            let mut shorthands = &arg[1..];
            while let Some(c) = shorthands.chars().next() {
                let Some(def) = defs.iter().find(|d| d.short == Some(c)) else {
                    return Err(fail(format!(
                        "unknown shorthand flag: {} in -{shorthands}",
                        go_quote_rune(c)
                    )));
                };
                let after = &shorthands[c.len_utf8()..];
                if after.len() > 1 && after.starts_with('=') {
                    set_bool_flag(&mut cli, def, &after[1..])?;
                    shorthands = "";
                } else {
                    set_bool_flag(&mut cli, def, "true")?;
                    shorthands = after;
                }
            }
        }
    }
    Ok(cli)
}

fn set_bool_flag(cli: &mut Cli, def: &FlagDef, value: &str) -> Result<(), Failure> {
    let parsed = match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        _ => {
            let name = match def.short {
                Some(short) => format!("-{short}, --{}", def.long),
                None => format!("--{}", def.long),
            };
            return Err(fail(format!(
                "invalid argument {} for {} flag: strconv.ParseBool: parsing {}: invalid syntax",
                go_quote(value),
                go_quote(&name),
                go_quote(value)
            )));
        }
    };
    cli.flags.insert(def.long, parsed);
    Ok(())
}

/// Go's `%q` of a rune.
fn go_quote_rune(c: char) -> String {
    match c {
        '\'' | '\\' => format!("'\\{c}'"),
        _ if is_go_print(c) => format!("'{c}'"),
        _ => {
            let quoted = go_quote(&c.to_string());
            format!("'{}'", &quoted[1..quoted.len() - 1])
        }
    }
}

// ---------------------------------------------------------------------------
// Reading and writing the kustomization (commands/internal/kustfile and
// api/types/kustomization.go).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    /// `string`.
    Str,
    /// A pointer to a struct: written even when empty, unless null.
    Ptr,
    /// `map[string]string`.
    MapStr,
    /// A slice whose elements are not inspected.
    List,
    /// `[]string`.
    ListStr,
    /// `[]types.Image`.
    Images,
    /// `[]types.Replica`.
    Replicas,
    /// `[]types.Label`.
    Labels,
}

struct TopField {
    name: &'static str,
    kind: FieldKind,
    go_type: &'static str,
}

const fn top(name: &'static str, kind: FieldKind, go_type: &'static str) -> TopField {
    TopField {
        name,
        kind,
        go_type,
    }
}

/// The fields of `types.Kustomization` (JSON names), with their Go types.
const TOP_FIELDS: &[TopField] = &[
    top("apiVersion", FieldKind::Str, "string"),
    top("kind", FieldKind::Str, "string"),
    top("metadata", FieldKind::Ptr, "types.ObjectMeta"),
    top("openapi", FieldKind::MapStr, "map[string]string"),
    top("namePrefix", FieldKind::Str, "string"),
    top("nameSuffix", FieldKind::Str, "string"),
    top("namespace", FieldKind::Str, "string"),
    top("commonLabels", FieldKind::MapStr, "map[string]string"),
    top("labels", FieldKind::Labels, "[]types.Label"),
    top("commonAnnotations", FieldKind::MapStr, "map[string]string"),
    top(
        "patchesStrategicMerge",
        FieldKind::List,
        "[]types.PatchStrategicMerge",
    ),
    top("patchesJson6902", FieldKind::List, "[]types.Patch"),
    top("patches", FieldKind::List, "[]types.Patch"),
    top("images", FieldKind::Images, "[]types.Image"),
    top("imageTags", FieldKind::Images, "[]types.Image"),
    top("replacements", FieldKind::List, "[]types.ReplacementField"),
    top("replicas", FieldKind::Replicas, "[]types.Replica"),
    top("vars", FieldKind::List, "[]types.Var"),
    top("sortOptions", FieldKind::Ptr, "types.SortOptions"),
    top("resources", FieldKind::ListStr, "[]string"),
    top("components", FieldKind::ListStr, "[]string"),
    top("crds", FieldKind::ListStr, "[]string"),
    top("bases", FieldKind::ListStr, "[]string"),
    top(
        "configMapGenerator",
        FieldKind::List,
        "[]types.ConfigMapArgs",
    ),
    top("secretGenerator", FieldKind::List, "[]types.SecretArgs"),
    top("helmGlobals", FieldKind::Ptr, "types.HelmGlobals"),
    top("helmCharts", FieldKind::List, "[]types.HelmChart"),
    top(
        "helmChartInflationGenerator",
        FieldKind::List,
        "[]types.HelmChartArgs",
    ),
    top("generatorOptions", FieldKind::Ptr, "types.GeneratorOptions"),
    top("configurations", FieldKind::ListStr, "[]string"),
    top("generators", FieldKind::ListStr, "[]string"),
    top("transformers", FieldKind::ListStr, "[]string"),
    top("validators", FieldKind::ListStr, "[]string"),
    top("buildMetadata", FieldKind::ListStr, "[]string"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubKind {
    Str,
    Int64,
    Bool,
    MapStr,
    List(&'static str),
}

const IMAGE_FIELDS: &[(&str, SubKind)] = &[
    ("name", SubKind::Str),
    ("newName", SubKind::Str),
    ("tagSuffix", SubKind::Str),
    ("newTag", SubKind::Str),
    ("digest", SubKind::Str),
];

const REPLICA_FIELDS: &[(&str, SubKind)] = &[("name", SubKind::Str), ("count", SubKind::Int64)];

/// `types.Label` as of v5.8.1 (`includeVolumeClaimTemplates` came later).
const LABEL_FIELDS: &[(&str, SubKind)] = &[
    ("pairs", SubKind::MapStr),
    ("includeSelectors", SubKind::Bool),
    ("includeTemplates", SubKind::Bool),
    ("fields", SubKind::List("[]types.FieldSpec")),
];

/// Case folding as Go's encoding/json matches field names.
fn fold_eq(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// The field a JSON key decodes into: an exact match, else a case-insensitive one.
fn find_field<'a, T>(fields: &'a [T], key: &str, name: impl Fn(&T) -> &str) -> Option<&'a T> {
    fields
        .iter()
        .find(|f| name(f) == key)
        .or_else(|| fields.iter().find(|f| fold_eq(name(f), key)))
}

/// Keys in decoding order: case-insensitive matches first, so that a key
/// spelled exactly like the field wins.
fn decoding_order(
    object: &Map<String, Value>,
    exact: impl Fn(&str) -> bool,
) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = object.iter().collect();
    entries.sort_by_key(|(key, _)| exact(key));
    entries
}

/// Go's name for the JSON type of a value in an `UnmarshalTypeError`.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(
    what: impl std::fmt::Display,
    go_struct: &str,
    field: &str,
    go_type: &str,
) -> Failure {
    invalid(format!(
        "json: cannot unmarshal {what} into Go struct field {go_struct}.{field} of type {go_type}"
    ))
}

fn unknown_field(key: &str) -> Failure {
    invalid(format!("json: unknown field {}", go_quote(key)))
}

/// Decodes a `map[string]string`: null values become "".
fn decode_map_str(
    value: &Value,
    go_struct: &str,
    field: &str,
) -> Result<Map<String, Value>, Failure> {
    let Value::Object(object) = value else {
        return Err(type_error(
            json_kind(value),
            go_struct,
            field,
            "map[string]string",
        ));
    };
    object
        .iter()
        .map(|(k, v)| match v {
            Value::String(_) => Ok((k.clone(), v.clone())),
            Value::Null => Ok((k.clone(), Value::String(String::new()))),
            other => Err(type_error(json_kind(other), go_struct, field, "string")),
        })
        .collect()
}

/// Decodes one element of a slice of structs into a map with canonical keys;
/// null members are dropped (Go zero values).
fn decode_struct(
    value: &Value,
    go_struct: &str,
    list_field: &str,
    fields: &[(&'static str, SubKind)],
) -> Result<Map<String, Value>, Failure> {
    let object = match value {
        Value::Null => return Ok(Map::new()),
        Value::Object(object) => object,
        other => {
            return Err(type_error(
                json_kind(other),
                "Kustomization",
                list_field,
                &format!("types.{go_struct}"),
            ))
        }
    };
    let mut out = Map::new();
    for (key, member) in decoding_order(object, |k| fields.iter().any(|(n, _)| *n == k)) {
        let Some(&(name, kind)) = find_field(fields, key, |(n, _)| n) else {
            return Err(unknown_field(key));
        };
        let path = format!("{list_field}.{name}");
        if member.is_null() {
            out.remove(name);
            continue;
        }
        let decoded = match kind {
            SubKind::Str => match member {
                Value::String(_) => member.clone(),
                other => return Err(type_error(json_kind(other), go_struct, &path, "string")),
            },
            SubKind::Bool => match member {
                Value::Bool(_) => member.clone(),
                other => return Err(type_error(json_kind(other), go_struct, &path, "bool")),
            },
            SubKind::Int64 => match member {
                Value::Number(n) if n.is_i64() => member.clone(),
                Value::Number(n) => {
                    return Err(type_error(format!("number {n}"), go_struct, &path, "int64"))
                }
                other => return Err(type_error(json_kind(other), go_struct, &path, "int64")),
            },
            SubKind::MapStr => Value::Object(decode_map_str(member, go_struct, &path)?),
            SubKind::List(go_type) => match member {
                Value::Array(_) => member.clone(),
                other => return Err(type_error(json_kind(other), go_struct, &path, go_type)),
            },
        };
        out.insert(name.to_string(), decoded);
    }
    Ok(out)
}

fn decode_top_field(field: &TopField, value: &Value) -> Result<Value, Failure> {
    let mismatch = |v: &Value, go_type: &str| {
        Err(type_error(
            json_kind(v),
            "Kustomization",
            field.name,
            go_type,
        ))
    };
    let struct_list = |go_struct: &str, fields| -> Result<Value, Failure> {
        match value {
            Value::Array(items) => items
                .iter()
                .map(|item| decode_struct(item, go_struct, field.name, fields).map(Value::Object))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => mismatch(other, field.go_type),
        }
    };
    match field.kind {
        FieldKind::Str => match value {
            Value::String(_) => Ok(value.clone()),
            other => mismatch(other, field.go_type),
        },
        FieldKind::Ptr => match value {
            Value::Object(_) => Ok(value.clone()),
            other => mismatch(other, field.go_type),
        },
        FieldKind::MapStr => decode_map_str(value, "Kustomization", field.name).map(Value::Object),
        FieldKind::List => match value {
            Value::Array(_) => Ok(value.clone()),
            other => mismatch(other, field.go_type),
        },
        FieldKind::ListStr => match value {
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(_) => Ok(item.clone()),
                    Value::Null => Ok(Value::String(String::new())),
                    other => mismatch(other, "string"),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => mismatch(other, field.go_type),
        },
        FieldKind::Images => struct_list("Image", IMAGE_FIELDS),
        FieldKind::Replicas => struct_list("Replica", REPLICA_FIELDS),
        FieldKind::Labels => struct_list("Label", LABEL_FIELDS),
    }
}

/// `kustomizationFile.Read`: strict decoding into `types.Kustomization`
/// (as a map with canonical keys, null fields dropped) and `FixKustomization`.
fn read_kustomization(doc: &Value) -> Result<Map<String, Value>, Failure> {
    let mut out = Map::new();
    match doc {
        // An empty file decodes to an empty Kustomization.
        Value::Null => {}
        Value::Object(object) => {
            let exact = |k: &str| TOP_FIELDS.iter().any(|f| f.name == k);
            for (key, value) in decoding_order(object, exact) {
                let Some(field) = find_field(TOP_FIELDS, key, |f| f.name) else {
                    return Err(unknown_field(key));
                };
                if value.is_null() {
                    continue;
                }
                let decoded = decode_top_field(field, value)?;
                match (out.get_mut(field.name), decoded) {
                    // Go decodes into the existing map, merging.
                    (Some(Value::Object(existing)), Value::Object(more))
                        if field.kind == FieldKind::MapStr =>
                    {
                        existing.extend(more);
                    }
                    (_, decoded) => {
                        out.insert(field.name.to_string(), decoded);
                    }
                }
            }
        }
        other => {
            return Err(invalid(format!(
                "json: cannot unmarshal {} into Go value of type types.Kustomization",
                json_kind(other)
            )))
        }
    }
    fix_kustomization(&mut out);
    Ok(out)
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `Kustomization.FixKustomization`, except the parts `kustomize build`
/// redoes identically (generator `env`, `helmChartInflationGenerator`).
fn fix_kustomization(k: &mut Map<String, Value>) {
    if str_field(k, "kind").is_empty() {
        k.insert("kind".into(), "Kustomization".into());
    }
    if str_field(k, "apiVersion").is_empty() {
        let version = if str_field(k, "kind") == "Component" {
            "kustomize.config.k8s.io/v1alpha1"
        } else {
            "kustomize.config.k8s.io/v1beta1"
        };
        k.insert("apiVersion".into(), version.into());
    }
    // 'bases' was deprecated in favour of 'resources'.
    if let Some(Value::Array(bases)) = k.remove("bases") {
        list_field(k, "resources").extend(bases);
    }
    // 'imageTags' was deprecated in favour of 'images'.
    if let Some(Value::Array(tags)) = k.remove("imageTags") {
        list_field(k, "images").extend(tags);
    }
}

/// `kustomizationFile.Write`: only non-empty fields are written (pointer
/// fields whenever they are set).
fn write_kustomization(mut k: Map<String, Value>) -> Value {
    k.retain(|key, value| {
        let pointer = TOP_FIELDS
            .iter()
            .any(|f| f.name == key && f.kind == FieldKind::Ptr);
        match value {
            Value::Null => false,
            _ if pointer => true,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Bool(_) | Value::Number(_) => true,
        }
    });
    Value::Object(k)
}

/// The list at `key` (created when absent). After decoding, list fields
/// always hold arrays.
fn list_field<'a>(k: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = k
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(list) => list,
        _ => unreachable!(),
    }
}

/// The map at `key` (created when absent).
fn map_field<'a>(k: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = k
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// edit set image (commands/edit/set/setimage.go).

const IMAGE_INVALID_ARGS: &str = "invalid format of image, use one of the following options:
- <image>=<newimage>:<newtag>
- <image>=<newimage>@<digest>
- <image>=<newimage>:<newtag>@<digest>
- <image>=<newimage>
- <image>:<newtag>
- <image>:<newtag>@<digest>
- <image>@<digest>";

/// `*` keeps the current value of newName, newTag or digest.
const PRESERVE: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Image {
    name: String,
    new_name: String,
    tag_suffix: String,
    new_tag: String,
    digest: String,
}

impl Image {
    fn from_json(value: &Value) -> Image {
        let empty = Map::new();
        let m = value.as_object().unwrap_or(&empty);
        Image {
            name: str_field(m, "name").to_string(),
            new_name: str_field(m, "newName").to_string(),
            tag_suffix: str_field(m, "tagSuffix").to_string(),
            new_tag: str_field(m, "newTag").to_string(),
            digest: str_field(m, "digest").to_string(),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (key, value) in [
            ("name", &self.name),
            ("newName", &self.new_name),
            ("tagSuffix", &self.tag_suffix),
            ("newTag", &self.new_tag),
            ("digest", &self.digest),
        ] {
            if !value.is_empty() {
                m.insert(key.to_string(), Value::String(value.clone()));
            }
        }
        Value::Object(m)
    }

    // setimage.go's replaceNewName/replaceNewTag/replaceDigest build a new
    // Image from name, newName, newTag and digest: tagSuffix is lost.
    fn with_new_name(&self, new_name: &str) -> Image {
        Image {
            name: self.name.clone(),
            new_name: new_name.to_string(),
            tag_suffix: String::new(),
            new_tag: self.new_tag.clone(),
            digest: self.digest.clone(),
        }
    }

    fn with_new_tag(&self, new_tag: &str) -> Image {
        Image {
            new_tag: new_tag.to_string(),
            ..self.with_new_name(&self.new_name)
        }
    }

    fn with_digest(&self, digest: &str) -> Image {
        Image {
            digest: digest.to_string(),
            ..self.with_new_name(&self.new_name)
        }
    }
}

/// api/internal/image/image.go `Split`: name, tag and digest of an image
/// reference; a `:` before the first `/` is a registry port.
fn split_image_name(image: &str) -> (&str, &str, &str) {
    let (search, offset) = match image.find('/') {
        Some(slash) if slash > 0 => (&image[slash..], slash),
        _ => (image, 0),
    };
    let at = search.find('@');
    let colon = search.find(':');
    match (colon, at) {
        (None, None) => (image, "", ""),
        // Digest only: an `@` before any `:`.
        (None, Some(at)) => {
            let at = at + offset;
            (&image[..at], "", &image[at + 1..])
        }
        (Some(colon), Some(at)) if at < colon => {
            let at = at + offset;
            (&image[..at], "", &image[at + 1..])
        }
        (Some(colon), Some(at)) => {
            let (colon, at) = (colon + offset, at + offset);
            (&image[..colon], &image[colon + 1..at], &image[at + 1..])
        }
        (Some(colon), None) => {
            let colon = colon + offset;
            (&image[..colon], &image[colon + 1..], "")
        }
    }
}

/// setimage.go `parse`: `[<image>=]<newimage>[:<tag>][@<digest>]`.
fn parse_image_arg(arg: &str) -> Result<Image, Failure> {
    let (key, value) = arg.split_once('=').unwrap_or(("", arg));
    let (name, tag, digest) = split_image_name(value);
    if name == arg {
        return Err(fail(IMAGE_INVALID_ARGS));
    }
    let (name, new_name) = if key.is_empty() {
        (name, "")
    } else {
        (key, name)
    };
    Ok(Image {
        name: name.to_string(),
        new_name: new_name.to_string(),
        tag_suffix: String::new(),
        new_tag: tag.to_string(),
        digest: digest.to_string(),
    })
}

/// setimage.go `RunSetImage`: an argument replaces the whole entry of the
/// same name (except fields given as `*`), other entries are kept, and the
/// list is rewritten sorted by name with one entry per name.
fn set_images(k: &mut Map<String, Value>, args: Vec<Image>) {
    let mut by_name: HashMap<String, Image> = HashMap::new();
    for image in args {
        by_name.insert(image.name.clone(), image);
    }
    let existing: Vec<Image> = k
        .get("images")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(Image::from_json).collect())
        .unwrap_or_default();
    for current in existing {
        if let Some(mut arg) = by_name.get(&current.name).cloned() {
            if arg.new_name == PRESERVE {
                arg = arg.with_new_name(&current.new_name);
            }
            if arg.new_tag == PRESERVE {
                arg = arg.with_new_tag(&current.new_tag);
            }
            if arg.digest == PRESERVE {
                arg = arg.with_digest(&current.digest);
            }
            by_name.insert(current.name.clone(), arg);
            continue;
        }
        by_name.insert(current.name.clone(), current);
    }
    let mut images: Vec<Image> = by_name
        .into_values()
        .map(|mut image| {
            if image.new_name == PRESERVE {
                image = image.with_new_name("");
            }
            if image.new_tag == PRESERVE {
                image = image.with_new_tag("");
            }
            if image.digest == PRESERVE {
                image = image.with_digest("");
            }
            image
        })
        .collect();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    k.insert(
        "images".into(),
        Value::Array(images.iter().map(Image::to_json).collect()),
    );
}

// ---------------------------------------------------------------------------
// edit set replicas (commands/edit/set/setreplicas.go).

const REPLICAS_INVALID_ARGS: &str =
    "invalid format of replica, use the following format: <name>=<count>";

/// `<name>=<count>`: exactly one `=`, a base-10 int64 count.
fn parse_replica_arg(arg: &str) -> Result<(String, i64), Failure> {
    let parts: Vec<&str> = arg.split('=').collect();
    match parts.as_slice() {
        // Rust's i64 parser accepts what strconv.ParseInt(s, 10, 64) does.
        [name, count] => count
            .parse::<i64>()
            .map(|count| (name.to_string(), count))
            .map_err(|_| fail(REPLICAS_INVALID_ARGS)),
        _ => Err(fail(REPLICAS_INVALID_ARGS)),
    }
}

/// setreplicas.go `RunSetReplicas`: arguments replace entries of the same
/// name, the first existing entry of a name wins over later ones, and the
/// list is rewritten sorted by name.
fn set_replicas(k: &mut Map<String, Value>, args: Vec<(String, i64)>) {
    let mut by_name: HashMap<String, i64> = HashMap::new();
    for (name, count) in args {
        by_name.insert(name, count);
    }
    if let Some(existing) = k.get("replicas").and_then(Value::as_array) {
        for entry in existing {
            let empty = Map::new();
            let m = entry.as_object().unwrap_or(&empty);
            let name = str_field(m, "name");
            if by_name.contains_key(name) {
                continue;
            }
            let count = m.get("count").and_then(Value::as_i64).unwrap_or(0);
            by_name.insert(name.to_string(), count);
        }
    }
    let mut replicas: Vec<(String, i64)> = by_name.into_iter().collect();
    replicas.sort_by(|a, b| a.0.cmp(&b.0));
    let list = replicas
        .into_iter()
        .map(|(name, count)| {
            let mut m = Map::new();
            if !name.is_empty() {
                m.insert("name".into(), Value::String(name));
            }
            m.insert("count".into(), Value::from(count));
            Value::Object(m)
        })
        .collect();
    k.insert("replicas".into(), Value::Array(list));
}

// ---------------------------------------------------------------------------
// edit add label / annotation (commands/edit/add/addmetadata.go).

struct MetadataOptions {
    kind: &'static str,
    force: bool,
    without_selector: bool,
    include_templates: bool,
}

impl MetadataOptions {
    /// `validateAndParse`, with internal/util `ConvertSliceToMap`: each arg
    /// is split at its first `:`, surrounding double quotes are trimmed from
    /// the value, a later duplicate key replaces the value. The result keeps
    /// first-occurrence order (kustomize iterates a Go map).
    fn validate_and_parse(&self, args: &[String]) -> Result<Vec<(String, String)>, Failure> {
        if args.is_empty() {
            return Err(fail(format!("must specify {}", self.kind)));
        }
        if !self.without_selector && self.include_templates {
            return Err(fail(
                "--without-selector flag must be specified for --include-templates to work",
            ));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for arg in args {
            let (key, value) = match arg.find(':') {
                Some(0) => {
                    return Err(fail(format!(
                        "invalid {}: '{arg}' (need k:v pair where v may be quoted)",
                        self.kind
                    )))
                }
                None => (arg.as_str(), ""),
                Some(colon) => (&arg[..colon], trim_quotes(&arg[colon + 1..])),
            };
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some(pair) => pair.1 = value.to_string(),
                None => pairs.push((key.to_string(), value.to_string())),
            }
        }
        // The label and annotation validators kustomize uses accept anything.
        Ok(pairs)
    }

    /// `writeToMap`: without --force an existing key is an error.
    fn write_to_map(
        &self,
        map: &mut Map<String, Value>,
        pairs: &[(String, String)],
    ) -> Result<(), Failure> {
        for (key, value) in pairs {
            if map.contains_key(key) && !self.force {
                return Err(fail(format!(
                    "{} {key} already in kustomization file. Use --force to override.",
                    self.kind
                )));
            }
            map.insert(key.clone(), Value::String(value.clone()));
        }
        Ok(())
    }

    /// `addLabels`: `commonLabels`, or with --without-selector the first
    /// `labels` entry with includeSelectors false and the same
    /// includeTemplates (a new entry when there is none).
    fn add_labels(
        &self,
        k: &mut Map<String, Value>,
        pairs: &[(String, String)],
    ) -> Result<(), Failure> {
        if !self.without_selector {
            return self.write_to_map(map_field(k, "commonLabels"), pairs);
        }
        let labels = list_field(k, "labels");
        let flag =
            |label: &Value, key: &str| label.get(key).and_then(Value::as_bool).unwrap_or(false);
        let matching = labels.iter().position(|label| {
            !flag(label, "includeSelectors")
                && flag(label, "includeTemplates") == self.include_templates
        });
        match matching {
            Some(index) => match labels[index].get_mut("pairs") {
                Some(Value::Object(existing)) => self.write_to_map(existing, pairs),
                // The entry's Pairs map is nil: Go panics on the assignment.
                _ => Err(panic_failure("assignment to entry in nil map")),
            },
            None => {
                let mut new_pairs = Map::new();
                self.write_to_map(&mut new_pairs, pairs)?;
                let mut label = Map::new();
                label.insert("pairs".into(), Value::Object(new_pairs));
                if self.include_templates {
                    label.insert("includeTemplates".into(), Value::Bool(true));
                }
                labels.push(Value::Object(label));
                Ok(())
            }
        }
    }
}

fn trim_quotes(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// edit add component (commands/edit/add/addcomponent.go and
// internal/util.GlobPatternsWithLoader).

/// Expands each pattern relative to `dir` (the command's working directory).
/// A pattern with no match must be loadable as a kustomization root: a
/// remote URL, or a directory.
fn glob_patterns_with_loader(dir: &Path, patterns: &[String]) -> Result<Vec<String>, Failure> {
    let mut result = Vec::new();
    for pattern in patterns {
        let files = go_glob(dir, pattern)
            .map_err(|BadPattern| fail("error checking the filesystem: syntax error in pattern"))?;
        // kyaml fsOnDisk.Glob drops hidden files unless the pattern names one.
        let files: Vec<String> = if is_hidden_file_path(pattern) {
            files
        } else {
            files
                .into_iter()
                .filter(|f| !is_hidden_file_path(f))
                .collect()
        };
        if !files.is_empty() {
            result.extend(files);
            continue;
        }
        check_loader_root(dir, pattern)
            .map_err(|err| fail(format!("{pattern} has no match: {err}")))?;
        result.push(pattern.clone());
    }
    Ok(result)
}

/// Whether kustomize's git loader would take this as a repository URL.
/// Approximation of api/internal/git `NewRepoSpecFromURL`.
fn looks_remote(path: &str) -> bool {
    path.starts_with("git::")
        || path.contains("://")
        || path.starts_with("git@")
        || path.starts_with("github.com/")
        || path.starts_with("github.com:")
}

/// api/internal/loader `FileLoader.New` for a path with no glob match.
fn check_loader_root(dir: &Path, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("new root cannot be empty".into());
    }
    if looks_remote(path) {
        // kustomize clones the repository to check it; assume it succeeds.
        return Ok(());
    }
    if path.starts_with('/') {
        return Err(format!("new root '{path}' cannot be absolute"));
    }
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let root = root.to_string_lossy().into_owned();
    let joined = go_clean(&format!("{root}/{path}"));
    let not_dir = "must build at directory";
    match std::fs::metadata(&joined) {
        Ok(meta) if meta.is_dir() => {
            let candidate = std::fs::canonicalize(&joined)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or(joined);
            // errIfArgEqualOrHigher
            if has_path_prefix(&root, &candidate) {
                return Err(format!(
                    "cycle detected: candidate root '{candidate}' contains visited root '{root}'"
                ));
            }
            Ok(())
        }
        Ok(_) => Err(format!("{not_dir}: '{joined}': file is not directory")),
        Err(_) => Err(format!(
            "{not_dir}: not a valid directory: evalsymlink failure on '{joined}' : {}",
            eval_symlinks_error(&joined)
        )),
    }
}

/// kyaml ConfirmedDir.HasPrefix.
fn has_path_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// The error `filepath.EvalSymlinks` reports for a path that does not
/// resolve: the first component that cannot be lstat'ed.
fn eval_symlinks_error(path: &str) -> String {
    let mut current = PathBuf::from("/");
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, component) in components.iter().enumerate() {
        let candidate = current.join(component);
        match std::fs::symlink_metadata(&candidate) {
            Err(_) => {
                return format!(
                    "lstat {}: no such file or directory",
                    candidate.to_string_lossy()
                )
            }
            Ok(meta) if meta.file_type().is_symlink() => match std::fs::canonicalize(&candidate) {
                Ok(resolved) => current = resolved,
                Err(_) => {
                    return format!(
                        "lstat {}: no such file or directory",
                        candidate.to_string_lossy()
                    )
                }
            },
            Ok(meta) if !meta.is_dir() && i + 1 < components.len() => {
                return "not a directory".into();
            }
            Ok(_) => current = candidate,
        }
    }
    "no such file or directory".into()
}

/// kyaml `IsHiddenFilePath`: the base name starts with a dot.
fn is_hidden_file_path(path: &str) -> bool {
    go_base(path).starts_with('.')
}

/// Go's `filepath.Base`.
fn go_base(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    match trimmed.rfind('/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

/// Go's `filepath.Clean` (Unix).
fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `filepath.ErrBadPattern`.
#[derive(Debug, PartialEq, Eq)]
struct BadPattern;

fn has_meta(path: &str) -> bool {
    path.contains(['*', '?', '[', '\\'])
}

/// Go's `filepath.Glob`, with relative patterns resolved against `base`.
fn go_glob(base: &Path, pattern: &str) -> Result<Vec<String>, BadPattern> {
    go_match(pattern, "")?;
    if !has_meta(pattern) {
        let exists = !pattern.is_empty() && std::fs::symlink_metadata(base.join(pattern)).is_ok();
        return Ok(if exists {
            vec![pattern.to_string()]
        } else {
            Vec::new()
        });
    }
    let split = pattern.rfind('/').map_or(0, |i| i + 1);
    let (dir, file) = pattern.split_at(split);
    let dir = match dir {
        "" => ".",
        "/" => "/",
        _ => &dir[..dir.len() - 1],
    };
    if !has_meta(dir) {
        return glob_dir(base, dir, file, Vec::new());
    }
    if dir == pattern {
        return Err(BadPattern);
    }
    let mut matches = Vec::new();
    for d in go_glob(base, dir)? {
        matches = glob_dir(base, &d, file, matches)?;
    }
    Ok(matches)
}

fn glob_dir(
    base: &Path,
    dir: &str,
    pattern: &str,
    mut matches: Vec<String>,
) -> Result<Vec<String>, BadPattern> {
    let Ok(entries) = std::fs::read_dir(base.join(dir)) else {
        return Ok(matches);
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if go_match(pattern, &name)? {
            matches.push(go_clean(&format!("{dir}/{name}")));
        }
    }
    Ok(matches)
}

/// Go's `filepath.Match` (Unix): `*`, `?`, `[...]` classes and `\` escapes;
/// `*` and `?` never match `/`.
fn go_match(mut pattern: &str, mut name: &str) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains('/'));
        }
        let first = match_chunk(chunk, name);
        if let Ok(Some(t)) = first {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        first?;
        if star {
            for (i, c) in name.char_indices() {
                if c == '/' {
                    break;
                }
                if let Some(t) = match_chunk(chunk, &name[i + c.len_utf8()..])? {
                    if pattern.is_empty() && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
            }
        }
        // Before failing, check the rest of the pattern is well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, "")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off leading stars and the chunk up to the next unbracketed star.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let trimmed = pattern.trim_start_matches('*');
    let star = trimmed.len() != pattern.len();
    let bytes = trimmed.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &trimmed[..i], &trimmed[i..])
}

/// Matches `chunk` at the start of `s`, returning the rest of `s`.
fn match_chunk<'a>(mut chunk: &str, mut s: &'a str) -> Result<Option<&'a str>, BadPattern> {
    let mut failed = false;
    while let Some(c) = chunk.chars().next() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            '[' => {
                let mut r = '\0';
                if !failed {
                    r = s.chars().next().unwrap_or('\0');
                    s = &s[r.len_utf8()..];
                }
                chunk = &chunk[1..];
                let negated = chunk.starts_with('^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if ranges > 0 && chunk.starts_with(']') {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(rest) = chunk.strip_prefix('-') {
                        let (h, rest) = get_esc(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    let n = s.chars().next().unwrap_or('\0');
                    if n == '/' {
                        failed = true;
                    }
                    s = &s[n.len_utf8()..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == '\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                let literal = chunk.chars().next().unwrap_or('\0');
                if !failed {
                    let n = s.chars().next().unwrap_or('\0');
                    if n != literal {
                        failed = true;
                    }
                    s = &s[n.len_utf8()..];
                }
                chunk = &chunk[literal.len_utf8()..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// A possibly escaped character of a character class.
fn get_esc(chunk: &str) -> Result<(char, &str), BadPattern> {
    if chunk.is_empty() || chunk.starts_with('-') || chunk.starts_with(']') {
        return Err(BadPattern);
    }
    let chunk = match chunk.strip_prefix('\\') {
        Some("") => return Err(BadPattern),
        Some(rest) => rest,
        None => chunk,
    };
    let c = chunk.chars().next().ok_or(BadPattern)?;
    let rest = &chunk[c.len_utf8()..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((c, rest))
}

// ---------------------------------------------------------------------------
// Patches (argo-cd util/kustomize/kustomize.go; not a kustomize command).

/// Go's `%T` of a value decoded from JSON into `any`.
fn go_any_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn append_patches(doc: &mut Value, patches: &[Value]) -> Result<(), String> {
    let Value::Object(map) = doc else {
        // Argo CD prints the %T of the failed type assertion's zero value.
        return Err(
            "expected kustomization.yaml to be type map[string]any, but got map[string]interface {}"
                .into(),
        );
    };
    match map.get_mut("patches") {
        Some(Value::Array(list)) => list.extend(patches.iter().cloned()),
        Some(other) => {
            return Err(format!(
                "expected 'patches' field in kustomization.yaml to be []any, but got {}",
                go_any_type(other)
            ))
        }
        None => {
            map.insert("patches".into(), Value::Array(patches.to_vec()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A directory holding a kustomization.yaml, as the caller provides.
    fn kdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kustomization.yaml"), "{}\n").unwrap();
        dir
    }

    fn run(doc: Value, edits: &Edits) -> Result<Value, EditError> {
        let dir = kdir();
        run_in(doc, edits, dir.path())
    }

    fn run_in(mut doc: Value, edits: &Edits, dir: &Path) -> Result<Value, EditError> {
        apply(&mut doc, edits, dir)?;
        Ok(doc)
    }

    fn base(extra: Value) -> Value {
        let mut doc = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
        });
        doc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        doc
    }

    fn images(args: &[&str]) -> Edits {
        Edits {
            images: args.iter().map(|s| s.to_string()).collect(),
            ..Edits::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Edits {
        Edits {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Edits::default()
        }
    }

    fn annotations(pairs: &[(&str, &str)], force: bool) -> Edits {
        Edits {
            annotations: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            force_annotations: force,
            ..Edits::default()
        }
    }

    fn components(paths: &[&str]) -> Edits {
        Edits {
            components: paths.iter().map(|s| s.to_string()).collect(),
            ..Edits::default()
        }
    }

    // --- command lines -----------------------------------------------------

    #[test]
    fn command_lines_match_argo_cd_test() {
        let edits = Edits {
            name_prefix: "test-prefix".into(),
            name_suffix: "test-suffix".into(),
            images: vec!["image=override".into()],
            replicas: vec![("guestbook-ui".into(), 1337)],
            labels: vec![("test".into(), "label".into())],
            force_labels: true,
            label_without_selector: true,
            label_include_templates: true,
            annotations: vec![("test".into(), "annotation-test-app".into())],
            force_annotations: true,
            namespace: "override-namespace".into(),
            patches: vec![],
            components: vec!["component".into()],
        };
        assert_eq!(
            command_lines(&edits),
            vec![
                "kustomize edit set nameprefix -- test-prefix",
                "kustomize edit set namesuffix -- test-suffix",
                "kustomize edit set image image=override",
                "kustomize edit set replicas guestbook-ui=1337",
                "kustomize edit add label --force --without-selector --include-templates test:label",
                "kustomize edit add annotation --force test:annotation-test-app",
                "kustomize edit set namespace -- override-namespace",
                "kustomize edit add component component",
            ]
        );
    }

    #[test]
    fn command_lines_skip_empty_steps_and_report_patches() {
        assert!(command_lines(&Edits::default()).is_empty());
        let edits = Edits {
            namespace: "ns".into(),
            patches: vec![json!({"patch": "x"})],
            ..Edits::default()
        };
        assert_eq!(
            command_lines(&edits),
            vec![
                "kustomize edit set namespace -- ns".to_string(),
                PATCHES_COMMAND_LINE.to_string()
            ]
        );
        let edits = Edits {
            labels: vec![("a".into(), "b".into()), ("c".into(), "d".into())],
            ..Edits::default()
        };
        assert_eq!(
            command_lines(&edits),
            vec!["kustomize edit add label a:b c:d"]
        );
    }

    #[test]
    fn command_lines_quote_like_go() {
        let edits = Edits {
            annotations: vec![
                ("note".into(), "hello world".into()),
                ("q".into(), "say \"hi\"\tnow\\".into()),
            ],
            images: vec!["".into()],
            ..Edits::default()
        };
        assert_eq!(
            command_lines(&edits),
            vec![
                "kustomize edit set image \"\"",
                "kustomize edit add annotation \"note:hello world\" \"q:say \\\"hi\\\"\\tnow\\\\\"",
            ]
        );
        assert_eq!(go_quote("a\u{0}b\u{7f}"), "\"a\\x00b\\x7f\"");
        assert_eq!(go_quote("é\u{a0}\u{200b}x"), "\"é\\u00a0\\u200bx\"");
        assert_eq!(go_quote("\u{e0001}"), "\"\\U000e0001\"");
        assert_eq!(
            go_quote("\u{7}\u{8}\u{c}\n\r\u{b}"),
            "\"\\a\\b\\f\\n\\r\\v\""
        );
    }

    // --- read / fix / write --------------------------------------------------

    #[test]
    fn fix_adds_type_meta_and_moves_deprecated_fields() {
        let out = run(
            json!({
                "resources": ["a.yaml"],
                "bases": ["../base"],
                "images": [{"name": "a", "newTag": "1"}],
                "imageTags": [{"name": "b", "newTag": "2"}],
                "namePrefix": "",
                "commonLabels": {},
                "patches": null,
                "metadata": {},
            }),
            &Edits {
                namespace: "ns".into(),
                ..Edits::default()
            },
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["a.yaml", "../base"],
                "images": [{"name": "a", "newTag": "1"}, {"name": "b", "newTag": "2"}],
                "namespace": "ns",
                "metadata": {},
            })
        );
    }

    #[test]
    fn fix_defaults_component_api_version_and_keeps_explicit_type_meta() {
        let edits = Edits {
            name_prefix: "p-".into(),
            ..Edits::default()
        };
        let out = run(json!({"kind": "Component"}), &edits).unwrap();
        assert_eq!(
            out,
            json!({"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component", "namePrefix": "p-"})
        );
        let out = run(json!({"apiVersion": "custom/v1"}), &edits).unwrap();
        assert_eq!(
            out,
            json!({"apiVersion": "custom/v1", "kind": "Kustomization", "namePrefix": "p-"})
        );
    }

    #[test]
    fn empty_document_is_an_empty_kustomization() {
        let out = run(
            Value::Null,
            &Edits {
                name_suffix: "-s".into(),
                ..Edits::default()
            },
        )
        .unwrap();
        assert_eq!(out, base(json!({"nameSuffix": "-s"})));
    }

    #[test]
    fn non_object_document_is_rejected() {
        let edits = Edits {
            namespace: "ns".into(),
            ..Edits::default()
        };
        let err = run(json!(["a"]), &edits).unwrap_err();
        assert_eq!(err.command, "kustomize edit set namespace -- ns");
        assert_eq!(
            err.message,
            "invalid Kustomization: json: cannot unmarshal array into Go value of type types.Kustomization"
        );
        assert_eq!(err.exit_code, Some(1));
        assert_eq!(
            err.args,
            vec!["kustomize", "edit", "set", "namespace", "--", "ns"]
        );
        assert_eq!(
            err.to_string(),
            "kustomize edit set namespace -- ns: invalid Kustomization: json: cannot unmarshal array into Go value of type types.Kustomization"
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        let edits = Edits {
            namespace: "ns".into(),
            ..Edits::default()
        };
        let err = run(base(json!({"foo": 1})), &edits).unwrap_err();
        assert_eq!(
            err.message,
            "invalid Kustomization: json: unknown field \"foo\""
        );
        let err = run(
            base(json!({"images": [{"name": "a", "newImage": "b"}]})),
            &edits,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "invalid Kustomization: json: unknown field \"newImage\""
        );
        // includeVolumeClaimTemplates does not exist in v5.8.1.
        let err = run(
            base(json!({"labels": [{"pairs": {"a": "b"}, "includeVolumeClaimTemplates": true}]})),
            &edits,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "invalid Kustomization: json: unknown field \"includeVolumeClaimTemplates\""
        );
    }

    #[test]
    fn keys_match_case_insensitively() {
        let out = run(
            json!({"NamePrefix": "old-", "COMMONLABELS": {"a": "b"}, "Images": [{"NAME": "x", "newtag": "1"}]}),
            &Edits {
                name_prefix: "new-".into(),
                ..Edits::default()
            },
        )
        .unwrap();
        assert_eq!(
            out,
            base(json!({
                "namePrefix": "new-",
                "commonLabels": {"a": "b"},
                "images": [{"name": "x", "newTag": "1"}],
            }))
        );
    }

    #[test]
    fn type_mismatches_are_rejected() {
        let edits = Edits {
            name_prefix: "p".into(),
            ..Edits::default()
        };
        let cases = [
            (
                json!({"namePrefix": 5}),
                "json: cannot unmarshal number into Go struct field Kustomization.namePrefix of type string",
            ),
            (
                json!({"commonLabels": {"a": 1}}),
                "json: cannot unmarshal number into Go struct field Kustomization.commonLabels of type string",
            ),
            (
                json!({"commonAnnotations": ["a"]}),
                "json: cannot unmarshal array into Go struct field Kustomization.commonAnnotations of type map[string]string",
            ),
            (
                json!({"resources": "a"}),
                "json: cannot unmarshal string into Go struct field Kustomization.resources of type []string",
            ),
            (
                json!({"components": [1]}),
                "json: cannot unmarshal number into Go struct field Kustomization.components of type string",
            ),
            (
                json!({"metadata": "x"}),
                "json: cannot unmarshal string into Go struct field Kustomization.metadata of type types.ObjectMeta",
            ),
            (
                json!({"images": ["nginx"]}),
                "json: cannot unmarshal string into Go struct field Kustomization.images of type types.Image",
            ),
            (
                json!({"images": [{"name": "a", "newTag": 1}]}),
                "json: cannot unmarshal number into Go struct field Image.images.newTag of type string",
            ),
            (
                json!({"replicas": [{"name": "a", "count": "3"}]}),
                "json: cannot unmarshal string into Go struct field Replica.replicas.count of type int64",
            ),
            (
                json!({"replicas": [{"name": "a", "count": 1.5}]}),
                "json: cannot unmarshal number 1.5 into Go struct field Replica.replicas.count of type int64",
            ),
            (
                json!({"labels": [{"includeSelectors": "yes"}]}),
                "json: cannot unmarshal string into Go struct field Label.labels.includeSelectors of type bool",
            ),
            (
                json!({"labels": [{"pairs": {"a": true}}]}),
                "json: cannot unmarshal bool into Go struct field Label.labels.pairs of type string",
            ),
            (
                json!({"patches": {}}),
                "json: cannot unmarshal object into Go struct field Kustomization.patches of type []types.Patch",
            ),
        ];
        for (doc, message) in cases {
            let err = run(base(doc.clone()), &edits).unwrap_err();
            assert_eq!(
                err.message,
                format!("invalid Kustomization: {message}"),
                "{doc}"
            );
        }
    }

    #[test]
    fn nulls_decode_as_zero_values() {
        let out = run(
            base(json!({
                "commonLabels": {"a": null},
                "resources": [null, "x"],
                "images": [null, {"name": "n", "newTag": null}],
            })),
            &images(&["m:1"]),
        )
        .unwrap();
        assert_eq!(
            out,
            base(json!({
                "commonLabels": {"a": ""},
                "resources": ["", "x"],
                "images": [{}, {"name": "m", "newTag": "1"}, {"name": "n"}],
            }))
        );
    }

    #[test]
    fn untouched_fields_survive() {
        let doc = base(json!({
            "resources": ["deploy.yaml"],
            "patches": [{"path": "p.yaml", "target": {"kind": "Deployment"}}],
            "configMapGenerator": [{"name": "c", "env": "a.env"}],
            "helmCharts": [{"name": "x"}],
            "sortOptions": {"order": "legacy"},
            "replicas": [{"name": "a", "count": 0}],
        }));
        let mut expected = doc.clone();
        let out = run(
            doc,
            &Edits {
                name_prefix: "p-".into(),
                ..Edits::default()
            },
        )
        .unwrap();
        expected["namePrefix"] = json!("p-");
        assert_eq!(out, expected);
    }

    #[test]
    fn multiple_kustomization_files_are_rejected() {
        let dir = kdir();
        std::fs::write(dir.path().join("Kustomization"), "").unwrap();
        let err = run_in(
            base(json!({})),
            &Edits {
                namespace: "ns".into(),
                ..Edits::default()
            },
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "Found multiple kustomization file: [kustomization.yaml Kustomization]"
        );
    }

    // --- nameprefix, namesuffix, namespace -------------------------------------

    #[test]
    fn set_name_prefix_suffix_and_namespace() {
        let out = run(
            base(json!({"namePrefix": "old-", "namespace": "old"})),
            &Edits {
                name_prefix: "-new-".into(),
                name_suffix: "-sfx".into(),
                namespace: "Not_A_Valid/Name".into(),
                ..Edits::default()
            },
        )
        .unwrap();
        assert_eq!(
            out,
            base(
                json!({"namePrefix": "-new-", "nameSuffix": "-sfx", "namespace": "Not_A_Valid/Name"})
            )
        );
    }

    #[test]
    fn no_edits_leave_the_document_alone() {
        let doc = json!({"whatever": true});
        assert_eq!(run(doc.clone(), &Edits::default()).unwrap(), doc);
    }

    // --- set image ----------------------------------------------------------------

    #[test]
    fn image_argument_forms() {
        let cases = [
            ("nginx:1.2", json!({"name": "nginx", "newTag": "1.2"})),
            (
                "nginx=my/nginx:1.2",
                json!({"name": "nginx", "newName": "my/nginx", "newTag": "1.2"}),
            ),
            (
                "nginx=my/nginx@sha256:abc",
                json!({"name": "nginx", "newName": "my/nginx", "digest": "sha256:abc"}),
            ),
            (
                "nginx=my/nginx:1.2@sha256:abc",
                json!({"name": "nginx", "newName": "my/nginx", "newTag": "1.2", "digest": "sha256:abc"}),
            ),
            (
                "nginx=my/nginx",
                json!({"name": "nginx", "newName": "my/nginx"}),
            ),
            (
                "nginx@sha256:abc",
                json!({"name": "nginx", "digest": "sha256:abc"}),
            ),
            (
                "nginx:1.2@sha256:abc",
                json!({"name": "nginx", "newTag": "1.2", "digest": "sha256:abc"}),
            ),
            (
                "localhost:5000/nginx:1.2",
                json!({"name": "localhost:5000/nginx", "newTag": "1.2"}),
            ),
            (
                "nginx=localhost:5000/x/nginx",
                json!({"name": "nginx", "newName": "localhost:5000/x/nginx"}),
            ),
            // Without a slash, a registry port reads as a tag.
            (
                "localhost:5000",
                json!({"name": "localhost", "newTag": "5000"}),
            ),
            ("nginx=", json!({"name": "nginx"})),
            ("=foo", json!({"name": "foo"})),
            // Asterisks with nothing to preserve become empty.
            ("nginx:*", json!({"name": "nginx"})),
            ("nginx=*:*@*", json!({"name": "nginx"})),
        ];
        for (arg, expected) in cases {
            let out = run(base(json!({})), &images(&[arg])).unwrap();
            assert_eq!(out, base(json!({"images": [expected]})), "{arg}");
        }
    }

    #[test]
    fn invalid_image_argument() {
        for arg in ["nginx", ""] {
            let err = run(base(json!({})), &images(&["a:1", arg])).unwrap_err();
            assert_eq!(err.message, IMAGE_INVALID_ARGS, "{arg:?}");
            assert!(err.message.starts_with("invalid format of image"));
        }
    }

    #[test]
    fn image_replaces_existing_entry_and_sorts() {
        let doc = base(json!({"images": [
            {"name": "zeta", "newTag": "z"},
            {"name": "nginx", "newName": "my/nginx", "newTag": "1.0", "tagSuffix": "-x", "digest": "sha256:old"},
            {"name": "alpha", "tagSuffix": "-a"},
        ]}));
        let out = run(doc, &images(&["nginx:2.0", "beta=b:1"])).unwrap();
        assert_eq!(
            out,
            base(json!({"images": [
                {"name": "alpha", "tagSuffix": "-a"},
                {"name": "beta", "newName": "b", "newTag": "1"},
                {"name": "nginx", "newTag": "2.0"},
                {"name": "zeta", "newTag": "z"},
            ]}))
        );
    }

    #[test]
    fn image_asterisk_preserves_existing_values_and_drops_tag_suffix() {
        let doc = base(json!({"images": [
            {"name": "nginx", "newName": "my/nginx", "newTag": "1.0", "tagSuffix": "-x", "digest": "sha256:old"},
        ]}));
        let out = run(doc.clone(), &images(&["nginx=*:2.0"])).unwrap();
        assert_eq!(
            out,
            base(json!({"images": [{"name": "nginx", "newName": "my/nginx", "newTag": "2.0"}]}))
        );
        let out = run(doc.clone(), &images(&["nginx=other:*@*"])).unwrap();
        assert_eq!(
            out,
            base(
                json!({"images": [{"name": "nginx", "newName": "other", "newTag": "1.0", "digest": "sha256:old"}]})
            )
        );
        let out = run(doc, &images(&["nginx@*"])).unwrap();
        assert_eq!(
            out,
            base(json!({"images": [{"name": "nginx", "digest": "sha256:old"}]}))
        );
    }

    #[test]
    fn image_duplicates() {
        // A later argument wins; the first existing entry of a name wins.
        let doc = base(json!({"images": [
            {"name": "a", "newTag": "first"},
            {"name": "a", "newTag": "second"},
        ]}));
        let out = run(doc, &images(&["b:1", "b:2"])).unwrap();
        assert_eq!(
            out,
            base(
                json!({"images": [{"name": "a", "newTag": "first"}, {"name": "b", "newTag": "2"}]})
            )
        );
        // An existing literal '*' is filled in from a later entry of the name.
        let doc = base(json!({"images": [
            {"name": "a", "newTag": "*", "tagSuffix": "-s"},
            {"name": "a", "newTag": "second"},
        ]}));
        let out = run(doc, &images(&["b:1"])).unwrap();
        assert_eq!(
            out,
            base(
                json!({"images": [{"name": "a", "newTag": "second"}, {"name": "b", "newTag": "1"}]})
            )
        );
    }

    #[test]
    fn image_tags_are_merged_before_setting() {
        let doc = base(json!({"imageTags": [{"name": "a", "newTag": "old"}]}));
        let out = run(doc, &images(&["a=b"])).unwrap();
        assert_eq!(
            out,
            base(json!({"images": [{"name": "a", "newName": "b"}]}))
        );
    }

    #[test]
    fn split_image_name_matches_go() {
        assert_eq!(split_image_name("a"), ("a", "", ""));
        assert_eq!(split_image_name("a:b"), ("a", "b", ""));
        assert_eq!(split_image_name("a@d"), ("a", "", "d"));
        assert_eq!(split_image_name("a@sha256:x"), ("a", "", "sha256:x"));
        assert_eq!(split_image_name("a:t@d"), ("a", "t", "d"));
        assert_eq!(split_image_name("h:1/a:t@d"), ("h:1/a", "t", "d"));
        assert_eq!(split_image_name("h:1/a"), ("h:1/a", "", ""));
        assert_eq!(split_image_name("/a:b"), ("/a", "b", ""));
        assert_eq!(split_image_name(""), ("", "", ""));
    }

    // --- set replicas -------------------------------------------------------------

    #[test]
    fn replicas_replace_and_sort() {
        let doc = base(json!({"replicas": [
            {"name": "web", "count": 1},
            {"name": "db", "count": 2},
            {"name": "db", "count": 9},
        ]}));
        let out = run(
            doc,
            &Edits {
                replicas: vec![("web".into(), 5), ("cache".into(), 0), ("cache".into(), -1)],
                ..Edits::default()
            },
        )
        .unwrap();
        assert_eq!(
            out,
            base(json!({"replicas": [
                {"name": "cache", "count": -1},
                {"name": "db", "count": 2},
                {"name": "web", "count": 5},
            ]}))
        );
    }

    #[test]
    fn invalid_replica_argument() {
        let err = run(
            base(json!({})),
            &Edits {
                replicas: vec![("a=b".into(), 1)],
                ..Edits::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.command, "kustomize edit set replicas a=b=1");
        assert_eq!(err.message, REPLICAS_INVALID_ARGS);
        assert!(parse_replica_arg("a=").is_err());
        assert!(parse_replica_arg("a=1x").is_err());
        assert_eq!(parse_replica_arg("=+3").unwrap(), (String::new(), 3));
    }

    // --- add label / annotation -------------------------------------------------------

    #[test]
    fn add_common_labels() {
        let doc = base(json!({"commonLabels": {"app": "x"}}));
        let out = run(
            doc,
            &labels(&[("team", "a:b"), ("q", "\"quoted\""), ("e", "")]),
        )
        .unwrap();
        assert_eq!(
            out,
            base(json!({"commonLabels": {"app": "x", "team": "a:b", "q": "quoted", "e": ""}}))
        );
    }

    #[test]
    fn key_with_colon_splits_at_first_colon() {
        let out = run(base(json!({})), &labels(&[("a:b", "c")])).unwrap();
        assert_eq!(out, base(json!({"commonLabels": {"a": "b:c"}})));
    }

    #[test]
    fn duplicate_arguments_take_the_last_value() {
        let out = run(base(json!({})), &labels(&[("a", "1"), ("a", "2")])).unwrap();
        assert_eq!(out, base(json!({"commonLabels": {"a": "2"}})));
    }

    #[test]
    fn existing_label_needs_force() {
        let doc = base(json!({"commonLabels": {"app": "x"}}));
        let err = run(doc.clone(), &labels(&[("app", "y")])).unwrap_err();
        assert_eq!(err.command, "kustomize edit add label app:y");
        assert_eq!(
            err.message,
            "label app already in kustomization file. Use --force to override."
        );
        let mut edits = labels(&[("app", "y")]);
        edits.force_labels = true;
        assert_eq!(
            run(doc, &edits).unwrap(),
            base(json!({"commonLabels": {"app": "y"}}))
        );
    }

    #[test]
    fn empty_label_key_is_invalid() {
        let err = run(base(json!({})), &labels(&[("", "v")])).unwrap_err();
        assert_eq!(
            err.message,
            "invalid label: ':v' (need k:v pair where v may be quoted)"
        );
        let err = run(base(json!({})), &annotations(&[("", "v")], false)).unwrap_err();
        assert_eq!(
            err.message,
            "invalid annotation: ':v' (need k:v pair where v may be quoted)"
        );
    }

    #[test]
    fn include_templates_requires_without_selector() {
        let mut edits = labels(&[("a", "b")]);
        edits.label_include_templates = true;
        let err = run(base(json!({})), &edits).unwrap_err();
        assert_eq!(
            err.command,
            "kustomize edit add label --include-templates a:b"
        );
        assert_eq!(
            err.message,
            "--without-selector flag must be specified for --include-templates to work"
        );
    }

    #[test]
    fn labels_without_selector_create_an_entry() {
        let mut edits = labels(&[("a", "1"), ("b", "2")]);
        edits.label_without_selector = true;
        let out = run(base(json!({"commonLabels": {"a": "0"}})), &edits).unwrap();
        assert_eq!(
            out,
            base(json!({"commonLabels": {"a": "0"}, "labels": [{"pairs": {"a": "1", "b": "2"}}]}))
        );
        edits.label_include_templates = true;
        let out = run(base(json!({})), &edits).unwrap();
        assert_eq!(
            out,
            base(json!({"labels": [{"pairs": {"a": "1", "b": "2"}, "includeTemplates": true}]}))
        );
    }

    #[test]
    fn labels_without_selector_merge_into_first_matching_entry() {
        let doc = base(json!({"labels": [
            {"pairs": {"s": "1"}, "includeSelectors": true},
            {"pairs": {"t": "1"}, "includeTemplates": true},
            {"pairs": {"p": "1"}, "includeSelectors": false, "fields": [{"path": "x"}]},
            {"pairs": {"q": "1"}},
        ]}));
        let mut edits = labels(&[("s", "2"), ("n", "2")]);
        edits.label_without_selector = true;
        let out = run(doc.clone(), &edits).unwrap();
        assert_eq!(
            out,
            base(json!({"labels": [
                {"pairs": {"s": "1"}, "includeSelectors": true},
                {"pairs": {"t": "1"}, "includeTemplates": true},
                {"pairs": {"p": "1", "s": "2", "n": "2"}, "includeSelectors": false, "fields": [{"path": "x"}]},
                {"pairs": {"q": "1"}},
            ]}))
        );
        edits.label_include_templates = true;
        let out = run(doc, &edits).unwrap();
        assert_eq!(
            out["labels"][1],
            json!({"pairs": {"t": "1", "s": "2", "n": "2"}, "includeTemplates": true})
        );
    }

    #[test]
    fn labels_without_selector_existing_key() {
        let doc = base(json!({"labels": [{"pairs": {"a": "1"}}]}));
        let mut edits = labels(&[("a", "2")]);
        edits.label_without_selector = true;
        let err = run(doc.clone(), &edits).unwrap_err();
        assert_eq!(
            err.message,
            "label a already in kustomization file. Use --force to override."
        );
        edits.force_labels = true;
        assert_eq!(
            run(doc, &edits).unwrap(),
            base(json!({"labels": [{"pairs": {"a": "2"}}]}))
        );
    }

    #[test]
    fn labels_without_selector_nil_pairs_panics() {
        let mut edits = labels(&[("a", "1")]);
        edits.label_without_selector = true;
        for doc in [
            json!({"labels": [{"includeTemplates": false}]}),
            json!({"labels": [null]}),
            json!({"labels": [{"pairs": null}]}),
        ] {
            let err = run(base(doc), &edits).unwrap_err();
            assert_eq!(err.message, "panic: assignment to entry in nil map");
            assert_eq!(err.exit_code, Some(2));
        }
        // An empty (non-nil) map is fine.
        let out = run(base(json!({"labels": [{"pairs": {}}]})), &edits).unwrap();
        assert_eq!(out, base(json!({"labels": [{"pairs": {"a": "1"}}]})));
    }

    #[test]
    fn add_annotations() {
        let doc = base(json!({"commonAnnotations": {"a": "1"}}));
        let out = run(doc.clone(), &annotations(&[("b", "x y")], false)).unwrap();
        assert_eq!(
            out,
            base(json!({"commonAnnotations": {"a": "1", "b": "x y"}}))
        );
        let err = run(doc.clone(), &annotations(&[("a", "2")], false)).unwrap_err();
        assert_eq!(
            err.message,
            "annotation a already in kustomization file. Use --force to override."
        );
        let out = run(doc, &annotations(&[("a", "2")], true)).unwrap();
        assert_eq!(out, base(json!({"commonAnnotations": {"a": "2"}})));
    }

    #[test]
    fn dash_arguments_are_parsed_as_flags() {
        let err = run(base(json!({})), &labels(&[("-x", "y")])).unwrap_err();
        assert_eq!(err.message, "unknown shorthand flag: 'x' in -x:y");
        let err = run(base(json!({})), &labels(&[("-f", "y")])).unwrap_err();
        assert_eq!(err.message, "unknown shorthand flag: ':' in -:y");
        let err = run(base(json!({})), &labels(&[("--foo", "y")])).unwrap_err();
        assert_eq!(err.message, "unknown flag: --foo:y");
        let err = run(base(json!({})), &labels(&[("--force=x", "y")])).unwrap_err();
        assert_eq!(
            err.message,
            "invalid argument \"x:y\" for \"-f, --force\" flag: strconv.ParseBool: parsing \"x:y\": invalid syntax"
        );
        let err = run(base(json!({})), &images(&["---x"])).unwrap_err();
        assert_eq!(err.message, "bad flag syntax: ---x");
        // --help prints help and changes nothing.
        let doc = json!({"anything": 1});
        assert_eq!(run(doc.clone(), &images(&["--help"])).unwrap(), doc);
        // A lone dash is an argument.
        let err = run(base(json!({})), &images(&["-"])).unwrap_err();
        assert_eq!(err.message, IMAGE_INVALID_ARGS);
    }

    // --- patches ------------------------------------------------------------------------

    #[test]
    fn patches_are_appended_or_created() {
        let patch = json!({"patch": "- op: add", "target": {"kind": "Deployment"}});
        let edits = Edits {
            patches: vec![patch.clone()],
            ..Edits::default()
        };
        let out = run(base(json!({"patches": [{"path": "a.yaml"}]})), &edits).unwrap();
        assert_eq!(
            out,
            base(json!({"patches": [{"path": "a.yaml"}, patch.clone()]}))
        );
        // No kustomize edit ran: the document is not normalised.
        let out = run(json!({"resources": []}), &edits).unwrap();
        assert_eq!(out, json!({"resources": [], "patches": [patch]}));
    }

    #[test]
    fn patches_field_must_be_a_list() {
        let edits = Edits {
            patches: vec![json!({"path": "p.yaml"})],
            ..Edits::default()
        };
        for (doc, got) in [
            (json!({"patches": null}), "<nil>"),
            (json!({"patches": "x"}), "string"),
            (json!({"patches": {"a": 1}}), "map[string]interface {}"),
            (json!({"patches": 1}), "float64"),
        ] {
            let err = run(doc, &edits).unwrap_err();
            assert_eq!(
                err.message,
                format!(
                    "expected 'patches' field in kustomization.yaml to be []any, but got {got}"
                )
            );
            assert_eq!(err.command, "");
            assert_eq!(err.exit_code, None);
            assert_eq!(err.to_string(), err.message);
        }
        let err = run(Value::Null, &edits).unwrap_err();
        assert_eq!(
            err.message,
            "expected kustomization.yaml to be type map[string]any, but got map[string]interface {}"
        );
    }

    #[test]
    fn patches_after_an_edit_see_the_normalised_file() {
        let edits = Edits {
            namespace: "ns".into(),
            patches: vec![json!({"path": "p.yaml"})],
            ..Edits::default()
        };
        let out = run(json!({"patches": null}), &edits).unwrap();
        assert_eq!(
            out,
            base(json!({"namespace": "ns", "patches": [{"path": "p.yaml"}]}))
        );
    }

    // --- add component ----------------------------------------------------------------

    fn component_dir() -> tempfile::TempDir {
        let dir = kdir();
        for d in ["comps/b", "comps/a", "comps/.hidden", "other", ".dot"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("file.yaml"), "").unwrap();
        dir
    }

    #[test]
    fn add_components() {
        let dir = component_dir();
        let out = run_in(
            base(json!({"components": ["other"]})),
            &components(&[
                "other",
                "comps/*",
                "comps/a",
                "./other/",
                "kustomization.yaml",
                "file.yaml",
                ".dot",
            ]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            out,
            base(
                json!({"components": ["other", "comps/a", "comps/b", "./other/", "file.yaml", ".dot"]})
            )
        );
    }

    #[test]
    fn add_remote_component_is_accepted() {
        let dir = component_dir();
        let url = "https://github.com/org/repo//components/x?ref=v1";
        let out = run_in(base(json!({})), &components(&[url]), dir.path()).unwrap();
        assert_eq!(out, base(json!({"components": [url]})));
    }

    #[test]
    fn missing_component_is_an_error() {
        let dir = component_dir();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let root = root.to_string_lossy();
        let err = run_in(
            base(json!({})),
            &components(&["other", "missing/x"]),
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(err.command, "kustomize edit add component other missing/x");
        assert_eq!(
            err.message,
            format!(
                "missing/x has no match: must build at directory: not a valid directory: \
                 evalsymlink failure on '{root}/missing/x' : lstat {root}/missing: no such file or directory"
            )
        );
        let err = run_in(base(json!({})), &components(&["/nope"]), dir.path()).unwrap_err();
        assert_eq!(
            err.message,
            "/nope has no match: new root '/nope' cannot be absolute"
        );
        let err = run_in(base(json!({})), &components(&[""]), dir.path()).unwrap_err();
        assert_eq!(err.message, " has no match: new root cannot be empty");
        let err = run_in(base(json!({})), &components(&["comps/["]), dir.path()).unwrap_err();
        assert_eq!(
            err.message,
            "error checking the filesystem: syntax error in pattern"
        );
        // Only hidden matches: they are filtered out, then the pattern fails.
        let out = run_in(base(json!({})), &components(&["comps/.h*"]), dir.path()).unwrap();
        assert_eq!(out, base(json!({"components": ["comps/.hidden"]})));
        let err = run_in(base(json!({})), &components(&["*/.hid*/x*"]), dir.path()).unwrap_err();
        assert!(err
            .message
            .starts_with("*/.hid*/x* has no match: must build at directory"));
    }

    // --- full pipeline ----------------------------------------------------------------

    #[test]
    fn all_edits_in_argo_order() {
        let dir = component_dir();
        let edits = Edits {
            name_prefix: "p-".into(),
            name_suffix: "-s".into(),
            images: vec!["nginx:1".into()],
            replicas: vec![("web".into(), 3)],
            labels: vec![("team".into(), "a".into())],
            force_labels: false,
            label_without_selector: true,
            label_include_templates: true,
            annotations: vec![("note".into(), "n".into())],
            force_annotations: false,
            namespace: "ns".into(),
            patches: vec![json!({"path": "p.yaml"})],
            components: vec!["other".into()],
        };
        let out = run_in(json!({"resources": ["deploy.yaml"]}), &edits, dir.path()).unwrap();
        assert_eq!(
            out,
            base(json!({
                "resources": ["deploy.yaml"],
                "namePrefix": "p-",
                "nameSuffix": "-s",
                "images": [{"name": "nginx", "newTag": "1"}],
                "replicas": [{"name": "web", "count": 3}],
                "labels": [{"pairs": {"team": "a"}, "includeTemplates": true}],
                "commonAnnotations": {"note": "n"},
                "namespace": "ns",
                "patches": [{"path": "p.yaml"}],
                "components": ["other"],
            }))
        );
    }

    #[test]
    fn failing_step_keeps_earlier_steps() {
        let mut doc = base(json!({"commonAnnotations": {"a": "1"}}));
        let edits = Edits {
            name_prefix: "p-".into(),
            annotations: vec![("a".into(), "2".into())],
            namespace: "ns".into(),
            ..Edits::default()
        };
        let dir = kdir();
        let err = apply(&mut doc, &edits, dir.path()).unwrap_err();
        assert_eq!(err.command, "kustomize edit add annotation a:2");
        assert_eq!(
            doc,
            base(json!({"commonAnnotations": {"a": "1"}, "namePrefix": "p-"}))
        );
    }

    // --- Go helpers ----------------------------------------------------------------------

    #[test]
    fn go_match_semantics() {
        let ok = |p: &str, n: &str| go_match(p, n).unwrap();
        assert!(ok("abc", "abc"));
        assert!(ok("*", "abc"));
        assert!(!ok("*", "a/b"));
        assert!(ok("*c", "abc"));
        assert!(ok("a*/b", "abc/b"));
        assert!(!ok("a*b*c*d*e*/f", "axbxcxdxe/xxx/f"));
        assert!(ok("a*b?c*x", "abxbbxdbxebxczzx"));
        assert!(ok("ab[c]", "abc"));
        assert!(ok("ab[b-d]", "abc"));
        assert!(!ok("ab[^c]", "abc"));
        assert!(ok("ab[^e-g]", "abc"));
        assert!(ok("a\\*b", "a*b"));
        assert!(!ok("a\\*b", "ab"));
        assert!(ok("a?b", "a☺b"));
        assert!(ok("a[^a]b", "a☺b"));
        assert!(!ok("a?b", "a/b"));
        assert!(ok("[\\-]", "-"));
        assert!(ok("[x\\-]", "x"));
        assert!(!ok("*x", "xxx/x"));
        assert!(ok("*x", "xxx"));
        assert!(!ok("a*", "ab/c"));
        assert!(ok("a*b*c*d*e*/f", "axbxcxdxexxx/f"));
        assert!(!ok("a*b*c*d*e*/f", "axbxcxdxexxx/fff"));
        assert!(!ok("a*b?c*x", "abxbbxdbxebxczzy"));
        assert!(!ok("a???b", "a☺b"));
        assert!(ok("[a-ζ]*", "α"));
        assert!(!ok("*[a-ζ]", "A"));
        assert!(ok("[\\]a]", "]"));
        assert!(ok("[x\\-]", "-"));
        assert!(!ok("[x\\-]", "z"));
        assert!(ok("[\\-x]", "x"));
        for bad in [
            "[", "[^", "[^bc", "a[", "a\\", "[a-", "[]a]", "[-]", "[x-]", "*x\\", "[\\", "[-x]",
            "[a-b-c]", "a/b[", "\\",
        ] {
            assert_eq!(go_match(bad, "a"), Err(BadPattern), "{bad}");
        }
        // The rest of the pattern is checked even after a mismatch.
        assert_eq!(go_match("a*b[", "x"), Err(BadPattern));
    }

    #[test]
    fn go_glob_paths() {
        let dir = component_dir();
        let glob = |p: &str| go_glob(dir.path(), p).unwrap();
        assert_eq!(
            glob("./comps/*"),
            vec!["comps/.hidden", "comps/a", "comps/b"]
        );
        assert_eq!(glob("*/?"), vec!["comps/a", "comps/b"]);
        assert_eq!(glob("c*/[ab]"), vec!["comps/a", "comps/b"]);
        assert_eq!(glob("./comps//a"), vec!["./comps//a"]);
        assert_eq!(glob("nope/*"), Vec::<String>::new());
        assert_eq!(glob(""), Vec::<String>::new());
        assert_eq!(go_glob(dir.path(), "a/["), Err(BadPattern));
    }

    #[test]
    fn go_path_helpers() {
        assert_eq!(go_clean("a//b/./c/.."), "a/b");
        assert_eq!(go_clean("/../a/"), "/a");
        assert_eq!(go_clean("../../a"), "../../a");
        assert_eq!(go_clean("a/.."), ".");
        assert_eq!(go_clean(""), ".");
        assert_eq!(go_base("a/b/"), "b");
        assert_eq!(go_base("/"), "/");
        assert_eq!(go_base(""), ".");
        assert!(is_hidden_file_path("../.x"));
        assert!(is_hidden_file_path(".."));
        assert!(!is_hidden_file_path(".x/y"));
    }
}
