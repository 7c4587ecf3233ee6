//! Helm charts in git: `helm template` with Argo CD's arguments, value
//! files confined to the repository, and `helm dependency build` results
//! cached by content so a dependency set is built once per process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::env::{command_line, normalize_kube_version, BuildEnv};
use super::manifest::{split_documents, Object};
use super::scratch::{copy_tree, Scratch};
use super::spec::SourceSpec;
use super::{show_paths, Error, Tools};
use crate::exec::Invocation;

/// How the extra values file appears in reported commands.
const EXTRA_VALUES_SHOWN: &str = "<temp file with values from source.helm.values/valuesObject>";
/// Stands for the extra values file until the command line is formatted
/// (Argo CD replaces the path after quoting, so the text is unquoted).
const EXTRA_VALUES_TOKEN: &str = "@extra-values@";

/// One Helm render.
#[derive(Debug, Clone, Copy)]
pub struct HelmRequest<'a> {
    /// Canonical app directory inside `repo_root`.
    pub app_dir: &'a Path,
    /// Canonical snapshot root.
    pub repo_root: &'a Path,
    pub source: &'a SourceSpec,
    pub env: &'a BuildEnv,
    pub app_name: &'a str,
    /// The request's (destination) namespace.
    pub namespace: &'a str,
    /// The request's Kubernetes version and API versions.
    pub kube_version: &'a str,
    pub api_versions: &'a [String],
    /// URL schemes allowed for value files; `None` (no Helm options in the
    /// request) allows none.
    pub values_file_schemes: Option<&'a [String]>,
    /// The trees of the multi-source `ref:` sources value files name
    /// (`$name` → canonical root).
    pub ref_roots: &'a std::collections::HashMap<String, PathBuf>,
}

/// Objects a tool produced, and the command lines Argo CD reports.
#[derive(Debug, Default)]
pub struct Rendered {
    pub objects: Vec<Object>,
    pub commands: Vec<String>,
}

/// `helm template`'s release name: the source's, else the name part of a
/// `namespace_name` app name, else the app name.
fn release_name(source: &SourceSpec, app_name: &str) -> String {
    if let Some(helm) = source.helm.as_ref().filter(|h| !h.release_name.is_empty()) {
        return helm.release_name.clone();
    }
    match app_name.split_once('_') {
        Some((_, name)) if !name.is_empty() => name.to_string(),
        _ => app_name.to_string(),
    }
}

