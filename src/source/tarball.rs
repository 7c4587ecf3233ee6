//! Streamed `.tar.gz` archives, both directions.
//!
//! * Receiving: `GenerateManifestWithFiles` (and, later, a plugin sidecar)
//!   gets an app's files as a `.tar.gz` in chunks. [`Upload`] spools the
//!   chunks to disk under a compressed-size cap while hashing them, then
//!   checks the SHA-256 the client sent and extracts with [`extract`].
//! * Sending: config management plugins get the repository as a `.tar.gz`
//!   built by [`build`].
//!
//! Extraction never trusts the archive: every entry's path must stay inside
//! the destination (no absolute paths, no `..`), only regular files,
//! directories and symlinks are materialised, a symlink must resolve inside
//! the destination (through the other symlinks of the archive too), nothing
//! is ever written through a symlink or over an existing path, and the
//! compressed bytes, the bytes written to disk, the decompressed tar stream
//! (headers and padding included) and the number of entries are all capped.
//! Extraction is blocking: async callers run it in `spawn_blocking`. On
//! error the destination holds a partial, unspecified tree that the caller
//! must delete (escaping symlinks are removed before returning, as a second
//! line of defence).
//!
//! Error messages name entries as written in the archive, never the
//! destination directory.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use tar::EntryType;

/// Most bytes of extension headers (PAX records, GNU long names), padding
/// and the header block itself that may be read for one entry. The tar
/// crate holds extension data in memory, so this also bounds memory.
const HEADERS_LIMIT: u64 = 1 << 20;

/// Decompressed bytes granted per entry on top of the base allowance, for
/// its header block and padding.
const PER_ENTRY_ALLOWANCE: u64 = 2048;

/// Symlinks followed while resolving one symlink target before giving up.
/// Linux gives up after 40 as well (`ELOOP`).
const MAX_SYMLINK_HOPS: u32 = 40;

/// Longest entry path (in characters) quoted in an error message.
const SHOWN_PATH_MAX: usize = 256;

/// Longest client-supplied checksum quoted in an error message.
const SHOWN_CHECKSUM_MAX: usize = 128;

/// Limits for extraction.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most compressed bytes accepted.
    pub max_compressed: u64,
    /// Most bytes written to disk (sum of regular files' sizes).
    pub max_extracted: u64,
    /// Most entries (files, dirs, links).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_compressed: 100_000_000,
            max_extracted: 1_000_000_000,
            max_entries: 1_000_000,
        }
    }
}

impl Limits {
    /// Cap on the decompressed tar stream before any entry has been seen:
    /// the file data, plus 10% and 1 MiB for headers and padding. Each
    /// entry then adds [`PER_ENTRY_ALLOWANCE`].
    fn base_decompressed_cap(&self) -> u64 {
        self.max_extracted
            .saturating_add(self.max_extracted / 10)
            .saturating_add(1 << 20)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("archive exceeds the maximum size of {max} bytes (--streamed-manifest-max-tar-size)")]
    CompressedTooLarge { max: u64 },
    #[error(
        "extracted files exceed the maximum size of {max} bytes \
         (--streamed-manifest-max-extracted-size)"
    )]
    ExtractedTooLarge { max: u64 },
    #[error(
        "archive decompresses to more than {max} bytes (decompression bomb?); \
         the limit follows --streamed-manifest-max-extracted-size"
    )]
    DecompressedTooLarge { max: u64 },
    #[error("archive entry headers exceed {max} bytes (decompression bomb?)")]
    HeadersTooLarge { max: u64 },
    #[error("too many archive entries (more than {max})")]
    TooManyEntries { max: u64 },
    #[error("missing checksum")]
    MissingChecksum,
    #[error("checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("archive entry {path} leaves the extraction directory")]
    PathEscapes { path: String },
    #[error("archive entry {path} is a symlink pointing outside the extraction directory")]
    SymlinkEscapes { path: String },
    #[error("archive entry {path} is a hard link (not allowed)")]
    HardLink { path: String },
    #[error("archive entry {path} has unsupported type {kind}")]
    UnsupportedType { path: String, kind: String },
    #[error("archive entry {path} is inside a symlink (not allowed)")]
    InsideSymlink { path: String },
    #[error("archive entry {path} conflicts with an earlier entry")]
    Conflict { path: String },
    #[error("archive entry {path} is invalid: {reason}")]
    InvalidEntry { path: String, reason: &'static str },
    #[error("invalid archive: {0}")]
    InvalidArchive(io::Error),
    #[error("cannot write archive entry {path}: {error}")]
    Write { path: String, error: io::Error },
    #[error("extraction directory is not empty")]
    DestinationNotEmpty,
    #[error("extraction directory is unusable: {0}")]
    Destination(io::Error),
    #[error("cannot spool the upload: {0}")]
    Spool(io::Error),
    #[error("invalid exclude glob {glob:?}: {message}")]
    ExcludeGlob { glob: String, message: String },
    #[error("cannot archive {path}: {error}")]
    Build { path: String, error: io::Error },
    #[error("cannot write the archive: {0}")]
    Output(io::Error),
}

impl Error {
    /// True for size and entry-count limits and decompression bombs, false
    /// for malformed or unsafe content and local I/O failures.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Error::CompressedTooLarge { .. }
                | Error::ExtractedTooLarge { .. }
                | Error::DecompressedTooLarge { .. }
                | Error::HeadersTooLarge { .. }
                | Error::TooManyEntries { .. }
        )
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Regular files and symlinks created (directories not counted).
    pub files: u64,
    /// Bytes of regular files written.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadState {
    Open,
    TooLarge,
    Broken,
}

/// Accumulates a streamed `.tar.gz` (chunks as they arrive) into a spool file under `spool_dir`,
/// enforcing `max_compressed` as bytes arrive and computing SHA-256 incrementally.
///
/// The spool file is unnamed (unlinked at creation) and vanishes when the
/// upload is dropped or extracted.
pub struct Upload {
    spool: BufWriter<File>,
    hasher: Sha256,
    received: u64,
    limits: Limits,
    state: UploadState,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("received", &self.received)
            .field("limits", &self.limits)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Upload {
    pub fn new(spool_dir: &Path, limits: Limits) -> Result<Upload, Error> {
        // tempfile's fallback path puts the directory in its errors; keep
        // only the kind so no server path reaches the client.
        let file = tempfile::tempfile_in(spool_dir)
            .map_err(|e| Error::Spool(io::Error::from(e.kind())))?;
        Ok(Upload {
            spool: BufWriter::with_capacity(64 * 1024, file),
            hasher: Sha256::new(),
            received: 0,
            limits,
            state: UploadState::Open,
        })
    }

    /// Compressed bytes accepted so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Appends a chunk. Once a chunk has been refused, every later call
    /// fails too.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.usable()?;
        let total = self.received.saturating_add(chunk.len() as u64);
        if total > self.limits.max_compressed {
            self.state = UploadState::TooLarge;
            return Err(self.too_large());
        }
        if let Err(error) = self.spool.write_all(chunk) {
            self.state = UploadState::Broken;
            return Err(Error::Spool(error));
        }
        self.hasher.update(chunk);
        self.received = total;
        Ok(())
    }

