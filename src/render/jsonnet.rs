//! Jsonnet for Directory apps, evaluated in-process.

use std::path::Path;

use super::Error;

/// A top-level argument or external variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    pub value: String,
    /// The value is Jsonnet code rather than a string.
    pub code: bool,
}

/// Jsonnet settings of a Directory source.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tlas: Vec<Var>,
    pub ext_vars: Vec<Var>,
    /// Library search paths, relative to the repository root.
    pub libs: Vec<String>,
}

/// Evaluates the `.jsonnet` file `file` (inside `app_dir`, inside
/// `repo_root`) into Kubernetes objects. `relative` names it in errors.
pub fn evaluate(
    _file: &Path,
    relative: &str,
    _app_dir: &Path,
    _repo_root: &Path,
    _options: &Options,
) -> Result<Vec<serde_json::Value>, Error> {
    Err(Error::NotImplemented {
        what: format!("jsonnet evaluation (file {relative:?})"),
    })
}
