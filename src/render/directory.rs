//! Directory apps: every `.yaml`, `.yml` and `.json` file of the app
//! directory (recursively when asked), filtered by include/exclude globs,
//! parsed as Argo CD parses them.

use std::fs;
use std::path::Path;

use globset::{Glob, GlobMatcher};

use super::manifest::{split_documents, Object};
use super::Error;

/// How a Git LFS pointer file starts (its content is not in git).
const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

/// Marker that excludes a file from rendering.
const SKIP_MARKER: &[u8] = b"+argocd:skip-file-rendering";

/// `ApplicationSourceDirectory`, validated.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub recurse: bool,
    /// Glob over the path relative to the app directory; `*` crosses `/`.
    pub include: String,
    pub exclude: String,
    pub disable_extension_filter: bool,
    /// Whether `.jsonnet` files are evaluated (Directory generation enabled).
    pub jsonnet_enabled: bool,
    /// Top-level arguments, external variables and library paths for
    /// `.jsonnet` files (values already substituted).
    pub jsonnet: super::jsonnet::Options,
    /// Most bytes the app's manifest files (not `.jsonnet`) may add up
    /// to; `None` means unlimited.
    pub max_combined_bytes: Option<u64>,
}

/// Argo CD matches include/exclude with gobwas/glob without separators:
/// `*` and `?` cross `/`, `{a,b}` alternates.
fn compile_glob(field: &'static str, pattern: &str) -> Result<Option<GlobMatcher>, Error> {
    if pattern.is_empty() {
        return Ok(None);
    }
    let pattern = collapse_stars(pattern);
    let glob = globset::GlobBuilder::new(&pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|err| Error::InvalidGlob {
            field,
            pattern: pattern.to_string(),
            message: err.kind().to_string(),
        })?;
    Ok(Some(Glob::compile_matcher(&glob)))
}

/// Without separators gobwas' `**` is just `*`, while globset gives `**/`
/// the meaning "zero or more directories". Collapsing runs of `*` (outside
/// character classes and escapes) keeps gobwas' meaning: `**/*.yaml` then
/// needs a `/`, as in Argo CD.
fn collapse_stars(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    let mut in_class = false;
    let mut after_wildcard = false;
    while let Some(c) = chars.next() {
        let is_wildcard = c == '*' && !in_class;
        match c {
            '\\' => {
                out.push(c);
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
                after_wildcard = false;
                continue;
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '*' if is_wildcard && after_wildcard => continue,
            _ => {}
        }
        after_wildcard = is_wildcard;
        out.push(c);
    }
    out
}

/// Whether the file at `path` contains `needle`, read in chunks.
fn file_contains(path: &Path, needle: &[u8]) -> std::io::Result<bool> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut window: Vec<u8> = Vec::with_capacity(64 * 1024 + needle.len());
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(false);
        }
        window.extend_from_slice(&chunk[..n]);
        if memchr_subslice(&window, needle) {
            return Ok(true);
        }
        // Keep just enough to find a needle split across chunks.
        let keep = needle.len().saturating_sub(1).min(window.len());
        window.drain(..window.len() - keep);
    }
}

fn has_manifest_extension(name: &str) -> bool {
    [".yaml", ".yml", ".json", ".jsonnet"]
        .iter()
        .any(|ext| name.ends_with(ext) && !name.contains('\n'))
}

/// A file the walk selected, parsed only once the whole app is known to
/// be within the size limit.
enum Selected {
    Manifest {
        name: String,
        relative: String,
        bytes: Vec<u8>,
    },
    Jsonnet {
        path: std::path::PathBuf,
        relative: String,
    },
}

struct Walk<'a> {
    repo_root: &'a Path,
    options: &'a Options,
    include: Option<GlobMatcher>,
    exclude: Option<GlobMatcher>,
    selected: Vec<Selected>,
    /// Bytes of the selected manifest files so far.
    combined: u64,
    objects: Vec<Object>,
}

/// Renders the directory app at `app_dir` (inside `repo_root`, both
/// canonical). Output order is Argo CD's: lexical walk order, documents in
/// file order.
pub fn render(app_dir: &Path, repo_root: &Path, options: &Options) -> Result<Vec<Object>, Error> {
    let mut walk = Walk {
        repo_root,
        options,
        include: compile_glob("include", &options.include)?,
        exclude: compile_glob("exclude", &options.exclude)?,
        selected: Vec::new(),
        combined: 0,
        objects: Vec::new(),
    };
    walk.directory(app_dir, "")?;
    for selected in std::mem::take(&mut walk.selected) {
        match selected {
            Selected::Manifest {
                name,
                relative,
                bytes,
            } => walk.parse(&name, &relative, &bytes)?,
            Selected::Jsonnet { path, relative } => walk.jsonnet(&path, &relative)?,
        }
    }
    Ok(walk.objects)
}