    /// Checks the checksum (lowercase or uppercase hex accepted; an empty expected checksum is an
    /// error "missing checksum"), then extracts into `destination` (must exist and be empty).
    /// Blocking: callers run it in spawn_blocking.
    pub fn extract(
        self,
        expected_sha256_hex: &str,
        destination: &Path,
    ) -> Result<Extracted, Error> {
        self.usable()?;
        let expected = expected_sha256_hex.trim();
        if expected.is_empty() {
            return Err(Error::MissingChecksum);
        }
        let actual = hex::encode(self.hasher.finalize());
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Error::ChecksumMismatch {
                expected: shorten(expected, SHOWN_CHECKSUM_MAX),
                actual,
            });
        }
        let mut file = self
            .spool
            .into_inner()
            .map_err(|e| Error::Spool(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(Error::Spool)?;
        extract(file, destination, &self.limits)
    }

    fn usable(&self) -> Result<(), Error> {
        match self.state {
            UploadState::Open => Ok(()),
            UploadState::TooLarge => Err(self.too_large()),
            UploadState::Broken => Err(Error::Spool(io::Error::other(
                "an earlier write to the spool file failed",
            ))),
        }
    }

    fn too_large(&self) -> Error {
        Error::CompressedTooLarge {
            max: self.limits.max_compressed,
        }
    }
}

/// Extracts a `.tar.gz` read from `reader` into `destination` under `limits` (no checksum). Blocking.
///
/// `destination` must exist and be empty.
pub fn extract(reader: impl Read, destination: &Path, limits: &Limits) -> Result<Extracted, Error> {
    let mut extractor = Extractor::new(destination, limits)?;
    let meter = Rc::new(Meter::new(limits));
    let compressed = Metered {
        inner: reader,
        meter: Rc::clone(&meter),
        side: Side::Compressed,
    };
    let stream = Metered {
        inner: MultiGzDecoder::new(compressed),
        meter: Rc::clone(&meter),
        side: Side::Decompressed,
    };
    let result = extractor.run(stream, &meter);
    if result.is_err() {
        extractor.remove_symlinks();
    }
    result
}

/// Which byte count a [`Metered`] reader enforces.
#[derive(Debug, Clone, Copy)]
enum Side {
    Compressed,
    Decompressed,
}

/// Which limit stopped the reading.
#[derive(Debug, Clone, Copy)]
enum Trip {
    Compressed,
    Decompressed,
    Headers,
}

/// Byte counts shared by the two [`Metered`] readers and the extraction
/// loop. When a limit is hit the reader records why and fails; whatever
/// error the tar or gzip layers then report, [`Meter::classify`] turns it
/// back into the limit error.
struct Meter {
    max_compressed: u64,
    compressed: Cell<u64>,
    decompressed: Cell<u64>,
    decompressed_cap: Cell<u64>,
    /// Set while the tar crate reads the next entry's headers: the
    /// decompressed position past which that read counts as a bomb.
    headers_end: Cell<Option<u64>>,
    tripped: Cell<Option<Trip>>,
}

impl Meter {
    fn new(limits: &Limits) -> Meter {
        Meter {
            max_compressed: limits.max_compressed,
            compressed: Cell::new(0),
            decompressed: Cell::new(0),
            decompressed_cap: Cell::new(limits.base_decompressed_cap()),
            headers_end: Cell::new(None),
            tripped: Cell::new(None),
        }
    }

    /// (bytes read so far, most allowed, what exceeding it means)
    fn budget(&self, side: Side) -> (u64, u64, Trip) {
        match side {
            Side::Compressed => (self.compressed.get(), self.max_compressed, Trip::Compressed),
            Side::Decompressed => {
                let used = self.decompressed.get();
                let cap = self.decompressed_cap.get();
                match self.headers_end.get() {
                    Some(end) if end < cap => (used, end, Trip::Headers),
                    _ => (used, cap, Trip::Decompressed),
                }
            }
        }
    }

    fn record(&self, side: Side, used: u64) {
        match side {
            Side::Compressed => self.compressed.set(used),
            Side::Decompressed => self.decompressed.set(used),
        }
    }

    fn begin_headers(&self) {
        let end = self.decompressed.get().saturating_add(HEADERS_LIMIT);
        self.headers_end.set(Some(end));
    }

    fn end_headers(&self) {
        self.headers_end.set(None);
    }

    fn grant(&self, bytes: u64) {
        let cap = self.decompressed_cap.get().saturating_add(bytes);
        self.decompressed_cap.set(cap);
    }

    fn tripped_error(&self) -> Option<Error> {
        self.tripped.get().map(|trip| match trip {
            Trip::Compressed => Error::CompressedTooLarge {
                max: self.max_compressed,
            },
            Trip::Decompressed => Error::DecompressedTooLarge {
                max: self.decompressed_cap.get(),
            },
            Trip::Headers => Error::HeadersTooLarge { max: HEADERS_LIMIT },
        })
    }

    /// Maps a read error to the limit that caused it, if any.
    fn classify(&self, error: io::Error) -> Error {
        self.tripped_error().unwrap_or(Error::InvalidArchive(error))
    }
}

/// A reader that counts its bytes into a [`Meter`] and fails past the
/// limit. It never reads more than one byte beyond the limit, so a stream
/// that ends exactly at the limit is accepted.
struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
    side: Side,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.tripped.get().is_some() {
            return Err(limit_reached());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let (used, max, trip) = self.meter.budget(self.side);
        let room = max.saturating_sub(used).saturating_add(1);
        let want = usize::try_from(room).map_or(buf.len(), |room| room.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        let used = used.saturating_add(n as u64);
        self.meter.record(self.side, used);
        if used > max {
            self.meter.tripped.set(Some(trip));
            return Err(limit_reached());
        }
        Ok(n)
    }
}

fn limit_reached() -> io::Error {
    io::Error::other("archive size limit reached")
}

/// A symlink created by the extraction.
struct Link {
    target: Vec<u8>,
    shown: String,
}

enum Resolution {
    Inside,
    Outside,
    TooManyHops,
}

struct Extractor<'a> {
    root: &'a Path,
    limits: &'a Limits,
    done: Extracted,
    entries: u64,
    /// Relative paths known to be real directories (created or checked).
    dirs: HashSet<PathBuf>,
    /// Symlinks created so far, by relative path.
    links: BTreeMap<PathBuf, Link>,
    buffer: Vec<u8>,
}

