//! Jsonnet for Directory apps, evaluated in-process.
//!
//! Argo CD evaluates every `.jsonnet` file of a Directory app with
//! go-jsonnet; here rsjsonnet-lang does it. What is kept from Argo CD:
//!
//! - top-level arguments and external variables are strings, or Jsonnet
//!   code when `code` is set; code is parsed lazily, so a broken variable
//!   that is never used is no error; top-level arguments are ignored when
//!   the file's value is not a function; a repeated name keeps its last
//!   value;
//! - imports are looked up as go-jsonnet's `FileImporter` does: next to the
//!   importing file, then in the library paths, last one first, then in
//!   the app directory (the first library path of Argo CD); `..` in an
//!   import path is resolved lexically; library paths are relative to the
//!   repository root;
//! - the output is one object or an array of objects, each with a `kind`
//!   (Argo CD unmarshals it into `unstructured.Unstructured`); `null` gives
//!   no objects.
//!
//! What is stricter: a library path must be relative and stay inside the
//! repository, and every imported file must resolve (symlinks included)
//! inside the repository root. Messages name files relative to the
//! repository root, never by their local absolute path.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};

use rsjsonnet_lang::arena::Arena;
use rsjsonnet_lang::ast::{BinaryOp, UnaryOp};
use rsjsonnet_lang::interner::InternedStr;
use rsjsonnet_lang::lexer::LexError;
use rsjsonnet_lang::parser::{ActualToken, ExpectedToken, ParseError};
use rsjsonnet_lang::program::{
    AnalyzeError, Callbacks, EvalError, EvalErrorKind, EvalErrorValueType, EvalStackTraceItem,
    ImportError, LoadError, NativeError, Program, Thunk, Value,
};
use rsjsonnet_lang::span::{SourceId, SpanContext, SpanId};
use rsjsonnet_lang::token::STokenKind;

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

/// Maximum Jsonnet call depth; deeper recursion is an evaluation error.
const MAX_STACK: usize = 500;

/// Stack trace lines kept in an error message.
const MAX_TRACE: usize = 20;

/// Evaluates the `.jsonnet` file `file` (inside `app_dir`, inside
/// `repo_root`) into Kubernetes objects. `relative` names it in errors.
pub fn evaluate(
    file: &Path,
    relative: &str,
    app_dir: &Path,
    repo_root: &Path,
    options: &Options,
) -> Result<Vec<serde_json::Value>, Error> {
    let failed = |message: String| Error::Jsonnet {
        file: relative.to_string(),
        message: sanitize(&message, repo_root),
    };
    // The callers pass canonical paths; canonicalizing again keeps the
    // confinement checks right if they ever do not.
    let root = repo_root
        .canonicalize()
        .map_err(|err| failed(format!("repository root: {}", err.kind())))?;
    let app = app_dir
        .canonicalize()
        .map_err(|err| failed(format!("app directory: {}", err.kind())))?;
    let main = match file.strip_prefix(app_dir) {
        Ok(rest) => app.join(rest),
        Err(_) => file.to_path_buf(),
    };
    let mut search = library_dirs(&root, &options.libs).map_err(&failed)?;
    // go-jsonnet tries its library paths last one first; Argo CD's first
    // one is the app directory.
    search.reverse();
    search.push(app);

    let arena = Arena::new();
    let mut program = Program::new(&arena);
    program.set_max_stack(MAX_STACK);
    let mut session = Session {
        root: &root,
        search,
        sources: HashMap::new(),
        deferred: HashMap::new(),
        imports: HashMap::new(),
        import_error: None,
        relative,
    };

    let mut ext_vars: Vec<(InternedStr<'_>, Thunk<'_>)> = Vec::new();
    for var in &options.ext_vars {
        let thunk = session.var_thunk(&mut program, "extvar", var);
        let name = program.intern_str(&var.name);
        ext_vars.retain(|(other, _)| *other != name);
        ext_vars.push((name, thunk));
    }
    for (name, thunk) in &ext_vars {
        program.add_ext_var(*name, thunk);
    }
    let mut tlas: Vec<(InternedStr<'_>, Thunk<'_>)> = Vec::new();
    for var in &options.tlas {
        let thunk = session.var_thunk(&mut program, "top-level-arg", var);
        let name = program.intern_str(&var.name);
        tlas.retain(|(other, _)| *other != name);
        tlas.push((name, thunk));
    }

    let root_thunk = session.load_main(&mut program, &main).map_err(&failed)?;
    let mut value = program
        .eval_value(&root_thunk, &mut session)
        .map_err(|err| failed(session.eval_error_message(&program, &err)))?;
    if value.is_function() {
        let function = program.value_to_thunk(&value);
        value = program
            .eval_call(&function, &[], &tlas, &mut session)
            .map_err(|err| failed(session.eval_error_message(&program, &err)))?;
    }
    let json = program
        .manifest_json(&value, false)
        .map_err(|err| failed(session.eval_error_message(&program, &err)))?;
    objects(&json).map_err(|message| Error::JsonnetOutput {
        file: relative.to_string(),
        message,
    })
}

/// Splits the manifested output into objects, as Argo CD's unmarshalling
/// into `[]*unstructured.Unstructured` or `unstructured.Unstructured` does.
fn objects(json: &str) -> Result<Vec<serde_json::Value>, String> {
    use serde_json::Value as Json;
    let parsed: Json = serde_json::from_str(json).map_err(|err| err.to_string())?;
    let check = |object: &Json| -> Result<(), String> {
        match object {
            Json::Object(map) => {
                if map
                    .get("kind")
                    .and_then(Json::as_str)
                    .is_some_and(|kind| !kind.is_empty())
                {
                    Ok(())
                } else {
                    Err(format!("Object 'Kind' is missing in '{object}'"))
                }
            }
            other => Err(format!(
                "expected an object, found {}",
                super::manifest::json_type_name(other)
            )),
        }
    };
    match parsed {
        // Unmarshalling `null` into a slice gives no objects.
        Json::Null => Ok(Vec::new()),
        Json::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                check(item).map_err(|message| format!("array item {index}: {message}"))?;
            }
            Ok(items)
        }
        object @ Json::Object(_) => {
            check(&object)?;
            Ok(vec![object])
        }
        other => Err(format!(
            "expected an object or an array of objects, found {}",
            super::manifest::json_type_name(&other)
        )),
    }
}