impl Walk<'_> {
    fn directory(&mut self, dir: &Path, relative: &str) -> Result<(), Error> {
        let shown = if relative.is_empty() { "." } else { relative };
        let mut entries: Vec<(String, fs::FileType)> = fs::read_dir(dir)
            .map_err(|err| io_error(shown, err))?
            .map(|entry| {
                let entry = entry.map_err(|err| io_error(shown, err))?;
                let file_type = entry.file_type().map_err(|err| io_error(shown, err))?;
                Ok((entry.file_name().to_string_lossy().into_owned(), file_type))
            })
            .collect::<Result<_, Error>>()?;
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (name, file_type) in entries {
            let child_relative = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            let path = dir.join(&name);
            if file_type.is_dir() {
                if self.options.recurse {
                    self.directory(&path, &child_relative)?;
                }
                continue;
            }
            self.file(&path, &name, &child_relative, file_type.is_symlink())?;
        }
        Ok(())
    }

    fn file(
        &mut self,
        path: &Path,
        name: &str,
        relative: &str,
        is_symlink: bool,
    ) -> Result<(), Error> {
        if !self.options.disable_extension_filter && !has_manifest_extension(name) {
            return Ok(());
        }
        if is_symlink {
            let target = match path.canonicalize() {
                Ok(target) => target,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(
                        file = relative,
                        "skipping manifest: symlink target is missing"
                    );
                    return Ok(());
                }
                Err(err) => {
                    return Err(Error::BadSymlink {
                        file: relative.to_string(),
                        message: err.to_string(),
                    })
                }
            };
            if !target.starts_with(self.repo_root) {
                return Err(Error::SymlinkOutsideRepository {
                    file: relative.to_string(),
                });
            }
            if !target.is_file() {
                tracing::warn!(
                    file = relative,
                    "skipping manifest: symlink to a non-regular file"
                );
                return Ok(());
            }
        }
        if self.exclude.as_ref().is_some_and(|g| g.is_match(relative)) {
            return Ok(());
        }
        if self.include.as_ref().is_some_and(|g| !g.is_match(relative)) {
            return Ok(());
        }
        let limit = self.options.max_combined_bytes;
        if let Some(limit) = limit.filter(|_| !name.ends_with(".jsonnet")) {
            // A file that would pass the limit is refused without being
            // read into memory (unless it is marked as skipped).
            let size = fs::metadata(path)
                .map_err(|err| io_error(relative, err))?
                .len();
            if self.combined.saturating_add(size) > limit {
                if file_contains(path, SKIP_MARKER).map_err(|err| io_error(relative, err))? {
                    return Ok(());
                }
                return Err(Error::ManifestsTooLarge { limit });
            }
        }
        let bytes = fs::read(path).map_err(|err| io_error(relative, err))?;
        if memchr_subslice(&bytes, SKIP_MARKER) {
            return Ok(());
        }
        if bytes.starts_with(LFS_POINTER) {
            return Err(Error::Unparsable {
                file: relative.to_string(),
                message: "the file is a Git LFS pointer: enable LFS (enableLfs) on the \
                          repository to render its content"
                    .to_string(),
            });
        }
        // As in Argo CD, the name of the file in the app directory (the
        // link, not its target) decides how it is parsed.
        if name.ends_with(".jsonnet") {
            if !self.options.jsonnet_enabled {
                return Ok(());
            }
            // Without a limit there is nothing to check first: evaluate
            // at once instead of holding every file.
            if limit.is_none() {
                return self.jsonnet(path, relative);
            }
            self.selected.push(Selected::Jsonnet {
                path: path.to_path_buf(),
                relative: relative.to_string(),
            });
            return Ok(());
        }
        let Some(limit) = limit else {
            return self.parse(name, relative, &bytes);
        };
        self.combined += bytes.len() as u64;
        if self.combined > limit {
            return Err(Error::ManifestsTooLarge { limit });
        }
        self.selected.push(Selected::Manifest {
            name: name.to_string(),
            relative: relative.to_string(),
            bytes,
        });
        Ok(())
    }

    fn jsonnet(&mut self, path: &Path, relative: &str) -> Result<(), Error> {
        // The app directory is `relative`'s component count above `path`
        // (which is `app_dir` joined with `relative`).
        let app_dir = path
            .ancestors()
            .nth(relative.split('/').count())
            .unwrap_or(self.repo_root);
        let objects = super::jsonnet::evaluate(
            path,
            relative,
            app_dir,
            self.repo_root,
            &self.options.jsonnet,
        )?;
        self.objects
            .extend(objects.into_iter().filter_map(|value| match value {
                serde_json::Value::Object(object) => Some(object),
                _ => None,
            }));
        Ok(())
    }

    fn parse(&mut self, name: &str, relative: &str, bytes: &[u8]) -> Result<(), Error> {
        let text = decode_text(bytes);
        if name.ends_with(".json") {
            return self.json_file(&text, relative);
        }
        let documents = split_documents(&text);
        match documents.error {
            None => self.objects.extend(documents.objects),
            Some(message) if !documents.objects.is_empty() => {
                return Err(Error::Unparsable {
                    file: relative.to_string(),
                    message,
                })
            }
            Some(message) => {
                // A file that does not look like a manifest at all is some
                // other YAML (values, config): ignored, as Argo CD does.
                if text.contains("apiVersion:")
                    && text.contains("kind:")
                    && text.contains("metadata:")
                {
                    return Err(Error::Unparsable {
                        file: relative.to_string(),
                        message,
                    });
                }
                tracing::debug!(
                    file = relative,
                    "ignoring YAML that is not a Kubernetes manifest"
                );
            }
        }
        Ok(())
    }

    /// A `.json` file holds exactly one object. One without `kind` is
    /// skipped (Argo CD emits it as `null`, which its controller skips).
    fn json_file(&mut self, text: &str, relative: &str) -> Result<(), Error> {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
        let first = match stream.next() {
            Some(Ok(value)) => value,
            Some(Err(err)) => {
                return Err(Error::Unparsable {
                    file: relative.to_string(),
                    message: err.to_string(),
                })
            }
            None => {
                return Err(Error::Unparsable {
                    file: relative.to_string(),
                    message: "unexpected end of JSON input".to_string(),
                })
            }
        };
        if stream.next().is_some() {
            return Err(Error::MultipleJsonObjects {
                file: relative.to_string(),
            });
        }
        match first {
            serde_json::Value::Object(object) => {
                if object
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .is_some_and(|k| !k.is_empty())
                {
                    self.objects.push(object);
                } else {
                    tracing::debug!(file = relative, "skipping JSON object without kind");
                }
                Ok(())
            }
            other => Err(Error::Unparsable {
                file: relative.to_string(),
                message: format!(
                    "expected an object, found {}",
                    super::manifest::json_type_name(&other)
                ),
            }),
        }
    }
}