impl<'a> Extractor<'a> {
    fn new(root: &'a Path, limits: &'a Limits) -> Result<Extractor<'a>, Error> {
        let mut listing = fs::read_dir(root).map_err(Error::Destination)?;
        if listing.next().is_some() {
            return Err(Error::DestinationNotEmpty);
        }
        Ok(Extractor {
            root,
            limits,
            done: Extracted::default(),
            entries: 0,
            dirs: HashSet::new(),
            links: BTreeMap::new(),
            buffer: vec![0; 64 * 1024],
        })
    }

    fn run<R: Read>(&mut self, stream: R, meter: &Meter) -> Result<Extracted, Error> {
        let mut archive = tar::Archive::new(stream);
        {
            let mut entries = archive.entries().map_err(|e| meter.classify(e))?;
            loop {
                meter.begin_headers();
                let next = entries.next();
                meter.end_headers();
                let mut entry = match next {
                    None => break,
                    Some(entry) => entry.map_err(|e| meter.classify(e))?,
                };
                self.entries += 1;
                if self.entries > self.limits.max_entries {
                    return Err(Error::TooManyEntries {
                        max: self.limits.max_entries,
                    });
                }
                meter.grant(PER_ENTRY_ALLOWANCE);
                self.entry(&mut entry, meter)?;
            }
        }
        // Read the rest of the stream (end-of-archive padding) so the gzip
        // trailer's CRC and length are verified; still under the caps.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| meter.classify(e))?;
        if let Some(error) = meter.tripped_error() {
            return Err(error);
        }
        self.check_links()?;
        Ok(self.done.clone())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        meter: &Meter,
    ) -> Result<(), Error> {
        let raw = entry.path_bytes().into_owned();
        let shown = show(&raw);
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular | EntryType::Directory | EntryType::Symlink => {}
            // Global PAX headers (e.g. `git archive`'s commit id) carry no file.
            EntryType::XGlobalHeader => return drain(entry, meter),
            EntryType::Link => return Err(Error::HardLink { path: shown }),
            other => {
                return Err(Error::UnsupportedType {
                    path: shown,
                    kind: describe(other),
                })
            }
        }
        let rel = relative_path(&raw, &shown)?;
        // Old archivers mark directories as regular files with a trailing slash.
        let is_dir =
            kind == EntryType::Directory || (kind == EntryType::Regular && raw.ends_with(b"/"));
        if rel.as_os_str().is_empty() {
            if is_dir {
                return drain(entry, meter);
            }
            return Err(Error::InvalidEntry {
                path: shown,
                reason: "its path is empty",
            });
        }
        self.make_parents(&rel, &shown)?;
        if is_dir {
            self.directory(rel, &shown)?;
            drain(entry, meter)
        } else if kind == EntryType::Symlink {
            self.symlink(entry, rel, shown)?;
            drain(entry, meter)
        } else {
            self.file(entry, &rel, shown, meter)
        }
    }

    /// Makes sure every ancestor of `rel` is a real directory, creating
    /// missing ones.
    fn make_parents(&mut self, rel: &Path, shown: &str) -> Result<(), Error> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            if self.dirs.contains(&prefix) {
                continue;
            }
            let full = self.root.join(&prefix);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Error::InsideSymlink {
                        path: shown.to_owned(),
                    })
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Conflict {
                        path: shown.to_owned(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&full, shown)?,
                Err(error) => {
                    return Err(Error::Write {
                        path: shown.to_owned(),
                        error,
                    })
                }
            }
            self.dirs.insert(prefix.clone());
        }
        Ok(())
    }

    fn directory(&mut self, rel: PathBuf, shown: &str) -> Result<(), Error> {
        if self.dirs.contains(&rel) {
            return Ok(());
        }
        let full = self.root.join(&rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() && !meta.file_type().is_symlink() => {}
            Ok(_) => {
                return Err(Error::Conflict {
                    path: shown.to_owned(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&full, shown)?,
            Err(error) => {
                return Err(Error::Write {
                    path: shown.to_owned(),
                    error,
                })
            }
        }
        self.dirs.insert(rel);
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: PathBuf,
        shown: String,
    ) -> Result<(), Error> {
        let target = entry
            .link_name_bytes()
            .map(|target| target.into_owned())
            .unwrap_or_default();
        if target.is_empty() {
            return Err(Error::InvalidEntry {
                path: shown,
                reason: "its symlink target is empty",
            });
        }
        if target.contains(&0) {
            return Err(Error::InvalidEntry {
                path: shown,
                reason: "its symlink target contains a NUL byte",
            });
        }
        let dir = rel.parent().unwrap_or(Path::new(""));
        check_resolution(resolve(dir, &target, &self.links), &shown)?;
        let full = self.root.join(&rel);
        if let Err(error) = std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full) {
            return Err(if error.kind() == io::ErrorKind::AlreadyExists {
                Error::Conflict { path: shown }
            } else {
                Error::Write { path: shown, error }
            });
        }
        self.links.insert(rel, Link { target, shown });
        self.done.files += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        shown: String,
        meter: &Meter,
    ) -> Result<(), Error> {
        let max = self.limits.max_extracted;
        let remaining = max.saturating_sub(self.done.bytes);
        // `size()` is the effective size (a PAX `size` record overrides the header's).
        let size = entry.size();
        if size > remaining {
            return Err(Error::ExtractedTooLarge { max });
        }
        let executable = entry.header().mode().unwrap_or(0o644) & 0o111 != 0;
        let mode = if executable { 0o755 } else { 0o644 };
        let write_error = |error: io::Error| Error::Write {
            path: shown.clone(),
            error,
        };
        // `create_new` refuses an existing path, including a symlink (even a
        // dangling one), so nothing is ever written through a link.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.root.join(rel))
        {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Conflict { path: shown })
            }
            Err(error) => return Err(write_error(error)),
        };
        let mut copied: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(meter.classify(e)),
            };
            // Count what is actually copied, whatever the header said.
            copied += n as u64;
            if copied > remaining {
                return Err(Error::ExtractedTooLarge { max });
            }
            file.write_all(&self.buffer[..n]).map_err(write_error)?;
        }
        if copied != size {
            return Err(Error::InvalidEntry {
                path: shown,
                reason: "the archive ends inside its data",
            });
        }
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(write_error)?;
        self.done.files += 1;
        self.done.bytes += copied;
        Ok(())
    }

    /// Re-checks every symlink against the final tree: a link that was
    /// inside when created can be sent outside by a later link it goes
    /// through (`t -> a/s/../..` then `a/s -> ..`).
    fn check_links(&self) -> Result<(), Error> {
        for (rel, link) in &self.links {
            let dir = rel.parent().unwrap_or(Path::new(""));
            check_resolution(resolve(dir, &link.target, &self.links), &link.shown)?;
        }
        Ok(())
    }

    fn remove_symlinks(&self) {
        for rel in self.links.keys() {
            let _ = fs::remove_file(self.root.join(rel));
        }
    }
}