/// Escapes commas in a `--set` value unless it is a `{a,b}` list, leaving
/// already escaped ones alone.
fn clean_set_value(value: &str) -> String {
    if value.starts_with('{') && value.ends_with('}') {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut previous = None;
    for c in value.chars() {
        if c == ',' && previous != Some('\\') {
            out.push_str("\\,");
        } else {
            out.push(c);
        }
        previous = Some(c);
    }
    out
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Lexically cleans an absolute path (`.` and `..` removed).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Resolves symlinks in the longest existing prefix of `path`.
fn resolve_existing(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent != path => resolve_existing(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// A value file reference resolved: a local path or an allowed URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Resolved {
    Local(PathBuf),
    Url(String),
}

/// Resolves one value file reference as Argo CD does: a URL only with an
/// allowed scheme; a relative path against `base` (the app directory),
/// an absolute one against `root` (the repository root, or a ref
/// source's); symlinks resolved; the result must be inside `root` and not
/// `root` itself.
fn resolve_reference_in(
    request: &HelmRequest<'_>,
    reference: &str,
    resolve_links: bool,
    base: &Path,
    root: &Path,
) -> Result<Resolved, Error> {
    if let Some((scheme, _)) = reference.split_once("://").or_else(|| {
        reference
            .split_once(':')
            .filter(|(s, _)| s.len() > 1 && !s.contains('/'))
    }) {
        let valid_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid_scheme {
            let allowed = request
                .values_file_schemes
                .unwrap_or_default()
                .iter()
                .any(|s| s.eq_ignore_ascii_case(scheme));
            if allowed {
                return Ok(Resolved::Url(reference.to_string()));
            }
            return Err(Error::ValueFile {
                message: format!("the URL scheme '{scheme}' is not allowed"),
            });
        }
    }
    let joined = if let Some(absolute) = reference.strip_prefix('/') {
        clean(&root.join(absolute))
    } else {
        clean(&base.join(reference))
    };
    let resolved = if resolve_links {
        resolve_existing(&joined)
    } else {
        joined
    };
    if resolved == root {
        return Err(Error::ValueFile {
            message: format!("file '{reference}' resolved to the repository root"),
        });
    }
    if !resolved.starts_with(root) {
        return Err(Error::ValueFile {
            message: format!("file '{reference}' resolved to outside repository root"),
        });
    }
    Ok(Resolved::Local(resolved))
}

/// Expands a glob (absolute, `**` allowed) into matching files, walking
/// directories depth-first in name order.
fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let mut base = PathBuf::from("/");
    let mut rest = Vec::new();
    for component in pattern.components().skip(1) {
        let part = component.as_os_str().to_string_lossy();
        if rest.is_empty() && !is_glob(&part) {
            base.push(part.as_ref());
        } else {
            rest.push(part.into_owned());
        }
    }
    let matcher = globset::GlobBuilder::new(&rest.join("/"))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|err| err.to_string())?
        .compile_matcher();
    let mut matches = Vec::new();
    fn walk(
        dir: &Path,
        base: &Path,
        matcher: &globset::GlobMatcher,
        out: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type()?;
            let relative = path.strip_prefix(base).unwrap_or(&path);
            if kind.is_dir() {
                walk(&path, base, matcher, out)?;
            } else if matcher.is_match(relative) {
                out.push(path);
            }
        }
        Ok(())
    }
    walk(&base, &base, &matcher, &mut matches).map_err(|err| err.to_string())?;
    Ok(matches)
}

/// A value file reference with where it resolves: `$name/path` of a
/// `ref:` source is root-relative in that source's tree (variables
/// substituted after the source is picked, as in Argo CD); anything else
/// is relative to the app directory, or to the repository root when
/// absolute.
fn reference_of<'r>(request: &'r HelmRequest<'_>, raw: &str) -> (String, &'r Path, &'r Path) {
    if raw.starts_with('$') {
        let name = raw.split('/').next().unwrap_or_default();
        if let Some(root) = request.ref_roots.get(name) {
            let rest = format!("/{}", raw[name.len()..].trim_start_matches('/'));
            return (request.env.substitute(&rest), root, root);
        }
    }
    (
        request.env.substitute(raw),
        request.app_dir,
        request.repo_root,
    )
}