fn io_error(file: &str, err: std::io::Error) -> Error {
    Error::Io {
        file: file.to_string(),
        message: err.kind().to_string(),
    }
}

fn memchr_subslice(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Text of a manifest file: UTF-8 (BOM stripped), or UTF-16 with a BOM.
fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |bytes: &[u8], big_endian: bool| {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| {
                if big_endian {
                    u16::from_be_bytes([pair[0], pair[1]])
                } else {
                    u16::from_le_bytes([pair[0], pair[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_needle_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut content = vec![b'#'; 64 * 1024 - 5];
        content.extend_from_slice(SKIP_MARKER);
        fs::write(&path, &content).unwrap();
        assert!(file_contains(&path, SKIP_MARKER).unwrap());
        fs::write(&path, &content[..content.len() - 1]).unwrap();
        assert!(!file_contains(&path, SKIP_MARKER).unwrap());
    }

    #[test]
    fn the_size_limit_is_checked_before_a_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let small = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: small\n";
        fs::write(root.join("a.yaml"), small).unwrap();
        // Larger than the limit, skipped by a marker far into the file.
        let mut skipped = "#".repeat(200 * 1024);
        skipped.push_str("\n# +argocd:skip-file-rendering\n");
        fs::write(root.join("b.yaml"), &skipped).unwrap();
        let options = |limit| Options {
            max_combined_bytes: limit,
            ..Default::default()
        };
        let objects = render(&root, &root, &options(Some(small.len() as u64))).unwrap();
        assert_eq!(objects.len(), 1);
        fs::write(root.join("c.yaml"), "x".repeat(300 * 1024)).unwrap();
        let err = render(&root, &root, &options(Some(1024))).unwrap_err();
        assert!(
            matches!(err, Error::ManifestsTooLarge { limit: 1024 }),
            "{err}"
        );
        // Unlimited: everything is read (and `c.yaml`, not YAML of a
        // manifest, is ignored).
        assert_eq!(render(&root, &root, &options(None)).unwrap().len(), 1);
    }

    #[test]
    fn globs_cross_separators_like_gobwas() {
        let g = compile_glob("include", "*.yaml").unwrap().unwrap();
        assert!(g.is_match("a.yaml"));
        assert!(g.is_match("sub/dir/a.yaml"));
        assert!(!g.is_match("a.yml"));
        let g = compile_glob("include", "{one/*,two.yaml}")
            .unwrap()
            .unwrap();
        assert!(g.is_match("one/x.json"));
        assert!(g.is_match("two.yaml"));
        assert!(!g.is_match("three.yaml"));
        let g = compile_glob("exclude", "sub/?.yml").unwrap().unwrap();
        assert!(g.is_match("sub/a.yml"));
        assert!(!g.is_match("sub/ab.yml"));
        assert!(compile_glob("include", "").unwrap().is_none());
        // gobwas: `**` is `*`, so `**/x` needs a separator and `a**b` is valid.
        let g = compile_glob("include", "**/*.yaml").unwrap().unwrap();
        assert!(!g.is_match("top.yaml"));
        assert!(g.is_match("sub/x.yaml"));
        let g = compile_glob("include", "a/**/b.yaml").unwrap().unwrap();
        assert!(!g.is_match("a/b.yaml"));
        assert!(g.is_match("a/x/y/b.yaml"));
        assert!(compile_glob("include", "a**b")
            .unwrap()
            .unwrap()
            .is_match("a/x/b"));
        assert_eq!(collapse_stars(r"[**]\**x**"), r"[**]\**x*");
        assert!(matches!(
            compile_glob("include", "a[").unwrap_err(),
            Error::InvalidGlob { .. }
        ));
    }

    #[test]
    fn extension_filter() {
        assert!(has_manifest_extension("a.yaml"));
        assert!(has_manifest_extension("a.b.json"));
        assert!(!has_manifest_extension("a.YAML"));
        assert!(!has_manifest_extension("yaml"));
        assert!(has_manifest_extension(".yaml"));
        assert!(!has_manifest_extension("a.yaml.bak"));
    }

    #[test]
    fn evaluates_jsonnet_when_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let app = root.join("app");
        fs::create_dir_all(app.join("sub")).unwrap();
        fs::write(app.join("a.yaml"), "kind: A\n").unwrap();
        fs::write(app.join("common.libsonnet"), "{ kind: 'FromAppDir' }").unwrap();
        // Found in the app directory, not next to the importing file.
        fs::write(app.join("sub/b.jsonnet"), "[import 'common.libsonnet']").unwrap();
        fs::write(app.join("c.jsonnet"), "{ kind: std.extVar('k') }").unwrap();
        let mut options = Options {
            recurse: true,
            jsonnet_enabled: true,
            ..Options::default()
        };
        options.jsonnet.ext_vars.push(super::super::jsonnet::Var {
            name: "k".to_string(),
            value: "C".to_string(),
            code: false,
        });
        let kinds = |objects: Vec<Object>| -> Vec<String> {
            objects
                .iter()
                .map(|o| o["kind"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            kinds(render(&app, &root, &options).unwrap()),
            ["A", "C", "FromAppDir"]
        );
        options.jsonnet_enabled = false;
        assert_eq!(kinds(render(&app, &root, &options).unwrap()), ["A"]);
        options.jsonnet_enabled = true;
        fs::write(app.join("sub/b.jsonnet"), "[1]").unwrap();
        let err = render(&app, &root, &options).unwrap_err();
        assert!(
            matches!(&err, Error::JsonnetOutput { file, .. } if file == "sub/b.jsonnet"),
            "{err:?}"
        );
    }

    #[test]
    fn decodes_boms() {
        assert_eq!(decode_text(b"\xEF\xBB\xBFkind: A"), "kind: A");
        assert_eq!(decode_text(b"\xFF\xFEk\x00:\x00"), "k:");
    }
}