fn make_dir(full: &Path, shown: &str) -> Result<(), Error> {
    let result = fs::DirBuilder::new()
        .mode(0o755)
        .create(full)
        // Independent of the umask.
        .and_then(|()| fs::set_permissions(full, Permissions::from_mode(0o755)));
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(Error::Conflict {
            path: shown.to_owned(),
        }),
        Err(error) => Err(Error::Write {
            path: shown.to_owned(),
            error,
        }),
    }
}

/// Reads and discards the rest of an entry's data (still metered).
fn drain<R: Read>(entry: &mut tar::Entry<'_, R>, meter: &Meter) -> Result<(), Error> {
    io::copy(entry, &mut io::sink())
        .map(|_| ())
        .map_err(|e| meter.classify(e))
}

/// Turns an entry's path as written in the archive into a relative path
/// with only normal components (empty for the root itself).
fn relative_path(raw: &[u8], shown: &str) -> Result<PathBuf, Error> {
    if raw.contains(&0) {
        return Err(Error::InvalidEntry {
            path: shown.to_owned(),
            reason: "its path contains a NUL byte",
        });
    }
    let escapes = || Error::PathEscapes {
        path: shown.to_owned(),
    };
    if raw.starts_with(b"/") {
        return Err(escapes());
    }
    let mut rel = PathBuf::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(escapes()),
            name => rel.push(OsStr::from_bytes(name)),
        }
    }
    Ok(rel)
}

/// Resolves a symlink target the way the kernel would, from the link's
/// directory `dir` (relative to the root, known to hold no symlinks),
/// expanding the archive's own symlinks in `links`. Any step above the root
/// is "outside", even if later steps come back in. Components that do not
/// exist are taken lexically (the kernel would fail on them instead).
fn resolve(dir: &Path, target: &[u8], links: &BTreeMap<PathBuf, Link>) -> Resolution {
    if target.starts_with(b"/") {
        return Resolution::Outside;
    }
    let mut here = dir.to_path_buf();
    // Components still to walk, next one last.
    let mut pending: Vec<&[u8]> = target.split(|&b| b == b'/').rev().collect();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component {
            b"" | b"." => {}
            b".." => {
                if !here.pop() {
                    return Resolution::Outside;
                }
            }
            name => {
                here.push(OsStr::from_bytes(name));
                if let Some(link) = links.get(&here) {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Resolution::TooManyHops;
                    }
                    if link.target.starts_with(b"/") {
                        return Resolution::Outside;
                    }
                    here.pop();
                    pending.extend(link.target.split(|&b| b == b'/').rev());
                }
            }
        }
    }
    Resolution::Inside
}

fn check_resolution(resolution: Resolution, shown: &str) -> Result<(), Error> {
    match resolution {
        Resolution::Inside => Ok(()),
        Resolution::Outside => Err(Error::SymlinkEscapes {
            path: shown.to_owned(),
        }),
        Resolution::TooManyHops => Err(Error::InvalidEntry {
            path: shown.to_owned(),
            reason: "its symlink target goes through too many symlinks (or a cycle)",
        }),
    }
}

fn describe(kind: EntryType) -> String {
    let name = match kind {
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "fifo",
        EntryType::Continuous => "contiguous file",
        EntryType::GNUSparse => "sparse file",
        EntryType::GNULongName => "GNU long name",
        EntryType::GNULongLink => "GNU long link",
        EntryType::XHeader => "PAX header",
        other => return format!("{:?}", char::from(other.as_byte())),
    };
    name.to_owned()
}

/// An archive path for error messages: lossy UTF-8, control characters
/// escaped, length capped.
fn show(raw: &[u8]) -> String {
    shorten(&String::from_utf8_lossy(raw), SHOWN_PATH_MAX)
}

fn shorten(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes a `.tar.gz` of the directory `root` to `writer`: regular files, directories and
/// symlinks (as symlinks), paths relative to `root`, sorted (deterministic output: fixed mtime 0,
/// uid/gid 0, mode 0644/0755 for files by executable bit, 0755 for dirs), skipping `.git`
/// directories and any path (relative, `/`-separated) matching one of the `exclude` globs (globset
/// semantics with `literal_separator(false)`, i.e. `*` crosses `/`, as Argo CD's
/// `--plugin-tar-exclude` uses gobwas/glob). Returns the number of files written. Blocking.
///
/// An excluded directory is skipped with everything under it. Other file
/// types (sockets, fifos, devices) are skipped. The count covers regular
/// files and symlinks, not directories; symlink targets are written as they
/// are (checking them is the job of the out-of-bounds symlink scan).
pub fn build(root: &Path, exclude: &[String], writer: impl Write) -> Result<u64, Error> {
    build_selected(root, None, exclude, writer)
}

/// [`build`], keeping only the paths `only` names (root-relative, `/`-separated; a directory
/// brings everything below it) and the directories on the way to them; `None` keeps
/// everything. Blocking.
pub fn build_selected(
    root: &Path,
    only: Option<&[String]>,
    exclude: &[String],
    writer: impl Write,
) -> Result<u64, Error> {
    let excluded = exclude_set(exclude)?;
    let selected: Option<Vec<PathBuf>> = only.map(|paths| {
        paths
            .iter()
            .map(|p| {
                p.split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .collect::<PathBuf>()
            })
            .collect()
    });
    // Whether `rel` is selected itself (or lies below a selected path), and whether it is a
    // directory on the way to one.
    let keeps = |rel: &Path| -> (bool, bool) {
        match &selected {
            None => (true, false),
            Some(paths) => (
                paths.iter().any(|p| rel.starts_with(p)),
                paths.iter().any(|p| p.starts_with(rel) && p != rel),
            ),
        }
    };
    let build_error = |rel: &Path, error: io::Error| Error::Build {
        path: if rel.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            show(rel.as_os_str().as_bytes())
        },
        error,
    };
    let top = Path::new("");
    let meta = fs::metadata(root).map_err(|e| build_error(top, e))?;
    if !meta.is_dir() {
        return Err(build_error(
            top,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut builder = tar::Builder::new(GzEncoder::new(writer, Compression::fast()));
    let mut written = 0;
    let mut pending = children(root, top).map_err(|e| build_error(top, e))?;
    while let Some(rel) = pending.pop() {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full).map_err(|e| build_error(&rel, e))?;
        let kind = meta.file_type();
        if kind.is_dir() && rel.file_name() == Some(OsStr::new(".git")) {
            continue;
        }
        if excluded.is_match(&rel) {
            continue;
        }
        let (inside, on_the_way) = keeps(&rel);
        if !(inside || (on_the_way && kind.is_dir())) {
            continue;
        }
        if kind.is_dir() {
            let mut name = rel.clone().into_os_string();
            name.push("/");
            let mut header = new_header(EntryType::Directory, 0o755, 0);
            builder
                .append_data(&mut header, Path::new(&name), io::empty())
                .map_err(|e| build_error(&rel, e))?;
            pending.extend(children(&full, &rel).map_err(|e| build_error(&rel, e))?);
        } else if kind.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let len = meta.len();
            let file = File::open(&full).map_err(|e| build_error(&rel, e))?;
            let data = Exact {
                inner: file.take(len),
                left: len,
            };
            let mut header = new_header(EntryType::Regular, mode, len);
            builder
                .append_data(&mut header, &rel, data)
                .map_err(|e| build_error(&rel, e))?;
            written += 1;
        } else if kind.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| build_error(&rel, e))?;
            let mut header = new_header(EntryType::Symlink, 0o777, 0);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(|e| build_error(&rel, e))?;
            written += 1;
        }
    }
    let encoder = builder.into_inner().map_err(Error::Output)?;
    encoder.finish().map_err(Error::Output)?;
    Ok(written)
}