/// The value files of the source, resolved, in Argo CD's order.
fn resolve_value_files(request: &HelmRequest<'_>) -> Result<Vec<Resolved>, Error> {
    let Some(helm) = &request.source.helm else {
        return Ok(Vec::new());
    };
    let references: Vec<(String, &Path, &Path)> = helm
        .value_files
        .iter()
        .map(|raw| reference_of(request, raw))
        .collect();
    // Files listed explicitly keep their own position even when a glob
    // earlier in the list matches them too.
    let explicit: HashSet<Resolved> = references
        .iter()
        .filter(|(r, _, _)| !is_glob(r))
        .filter_map(|(r, base, root)| resolve_reference_in(request, r, true, base, root).ok())
        .collect();
    let mut out: Vec<Resolved> = Vec::new();
    let push = |resolved: Resolved, out: &mut Vec<Resolved>| {
        if !out.contains(&resolved) {
            out.push(resolved);
        }
    };
    for (reference, base, root) in &references {
        let (base, root) = (*base, *root);
        if is_glob(reference) && !reference.contains("://") {
            let Resolved::Local(pattern) =
                resolve_reference_in(request, reference, false, base, root)?
            else {
                unreachable!("a pattern without a scheme is local")
            };
            let matches = expand_glob(&pattern).map_err(|message| Error::ValueFile {
                message: format!("error expanding glob pattern {reference:?}: {message}"),
            })?;
            if matches.is_empty() {
                if helm.ignore_missing_value_files {
                    continue;
                }
                return Err(Error::GlobNoMatch {
                    pattern: reference.clone(),
                });
            }
            for found in matches {
                let canonical = found.canonicalize().unwrap_or(found.clone());
                if !canonical.starts_with(root) {
                    let shown = found
                        .strip_prefix(root)
                        .unwrap_or(&found)
                        .display()
                        .to_string();
                    return Err(Error::ValueFile {
                        message: format!(
                            "glob pattern {reference:?}: file '{shown}' resolved to outside repository root"
                        ),
                    });
                }
                let found = Resolved::Local(found);
                if !explicit.contains(&found) {
                    push(found, &mut out);
                }
            }
            continue;
        }
        let resolved = resolve_reference_in(request, reference, true, base, root)?;
        if let Resolved::Local(path) = &resolved {
            if !path.exists() && helm.ignore_missing_value_files {
                continue;
            }
        }
        push(resolved, &mut out);
    }
    Ok(out)
}

fn resolved_arg(resolved: &Resolved) -> String {
    match resolved {
        Resolved::Local(path) => path.to_string_lossy().into_owned(),
        Resolved::Url(url) => url.clone(),
    }
}

/// What `helm template` is run with, and how it is shown.
struct Template {
    args: Vec<String>,
    shown: Vec<String>,
    /// Inline values, and the index in `args` where their file goes.
    extra_values: Option<(String, usize)>,
}

fn template_args(request: &HelmRequest<'_>) -> Result<Template, Error> {
    let source = request.source;
    let helm = source.helm.clone().unwrap_or_default();
    if !matches!(helm.version.as_str(), "" | "v3" | "v4") {
        return Err(Error::InvalidSpec {
            message: format!("helm version '{}' is not supported", helm.version),
        });
    }
    let raw_kube_version = source.kube_version_or(request.kube_version);
    let kube_version =
        normalize_kube_version(raw_kube_version).ok_or_else(|| Error::InvalidSpec {
            message: format!("could not parse kubernetes version {raw_kube_version}"),
        })?;
    let value_files = resolve_value_files(request)?;

    let mut args: Vec<String> = vec![
        "template".into(),
        ".".into(),
        "--name-template".into(),
        release_name(source, request.app_name),
    ];
    let namespace = source.namespace_or(request.namespace);
    if !namespace.is_empty() {
        args.extend(["--namespace".into(), namespace.to_string()]);
    }
    if !kube_version.is_empty() {
        args.extend(["--kube-version".into(), kube_version]);
    }
    // Argo CD iterates Go maps here (random order); name order is stable.
    let mut set = BTreeMap::new();
    let mut set_string = BTreeMap::new();
    for parameter in &helm.parameters {
        let value = request.env.substitute(&parameter.value);
        if parameter.force_string {
            set_string.insert(parameter.name.clone(), value);
        } else {
            set.insert(parameter.name.clone(), value);
        }
    }
    let mut set_file = BTreeMap::new();
    for parameter in &helm.file_parameters {
        let (reference, base, root) = reference_of(request, &parameter.path);
        let resolved = resolve_reference_in(request, &reference, true, base, root)?;
        set_file.insert(parameter.name.clone(), resolved_arg(&resolved));
    }
    for (flag, values) in [
        ("--set", &set),
        ("--set-string", &set_string),
        ("--set-file", &set_file),
    ] {
        for (name, value) in values {
            args.extend([
                flag.to_string(),
                format!("{name}={}", clean_set_value(value)),
            ]);
        }
    }
    for file in &value_files {
        args.extend(["--values".into(), resolved_arg(file)]);
    }
    let values = helm.values_yaml();
    let mut shown = args.clone();
    let extra_values = (!values.is_empty()).then(|| (values, args.len() + 1));
    if extra_values.is_some() {
        // The path is filled in once the private directory exists.
        args.extend(["--values".into(), String::new()]);
        shown.extend(["--values".into(), EXTRA_VALUES_TOKEN.into()]);
    }
    let mut tail = Vec::new();
    for api_version in source.api_versions_or(request.api_versions) {
        tail.extend(["--api-versions".to_string(), api_version.clone()]);
    }
    if !helm.skip_crds {
        tail.push("--include-crds".into());
    }
    if helm.skip_schema_validation {
        tail.push("--skip-schema-validation".into());
    }
    if helm.skip_tests {
        tail.push("--skip-tests".into());
    }
    args.extend(tail.iter().cloned());
    shown.extend(tail);
    Ok(Template {
        args,
        shown,
        extra_values,
    })
}