/// Resolves the library paths against the repository root (canonical).
/// Missing directories are kept (an import just does not find anything
/// there), as in Argo CD.
fn library_dirs(root: &Path, libs: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut dirs = Vec::with_capacity(libs.len());
    for lib in libs {
        let outside = || format!("library path {lib:?} resolved to outside repository root");
        // An absolute path names a directory from the repository root, as
        // in Argo CD (`/vendor` is `<root>/vendor`).
        let joined = normalize(&root.join(lib.trim_start_matches('/')));
        if !joined.starts_with(root) {
            return Err(outside());
        }
        match joined.canonicalize() {
            Ok(real) if real.starts_with(root) => dirs.push(real),
            Ok(_) => return Err(outside()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => dirs.push(joined),
            Err(err) => return Err(format!("library path {lib:?}: {}", err.kind())),
        }
    }
    Ok(dirs)
}

/// Resolves `.` and `..` without touching the file system, as Go's
/// `filepath.Join`/`Clean` do (`/..` is `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(component),
            },
            other => out.push(other),
        }
    }
    out
}

/// Replaces the local repository root in a message by repository-relative
/// paths; a last guard, since messages are built from relative names.
fn sanitize(message: &str, repo_root: &Path) -> String {
    let mut message = message.to_string();
    let mut roots = vec![repo_root.to_path_buf()];
    if let Ok(real) = repo_root.canonicalize() {
        if real != repo_root {
            roots.push(real);
        }
    }
    for root in roots {
        let root = root.to_string_lossy().into_owned();
        if root.len() > 1 {
            message = message.replace(&format!("{root}/"), "").replace(&root, ".");
        }
    }
    message
}

/// A loaded Jsonnet source, for error locations and relative imports.
struct Source {
    /// Name in messages and `std.thisFile`: the path relative to the
    /// repository root, or `<extvar:NAME>`-style for variables.
    display: String,
    /// Directory searched first by its imports (real files only).
    dir: Option<PathBuf>,
    data: Vec<u8>,
}

struct Session<'p, 'a> {
    /// Canonical repository root.
    root: &'a Path,
    /// Library paths (last one first), then the app directory.
    search: Vec<PathBuf>,
    sources: HashMap<SourceId, Source>,
    /// Sources standing in for code variables that failed to parse: an
    /// `error` expression, so that the failure shows only when used.
    deferred: HashMap<SourceId, String>,
    /// Imported files by the path they were found at.
    imports: HashMap<PathBuf, Thunk<'p>>,
    /// Why the last import failed (rsjsonnet's error carries nothing).
    import_error: Option<String>,
    /// The evaluated file relative to the app directory, for traces.
    relative: &'a str,
}