fn exclude_set(exclude: &[String]) -> Result<globset::GlobSet, Error> {
    let mut set = globset::GlobSetBuilder::new();
    for glob in exclude {
        let compiled = globset::GlobBuilder::new(glob)
            .literal_separator(false)
            .build()
            .map_err(|e| Error::ExcludeGlob {
                glob: glob.clone(),
                message: e.kind().to_string(),
            })?;
        set.add(compiled);
    }
    set.build().map_err(|e| Error::ExcludeGlob {
        glob: exclude.join(", "),
        message: e.to_string(),
    })
}

/// The entries of directory `full` as paths relative to the root, sorted
/// by name in reverse (so popping them from a stack yields sorted order).
fn children(full: &Path, rel: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names = fs::read_dir(full)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names.into_iter().map(|name| rel.join(name)).collect())
}

fn new_header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Yields exactly `left` bytes or fails: a file that shrinks while being
/// archived must not leave a header whose size disagrees with its data.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being archived",
            ));
        }
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tar::Header;

    /// Builds archives entry by entry, with names written raw into the
    /// header so malicious paths can be produced.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Tar {
            Tar(tar::Builder::new(Vec::new()))
        }

        fn raw(
            &mut self,
            name: &[u8],
            kind: EntryType,
            mode: u32,
            link: Option<&[u8]>,
            data: &[u8],
        ) -> &mut Tar {
            let mut header = Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            if let Some(link) = link {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            }
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            header.set_mtime(0);
            header.set_cksum();
            self.0.append(&header, data).unwrap();
            self
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
            self.raw(name.as_bytes(), EntryType::Regular, 0o644, None, data)
        }

        fn dir(&mut self, name: &str) -> &mut Tar {
            self.raw(name.as_bytes(), EntryType::Directory, 0o755, None, b"")
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
            self.raw(
                name.as_bytes(),
                EntryType::Symlink,
                0o777,
                Some(target.as_bytes()),
                b"",
            )
        }

        fn tar(&mut self) -> Vec<u8> {
            self.0.finish().unwrap();
            self.0.get_ref().clone()
        }

        fn gz(&mut self) -> Vec<u8> {
            gz(&self.tar())
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A gzip stream of `header` followed by `zeros` zero bytes.
    fn gz_with_zeros(header: &Header, zeros: usize) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(header.as_bytes()).unwrap();
        let block = vec![0; 1 << 20];
        let mut left = zeros;
        while left > 0 {
            let n = left.min(block.len());
            encoder.write_all(&block[..n]).unwrap();
            left -= n;
        }
        encoder.finish().unwrap()
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn limits(max_extracted: u64) -> Limits {
        Limits {
            max_extracted,
            ..Limits::default()
        }
    }

    /// A temporary directory with an empty `out` destination inside.
    struct Scratch {
        tmp: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Scratch {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir(tmp.path().join("out")).unwrap();
            Scratch { tmp }
        }

        fn dest(&self) -> PathBuf {
            self.tmp.path().join("out")
        }

        /// Extracts and expects an error whose message does not leak the
        /// destination's location.
        fn refuse(&self, archive: &[u8], limits: &Limits) -> Error {
            let error = extract(archive, &self.dest(), limits).unwrap_err();
            self.assert_no_leak(&error);
            error
        }

        fn assert_no_leak(&self, error: &Error) {
            let message = error.to_string();
            let tmp = self.tmp.path().to_str().unwrap();
            assert!(!message.contains(tmp), "{message} leaks {tmp}");
        }

        /// Sum of regular files' sizes under the destination.
        fn written(&self) -> u64 {
            fn walk(dir: &Path) -> u64 {
                let mut total = 0;
                for entry in fs::read_dir(dir).unwrap() {
                    let entry = entry.unwrap();
                    let meta = entry.metadata().unwrap();
                    let kind = entry.file_type().unwrap();
                    if kind.is_dir() {
                        total += walk(&entry.path());
                    } else if kind.is_file() {
                        total += meta.len();
                    }
                }
                total
            }
            walk(&self.dest())
        }
    }

    fn write(path: &Path, data: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn round_trip_keeps_files_links_and_modes_and_skips_git_and_excluded() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        write(&root.join("a.txt"), "alpha");
        write(&root.join("sub/b.yaml"), "kind: ConfigMap\n");
        write(&root.join("sub/deep/c.txt"), "charlie");
        write(&root.join("sub/deep/skip.tmp"), "temporary");
        write(&root.join("secret/key"), "hidden");
        write(&root.join(".git/config"), "[core]");
        write(&root.join("sub/.git/HEAD"), "ref");
        write(&root.join("run.sh"), "#!/bin/sh\n");
        fs::set_permissions(root.join("run.sh"), Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(root.join("a.txt"), Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("sub/b.yaml", root.join("link.yaml")).unwrap();
        std::os::unix::fs::symlink("deep", root.join("sub/dirlink")).unwrap();
        std::os::unix::fs::symlink("../a.txt", root.join("sub/up.txt")).unwrap();
        std::os::unix::fs::symlink("missing", root.join("dangling")).unwrap();
        // Sockets are not archived.
        let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        let exclude = vec!["*.tmp".to_owned(), "secret".to_owned()];

        let mut first = Vec::new();
        let count = build(root, &exclude, &mut first).unwrap();
        let mut second = Vec::new();
        assert_eq!(build(root, &exclude, &mut second).unwrap(), count);
        assert_eq!(first, second, "two builds of one tree differ");
        // a.txt, run.sh, b.yaml, c.txt + 4 symlinks
        assert_eq!(count, 8);

        // Entries are sorted, relative, with fixed metadata.
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(MultiGzDecoder::new(&first[..]));
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            names.push(String::from_utf8(entry.path_bytes().into_owned()).unwrap());
        }
        assert_eq!(
            names,
            [
                "a.txt",
                "dangling",
                "link.yaml",
                "run.sh",
                "sub/",
                "sub/b.yaml",
                "sub/deep/",
                "sub/deep/c.txt",
                "sub/dirlink",
                "sub/up.txt",
            ]
        );

        let scratch = Scratch::new();
        let dest = scratch.dest();
        let done = extract(&first[..], &dest, &Limits::default()).unwrap();
        assert_eq!(
            done,
            Extracted {
                files: count,
                bytes: (5 + 16 + 7 + 10) as u64,
            }
        );
        assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "alpha");
        assert_eq!(
            fs::read_to_string(dest.join("sub/deep/c.txt")).unwrap(),
            "charlie"
        );
        assert_eq!(
            fs::read_to_string(dest.join("link.yaml")).unwrap(),
            "kind: ConfigMap\n"
        );
        assert_eq!(
            fs::read_to_string(dest.join("sub/dirlink/c.txt")).unwrap(),
            "charlie"
        );
        assert_eq!(
            fs::read_to_string(dest.join("sub/up.txt")).unwrap(),
            "alpha"
        );
        assert_eq!(
            fs::read_link(dest.join("link.yaml")).unwrap(),
            Path::new("sub/b.yaml")
        );
        assert_eq!(
            fs::read_link(dest.join("dangling")).unwrap(),
            Path::new("missing")
        );
        assert_eq!(mode(&dest.join("run.sh")), 0o755);
        assert_eq!(mode(&dest.join("a.txt")), 0o644);
        assert_eq!(mode(&dest.join("sub")), 0o755);
        for gone in [".git", "sub/.git", "sub/deep/skip.tmp", "secret", "sock"] {
            assert!(
                fs::symlink_metadata(dest.join(gone)).is_err(),
                "{gone} was archived"
            );
        }
    }

    #[test]
    fn exclude_star_crosses_separators_and_bad_globs_are_reported() {
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("keep.yaml"), "k");
        write(&src.path().join("sub/deep/drop.yaml"), "d");
        let mut out = Vec::new();
        let count = build(src.path(), &["sub*.yaml".to_owned()], &mut out).unwrap();
        assert_eq!(count, 1);

        let error = build(src.path(), &["a[".to_owned()], Vec::new()).unwrap_err();
        assert!(matches!(error, Error::ExcludeGlob { .. }), "{error}");
        assert!(!error.is_limit());

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(build(empty.path(), &[], Vec::new()).unwrap(), 0);
        let missing = build(&empty.path().join("nope"), &[], Vec::new()).unwrap_err();
        assert!(matches!(missing, Error::Build { .. }), "{missing}");
    }

    #[test]
    fn leading_dot_slash_is_stripped_and_old_style_directories_work() {
        let scratch = Scratch::new();
        let archive = Tar::new()
            .dir("./")
            .dir("./a/")
            .file("./a/b.txt", b"bee")
            .raw(b"old/", EntryType::Regular, 0o755, None, b"")
            .file("old/x", b"x")
            .gz();
        let done = extract(&archive[..], &scratch.dest(), &Limits::default()).unwrap();
        assert_eq!(done, Extracted { files: 2, bytes: 4 });
        assert_eq!(fs::read(scratch.dest().join("a/b.txt")).unwrap(), b"bee");
        assert!(scratch.dest().join("old").is_dir());
    }

    #[test]
    fn parent_directory_entries_are_refused() {
        for name in ["../escape", "a/../../escape", "a/.."] {
            let scratch = Scratch::new();
            let archive = Tar::new().file(name, b"boom").gz();
            let error = scratch.refuse(&archive, &Limits::default());
            assert!(
                matches!(error, Error::PathEscapes { .. }),
                "{name}: {error}"
            );
            assert_eq!(
                error.to_string(),
                format!("archive entry {name} leaves the extraction directory")
            );
            assert!(!error.is_limit());
            assert!(!scratch.tmp.path().join("escape").exists());
        }
    }

    #[test]
    fn absolute_paths_are_refused() {
        let scratch = Scratch::new();
        let archive = Tar::new().file("/abs/path", b"boom").gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert!(matches!(error, Error::PathEscapes { .. }), "{error}");
        assert!(error.to_string().contains("/abs/path"));
    }

    #[test]
    fn absolute_symlinks_are_refused() {
        let scratch = Scratch::new();
        let archive = Tar::new().symlink("passwd", "/etc/passwd").gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert_eq!(
            error.to_string(),
            "archive entry passwd is a symlink pointing outside the extraction directory"
        );
        assert!(fs::symlink_metadata(scratch.dest().join("passwd")).is_err());
    }

    #[test]
    fn symlinks_climbing_out_are_refused_and_those_staying_in_are_kept() {
        let scratch = Scratch::new();
        let archive = Tar::new().dir("a").symlink("a/link", "../../x").gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert!(
            matches!(error, Error::SymlinkEscapes { ref path } if path == "a/link"),
            "{error}"
        );

        // Leaving the root even for one step is refused.
        let scratch = Scratch::new();
        let archive = Tar::new().dir("a").symlink("a/link", "../../out/a").gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert!(matches!(error, Error::SymlinkEscapes { .. }), "{error}");

        let scratch = Scratch::new();
        let archive = Tar::new()
            .dir("a")
            .symlink("a/root", "..")
            .symlink("a/self", "./../a/./")
            .gz();
        extract(&archive[..], &scratch.dest(), &Limits::default()).unwrap();
        assert_eq!(
            fs::read_link(scratch.dest().join("a/root")).unwrap(),
            Path::new("..")
        );
    }

    #[test]
    fn symlinks_escaping_through_other_symlinks_are_refused_in_any_order() {
        // a/s -> .. is the root; t -> a/s/../.. then climbs above it.
        let orders: [&[(&str, &str)]; 2] = [
            &[("a/s", ".."), ("t", "a/s/../..")],
            &[("t", "a/s/../.."), ("a/s", "..")],
        ];
        for links in orders {
            let scratch = Scratch::new();
            let mut tar = Tar::new();
            tar.dir("a");
            for (name, target) in links {
                tar.symlink(name, target);
            }
            let error = scratch.refuse(&tar.gz(), &Limits::default());
            assert!(
                matches!(error, Error::SymlinkEscapes { ref path } if path == "t"),
                "{error}"
            );
            assert!(
                fs::symlink_metadata(scratch.dest().join("t")).is_err(),
                "escaping link left behind"
            );
        }

        let scratch = Scratch::new();
        let archive = Tar::new().symlink("x", "y").symlink("y", "x").gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert!(matches!(error, Error::InvalidEntry { .. }), "{error}");
    }

    #[test]
    fn hard_links_are_refused() {
        let scratch = Scratch::new();
        let archive = Tar::new()
            .file("a", b"x")
            .raw(b"b", EntryType::Link, 0o644, Some(b"a"), b"")
            .gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert_eq!(
            error.to_string(),
            "archive entry b is a hard link (not allowed)"
        );
        assert!(!error.is_limit());
    }

    #[test]
    fn fifos_and_devices_are_refused() {
        for (kind, name) in [
            (EntryType::Fifo, "fifo"),
            (EntryType::Char, "character device"),
            (EntryType::Block, "block device"),
        ] {
            let scratch = Scratch::new();
            let archive = Tar::new().raw(b"dev", kind, 0o644, None, b"").gz();
            let error = scratch.refuse(&archive, &Limits::default());
            assert_eq!(
                error.to_string(),
                format!("archive entry dev has unsupported type {name}")
            );
            assert!(fs::symlink_metadata(scratch.dest().join("dev")).is_err());
        }
    }

    #[test]
    fn entries_inside_archive_symlinks_are_refused() {
        let scratch = Scratch::new();
        let archive = Tar::new()
            .dir("sub")
            .symlink("link", "sub")
            .file("link/file", b"through")
            .gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert!(
            matches!(error, Error::InsideSymlink { ref path } if path == "link/file"),
            "{error}"
        );
        assert!(!scratch.dest().join("sub/file").exists());
    }

    #[test]
    fn existing_paths_are_never_overwritten() {
        let cases: [&dyn Fn(&mut Tar); 4] = [
            &|t| {
                t.file("a", b"1").file("a", b"2");
            },
            &|t| {
                t.file("a", b"1").dir("a");
            },
            &|t| {
                t.dir("a").symlink("a", "b");
            },
            &|t| {
                t.symlink("a", "b").file("a", b"through a dangling link");
            },
        ];
        for case in cases {
            let scratch = Scratch::new();
            let mut tar = Tar::new();
            case(&mut tar);
            let error = scratch.refuse(&tar.gz(), &Limits::default());
            assert!(matches!(error, Error::Conflict { .. }), "{error}");
            assert!(!scratch.dest().join("b").exists());
        }
        // A file where a parent directory should be.
        let scratch = Scratch::new();
        let archive = Tar::new().file("a", b"1").file("a/b", b"2").gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert!(matches!(error, Error::Conflict { .. }), "{error}");
    }

    #[test]
    fn extracted_cap_is_enforced_per_file_and_in_total() {
        let scratch = Scratch::new();
        let archive = Tar::new().file("big", &vec![7; 2_000_001]).gz();
        let error = scratch.refuse(&archive, &limits(2_000_000));
        assert_eq!(
            error.to_string(),
            "extracted files exceed the maximum size of 2000000 bytes \
             (--streamed-manifest-max-extracted-size)"
        );
        assert!(error.is_limit());
        assert!(!scratch.dest().join("big").exists());

        let scratch = Scratch::new();
        let mut tar = Tar::new();
        for i in 0..20 {
            tar.file(&format!("f{i}"), &[1; 100_000]);
        }
        let error = scratch.refuse(&tar.gz(), &limits(1_000_000));
        assert!(matches!(error, Error::ExtractedTooLarge { .. }), "{error}");
        assert!(scratch.written() <= 1_000_000);

        // Exactly at the cap is fine.
        let scratch = Scratch::new();
        let archive = Tar::new().file("a", &[1; 600]).file("b", &[2; 400]).gz();
        let done = extract(&archive[..], &scratch.dest(), &limits(1000)).unwrap();
        assert_eq!(done.bytes, 1000);
    }

    #[test]
    fn pax_size_overriding_a_small_header_size_is_still_capped() {
        let scratch = Scratch::new();
        let mut tar = Tar::new();
        let record = b"16 size=2000000\n";
        let mut pax = Header::new_ustar();
        pax.set_path("PaxHeaders/big").unwrap();
        pax.set_entry_type(EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_cksum();
        tar.0.append(&pax, &record[..]).unwrap();
        // The ustar header claims 0 bytes; PAX says 2 MB follow.
        let mut header = Header::new_ustar();
        header.set_path("big").unwrap();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        tar.0.append(&header, io::empty()).unwrap();
        tar.0.get_mut().extend(std::iter::repeat_n(0, 2_000_000));
        let archive = tar.gz();
        let error = scratch.refuse(&archive, &limits(1_000_000));
        assert!(matches!(error, Error::ExtractedTooLarge { .. }), "{error}");
        assert_eq!(scratch.written(), 0);
    }

    #[test]
    fn decompression_bombs_are_stopped_early() {
        // 50 MB of zeros as the "data" of a directory entry: nothing is
        // written, but the stream would decompress far past the cap.
        let mut header = Header::new_gnu();
        header.set_path("d").unwrap();
        header.set_entry_type(EntryType::Directory);
        header.set_size(50_000_000);
        header.set_cksum();
        let archive = gz_with_zeros(&header, 50_000_000);
        assert!(archive.len() < 200_000, "{}", archive.len());

        let scratch = Scratch::new();
        let started = Instant::now();
        let error = scratch.refuse(&archive, &limits(1_000_000));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(error, Error::DecompressedTooLarge { .. }),
            "{error}"
        );
        assert!(error.is_limit());
        assert!(scratch.written() <= 1_000_000);

        // The same zeros as the data of a regular file: refused by its size
        // before anything is written.
        let mut header = Header::new_gnu();
        header.set_path("zeros").unwrap();
        header.set_size(50_000_000);
        header.set_mode(0o644);
        header.set_cksum();
        let archive = gz_with_zeros(&header, 50_000_000);
        let scratch = Scratch::new();
        let error = scratch.refuse(&archive, &limits(1_000_000));
        assert!(matches!(error, Error::ExtractedTooLarge { .. }), "{error}");
        assert_eq!(scratch.written(), 0);
    }

    #[test]
    fn oversized_extension_headers_are_stopped() {
        // A 4 MB PAX header (read into memory by the tar crate) is a bomb.
        let mut value = vec![b'a'; 4_000_000];
        let mut record = format!("{} comment=", 4_000_000 + 20).into_bytes();
        record.append(&mut value);
        record.push(b'\n');
        let mut tar = Tar::new();
        let mut pax = Header::new_ustar();
        pax.set_path("PaxHeaders/x").unwrap();
        pax.set_entry_type(EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_cksum();
        tar.0.append(&pax, &record[..]).unwrap();
        tar.file("x", b"x");
        let scratch = Scratch::new();
        let error = scratch.refuse(&tar.gz(), &Limits::default());
        assert!(matches!(error, Error::HeadersTooLarge { .. }), "{error}");
        assert!(error.is_limit());
    }

    #[test]
    fn entry_count_is_capped() {
        let mut tar = Tar::new();
        for i in 0..5 {
            tar.file(&format!("f{i}"), b"x");
        }
        let archive = tar.gz();
        let scratch = Scratch::new();
        let caps = Limits {
            max_entries: 4,
            ..Limits::default()
        };
        let error = scratch.refuse(&archive, &caps);
        assert_eq!(error.to_string(), "too many archive entries (more than 4)");
        assert!(error.is_limit());

        let scratch = Scratch::new();
        let caps = Limits {
            max_entries: 5,
            ..Limits::default()
        };
        assert_eq!(
            extract(&archive[..], &scratch.dest(), &caps).unwrap().files,
            5
        );
    }

    #[test]
    fn compressed_cap_applies_to_readers_too() {
        let archive = Tar::new().file("a", &[3; 10_000]).gz();
        let scratch = Scratch::new();
        let caps = Limits {
            max_compressed: archive.len() as u64 - 1,
            ..Limits::default()
        };
        let error = scratch.refuse(&archive, &caps);
        assert!(matches!(error, Error::CompressedTooLarge { .. }), "{error}");

        let scratch = Scratch::new();
        let caps = Limits {
            max_compressed: archive.len() as u64,
            ..Limits::default()
        };
        extract(&archive[..], &scratch.dest(), &caps).unwrap();
    }

    #[test]
    fn malformed_archives_are_invalid_not_limits() {
        let archive = Tar::new().file("a", &[5; 5000]).tar();
        // Cut inside the file's data.
        let scratch = Scratch::new();
        let error = scratch.refuse(&gz(&archive[..3000]), &Limits::default());
        assert!(!error.is_limit(), "{error}");
        assert!(
            matches!(error, Error::InvalidEntry { .. } | Error::InvalidArchive(_)),
            "{error}"
        );

        // Not gzip at all.
        let scratch = Scratch::new();
        let error = scratch.refuse(b"plain text, not an archive", &Limits::default());
        assert!(matches!(error, Error::InvalidArchive(_)), "{error}");

        // A gzip stream cut short.
        let full = gz(&archive);
        let scratch = Scratch::new();
        let error = scratch.refuse(&full[..full.len() - 4], &Limits::default());
        assert!(matches!(error, Error::InvalidArchive(_)), "{error}");
    }

    #[test]
    fn destination_must_be_empty() {
        let scratch = Scratch::new();
        fs::write(scratch.dest().join("x"), "x").unwrap();
        let archive = Tar::new().file("a", b"a").gz();
        let error = scratch.refuse(&archive, &Limits::default());
        assert!(matches!(error, Error::DestinationNotEmpty), "{error}");

        let scratch = Scratch::new();
        let error = extract(
            &archive[..],
            &scratch.dest().join("missing"),
            &Limits::default(),
        )
        .unwrap_err();
        scratch.assert_no_leak(&error);
        assert!(matches!(error, Error::Destination(_)), "{error}");
    }

    #[test]
    fn upload_round_trip_in_chunks() {
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("app/values.yaml"), "replicas: 3\n");
        let mut archive = Vec::new();
        build(src.path(), &[], &mut archive).unwrap();
        let checksum = sha256_hex(&archive);

        let spool = tempfile::tempdir().unwrap();
        let mut upload = Upload::new(spool.path(), Limits::default()).unwrap();
        for chunk in archive.chunks(7) {
            upload.push(chunk).unwrap();
        }
        assert_eq!(upload.bytes_received(), archive.len() as u64);
        // The spool file is anonymous.
        assert_eq!(fs::read_dir(spool.path()).unwrap().count(), 0);
        let scratch = Scratch::new();
        let done = upload
            .extract(&checksum.to_uppercase(), &scratch.dest())
            .unwrap();
        assert_eq!(
            done,
            Extracted {
                files: 1,
                bytes: 12
            }
        );
        assert_eq!(
            fs::read_to_string(scratch.dest().join("app/values.yaml")).unwrap(),
            "replicas: 3\n"
        );
    }

    #[test]
    fn upload_enforces_the_compressed_cap_as_chunks_arrive() {
        let spool = tempfile::tempdir().unwrap();
        let caps = Limits {
            max_compressed: 100,
            ..Limits::default()
        };
        let mut upload = Upload::new(spool.path(), caps).unwrap();
        upload.push(&[0; 60]).unwrap();
        upload.push(&[0; 40]).unwrap();
        let error = upload.push(&[0; 1]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "archive exceeds the maximum size of 100 bytes (--streamed-manifest-max-tar-size)"
        );
        assert!(error.is_limit());
        // Refused for good, even for an empty chunk.
        assert!(matches!(
            upload.push(&[]),
            Err(Error::CompressedTooLarge { .. })
        ));
        let scratch = Scratch::new();
        let error = upload.extract("00", &scratch.dest()).unwrap_err();
        assert!(matches!(error, Error::CompressedTooLarge { .. }), "{error}");
    }

    #[test]
    fn upload_checks_the_checksum_before_extracting() {
        let archive = Tar::new().file("a", b"a").gz();
        let spool = tempfile::tempdir().unwrap();

        let mut upload = Upload::new(spool.path(), Limits::default()).unwrap();
        upload.push(&archive).unwrap();
        let scratch = Scratch::new();
        let wrong = "ab".repeat(32);
        let error = upload.extract(&wrong, &scratch.dest()).unwrap_err();
        scratch.assert_no_leak(&error);
        assert_eq!(
            error.to_string(),
            format!(
                "checksum mismatch: expected {wrong}, got {}",
                sha256_hex(&archive)
            )
        );
        assert!(!error.is_limit());
        assert_eq!(fs::read_dir(scratch.dest()).unwrap().count(), 0);

        let mut upload = Upload::new(spool.path(), Limits::default()).unwrap();
        upload.push(&archive).unwrap();
        let error = upload.extract("  ", &scratch.dest()).unwrap_err();
        assert_eq!(error.to_string(), "missing checksum");

        let mut upload = Upload::new(spool.path(), Limits::default()).unwrap();
        upload.push(&archive).unwrap();
        upload
            .extract(&sha256_hex(&archive), &scratch.dest())
            .unwrap();
        assert_eq!(fs::read(scratch.dest().join("a")).unwrap(), b"a");
    }

    #[test]
    fn upload_errors_do_not_name_the_spool_directory() {
        let spool = tempfile::tempdir().unwrap();
        let missing = spool.path().join("missing");
        let error = Upload::new(&missing, Limits::default()).unwrap_err();
        assert!(matches!(error, Error::Spool(_)), "{error}");
        let message = error.to_string();
        assert!(
            !message.contains(spool.path().to_str().unwrap()),
            "{message}"
        );
    }

    #[test]
    fn upload_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Upload>();
        assert_send::<Error>();
    }
}
