//! The input closure of a render: every path of the commit's tree the
//! render can read, found from the git trees alone (nothing is written to
//! disk). Its digest keys the manifest cache by content, so a commit that
//! changes nothing an app reads serves that app without rendering it.
//!
//! The rules are conservative: whenever a render could read something the
//! rules do not follow (a symlink, Jsonnet imports, override files, chart
//! inflation, a glob), the closure is the whole tree; whenever it reads
//! something outside the repository (a remote kustomize base, a value file
//! by URL), there is no content key at all.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::git::tree::{CommitTree, Entry};
use crate::render::kustomize::KUSTOMIZATION_NAMES;
use crate::render::spec::SourceSpec;

/// Largest kustomization or chart file read while following references.
const MAX_FILE: usize = 1 << 20;
/// Deepest chain of kustomizations or chart dependencies followed.
const MAX_DEPTH: usize = 32;

/// What a render of one app at one commit reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Closure {
    /// These paths (relative to the root), with the object id each held
    /// (`None`: nothing there, which matters too), and whether the tree
    /// has a symlink leaving it (Helm and Kustomize refuse such trees).
    Paths {
        entries: BTreeMap<String, Option<String>>,
        escaping_symlink: bool,
    },
    /// Could not be bounded: the whole tree, by its root id.
    Whole { root: String },
    /// Reads something outside the repository: no content key.
    Unbounded,
}

/// Joins `relative` to the directory `base` lexically; `None` when it
/// leaves the root.
fn join(base: &str, relative: &str) -> Option<String> {
    let mut parts: Vec<&str> = if relative.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|c| !c.is_empty()).collect()
    };
    for component in relative.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(parts.join("/"))
}

/// A kustomize reference to something outside the repository.
fn is_remote(reference: &str) -> bool {
    reference.contains("://")
        || reference.starts_with("git@")
        || reference.starts_with("github.com/")
        || reference.starts_with("gitlab.com/")
        || reference.starts_with("bitbucket.org/")
        || reference.contains("?ref=")
        || reference.contains(".git//")
}

enum Stop {
    Whole,
    Unbounded,
}

struct Builder<'a> {
    /// Whether the render can read the process environment (and with it
    /// `ARGOCD_APP_REVISION`): kustomize env files take keys from it.
    reads_environment: bool,
    tree: &'a CommitTree,
    entries: BTreeMap<String, Option<String>>,
    kustomizations: HashSet<String>,
    charts: HashSet<String>,
}