/// As Argo CD shows a failed `helm template`: each run of
/// `--api-versions X` replaced by `<api versions removed> ` (the list can be
/// long and is the same for every app).
fn remove_api_versions(command: &str) -> String {
    let mut out = String::with_capacity(command.len());
    let mut rest = command;
    while let Some(start) = rest.find("--api-versions ") {
        out.push_str(&rest[..start]);
        let mut end = start;
        let mut removed = false;
        while rest[end..].starts_with("--api-versions ") {
            let value_start = end + "--api-versions ".len();
            match rest[value_start..].find(' ') {
                Some(space) => {
                    end = value_start + space + 1;
                    removed = true;
                }
                None => break,
            }
        }
        if removed {
            out.push_str("<api versions removed> ");
            rest = &rest[end..];
        } else {
            out.push_str(&rest[start..]);
            rest = "";
        }
    }
    out.push_str(rest);
    out
}

fn is_missing_dependency(stderr: &str) -> bool {
    stderr.contains("found in requirements.yaml, but missing in charts")
        || stderr.contains("found in Chart.yaml, but missing in charts/ directory")
}

/// Built chart dependencies, by content key, shared by every render in
/// this process.
pub struct DepsCache {
    dir: PathBuf,
    /// Key -> the directory holding the built `charts/` (and `Chart.lock`
    /// when the build wrote one). The mutex guards only the map; the
    /// `OnceCell` makes concurrent renders share one build.
    entries: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<PathBuf>>>>,
}