impl<'p> Session<'p, '_> {
    fn display(&self, path: &Path) -> String {
        match path.strip_prefix(self.root) {
            Ok(rest) if rest.as_os_str().is_empty() => ".".to_string(),
            Ok(rest) => rest.to_string_lossy().into_owned(),
            Err(_) => path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    fn load(
        &mut self,
        program: &mut Program<'p>,
        data: Vec<u8>,
        display: String,
        dir: Option<PathBuf>,
    ) -> Result<Thunk<'p>, String> {
        let (context, id) = program.span_manager_mut().insert_source_context(data.len());
        let loaded = program.load_source(context, &data, true, &display);
        self.sources.insert(id, Source { display, dir, data });
        loaded.map_err(|err| self.load_error_message(program, &err))
    }

    /// A string variable, or a code variable (lazily failing when it does
    /// not parse, as go-jsonnet's).
    fn var_thunk(&mut self, program: &mut Program<'p>, kind: &str, var: &Var) -> Thunk<'p> {
        if !var.code {
            return program.value_to_thunk(&Value::string(&var.value));
        }
        let display = format!("<{kind}:{}>", var.name);
        match self.load(
            program,
            var.value.clone().into_bytes(),
            display.clone(),
            None,
        ) {
            Ok(thunk) => thunk,
            Err(message) => {
                let literal = serde_json::to_string(&message).unwrap_or_default();
                let stand_in = format!("error {literal}").into_bytes();
                let (context, id) = program
                    .span_manager_mut()
                    .insert_source_context(stand_in.len());
                let thunk = program
                    .load_source(context, &stand_in, false, &display)
                    .expect("an error expression with a JSON string parses");
                self.sources.insert(
                    id,
                    Source {
                        display,
                        dir: None,
                        data: stand_in,
                    },
                );
                self.deferred.insert(id, message);
                thunk
            }
        }
    }

    fn load_main(&mut self, program: &mut Program<'p>, main: &Path) -> Result<Thunk<'p>, String> {
        let display = self.display(main);
        let real = main
            .canonicalize()
            .map_err(|err| format!("{display}: {}", err.kind()))?;
        if !real.starts_with(self.root) {
            return Err(format!("{display} resolved to outside repository root"));
        }
        let data = fs::read(&real).map_err(|err| format!("{display}: {}", err.kind()))?;
        let thunk = self.load(program, data, display, main.parent().map(Path::to_path_buf))?;
        self.imports.insert(main.to_path_buf(), thunk.clone());
        Ok(thunk)
    }

    /// Finds an import as go-jsonnet's `FileImporter` does, confined to
    /// the repository. Returns the path it was found at (lexical) and the
    /// real file.
    fn find(
        &self,
        program: &Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<(PathBuf, PathBuf), String> {
        let import = Path::new(path);
        let mut candidates = Vec::new();
        if import.is_absolute() {
            candidates.push(normalize(import));
        } else {
            let from_dir = self
                .sources
                .get(&self.source_of(program, from))
                .and_then(|source| source.dir.as_deref());
            for base in from_dir
                .into_iter()
                .chain(self.search.iter().map(PathBuf::as_path))
            {
                candidates.push(normalize(&base.join(import)));
            }
        }
        let outside = || format!("import {path:?} resolved to outside repository root");
        let mut escaped = false;
        for candidate in candidates {
            // Nothing outside the repository is even looked at.
            if !candidate.starts_with(self.root) {
                escaped = true;
                continue;
            }
            match candidate.canonicalize() {
                Ok(real) if real.starts_with(self.root) => return Ok((candidate, real)),
                Ok(_) => return Err(outside()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    // Missing behind a symlink that leads out: say so, not
                    // whether the file exists out there.
                    escaped |= candidate
                        .ancestors()
                        .skip(1)
                        .find_map(|dir| dir.canonicalize().ok())
                        .is_some_and(|real| !real.starts_with(self.root));
                }
                Err(err) => {
                    return Err(format!(
                        "couldn't open import {path:?}: {}: {}",
                        self.display(&candidate),
                        err.kind()
                    ))
                }
            }
        }
        if escaped {
            Err(outside())
        } else {
            Err(format!(
                "couldn't open import {path:?}: no match locally or in the Jsonnet library paths"
            ))
        }
    }

    fn read_import(
        &mut self,
        program: &Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<(PathBuf, Vec<u8>), ImportError> {
        let found = self.find(program, from, path).and_then(|(found, real)| {
            fs::read(&real)
                .map(|data| (found.clone(), data))
                .map_err(|err| {
                    format!(
                        "couldn't open import {path:?}: {}: {}",
                        self.display(&found),
                        err.kind()
                    )
                })
        });
        found.map_err(|message| {
            self.import_error = Some(format!("RUNTIME ERROR: {message}"));
            ImportError
        })
    }

    fn source_of(&self, program: &Program<'p>, span: SpanId) -> SourceId {
        let (context, _, _) = program.span_manager().get_span(span);
        let SpanContext::Source(id) = *program.span_manager().get_context(context);
        id
    }

    /// `file:line:col-col` (or `file:(l:c)-(l:c)` across lines).
    fn location(&self, program: &Program<'p>, span: SpanId) -> String {
        let (context, start, end) = program.span_manager().get_span(span);
        let SpanContext::Source(id) = *program.span_manager().get_context(context);
        let (stdlib_id, stdlib_data) = program.get_stdlib_source();
        let (name, data): (&str, &[u8]) = if id == stdlib_id {
            ("<std>", stdlib_data)
        } else if let Some(source) = self.sources.get(&id) {
            (&source.display, &source.data)
        } else {
            return "<unknown>".to_string();
        };
        let (line, column) = line_column(data, start);
        let (end_line, end_column) = line_column(data, end);
        if line == end_line {
            format!("{name}:{line}:{column}-{end_column}")
        } else {
            format!("{name}:({line}:{column})-({end_line}:{end_column})")
        }
    }

    fn static_error(&self, program: &Program<'p>, span: SpanId, message: &str) -> String {
        format!("STATIC ERROR: {}: {message}", self.location(program, span))
    }

    fn load_error_message(&self, program: &Program<'p>, err: &LoadError) -> String {
        let (span, message) = match err {
            LoadError::Lex(err) => lex_error(err),
            LoadError::Parse(ParseError::Expected {
                span,
                expected,
                instead,
            }) => {
                let expected: Vec<String> = expected.iter().map(expected_token).collect();
                let expected = match expected.as_slice() {
                    [] => String::new(),
                    [one] => one.clone(),
                    [init @ .., last] => format!("{} or {last}", init.join(", ")),
                };
                (
                    *span,
                    format!("expected {expected}, found {}", actual_token(instead)),
                )
            }
            LoadError::Analyze(err) => analyze_error(err),
        };
        self.static_error(program, span, &message)
    }

    fn eval_error_message(&mut self, program: &Program<'p>, err: &EvalError) -> String {
        let (span, headline) = match &err.kind {
            EvalErrorKind::ImportFailed { span, path } => (
                Some(*span),
                self.import_error
                    .take()
                    .unwrap_or_else(|| format!("RUNTIME ERROR: couldn't import {path:?}")),
            ),
            EvalErrorKind::ExplicitError { span, message } => {
                match self.deferred.get(&self.source_of(program, *span)) {
                    Some(deferred) => (None, deferred.clone()),
                    None => (Some(*span), format!("RUNTIME ERROR: {message}")),
                }
            }
            kind => {
                let (span, message) = eval_error(kind);
                (span, format!("RUNTIME ERROR: {message}"))
            }
        };
        let mut out = headline;
        let mut lines = Vec::new();
        if let Some(span) = span {
            lines.push(self.location(program, span));
        }
        for item in &err.stack_trace {
            let line = self.trace_line(program, item);
            if lines.last() != Some(&line) {
                lines.push(line);
            }
        }
        let hidden = lines.len().saturating_sub(MAX_TRACE);
        for line in lines.iter().take(MAX_TRACE) {
            let _ = write!(out, "\n\t{line}");
        }
        if hidden > 0 {
            let _ = write!(out, "\n\t... {hidden} more");
        }
        let _ = write!(out, "\n\tDuring evaluation of {}", self.relative);
        out
    }

    fn trace_line(&self, program: &Program<'p>, item: &EvalStackTraceItem) -> String {
        let at = |span: &Option<SpanId>| match span {
            Some(span) => format!("{}\t", self.location(program, *span)),
            None => String::new(),
        };
        match item {
            EvalStackTraceItem::Expr { span } => self.location(program, *span),
            EvalStackTraceItem::Call { span, name } => format!(
                "{}function <{}>",
                at(span),
                name.as_deref().unwrap_or("anonymous")
            ),
            EvalStackTraceItem::Variable { span, name } => {
                format!("{}\tvariable <{name}>", self.location(program, *span))
            }
            EvalStackTraceItem::ArrayItem { span, index } => {
                format!("{}array item {index}", at(span))
            }
            EvalStackTraceItem::ObjectField { span, name } => {
                format!("{}field <{name}>", at(span))
            }
            EvalStackTraceItem::CompareArrayItem { index } => {
                format!("comparing array item {index}")
            }
            EvalStackTraceItem::CompareObjectField { name } => {
                format!("comparing field <{name}>")
            }
            EvalStackTraceItem::ManifestArrayItem { index } => {
                format!("manifesting array item {index}")
            }
            EvalStackTraceItem::ManifestObjectField { name } => {
                format!("manifesting field <{name}>")
            }
            EvalStackTraceItem::Import { span } => {
                format!("{}\timport", self.location(program, *span))
            }
        }
    }
}

impl<'p> Callbacks<'p> for Session<'p, '_> {
    fn import(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Thunk<'p>, ImportError> {
        let (found, real) = self.find(program, from, path).map_err(|message| {
            self.import_error = Some(format!("RUNTIME ERROR: {message}"));
            ImportError
        })?;
        if let Some(thunk) = self.imports.get(&found) {
            return Ok(thunk.clone());
        }
        let display = self.display(&found);
        let data = fs::read(&real).map_err(|err| {
            self.import_error = Some(format!(
                "RUNTIME ERROR: couldn't open import {path:?}: {display}: {}",
                err.kind()
            ));
            ImportError
        })?;
        let dir = found.parent().map(Path::to_path_buf);
        let thunk = self.load(program, data, display, dir).map_err(|message| {
            self.import_error = Some(message);
            ImportError
        })?;
        self.imports.insert(found, thunk.clone());
        Ok(thunk)
    }

    fn import_str(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<String, ImportError> {
        let (_, data) = self.read_import(program, from, path)?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }

    fn import_bin(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Vec<u8>, ImportError> {
        let (_, data) = self.read_import(program, from, path)?;
        Ok(data)
    }

    fn trace(&mut self, _program: &mut Program<'p>, message: &str, _: &[EvalStackTraceItem]) {
        tracing::debug!(file = self.relative, message, "jsonnet std.trace");
    }

    fn native_call(
        &mut self,
        _program: &mut Program<'p>,
        _name: InternedStr<'p>,
        _args: &[Value<'p>],
    ) -> Result<Value<'p>, NativeError> {
        // No native function is registered, so `std.native` never yields
        // one that could be called.
        Err(NativeError)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(data: &[u8], offset: usize) -> (usize, usize) {
    let before = &data[..offset.min(data.len())];
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |at| at + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

fn lex_error(err: &LexError) -> (SpanId, String) {
    match err {
        LexError::InvalidChar { span, chr } => (*span, format!("invalid character {chr:?}")),
        LexError::InvalidUtf8 { span, seq } => {
            (*span, format!("invalid UTF-8 sequence {seq:02x?}"))
        }
        LexError::UnfinishedMultilineComment { span } => {
            (*span, "multi-line comment is not terminated".to_string())
        }
        LexError::LeadingZeroInNumber { span } => (*span, "leading zero in number".to_string()),
        LexError::MissingFracDigits { span } => {
            (*span, "missing digits after decimal point".to_string())
        }
        LexError::MissingExpDigits { span } => (*span, "missing digits in exponent".to_string()),
        LexError::MissingDigitAfterUnderscore { span } => {
            (*span, "missing digit after `_` in number".to_string())
        }
        LexError::ExpOverflow { span } => (*span, "exponent overflow".to_string()),
        LexError::InvalidEscapeInString { span, chr } => {
            (*span, format!("invalid escape sequence \\{chr} in string"))
        }
        LexError::IncompleteUnicodeEscape { span } => {
            (*span, "incomplete unicode escape sequence".to_string())
        }
        LexError::InvalidUtf16EscapeSequence { span, cu1, cu2 } => (
            *span,
            match cu2 {
                Some(cu2) => format!("invalid unicode escape sequence \\u{cu1:04x}\\u{cu2:04x}"),
                None => format!("invalid unicode escape sequence \\u{cu1:04x}"),
            },
        ),
        LexError::UnfinishedString { span } => (*span, "unterminated string".to_string()),
        LexError::MissingLineBreakAfterTextBlockStart { span } => {
            (*span, "missing line break after `|||`".to_string())
        }
        LexError::MissingWhitespaceTextBlockStart { span } => (
            *span,
            "text block's first line must start with whitespace".to_string(),
        ),
        LexError::InvalidTextBlockTermination { span } => {
            (*span, "text block not terminated properly".to_string())
        }
    }
}

fn analyze_error(err: &AnalyzeError) -> (SpanId, String) {
    match err {
        AnalyzeError::UnknownVariable { span, name } => {
            (*span, format!("unknown variable: {name}"))
        }
        AnalyzeError::SelfOutsideObject { self_span } => (
            *self_span,
            "can't use self outside of an object".to_string(),
        ),
        AnalyzeError::SuperOutsideObject { super_span } => (
            *super_span,
            "can't use super outside of an object".to_string(),
        ),
        AnalyzeError::DollarOutsideObject { dollar_span } => {
            (*dollar_span, "can't use $ outside of an object".to_string())
        }
        AnalyzeError::RepeatedLocalName {
            repeated_span,
            name,
            ..
        } => (*repeated_span, format!("duplicate local var: {name}")),
        AnalyzeError::RepeatedFieldName {
            repeated_span,
            name,
            ..
        } => (*repeated_span, format!("duplicate field: {name}")),
        AnalyzeError::RepeatedParamName {
            repeated_span,
            name,
            ..
        } => (*repeated_span, format!("duplicate parameter: {name}")),
        AnalyzeError::PositionalArgAfterNamed { arg_span } => (
            *arg_span,
            "positional argument after a named argument is not allowed".to_string(),
        ),
        AnalyzeError::TextBlockAsImportPath { span } => {
            (*span, "import path cannot be a text block".to_string())
        }
        AnalyzeError::ComputedImportPath { span } => {
            (*span, "computed imports are not allowed".to_string())
        }
    }
}

fn expected_token(token: &ExpectedToken) -> String {
    match token {
        ExpectedToken::EndOfFile => "end of file".to_string(),
        ExpectedToken::Simple(kind) => format!("`{}`", token_text(*kind)),
        ExpectedToken::Ident => "identifier".to_string(),
        ExpectedToken::Number => "number".to_string(),
        ExpectedToken::String => "string".to_string(),
        ExpectedToken::TextBlock => "text block".to_string(),
        ExpectedToken::Expr => "expression".to_string(),
        ExpectedToken::BinaryOp => "binary operator".to_string(),
    }
}

fn actual_token(token: &ActualToken) -> String {
    match token {
        ActualToken::EndOfFile => "end of file".to_string(),
        ActualToken::Simple(kind) => format!("`{}`", token_text(*kind)),
        ActualToken::OtherOp(op) => format!("`{op}`"),
        ActualToken::Ident(name) => format!("identifier `{name}`"),
        ActualToken::Number => "number".to_string(),
        ActualToken::String => "string".to_string(),
        ActualToken::TextBlock => "text block".to_string(),
    }
}

fn token_text(kind: STokenKind) -> &'static str {
    use STokenKind::*;
    match kind {
        Assert => "assert",
        Else => "else",
        Error => "error",
        False => "false",
        For => "for",
        Function => "function",
        If => "if",
        Import => "import",
        Importstr => "importstr",
        Importbin => "importbin",
        In => "in",
        Local => "local",
        Null => "null",
        Tailstrict => "tailstrict",
        Then => "then",
        Self_ => "self",
        Super => "super",
        True => "true",
        Exclam => "!",
        ExclamEq => "!=",
        Dollar => "$",
        Percent => "%",
        Amp => "&",
        AmpAmp => "&&",
        LeftParen => "(",
        RightParen => ")",
        Asterisk => "*",
        Plus => "+",
        PlusColon => "+:",
        PlusColonColon => "+::",
        PlusColonColonColon => "+:::",
        Comma => ",",
        Minus => "-",
        Dot => ".",
        Slash => "/",
        Colon => ":",
        ColonColon => "::",
        ColonColonColon => ":::",
        Semicolon => ";",
        Lt => "<",
        LtLt => "<<",
        LtEq => "<=",
        Eq => "=",
        EqEq => "==",
        Gt => ">",
        GtEq => ">=",
        GtGt => ">>",
        LeftBracket => "[",
        RightBracket => "]",
        Hat => "^",
        LeftBrace => "{",
        Pipe => "|",
        PipePipe => "||",
        RightBrace => "}",
        Tilde => "~",
    }
}

fn type_name(value_type: EvalErrorValueType) -> &'static str {
    match value_type {
        EvalErrorValueType::Null => "null",
        EvalErrorValueType::Bool => "boolean",
        EvalErrorValueType::Number => "number",
        EvalErrorValueType::String => "string",
        EvalErrorValueType::Array => "array",
        EvalErrorValueType::Object => "object",
        EvalErrorValueType::Function => "function",
    }
}

fn unary_op(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Minus => "-",
        UnaryOp::Plus => "+",
        UnaryOp::BitwiseNot => "~",
        UnaryOp::LogicNot => "!",
    }
}

fn binary_op(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Rem => "%",
        BinaryOp::Shl => "<<",
        BinaryOp::Shr => ">>",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::Gt => ">",
        BinaryOp::Ge => ">=",
        BinaryOp::Eq => "==",
        BinaryOp::Ne => "!=",
        BinaryOp::In => "in",
        BinaryOp::BitwiseAnd => "&",
        BinaryOp::BitwiseOr => "|",
        BinaryOp::BitwiseXor => "^",
        BinaryOp::LogicAnd => "&&",
        BinaryOp::LogicOr => "||",
    }
}

/// The message of a runtime error and where it happened.
fn eval_error(kind: &EvalErrorKind) -> (Option<SpanId>, String) {
    use EvalErrorKind as K;
    match kind {
        K::StackOverflow => (None, "max stack frames exceeded".to_string()),
        K::InfiniteRecursion => (None, "infinite recursion detected".to_string()),
        K::InvalidIndexedType { span, got_type } => (
            Some(*span),
            format!("cannot index a value of type {}", type_name(*got_type)),
        ),
        K::InvalidSlicedType { span, got_type } => (
            Some(*span),
            format!("cannot slice a value of type {}", type_name(*got_type)),
        ),
        K::SliceIndexOrStepIsNotNumber { span, got_type } => (
            Some(*span),
            format!(
                "slice index or step must be a number, got {}",
                type_name(*got_type)
            ),
        ),
        K::StringIndexIsNotNumber { span, got_type } => (
            Some(*span),
            format!(
                "string index must be a number, got {}",
                type_name(*got_type)
            ),
        ),
        K::ArrayIndexIsNotNumber { span, got_type } => (
            Some(*span),
            format!("array index must be a number, got {}", type_name(*got_type)),
        ),
        K::NumericIndexIsNotValid { span, index } => {
            (Some(*span), format!("{index} is not a valid numeric index"))
        }
        K::NumericIndexOutOfRange {
            span,
            index,
            length,
        } => (
            Some(*span),
            format!("index {index} out of bounds, length {length}"),
        ),
        K::ObjectIndexIsNotString { span, got_type } => (
            Some(*span),
            format!(
                "object index must be a string, got {}",
                type_name(*got_type)
            ),
        ),
        K::RepeatedFieldName { span, name } => {
            (Some(*span), format!("duplicate field name: {name:?}"))
        }
        K::FieldNameIsNotString { span, got_type } => (
            Some(*span),
            format!("field name must be string, got {}", type_name(*got_type)),
        ),
        K::UnknownObjectField { span, field_name } => {
            (Some(*span), format!("field does not exist: {field_name}"))
        }
        K::FieldOfNonObject { span } => (
            Some(*span),
            "attempted to access a field of a non-object value".to_string(),
        ),
        K::SuperWithoutSuperObject { span } => (
            Some(*span),
            "attempt to use super when there is no super class".to_string(),
        ),
        K::ForSpecValueIsNotArray { span, got_type } => (
            Some(*span),
            format!(
                "in comprehension, expected an array, got {}",
                type_name(*got_type)
            ),
        ),
        K::CondIsNotBool { span, got_type } => (
            Some(*span),
            format!("condition must be boolean, got {}", type_name(*got_type)),
        ),
        K::CalleeIsNotFunction { span, got_type } => (
            *span,
            format!(
                "unexpected type {}, expected function",
                type_name(*got_type)
            ),
        ),
        K::TooManyCallArgs { span, num_params } => (
            *span,
            format!("too many arguments, function has {num_params} parameter(s)"),
        ),
        K::UnknownCallParam { span, param_name } => {
            (*span, format!("function has no parameter {param_name}"))
        }
        K::RepeatedCallParam { span, param_name } => {
            (*span, format!("argument {param_name} already provided"))
        }
        K::CallParamNotBound { span, param_name } => {
            (*span, format!("missing argument: {param_name}"))
        }
        K::NativeCallFailed => (None, "native function call failed".to_string()),
        K::InvalidUnaryOpType { span, op, rhs_type } => (
            Some(*span),
            format!(
                "unary operator {} does not operate on type {}",
                unary_op(*op),
                type_name(*rhs_type)
            ),
        ),
        K::InvalidBinaryOpTypes {
            span,
            op,
            lhs_type,
            rhs_type,
        } => (
            *span,
            format!(
                "binary operator {} does not operate on types {} and {}",
                binary_op(*op),
                type_name(*lhs_type),
                type_name(*rhs_type)
            ),
        ),
        K::NumberNotBitwiseSafe { span } => (
            *span,
            "numeric value cannot be safely used in a bitwise operation".to_string(),
        ),
        K::NumberOverflow { span } => (*span, "overflow".to_string()),
        K::NumberNan { span } => (*span, "not a number".to_string()),
        K::DivByZero { span } => (*span, "division by zero".to_string()),
        K::ShiftByNegative { span } => (*span, "shift by negative exponent".to_string()),
        K::InvalidStdFuncArgType {
            func_name,
            arg_index,
            expected_types,
            got_type,
        } => {
            let expected: Vec<&str> = expected_types.iter().map(|t| type_name(*t)).collect();
            (
                None,
                format!(
                    "argument {} of std.{func_name} must be {}, got {}",
                    arg_index + 1,
                    expected.join(" or "),
                    type_name(*got_type)
                ),
            )
        }
        K::AssertFailed { span, message } => (
            Some(*span),
            message
                .clone()
                .unwrap_or_else(|| "Assertion failed".to_string()),
        ),
        K::AssertEqualFailed { lhs, rhs } => (None, format!("Assertion failed. {lhs} != {rhs}")),
        K::ExplicitError { span, message } => (Some(*span), message.clone()),
        K::ImportFailed { span, path } => (Some(*span), format!("couldn't import {path:?}")),
        K::UnknownExtVar { name } => (None, format!("undefined external variable: {name}")),
        K::ManifestFunction => (None, "couldn't manifest function as JSON".to_string()),
        K::CompareNullInequality => (None, "nulls cannot be compared for inequality".to_string()),
        K::CompareBooleanInequality => (
            None,
            "booleans cannot be compared for inequality".to_string(),
        ),
        K::CompareObjectInequality => (
            None,
            "objects cannot be compared for inequality".to_string(),
        ),
        K::CompareFunctions => (None, "functions cannot be compared".to_string()),
        K::CompareDifferentTypesInequality { lhs_type, rhs_type } => (
            None,
            format!(
                "cannot compare values of types {} and {}",
                type_name(*lhs_type),
                type_name(*rhs_type)
            ),
        ),
        K::PrimitiveEqualsNonPrimitive { got_type } => (
            None,
            format!(
                "std.primitiveEquals cannot compare values of type {}",
                type_name(*got_type)
            ),
        ),
        K::Other { span, message } => (*span, message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A temporary directory holding `repo/app` and `outside`.
    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
        root: PathBuf,
        app: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path().canonicalize().unwrap();
            let root = base.join("repo");
            let app = root.join("app");
            fs::create_dir_all(&app).unwrap();
            fs::create_dir_all(base.join("outside")).unwrap();
            Fixture {
                _dir: dir,
                base,
                root,
                app,
            }
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.base.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        /// Evaluates `repo/app/<relative>`.
        fn eval(&self, relative: &str, options: &Options) -> Result<Vec<serde_json::Value>, Error> {
            evaluate(
                &self.app.join(relative),
                relative,
                &self.app,
                &self.root,
                options,
            )
        }

        fn eval_text(
            &self,
            text: &str,
            options: &Options,
        ) -> Result<Vec<serde_json::Value>, Error> {
            self.write("repo/app/main.jsonnet", text);
            self.eval("main.jsonnet", options)
        }

        fn error(&self, text: &str, options: &Options) -> (String, String) {
            match self.eval_text(text, options).unwrap_err() {
                err @ Error::Jsonnet { .. } => {
                    let Error::Jsonnet {
                        ref file,
                        ref message,
                    } = err
                    else {
                        unreachable!()
                    };
                    let shown = err.to_string();
                    assert!(
                        !shown.contains(self.base.to_str().unwrap()),
                        "absolute path in {shown:?}"
                    );
                    assert_eq!(file, "main.jsonnet");
                    (message.clone(), shown)
                }
                other => panic!("expected a Jsonnet error, got {other:?}"),
            }
        }
    }

    fn var(name: &str, value: &str, code: bool) -> Var {
        Var {
            name: name.to_string(),
            value: value.to_string(),
            code,
        }
    }

    #[test]
    fn object_output_keeps_integers() {
        let f = Fixture::new();
        let objects = f
            .eval_text(
                "{ apiVersion: 'v1', kind: 'ConfigMap', data: { n: 1, half: 1.5, big: 1e3 }, hidden:: 2 }",
                &Options::default(),
            )
            .unwrap();
        assert_eq!(
            objects,
            vec![
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"n": 1, "half": 1.5, "big": 1000}})
            ]
        );
        assert!(objects[0]["data"]["n"].is_i64() || objects[0]["data"]["n"].is_u64());
        assert!(objects[0]["data"]["half"].is_f64());
    }

    #[test]
    fn array_output_and_null() {
        let f = Fixture::new();
        let objects = f
            .eval_text(
                "[{ kind: 'A', metadata: { name: 'a' } }, { kind: 'B' }]",
                &Options::default(),
            )
            .unwrap();
        assert_eq!(
            objects,
            vec![
                json!({"kind": "A", "metadata": {"name": "a"}}),
                json!({"kind": "B"})
            ]
        );
        assert_eq!(
            f.eval_text("[]", &Options::default()).unwrap(),
            Vec::<serde_json::Value>::new()
        );
        assert_eq!(
            f.eval_text("null", &Options::default()).unwrap(),
            Vec::<serde_json::Value>::new()
        );
    }

    #[test]
    fn output_must_be_objects_with_kind() {
        let f = Fixture::new();
        for (text, needle) in [
            (
                "[{ kind: 'A' }, 1]",
                "array item 1: expected an object, found number",
            ),
            (
                "[{ kind: 'A' }, {}]",
                "array item 1: Object 'Kind' is missing in '{}'",
            ),
            ("{ kind: '' }", "Object 'Kind' is missing"),
            (
                "'text'",
                "expected an object or an array of objects, found string",
            ),
            ("true", "found bool"),
        ] {
            match f.eval_text(text, &Options::default()).unwrap_err() {
                err @ Error::JsonnetOutput { .. } => {
                    let shown = err.to_string();
                    assert!(
                        shown.starts_with("Failed to unmarshal generated json \"main.jsonnet\": "),
                        "{shown}"
                    );
                    assert!(shown.contains(needle), "{text}: {shown}");
                }
                other => panic!("{text}: expected JsonnetOutput, got {other:?}"),
            }
        }
    }

    #[test]
    fn top_level_arguments() {
        let f = Fixture::new();
        let text = "function(name, replicas=1) { kind: 'Deployment', metadata: { name: name }, spec: { replicas: replicas } }";
        let options = Options {
            tlas: vec![
                var("name", "ignored", false),
                var("name", "web", false),
                var("replicas", "1 + 2", true),
            ],
            ..Options::default()
        };
        assert_eq!(
            f.eval_text(text, &options).unwrap(),
            vec![
                json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}})
            ]
        );
        // A string TLA stays a string, even when it looks like code.
        let options = Options {
            tlas: vec![var("name", "web", false), var("replicas", "3", false)],
            ..Options::default()
        };
        assert_eq!(
            f.eval_text(text, &options).unwrap()[0]["spec"]["replicas"],
            json!("3")
        );
        // Not a function: top-level arguments are ignored, as go-jsonnet does.
        assert_eq!(
            f.eval_text("{ kind: 'A' }", &options).unwrap(),
            vec![json!({"kind": "A"})]
        );
        // A missing argument is an evaluation error.
        let (message, _) = f.error(text, &Options::default());
        assert!(message.contains("missing argument: name"), "{message}");
    }

    #[test]
    fn external_variables() {
        let f = Fixture::new();
        let options = Options {
            ext_vars: vec![
                var("env", "prod", false),
                var("count", "[1, 2][1] * 10", true),
                var("obj", "{ a: std.length('abc') }", true),
                var("unused", "{ broken", true),
            ],
            ..Options::default()
        };
        assert_eq!(
            f.eval_text(
                "{ kind: 'A', env: std.extVar('env'), count: std.extVar('count'), obj: std.extVar('obj') }",
                &options
            )
            .unwrap(),
            vec![json!({"kind": "A", "env": "prod", "count": 20, "obj": {"a": 3}})]
        );
        // A broken code variable fails only when used.
        let (message, _) = f.error("{ kind: 'A', x: std.extVar('unused') }", &options);
        assert!(
            message.starts_with("STATIC ERROR: <extvar:unused>:1:"),
            "{message}"
        );
        let (message, _) = f.error("{ kind: std.extVar('nope') }", &options);
        assert!(
            message.contains("undefined external variable: nope"),
            "{message}"
        );
    }

    #[test]
    fn libraries_are_relative_to_the_repository_root() {
        let f = Fixture::new();
        f.write(
            "repo/vendor/lib.libsonnet",
            "{ kind(name):: 'From' + name }",
        );
        f.write(
            "repo/other/lib.libsonnet",
            "{ kind(name):: 'Other' + name }",
        );
        f.write("repo/app/lib.libsonnet", "{ kind(name):: 'App' + name }");
        let text = "local lib = import 'lib.libsonnet'; { kind: lib.kind('Vendor') }";
        let options = Options {
            libs: vec!["other".to_string(), "./vendor/../vendor".to_string()],
            ..Options::default()
        };
        // Next to the file first.
        assert_eq!(
            f.eval_text(text, &options).unwrap(),
            vec![json!({"kind": "AppVendor"})]
        );
        // Then the library paths, the last one first (go-jsonnet).
        fs::remove_file(f.app.join("lib.libsonnet")).unwrap();
        assert_eq!(
            f.eval_text(text, &options).unwrap(),
            vec![json!({"kind": "FromVendor"})]
        );
        // A missing library directory is no error in itself.
        let options = Options {
            libs: vec!["missing".to_string()],
            ..Options::default()
        };
        let (message, _) = f.error(text, &options);
        assert!(
            message.contains("couldn't open import \"lib.libsonnet\": no match locally or in the Jsonnet library paths"),
            "{message}"
        );
    }

    #[test]
    fn relative_imports_and_importstr_importbin() {
        let f = Fixture::new();
        f.write(
            "repo/app/sub/helper.libsonnet",
            "{ name: (import '../common/name.libsonnet') }",
        );
        f.write("repo/app/common/name.libsonnet", "'shared'");
        f.write("repo/app/sub/data.txt", "hello\n");
        let objects = f
            .eval_text(
                "local h = import 'sub/helper.libsonnet'; { kind: 'A', name: h.name, text: importstr 'sub/data.txt', bytes: importbin 'sub/data.txt', again: (import 'sub/helper.libsonnet').name }",
                &Options::default(),
            )
            .unwrap();
        assert_eq!(
            objects,
            vec![
                json!({"kind": "A", "name": "shared", "text": "hello\n", "bytes": [104, 101, 108, 108, 111, 10], "again": "shared"})
            ]
        );
        // The app directory is searched too, from files elsewhere.
        f.write("repo/lib/l.libsonnet", "import 'in-app.libsonnet'");
        f.write("repo/app/in-app.libsonnet", "{ kind: 'InApp' }");
        let options = Options {
            libs: vec!["lib".to_string()],
            ..Options::default()
        };
        assert_eq!(
            f.eval_text("import 'l.libsonnet'", &options).unwrap(),
            vec![json!({"kind": "InApp"})]
        );
    }

    #[test]
    fn library_path_escaping_the_root_is_an_error() {
        let f = Fixture::new();
        // `/etc` would be `<root>/etc` (absent, so harmless), as in Argo CD.
        for lib in ["../outside", "app/../../outside", "/../outside"] {
            let options = Options {
                libs: vec![lib.to_string()],
                ..Options::default()
            };
            let (message, _) = f.error("{ kind: 'A' }", &options);
            assert!(
                message.contains(&format!("library path {lib:?}")),
                "{message}"
            );
        }
        std::os::unix::fs::symlink(f.base.join("outside"), f.root.join("linked")).unwrap();
        let options = Options {
            libs: vec!["linked".to_string()],
            ..Options::default()
        };
        let (message, _) = f.error("{ kind: 'A' }", &options);
        assert!(
            message.contains("library path \"linked\" resolved to outside repository root"),
            "{message}"
        );
    }

    #[test]
    fn imports_escaping_the_root_are_errors() {
        let f = Fixture::new();
        f.write("outside/secret.libsonnet", "{ kind: 'Secret' }");
        let (message, _) = f.error(
            "import '../../outside/secret.libsonnet'",
            &Options::default(),
        );
        assert!(
            message.starts_with(
                "RUNTIME ERROR: import \"../../outside/secret.libsonnet\" resolved to outside repository root"
            ),
            "{message}"
        );
        assert!(message.contains("app/main.jsonnet:1:1-"), "{message}");
        // The same message whether or not the file exists out there.
        let (missing, _) = f.error("import '../../outside/none.libsonnet'", &Options::default());
        assert!(
            missing.contains("resolved to outside repository root"),
            "{missing}"
        );
        let absolute = f.base.join("outside/secret.libsonnet");
        // (The message quotes the import as written, absolute here.)
        let err = f
            .eval_text(
                &format!("importstr '{}'", absolute.display()),
                &Options::default(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::Jsonnet { message, .. }
                if message.contains("resolved to outside repository root")),
            "{err:?}"
        );
    }

    #[test]
    fn symlinked_import_escaping_the_root_is_an_error() {
        let f = Fixture::new();
        f.write("outside/secret.libsonnet", "{ kind: 'Secret' }");
        std::os::unix::fs::symlink(
            f.base.join("outside/secret.libsonnet"),
            f.app.join("link.libsonnet"),
        )
        .unwrap();
        let (message, _) = f.error("import 'link.libsonnet'", &Options::default());
        assert!(
            message.contains("import \"link.libsonnet\" resolved to outside repository root"),
            "{message}"
        );
        std::os::unix::fs::symlink(f.base.join("outside"), f.app.join("dir")).unwrap();
        let (message, _) = f.error("import 'dir/none.libsonnet'", &Options::default());
        assert!(
            message.contains("resolved to outside repository root"),
            "{message}"
        );
        let (message, _) = f.error("importbin 'link.libsonnet'", &Options::default());
        assert!(
            message.contains("resolved to outside repository root"),
            "{message}"
        );
        // A symlink inside the repository is fine.
        f.write("repo/shared/ok.libsonnet", "{ kind: 'Ok' }");
        std::os::unix::fs::symlink(
            f.root.join("shared/ok.libsonnet"),
            f.app.join("ok.libsonnet"),
        )
        .unwrap();
        assert_eq!(
            f.eval_text("import 'ok.libsonnet'", &Options::default())
                .unwrap(),
            vec![json!({"kind": "Ok"})]
        );
    }

    #[test]
    fn syntax_errors_name_files_relative_to_the_root() {
        let f = Fixture::new();
        let (message, shown) = f.error("{ kind: 'A',\n  metadata: }", &Options::default());
        assert!(
            shown.starts_with(
                "Failed to evaluate jsonnet \"main.jsonnet\": STATIC ERROR: app/main.jsonnet:2:"
            ),
            "{shown}"
        );
        assert!(message.contains("expected"), "{message}");
        // In an imported file.
        f.write("repo/app/bad.libsonnet", "{ a: b }");
        let (message, _) = f.error("import 'bad.libsonnet'", &Options::default());
        assert!(
            message.starts_with("STATIC ERROR: app/bad.libsonnet:1:6-7: unknown variable: b"),
            "{message}"
        );
    }

    #[test]
    fn runtime_errors_and_deep_recursion() {
        let f = Fixture::new();
        let (message, _) = f.error(
            "local x = { a: 1 }; { kind: 'A', v: x.b }",
            &Options::default(),
        );
        assert!(
            message.starts_with("RUNTIME ERROR: field does not exist: b"),
            "{message}"
        );
        assert!(message.contains("app/main.jsonnet:1:"), "{message}");
        let (message, _) = f.error("error 'boom ' + std.thisFile", &Options::default());
        assert!(
            message.starts_with("RUNTIME ERROR: boom app/main.jsonnet"),
            "{message}"
        );
        let (message, _) = f.error(
            "local f(n) = if n == 0 then 0 else 1 + f(n - 1); { kind: 'A', n: f(100000) }",
            &Options::default(),
        );
        assert!(message.contains("max stack frames exceeded"), "{message}");
        assert!(message.lines().count() <= MAX_TRACE + 3, "{message}");
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("/a/../../b")), PathBuf::from("/b"));
    }
}