impl Builder<'_> {
    /// Records `path`; a symlink there could point anywhere.
    fn add(&mut self, path: &str) -> Result<Option<Entry>, Stop> {
        let entry = self.tree.entry(path);
        if matches!(entry, Some(Entry::Symlink { .. } | Entry::Submodule { .. })) {
            return Err(Stop::Whole);
        }
        // A symlink or submodule on the way to `path` makes it look missing
        // here.
        let mut prefix = String::new();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            if matches!(
                self.tree.entry(&prefix),
                Some(Entry::Symlink { .. } | Entry::Submodule { .. })
            ) {
                return Err(Stop::Whole);
            }
        }
        self.entries
            .insert(path.to_string(), entry.as_ref().map(|e| e.id().to_string()));
        Ok(entry)
    }

    /// Adds a directory and refuses anything below it the rules cannot
    /// follow.
    fn add_directory(&mut self, dir: &str, jsonnet_matters: bool) -> Result<(), Stop> {
        if !matches!(self.add(dir)?, Some(Entry::Directory { .. })) {
            return Ok(());
        }
        let mut stop = None;
        self.tree.walk(dir, &mut |path, entry| {
            let name = path.rsplit('/').next().unwrap_or(path);
            if matches!(entry, Entry::Symlink { .. } | Entry::Submodule { .. })
                || (jsonnet_matters && name.ends_with(".jsonnet"))
            {
                stop = Some(Stop::Whole);
                return false;
            }
            true
        });
        match stop {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    fn yaml(&self, path: &str) -> Option<Value> {
        let bytes = self.tree.read(path, MAX_FILE)?;
        serde_saphyr::from_slice(&bytes).ok()
    }

    /// A Helm chart directory: its value files and `file://` dependencies.
    fn chart(&mut self, dir: &str, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH || !self.charts.insert(dir.to_string()) {
            return Ok(());
        }
        self.add_directory(dir, false)?;
        for file in ["Chart.yaml", "requirements.yaml"] {
            let path = join(dir, file).ok_or(Stop::Whole)?;
            if self.tree.entry(&path).is_none() {
                continue;
            }
            // A chart file the rules cannot read may name anything.
            let chart = self.yaml(&path).ok_or(Stop::Whole)?;
            let dependencies = chart["dependencies"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for dependency in dependencies {
                let Some(repository) = dependency["repository"].as_str() else {
                    continue;
                };
                if let Some(local) = repository.strip_prefix("file://") {
                    let path = join(dir, local).ok_or(Stop::Whole)?;
                    self.chart(&path, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// A kustomization directory and everything its kustomization file
    /// references, recursively.
    fn kustomization(&mut self, dir: &str, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH || !self.kustomizations.insert(dir.to_string()) {
            return Ok(());
        }
        self.add_directory(dir, false)?;
        let Some(file) = KUSTOMIZATION_NAMES
            .iter()
            .map(|name| join(dir, name).unwrap_or_default())
            .find(|path| matches!(self.tree.entry(path), Some(Entry::File { .. })))
        else {
            return Ok(());
        };
        // A kustomization the rules cannot read may reference anything.
        let kustomization = self.yaml(&file).ok_or(Stop::Whole)?;
        for field in ["helmCharts", "helmGlobals", "helmChartInflationGenerator"] {
            if !kustomization[field].is_null() {
                return Err(Stop::Whole);
            }
        }
        let mut references: Vec<String> = Vec::new();
        let strings = |value: &Value| -> Vec<String> {
            match value {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            }
        };
        for field in [
            "resources",
            "bases",
            "components",
            "crds",
            "configurations",
            "generators",
            "transformers",
            "validators",
            "patchesStrategicMerge",
        ] {
            references.extend(strings(&kustomization[field]));
        }
        for field in ["patches", "patchesJson6902", "replacements"] {
            if let Some(items) = kustomization[field].as_array() {
                references.extend(
                    items
                        .iter()
                        .filter_map(|i| i["path"].as_str().map(str::to_string)),
                );
            }
        }
        references.extend(strings(&kustomization["openapi"]["path"]));
        for field in ["configMapGenerator", "secretGenerator"] {
            for generator in kustomization[field].as_array().into_iter().flatten() {
                let mut files = strings(&generator["files"]);
                let envs: Vec<String> = strings(&generator["envs"])
                    .into_iter()
                    .chain(strings(&generator["env"]))
                    .collect();
                // An env file's bare `KEY` lines come from the environment.
                self.reads_environment |= !envs.is_empty();
                files.extend(envs);
                // `key=path` names the key.
                references.extend(
                    files
                        .into_iter()
                        .map(|f| f.split_once('=').map(|(_, p)| p.to_string()).unwrap_or(f)),
                );
            }
        }
        for reference in references {
            self.kustomize_reference(dir, &reference, depth)?;
        }
        Ok(())
    }

    fn kustomize_reference(
        &mut self,
        dir: &str,
        reference: &str,
        depth: usize,
    ) -> Result<(), Stop> {
        // An inline patch or resource is not a path.
        if reference.contains('\n') {
            return Ok(());
        }
        if is_remote(reference) {
            return Err(Stop::Unbounded);
        }
        if reference.contains(['*', '?', '[']) {
            return Err(Stop::Whole);
        }
        let path = join(dir, reference).ok_or(Stop::Whole)?;
        match self.add(&path)? {
            Some(Entry::Directory { .. }) => self.kustomization(&path, depth + 1),
            _ => Ok(()),
        }
    }
}

/// Whether any symlink in the tree leaves it (Argo CD's out-of-bounds
/// symlink rule for Helm and Kustomize).
/// The answer is a property of the whole commit tree: it is remembered per
/// root tree, so the apps of one commit walk it once.
fn has_escaping_symlink(tree: &CommitTree) -> bool {
    static KNOWN: std::sync::OnceLock<moka::sync::Cache<String, bool>> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| moka::sync::Cache::new(1024));
    let root = tree.root_id();
    if let Some(found) = known.get(&root) {
        return found;
    }
    let found = walk_for_escaping_symlink(tree);
    known.insert(root, found);
    found
}

fn walk_for_escaping_symlink(tree: &CommitTree) -> bool {
    let mut found = false;
    tree.walk("", &mut |path, entry| {
        if let Entry::Symlink { target, .. } = entry {
            let depth = path.matches('/').count();
            if super::escapes(Path::new(target), depth) {
                found = true;
                return false;
            }
        }
        true
    });
    found
}

/// What a render reads, and whether its output can depend on the commit
/// itself (not just on what the commit holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub closure: Closure,
    pub depends_on_commit: bool,
}

/// The closure of rendering `source` (as the request gives it, before
/// override files, with these kustomize build options) at the app path
/// `app_path`, including the paths the app declares in its
/// `argocd.argoproj.io/manifest-generate-paths` annotation (`;`-separated,
/// relative to the app path or absolute from the root).
pub fn inputs(
    tree: &CommitTree,
    app_path: &str,
    source: &SourceSpec,
    kustomize_build_options: &str,
    generate_paths: &str,
) -> Inputs {
    let names = join("", app_path)
        .filter(|_| !app_path.starts_with('/'))
        .and_then(|app| tree.list(&app))
        .unwrap_or_default();
    // Override files can substitute the revision, and exec plugins read
    // the environment: the commit matters.
    let overrides = names.iter().any(|n| n.starts_with(".argocd-source"));
    let plugins = ["--enable-exec", "--enable-alpha-plugins", "--enable-star"]
        .iter()
        .any(|flag| kustomize_build_options.contains(flag));
    if kustomize_build_options.contains("LoadRestrictionsNone") {
        return Inputs {
            closure: Closure::Whole {
                root: tree.root_id(),
            },
            depends_on_commit: overrides || plugins,
        };
    }
    let (closure, reads_environment) = closure(tree, app_path, source, generate_paths);
    Inputs {
        closure,
        depends_on_commit: overrides || plugins || reads_environment,
    }
}

/// [`inputs`]' closure, and whether the render reads the environment.
fn closure(
    tree: &CommitTree,
    app_path: &str,
    source: &SourceSpec,
    generate_paths: &str,
) -> (Closure, bool) {
    let whole = || {
        (
            Closure::Whole {
                root: tree.root_id(),
            },
            false,
        )
    };
    if app_path.starts_with('/') {
        return whole();
    }
    let Some(app) = join("", app_path) else {
        return whole();
    };
    let mut builder = Builder {
        reads_environment: false,
        tree,
        entries: BTreeMap::new(),
        kustomizations: HashSet::new(),
        charts: HashSet::new(),
    };
    let names = tree.list(&app).unwrap_or_default();
    // Override files can point anywhere; Jsonnet can import anywhere.
    if names.iter().any(|n| n.starts_with(".argocd-source")) {
        return whole();
    }
    let has = |file: &str| names.iter().any(|n| n == file);
    let is_helm = source.helm.is_some() || has("Chart.yaml");
    let is_kustomize =
        source.kustomize.is_some() || KUSTOMIZATION_NAMES.iter().any(|name| has(name));
    let outcome = (|| -> Result<(), Stop> {
        // Jsonnet can import anywhere; whether it is rendered depends on
        // the enabled source types, so any `.jsonnet` file counts.
        builder.add_directory(&app, true)?;
        if is_helm {
            builder.chart(&app, 0)?;
            let helm = source.helm.clone().unwrap_or_default();
            let files = helm
                .value_files
                .iter()
                .cloned()
                .chain(helm.file_parameters.iter().map(|p| p.path.clone()));
            for file in files {
                if file.contains("://") {
                    return Err(Stop::Unbounded);
                }
                // `$VAR` anywhere in a path is substituted before reading.
                if file.contains(['$', '*', '?', '[']) {
                    return Err(Stop::Whole);
                }
                let path = join(&app, &file).ok_or(Stop::Whole)?;
                builder.add(&path)?;
            }
        }
        for declared in generate_paths
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if declared.contains(['*', '?', '[', '{']) {
                return Err(Stop::Whole);
            }
            let path = join(&app, declared).ok_or(Stop::Whole)?;
            if matches!(builder.add(&path)?, Some(Entry::Directory { .. })) {
                builder.add_directory(&path, false)?;
            }
        }
        if is_kustomize {
            builder.kustomization(&app, 0)?;
            if let Some(kustomize) = &source.kustomize {
                for component in &kustomize.components {
                    builder.kustomize_reference(&app, component, 0)?;
                }
            }
        }
        Ok(())
    })();
    let reads_environment = builder.reads_environment;
    match outcome {
        Err(Stop::Whole) => (whole().0, reads_environment),
        Err(Stop::Unbounded) => (Closure::Unbounded, reads_environment),
        Ok(()) => (
            Closure::Paths {
                escaping_symlink: (is_helm || is_kustomize) && has_escaping_symlink(tree),
                entries: builder.entries,
            },
            reads_environment,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::spec::HelmSpec;

    /// A repository with `files` (a target starting with `->` is a
    /// symlink) committed; its `.git` and the commit.
    fn repo(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q"]);
        for (path, content) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            match content.strip_prefix("->") {
                Some(target) => std::os::unix::fs::symlink(target, &full).unwrap(),
                None => std::fs::write(&full, content).unwrap(),
            }
        }
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "c"]);
        let sha = git(&["rev-parse", "HEAD"]);
        (dir, sha)
    }

    fn paths(closure: &Closure) -> Vec<&str> {
        match closure {
            Closure::Paths { entries, .. } => entries.keys().map(String::as_str).collect(),
            other => panic!("not bounded: {other:?}"),
        }
    }

    #[test]
    fn follows_kustomize_references_and_helm_value_files() {
        let (dir, sha) = repo(&[
            ("base/kustomization.yaml", "resources:\n- cm.yaml\n"),
            ("base/cm.yaml", "x"),
            ("shared/patch.yaml", "x"),
            (
                "overlay/kustomization.yaml",
                "resources:\n- ../base\npatches:\n- path: ../shared/patch.yaml\nconfigMapGenerator:\n- name: g\n  files:\n  - key=../shared/data.txt\n  envs:\n  - ../shared/build.env\n",
            ),
            ("chart/Chart.yaml", "apiVersion: v2\nname: c\nversion: 1.0.0\ndependencies:\n- name: lib\n  repository: file://../lib\n"),
            ("lib/Chart.yaml", "apiVersion: v2\nname: lib\nversion: 1.0.0\n"),
            ("envs/prod.yaml", "x"),
            ("remote/kustomization.yaml", "resources:\n- https://github.com/org/repo//dir?ref=v1\n"),
            ("linked/cm.yaml", "->../base/cm.yaml"),
            ("unrelated.txt", "x"),
        ]);
        let tree = CommitTree::open(&dir.path().join(".git"), &sha).unwrap();
        let (closure, reads_environment) = closure(&tree, "overlay", &SourceSpec::default(), "");
        assert!(reads_environment, "a generator env file");
        assert_eq!(
            paths(&closure),
            [
                "base",
                "base/cm.yaml",
                "overlay",
                "shared/build.env",
                "shared/data.txt",
                "shared/patch.yaml"
            ]
        );
        let Closure::Paths { entries, .. } = &closure else {
            unreachable!()
        };
        assert_eq!(entries["shared/data.txt"], None, "missing files count too");

        let helm = SourceSpec {
            helm: Some(HelmSpec {
                value_files: vec!["../envs/prod.yaml".into(), "/envs/missing.yaml".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            paths(&super::closure(&tree, "chart", &helm, "../unrelated.txt").0),
            [
                "chart",
                "envs/missing.yaml",
                "envs/prod.yaml",
                "lib",
                "unrelated.txt"
            ]
        );
        assert_eq!(
            super::closure(&tree, "remote", &SourceSpec::default(), "").0,
            Closure::Unbounded
        );
        assert!(matches!(
            super::closure(&tree, "linked", &SourceSpec::default(), "").0,
            Closure::Whole { .. }
        ));
        assert_eq!(
            paths(&super::closure(&tree, "base", &SourceSpec::default(), "").0),
            ["base", "base/cm.yaml"]
        );
    }

    #[test]
    fn joins_lexically_and_refuses_escapes() {
        assert_eq!(join("apps/a", "../base").as_deref(), Some("apps/base"));
        assert_eq!(join("apps/a", "./x.yaml").as_deref(), Some("apps/a/x.yaml"));
        assert_eq!(join("apps/a", "/top.yaml").as_deref(), Some("top.yaml"));
        assert_eq!(join("apps", "../../x"), None);
        assert!(is_remote("https://github.com/org/repo//dir?ref=v1"));
        assert!(is_remote("github.com/org/repo/dir"));
        assert!(!is_remote("../base"));
    }
}