impl DepsCache {
    pub fn new(dir: PathBuf) -> Self {
        DepsCache {
            dir,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cell(&self, key: &str) -> Arc<tokio::sync::OnceCell<PathBuf>> {
        self.entries
            .lock()
            .expect("helm deps map lock poisoned")
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn built(&self, key: &str) -> Option<PathBuf> {
        self.cell(key).get().cloned()
    }
}

/// Hashes a directory tree (names, file contents, link targets) into
/// `hasher`, in name order.
fn hash_tree(hasher: &mut Sha256, dir: &Path, depth: usize) -> std::io::Result<()> {
    if depth > 32 {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        hasher.update(entry.file_name().as_encoded_bytes());
        hasher.update([0]);
        if kind.is_symlink() {
            hasher.update(b"l");
            hasher.update(
                std::fs::read_link(entry.path())?
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        } else if kind.is_dir() {
            hasher.update(b"d");
            hash_tree(hasher, &entry.path(), depth + 1)?;
            hasher.update(b"/");
        } else if kind.is_file() {
            hasher.update(b"f");
            let bytes = std::fs::read(entry.path())?;
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        hasher.update([0]);
    }
    Ok(())
}

/// The content key of a chart's dependency build: its dependency
/// declarations, lock, the charts already vendored, and the contents of
/// every local (`file://`) dependency. `None` when the chart declares no
/// dependencies.
fn dependency_key(
    chart_dir: &Path,
    repo_root: &Path,
    helm: &Path,
) -> Result<Option<String>, Error> {
    let mut hasher = Sha256::new();
    hasher.update(helm.as_os_str().as_encoded_bytes());
    let mut declared = Vec::new();
    for name in [
        "Chart.yaml",
        "Chart.lock",
        "requirements.yaml",
        "requirements.lock",
    ] {
        let Ok(bytes) = std::fs::read(chart_dir.join(name)) else {
            continue;
        };
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        if name == "Chart.yaml" || name == "requirements.yaml" {
            let parsed: serde_json::Value =
                serde_saphyr::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            if let Some(list) = parsed.get("dependencies").and_then(|d| d.as_array()) {
                declared.extend(list.iter().cloned());
            }
        }
    }
    if declared.is_empty() {
        return Ok(None);
    }
    // Charts already vendored, by content: the build starts from them.
    hasher.update(b"vendored:");
    let _ = hash_tree(&mut hasher, &chart_dir.join("charts"), 0);
    for dependency in declared {
        let Some(local) = dependency
            .get("repository")
            .and_then(|r| r.as_str())
            .and_then(|r| r.strip_prefix("file://"))
        else {
            continue;
        };
        // The view's app directory is a copy; its surroundings lead back
        // into the snapshot, which the dependency must not leave.
        let resolved = chart_dir.join(local).canonicalize().ok();
        if resolved
            .as_ref()
            .is_some_and(|path| !path.starts_with(repo_root) && !path.starts_with(chart_dir))
        {
            return Err(Error::InvalidSpec {
                message: format!(
                    "helm dependency repository 'file://{local}' resolves outside the repository"
                ),
            });
        }
        hasher.update(b"local:");
        hasher.update(local.as_bytes());
        if let Some(path) = resolved {
            let _ = hash_tree(&mut hasher, &path, 0);
        }
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// The place a Helm render runs: a private copy of the app directory when
/// `copy` (dependencies will be written into it), else the snapshot's own
/// directory; either way with a private directory holding the helm home
/// and the inline values file.
fn prepare_view(
    views: &Path,
    repo_root: &Path,
    app_dir: &Path,
    copy: bool,
    extra_values: Option<&str>,
) -> Result<Scratch, Error> {
    let prepared = if copy {
        Scratch::create(views, repo_root, app_dir).and_then(|view| {
            // What helm writes must be new files in the view, never a
            // write through a link into the snapshot.
            view.materialize_links(&["charts", "Chart.lock", "requirements.lock"])?;
            Ok(view)
        })
    } else {
        Scratch::in_place(views, repo_root, app_dir)
    };
    let view = prepared.map_err(|err| Error::Io {
        file: ".".into(),
        message: format!("cannot prepare the chart: {err}"),
    })?;
    std::fs::create_dir_all(view.private_dir().join("home")).map_err(|err| Error::Io {
        file: ".".into(),
        message: format!("cannot prepare the chart: {err}"),
    })?;
    if let Some(values) = extra_values {
        std::fs::write(view.private_dir().join("values.yaml"), values).map_err(|err| {
            Error::Io {
                file: ".".into(),
                message: format!("error writing helm values file: {err}"),
            }
        })?;
    }
    Ok(view)
}

/// Puts a cached dependency build into a chart directory.
fn install_deps(built: &Path, chart_dir: &Path) -> std::io::Result<()> {
    let charts = chart_dir.join("charts");
    if charts.exists() {
        std::fs::remove_dir_all(&charts)?;
    }
    copy_tree(&built.join("charts"), &charts)?;
    let lock = built.join("Chart.lock");
    if lock.exists() && !chart_dir.join("Chart.lock").exists() {
        std::fs::copy(lock, chart_dir.join("Chart.lock"))?;
    }
    Ok(())
}

impl Tools {
    fn helm_invocation(&self, cwd: &Path, home: &Path, args: &[String]) -> Invocation {
        let shared = self.work.join("helm");
        Invocation::new(self.config.helm.as_os_str(), cwd)
            .args(args)
            .env("HOME", home)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", shared.join("cache"))
            .env("XDG_CACHE_HOME", shared.join("cache"))
            .env("HELM_DATA_HOME", shared.join("data"))
            .env("XDG_DATA_HOME", shared.join("data"))
    }

    /// Renders a Helm chart from a snapshot. `helm template` only reads the
    /// chart, so it runs in the snapshot itself; only a chart whose
    /// dependencies must be put in place (from the dependency cache or a
    /// `helm dependency build`) gets a private copy of its directory.
    pub async fn helm(&self, request: HelmRequest<'_>) -> Result<Rendered, Error> {
        let views = self.views_dir();
        let helm_path = self.config.helm.clone();
        let helm_deps = self.helm_deps.clone();
        // Value-file globs, the dependency key and any copy read the file
        // system: all on a blocking thread, with owned copies of the request.
        let owned = (
            request.app_dir.to_path_buf(),
            request.repo_root.to_path_buf(),
            request.source.clone(),
            request.env.clone(),
            request.app_name.to_string(),
            request.namespace.to_string(),
            request.kube_version.to_string(),
            request.api_versions.to_vec(),
            request.values_file_schemes.map(<[String]>::to_vec),
        );
        let ref_roots = request.ref_roots.clone();
        let (template, key, built, view) =
            tokio::task::spawn_blocking(move || -> Result<_, Error> {
                let (app_dir, repo_root, source, env, app_name, namespace, kube, apis, schemes) =
                    owned;
                let request = HelmRequest {
                    app_dir: &app_dir,
                    repo_root: &repo_root,
                    source: &source,
                    env: &env,
                    app_name: &app_name,
                    namespace: &namespace,
                    kube_version: &kube,
                    api_versions: &apis,
                    values_file_schemes: schemes.as_deref(),
                    ref_roots: &ref_roots,
                };
                let template = template_args(&request)?;
                let key = dependency_key(&app_dir, &repo_root, &helm_path)?;
                let built = key.as_deref().and_then(|k| helm_deps.built(k));
                let extra = template
                    .extra_values
                    .as_ref()
                    .map(|(values, _)| values.as_str());
                let view = prepare_view(&views, &repo_root, &app_dir, built.is_some(), extra)?;
                Ok((template, key, built, view))
            })
            .await
            .map_err(|err| Error::Io {
                file: ".".into(),
                message: err.to_string(),
            })??;
        let mut view = view;
        if let Some(built) = &built {
            install(built, view.app_dir()).await?;
        }

        let command = show_paths(
            &command_line("helm", &template.shown),
            &[request.repo_root, view.root()],
        )
        .replace(EXTRA_VALUES_TOKEN, EXTRA_VALUES_SHOWN);
        let output = match self
            .helm_template(&view, &template, request.repo_root, &command)
            .await
        {
            Err(Error::ToolFailed { stderr, .. })
                if is_missing_dependency(&stderr) && key.is_some() =>
            {
                if !view.is_copy() {
                    let (views, root, app) = (
                        self.views_dir(),
                        request.repo_root.to_path_buf(),
                        request.app_dir.to_path_buf(),
                    );
                    let extra = template.extra_values.as_ref().map(|(v, _)| v.clone());
                    view = tokio::task::spawn_blocking(move || {
                        prepare_view(&views, &root, &app, true, extra.as_deref())
                    })
                    .await
                    .map_err(|err| Error::Io {
                        file: ".".into(),
                        message: err.to_string(),
                    })??;
                }
                let key = key.as_deref().expect("checked");
                let home = view.private_dir().join("home");
                let roots = [request.repo_root, view.root(), view.app_dir()];
                let built = self
                    .helm_deps
                    .cell(key)
                    .get_or_try_init(|| self.build_dependencies(key, view.app_dir(), &home, &roots))
                    .await?
                    .clone();
                install(&built, view.app_dir()).await?;
                self.helm_template(&view, &template, request.repo_root, &command)
                    .await?
            }
            other => other?,
        };
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let documents = split_documents(&text);
        if let Some(message) = documents.error {
            return Err(Error::ToolOutput {
                tool: "helm",
                message,
            });
        }
        drop(view);
        Ok(Rendered {
            objects: documents.objects,
            commands: vec![command],
        })
    }

    /// Runs `helm template` in `view`.
    async fn helm_template(
        &self,
        view: &Scratch,
        template: &Template,
        repo_root: &Path,
        command: &str,
    ) -> Result<crate::exec::Output, Error> {
        let extra_values_path = view.private_dir().join("values.yaml");
        let mut args = template.args.clone();
        if let Some((_, slot)) = &template.extra_values {
            args[*slot] = extra_values_path.to_string_lossy().into_owned();
        }
        let home = view.private_dir().join("home");
        let roots = [repo_root, view.root(), view.app_dir()];
        self.run(
            "helm",
            self.helm_invocation(view.app_dir(), &home, &args),
            command,
            &roots,
        )
        .await
        .map_err(|err| {
            err.map_tool_failure(
                |command| remove_api_versions(&command),
                |stderr| {
                    stderr.replace(
                        extra_values_path.to_string_lossy().as_ref(),
                        EXTRA_VALUES_SHOWN,
                    )
                },
            )
        })
    }

    /// Runs `helm dependency build` in a chart directory and keeps what it
    /// produced under `key`.
    async fn build_dependencies(
        &self,
        key: &str,
        chart_dir: &Path,
        home: &Path,
        shown: &[&Path],
    ) -> Result<PathBuf, Error> {
        let args = vec!["dependency".to_string(), "build".to_string()];
        let command = command_line("helm", &args);
        let had_lock = chart_dir.join("Chart.lock").exists();
        self.run(
            "helm",
            self.helm_invocation(chart_dir, home, &args),
            &command,
            shown,
        )
        .await
        .map_err(|err| {
            err.map_tool_failure(
                |command| command,
                |stderr| format!("error building helm chart dependencies: {stderr}"),
            )
        })?;
        let destination = self.helm_deps.dir.join(key);
        let staging = self
            .helm_deps
            .dir
            .join(format!(".staging-{}", crate::domain::unguessable_name()));
        let chart_dir = chart_dir.to_path_buf();
        let saved = destination.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&staging)?;
            copy_tree(&chart_dir.join("charts"), &staging.join("charts"))?;
            if !had_lock && chart_dir.join("Chart.lock").exists() {
                std::fs::copy(chart_dir.join("Chart.lock"), staging.join("Chart.lock"))?;
            }
            if saved.exists() {
                std::fs::remove_dir_all(&saved)?;
            }
            std::fs::rename(&staging, &saved)
        })
        .await
        .map_err(|err| Error::Io {
            file: "charts".into(),
            message: err.to_string(),
        })?
        .map_err(|err| Error::Io {
            file: "charts".into(),
            message: format!("cannot keep built dependencies: {err}"),
        })?;
        tracing::debug!(key, "helm dependencies built and cached");
        Ok(destination)
    }
}

async fn install(built: &Path, chart_dir: &Path) -> Result<(), Error> {
    let (built, chart_dir) = (built.to_path_buf(), chart_dir.to_path_buf());
    tokio::task::spawn_blocking(move || install_deps(&built, &chart_dir))
        .await
        .map_err(|err| Error::Io {
            file: "charts".into(),
            message: err.to_string(),
        })?
        .map_err(|err| Error::Io {
            file: "charts".into(),
            message: format!("cannot install built dependencies: {err}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::env::BuildEnvInput;
    use crate::render::spec::{HelmParameter, HelmSpec};

    #[test]
    fn escapes_commas_like_argo_cd() {
        assert_eq!(clean_set_value("a,b"), "a\\,b");
        assert_eq!(clean_set_value("a\\,b"), "a\\,b");
        assert_eq!(clean_set_value("{a,b}"), "{a,b}");
    }

    #[test]
    fn removes_api_versions_from_failed_commands() {
        assert_eq!(
            remove_api_versions(
                "helm template . --api-versions a/v1 --api-versions b/v1 --include-crds"
            ),
            "helm template . <api versions removed> --include-crds"
        );
        assert_eq!(
            remove_api_versions("helm template . --api-versions a/v1"),
            "helm template . --api-versions a/v1"
        );
    }

    #[test]
    fn release_names() {
        let source = SourceSpec::default();
        assert_eq!(release_name(&source, "argocd_guestbook"), "guestbook");
        assert_eq!(release_name(&source, "guestbook"), "guestbook");
        assert_eq!(release_name(&source, "a_b_c"), "b_c");
        assert_eq!(release_name(&source, "ns_"), "ns_");
    }

    #[test]
    fn value_files_are_confined_and_globbed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let app = root.join("chart");
        std::fs::create_dir_all(app.join("envs/sub")).unwrap();
        for f in [
            "envs/a.yaml",
            "envs/b.yaml",
            "envs/sub/c.yaml",
            "values.yaml",
        ] {
            std::fs::write(app.join(f), "x: 1").unwrap();
        }
        std::fs::write(root.join("common.yaml"), "x: 1").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", app.join("evil.yaml")).unwrap();
        let env = BuildEnv::new(BuildEnvInput {
            app_name: "app",
            ..Default::default()
        });
        let schemes = vec!["https".to_string()];
        let resolve = |files: &[&str], ignore: bool| {
            let source = SourceSpec {
                helm: Some(HelmSpec {
                    value_files: files.iter().map(|s| s.to_string()).collect(),
                    ignore_missing_value_files: ignore,
                    parameters: vec![HelmParameter::default()],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let request = HelmRequest {
                app_dir: &app,
                repo_root: &root,
                source: &source,
                env: &env,
                app_name: "app",
                namespace: "",
                kube_version: "",
                api_versions: &[],
                values_file_schemes: Some(&schemes),
                ref_roots: &Default::default(),
            };
            resolve_value_files(&request).map(|files| {
                files
                    .iter()
                    .map(|f| match f {
                        Resolved::Local(p) => p.strip_prefix(&root).unwrap().display().to_string(),
                        Resolved::Url(u) => u.clone(),
                    })
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            resolve(&["envs/*.yaml", "envs/a.yaml", "/common.yaml"], false).unwrap(),
            vec!["chart/envs/b.yaml", "chart/envs/a.yaml", "common.yaml"]
        );
        assert_eq!(
            resolve(&["envs/**/*.yaml"], false).unwrap(),
            vec![
                "chart/envs/a.yaml",
                "chart/envs/b.yaml",
                "chart/envs/sub/c.yaml"
            ]
        );
        assert_eq!(
            resolve(&["https://example.com/v.yaml"], false).unwrap(),
            vec!["https://example.com/v.yaml"]
        );
        let err = |files: &[&str]| resolve(files, false).unwrap_err().to_string();
        assert!(
            err(&["http://example.com/v.yaml"]).contains("the URL scheme 'http' is not allowed")
        );
        assert!(err(&["../../x.yaml"]).contains("resolved to outside repository root"));
        assert!(err(&["evil.yaml"]).contains("resolved to outside repository root"));
        assert!(err(&["nothing/*.yaml"]).contains("matched no files"));
        assert!(resolve(&["nothing/*.yaml", "missing.yaml"], true)
            .unwrap()
            .is_empty());
        assert_eq!(
            resolve(&["missing.yaml"], false).unwrap(),
            vec!["chart/missing.yaml"]
        );
    }
}
