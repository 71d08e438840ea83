//! Catalogs uploaded with their images (`POST /v1/ingest` as a `.zip` or a multipart upload, and
//! `POST /v1/products/{id}/images`): each file is written into a private staging folder under a
//! cleaned relative name, and the ingest then reads image references that are relative paths only
//! inside that folder (a [`crate::LocalFiles::Roots`] of one root). The stored images go to the
//! media store like any other; the staging folder is removed when the job ends.
//!
//! Everything in an upload is hostile until checked, and every bound is enforced while reading,
//! never from a size the archive declares:
//! - names: UTF-8, relative, no `..`, no backslash or control character, bounded length and depth;
//!   duplicates (after cleaning) are refused;
//! - zip entries: at most [`UploadLimits::max_files`] (counted from the end-of-central-directory
//!   record before the directory is parsed), no symlinks, no nested archives, no zip64, no
//!   encryption; each read through a bounded reader that stops at the per-file cap, the total
//!   cap and the compression ratio cap, and checks the CRC;
//! - exactly one catalog (`.jsonl`, `.ndjson`, `.json` or `.csv`), at most
//!   [`UploadLimits::max_catalog_bytes`].
//!
//! Files are created with `create_new` under names made only of checked components, so nothing
//! is ever written outside the staging folder or through a link.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::Format;

/// Bounds of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Files (zip entries, folders included, or multipart parts).
    pub max_files: usize,
    /// Bytes of all files together, uncompressed.
    pub max_total_bytes: u64,
    /// Bytes of one image file.
    pub max_file_bytes: u64,
    /// Bytes of the catalog.
    pub max_catalog_bytes: u64,
    /// Uncompressed bytes per compressed byte of a zip entry (past its first MiB).
    pub max_ratio: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_files: 10_000,
            max_total_bytes: 512 << 20,
            max_file_bytes: 64 << 20,
            max_catalog_bytes: 512 << 20,
            max_ratio: 100,
        }
    }
}

impl UploadLimits {
    /// Limits for a service whose largest catalog upload is `max_catalog` bytes: the whole upload
    /// and its catalog are capped by it, an image by `max_image` bytes.
    pub fn with_caps(max_catalog: u64, max_image: u64) -> Self {
        UploadLimits {
            max_total_bytes: max_catalog,
            max_catalog_bytes: max_catalog,
            max_file_bytes: max_image.min(max_catalog),
            ..UploadLimits::default()
        }
    }
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Malformed or hostile: a 400.
    #[error("{reason}")]
    Invalid { reason: String },
    /// Over a bound: a 413.
    #[error("{what} is over the limit of {limit}")]
    TooLarge { what: String, limit: u64 },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn invalid(reason: impl Into<String>) -> UploadError {
    UploadError::Invalid { reason: reason.into() }
}

/// Whether a file name is a catalog, and which format.
pub fn catalog_format(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        Some(Format::Csv)
    } else if [".jsonl", ".ndjson", ".json"].iter().any(|e| lower.ends_with(e)) {
        Some(Format::Jsonl)
    } else {
        None
    }
}

const MAX_NAME: usize = 1024;
const MAX_COMPONENT: usize = 255;
const MAX_DEPTH: usize = 16;

/// A file name from an upload as a relative path of checked components (`a/b.jpg`): `.` and empty
/// components are dropped; absolute paths, drive letters, `..`, backslashes and control characters
/// are refused.
pub fn clean_name(raw: &str) -> Result<String, UploadError> {
    let bad = |why: &str| invalid(format!("file name {:?}: {why}", truncate(raw, 80)));
    if raw.len() > MAX_NAME {
        return Err(bad("too long"));
    }
    if raw.chars().any(char::is_control) {
        return Err(bad("control characters"));
    }
    if raw.contains('\\') {
        return Err(bad("backslashes are not path separators here; use `/`"));
    }
    if raw.starts_with('/') {
        return Err(bad("absolute paths are not allowed"));
    }
    let mut parts = vec![];
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad("`..` is not allowed")),
            c if c.len() > MAX_COMPONENT => return Err(bad("a component is too long")),
            c if parts.is_empty() && c.len() == 2 && c.ends_with(':') => return Err(bad("drive letters are not allowed")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(bad("empty"));
    }
    if parts.len() > MAX_DEPTH {
        return Err(bad("too many folders"));
    }
    Ok(parts.join("/"))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An upload in progress: a private folder that files are written into. Dropped before
/// [`Staging::finish`], it removes its folder.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    limits: UploadLimits,
    names: HashSet<String>,
    files: usize,
    bytes: u64,
    catalog: Option<(String, Format, Vec<u8>)>,
    keep: bool,
}

/// A finished upload: its catalog, and the folder of its other files.
#[derive(Debug)]
pub struct StagedUpload {
    /// The staging folder. Removed when this is dropped, unless [`StagedUpload::keep`] was called.
    pub dir: PathBuf,
    pub catalog: Vec<u8>,
    pub format: Format,
    /// The catalog's folder inside the upload (`""` at the top): its relative image paths resolve
    /// against `dir/base`.
    pub base: String,
    /// Files staged besides the catalog.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    kept: bool,
}

impl StagedUpload {
    /// The folder relative image references resolve in.
    pub fn root(&self) -> PathBuf {
        if self.base.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(&self.base)
        }
    }

    /// Take the folder over (it was moved or is removed by the caller).
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.body_path());
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The prefix of staging folders; [`remove_stale`] clears those a crash left.
pub const STAGING_PREFIX: &str = ".upload-";

/// Remove staging folders left in `parent` by a process that died mid-upload. Call before any
/// upload of this process starts (the service does at start).
pub fn remove_stale(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
    }
}

fn io(context: impl std::fmt::Display, source: std::io::Error) -> UploadError {
    UploadError::Io { context: context.to_string(), source }
}

impl Staging {
    /// A new, empty staging folder inside `parent`.
    pub fn new(parent: &Path, limits: UploadLimits) -> Result<Self, UploadError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(parent).map_err(|e| io(parent.display(), e))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir =
            parent.join(format!("{STAGING_PREFIX}{}-{}-{nanos:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&dir).map_err(|e| io(dir.display(), e))?;
        Ok(Staging { dir, limits, names: HashSet::new(), files: 0, bytes: 0, catalog: None, keep: false })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a zip body is written before it is read (beside the folder, never inside it, so no
    /// entry name can clash with it); removed with the staging.
    pub fn body_path(&self) -> PathBuf {
        self.dir.with_extension("zip")
    }

    fn count_file(&mut self) -> Result<(), UploadError> {
        self.files += 1;
        if self.files > self.limits.max_files {
            return Err(UploadError::TooLarge { what: "the number of files".into(), limit: self.limits.max_files as u64 });
        }
        Ok(())
    }

    fn claim(&mut self, raw: &str) -> Result<String, UploadError> {
        let name = clean_name(raw)?;
        if !self.names.insert(name.clone()) {
            return Err(invalid(format!("the upload holds {name:?} twice")));
        }
        // A file and a folder of the same name would make one of them unreachable.
        let mut prefix = String::new();
        for part in name.split('/') {
            if !prefix.is_empty() {
                if self.names.contains(&prefix) {
                    return Err(invalid(format!("{prefix:?} is both a file and a folder")));
                }
                prefix.push('/');
            }
            prefix.push_str(part);
        }
        if self.names.iter().any(|n| n.len() > name.len() && n.starts_with(&name) && n.as_bytes()[name.len()] == b'/') {
            return Err(invalid(format!("{name:?} is both a file and a folder")));
        }
        Ok(name)
    }

    /// Add the catalog, read whole (it is parsed from memory), at most `max_catalog_bytes`.
    pub fn add_catalog(&mut self, raw_name: &str, format: Format, reader: impl Read) -> Result<(), UploadError> {
        if let Some((other, _, _)) = &self.catalog {
            return Err(invalid(format!("the upload holds two catalogs ({other} and {raw_name}); send one")));
        }
        let name = if raw_name.is_empty() { String::from("catalog") } else { self.claim(raw_name)? };
        self.count_file()?;
        let limit = self.limits.max_catalog_bytes;
        let mut bytes = vec![];
        let n = reader.take(limit + 1).read_to_end(&mut bytes).map_err(|e| io(&name, e))? as u64;
        if n > limit {
            return Err(UploadError::TooLarge { what: "the catalog".into(), limit });
        }
        self.bytes += n;
        if self.bytes > self.limits.max_total_bytes {
            return Err(UploadError::TooLarge { what: "the upload".into(), limit: self.limits.max_total_bytes });
        }
        self.catalog = Some((name, format, bytes));
        Ok(())
    }

    /// Add one file under its relative name, copying at most `max_file_bytes` (and what is left of
    /// the total). `compressed` is the size it was read from, for the ratio cap (`None`: not
    /// compressed).
    pub fn add_file(&mut self, raw_name: &str, reader: impl Read, compressed: Option<u64>) -> Result<(), UploadError> {
        let name = self.claim(raw_name)?;
        self.count_file()?;
        if name.to_ascii_lowercase().ends_with(".zip") {
            return Err(invalid(format!("{name}: archives inside an upload are not opened; send one zip")));
        }
        let path = self.dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(&name, e))?;
        }
        // create_new: never through an existing file or link.
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| io(&name, e))?;
        let mut written = 0u64;
        let mut reader = reader;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(invalid(format!("{name}: could not be read: {e}"))),
            };
            written += n as u64;
            self.bytes += n as u64;
            if written > self.limits.max_file_bytes {
                return Err(UploadError::TooLarge { what: format!("file {name}"), limit: self.limits.max_file_bytes });
            }
            if self.bytes > self.limits.max_total_bytes {
                return Err(UploadError::TooLarge { what: "the upload".into(), limit: self.limits.max_total_bytes });
            }
            if let Some(c) = compressed {
                if written > 1 << 20 && written > c.max(1).saturating_mul(self.limits.max_ratio) {
                    return Err(invalid(format!(
                        "{name}: expands more than {}× (a zip bomb?); store images uncompressed or lightly compressed",
                        self.limits.max_ratio
                    )));
                }
            }
            file.write_all(&buf[..n]).map_err(|e| io(&name, e))?;
        }
        file.sync_all().map_err(|e| io(&name, e))?;
        Ok(())
    }

    /// Add every entry of a zip archive: the catalog (by its extension) and the files.
    pub fn add_zip<R: Read + Seek>(&mut self, mut reader: R) -> Result<(), UploadError> {
        let entries = eocd_entries(&mut reader)?;
        if entries > self.limits.max_files as u64 {
            return Err(UploadError::TooLarge { what: "the number of files".into(), limit: self.limits.max_files as u64 });
        }
        reader.seek(SeekFrom::Start(0)).map_err(|e| io("zip", e))?;
        let mut zip = zip::ZipArchive::new(reader).map_err(|e| invalid(format!("not a readable zip: {e}")))?;
        if zip.len() > self.limits.max_files {
            return Err(UploadError::TooLarge { what: "the number of files".into(), limit: self.limits.max_files as u64 });
        }
        for i in 0..zip.len() {
            let entry = zip.by_index(i).map_err(|e| invalid(format!("zip entry {i}: {e}")))?;
            let raw = std::str::from_utf8(entry.name_raw())
                .map_err(|_| invalid(format!("zip entry {i}: its name is not UTF-8; name files in UTF-8")))?
                .to_string();
            if entry.is_symlink() {
                return Err(invalid(format!("{raw}: symbolic links are not accepted")));
            }
            if entry.is_dir() {
                clean_name(&raw)?;
                self.count_file()?;
                continue;
            }
            // Finder's resource forks and folder settings, never catalog data.
            if raw.starts_with("__MACOSX/") || raw.rsplit('/').next() == Some(".DS_Store") {
                self.count_file()?;
                continue;
            }
            let compressed = entry.compressed_size();
            match catalog_format(&raw) {
                Some(format) => {
                    let limited = BoundedRatio { inner: entry, read: 0, compressed, ratio: self.limits.max_ratio };
                    self.add_catalog(&raw, format, limited)?;
                }
                None => self.add_file(&raw, entry, Some(compressed))?,
            }
        }
        Ok(())
    }

    /// Check that there is a catalog, and hand the upload over.
    pub fn finish(mut self) -> Result<StagedUpload, UploadError> {
        let Some((name, format, catalog)) = self.catalog.take() else {
            return Err(invalid("the upload holds no catalog (a .jsonl, .ndjson, .json or .csv file)"));
        };
        if catalog.iter().all(u8::is_ascii_whitespace) {
            return Err(invalid("the catalog is empty"));
        }
        let base = name.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or_default();
        self.keep = true;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io(self.dir.display(), e))?;
        Ok(StagedUpload {
            dir: self.dir.clone(),
            catalog,
            format,
            base,
            files: self.files.saturating_sub(1),
            bytes: self.bytes,
            kept: false,
        })
    }

    /// Hand over a staging folder that holds only files (no catalog): a product's image upload.
    pub fn finish_files(mut self) -> StagedUpload {
        self.keep = true;
        StagedUpload {
            dir: self.dir.clone(),
            catalog: vec![],
            format: Format::Jsonl,
            base: String::new(),
            files: self.files,
            bytes: self.bytes,
            kept: false,
        }
    }
}

/// A reader that refuses to expand past `ratio` times its compressed size (after the first MiB).
struct BoundedRatio<R> {
    inner: R,
    read: u64,
    compressed: u64,
    ratio: u64,
}

impl<R: Read> Read for BoundedRatio<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > 1 << 20 && self.read > self.compressed.max(1).saturating_mul(self.ratio) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "expands too much (a zip bomb?)"));
        }
        Ok(n)
    }
}

/// The entry count of a zip's end-of-central-directory record, read before the zip crate parses
/// the directory (whose size it would otherwise trust). Zip64 archives are refused: an upload
/// within our bounds never needs one.
fn eocd_entries<R: Read + Seek>(r: &mut R) -> Result<u64, UploadError> {
    let len = r.seek(SeekFrom::End(0)).map_err(|e| io("zip", e))?;
    let tail_len = len.min(22 + 65535);
    r.seek(SeekFrom::Start(len - tail_len)).map_err(|e| io("zip", e))?;
    let mut tail = vec![0u8; tail_len as usize];
    r.read_exact(&mut tail).map_err(|e| io("zip", e))?;
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| invalid("not a zip (no end of central directory)"))?;
    let u16_at = |o: usize| u16::from_le_bytes([tail[at + o], tail[at + o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([tail[at + o], tail[at + o + 1], tail[at + o + 2], tail[at + o + 3]]);
    let (entries, cd_size, cd_offset) = (u16_at(10), u32_at(12), u32_at(16));
    if entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return Err(invalid("zip64 archives are not accepted"));
    }
    let zip64_locator = at >= 20 && tail[at - 20..at - 16] == [0x50, 0x4b, 0x06, 0x07];
    if zip64_locator {
        return Err(invalid("zip64 archives are not accepted"));
    }
    Ok(u64::from(entries))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use zip::write::SimpleFileOptions;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(vec![]));
        for (name, bytes) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn stage(zip: Vec<u8>, limits: UploadLimits) -> (tempfile::TempDir, Result<StagedUpload, UploadError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = Staging::new(dir.path(), limits).and_then(|mut s| {
            s.add_zip(Cursor::new(zip))?;
            s.finish()
        });
        (dir, r)
    }

    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_zip_stages_its_catalog_and_files_under_their_relative_names() {
        let z = zip_of(&[("shop/catalog.jsonl", b"{\"id\":\"a\"}\n"), ("shop/images/a.jpg", b"jpeg"), ("shop/b.png", b"png")]);
        let (_d, r) = stage(z, UploadLimits::default());
        let up = r.unwrap();
        assert_eq!((up.format, up.base.as_str(), up.files), (Format::Jsonl, "shop", 2));
        assert_eq!(up.catalog, b"{\"id\":\"a\"}\n");
        assert_eq!(std::fs::read(up.root().join("images/a.jpg")).unwrap(), b"jpeg");
        assert_eq!(std::fs::read(up.root().join("b.png")).unwrap(), b"png");
        let dir = up.dir.clone();
        drop(up);
        assert!(!dir.exists(), "an upload nobody took is removed");
    }

    #[test]
    fn hostile_names_are_refused_and_leave_nothing_behind() {
        for name in ["../evil.jpg", "a/../../evil.jpg", "/etc/passwd", "a\\b.jpg", "C:/x.jpg", "a\nb.jpg", "", "./"] {
            let z = zip_of(&[("c.jsonl", b"{}\n"), (name, b"x")]);
            let (d, r) = stage(z, UploadLimits::default());
            assert!(matches!(r, Err(UploadError::Invalid { .. })), "{name:?}: {r:?}");
            assert_eq!(leftovers(d.path()), 0, "{name:?}");
            assert!(!d.path().parent().unwrap().join("evil.jpg").exists());
        }
        assert_eq!(clean_name("./a//b/./c.jpg").unwrap(), "a/b/c.jpg");
        assert!(clean_name(&"a/".repeat(20)).is_err());
    }

    #[test]
    fn duplicate_names_two_catalogs_nested_zips_and_no_catalog_are_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("duplicate", zip_of(&[("c.jsonl", b"{}\n"), ("a.jpg", b"1"), ("./a.jpg", b"2")])),
            ("two catalogs", zip_of(&[("c.jsonl", b"{}\n"), ("d.csv", b"id\na\n")])),
            ("nested zip", zip_of(&[("c.jsonl", b"{}\n"), ("inner.zip", &zip_of(&[("x.jpg", b"1")]))])),
            ("no catalog", zip_of(&[("a.jpg", b"1")])),
            ("file and folder", zip_of(&[("c.jsonl", b"{}\n"), ("a", b"1"), ("a/b.jpg", b"2")])),
            ("empty catalog", zip_of(&[("c.jsonl", b"  \n")])),
            ("not a zip", b"PK\x03\x04 but nothing else".to_vec()),
        ];
        for (what, z) in cases {
            let (d, r) = stage(z, UploadLimits::default());
            assert!(matches!(r, Err(UploadError::Invalid { .. })), "{what}: {r:?}");
            assert_eq!(leftovers(d.path()), 0, "{what}");
        }
    }

    #[test]
    fn non_utf8_names_are_refused() {
        let mut z = zip_of(&[("c.jsonl", b"{}\n"), ("\u{e9}.jpg", b"1")]);
        // Replace the UTF-8 é (0xC3 0xA9) in both headers with a lone Latin-1 byte pair that is
        // not UTF-8 (0xE9 0x2E would shift lengths, so use 0xFF 0xFE of the same length).
        for i in 0..z.len() - 1 {
            if z[i] == 0xC3 && z[i + 1] == 0xA9 {
                z[i] = 0xFF;
                z[i + 1] = 0xFE;
            }
        }
        let (_d, r) = stage(z, UploadLimits::default());
        let e = r.unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn symlink_entries_are_refused() {
        let mut w = zip::ZipWriter::new(Cursor::new(vec![]));
        w.start_file("c.jsonl", SimpleFileOptions::default()).unwrap();
        w.write_all(b"{}\n").unwrap();
        w.add_symlink("a.jpg", "/etc/passwd", SimpleFileOptions::default()).unwrap();
        let z = w.finish().unwrap().into_inner();
        let (d, r) = stage(z, UploadLimits::default());
        assert!(r.unwrap_err().to_string().contains("symbolic link"));
        assert_eq!(leftovers(d.path()), 0);
    }

    #[test]
    fn zip_bombs_stop_at_the_ratio_the_file_and_the_total_caps() {
        // 20 MiB of zeros deflate to about 20 kB: a ratio of ~1000.
        let zeros = vec![0u8; 20 << 20];
        let (_d, r) = stage(zip_of(&[("c.jsonl", b"{}\n"), ("bomb.jpg", &zeros)]), UploadLimits::default());
        assert!(r.unwrap_err().to_string().contains("expands"));
        // The same in the catalog.
        let (_d, r) = stage(zip_of(&[("c.jsonl", &zeros)]), UploadLimits::default());
        assert!(matches!(r, Err(UploadError::Invalid { .. }) | Err(UploadError::Io { .. })), "{r:?}");
        // Incompressible bytes over the per-file and the total caps.
        let noise: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let tight = UploadLimits { max_file_bytes: 100_000, ..UploadLimits::default() };
        let (_d, r) = stage(zip_of(&[("c.jsonl", b"{}\n"), ("big.jpg", &noise)]), tight);
        assert!(matches!(r, Err(UploadError::TooLarge { .. })), "{r:?}");
        let tight = UploadLimits { max_total_bytes: 400_000, ..UploadLimits::default() };
        let (_d, r) = stage(zip_of(&[("c.jsonl", b"{}\n"), ("a.jpg", &noise), ("b.jpg", &noise)]), tight);
        assert!(matches!(r, Err(UploadError::TooLarge { .. })), "{r:?}");
        let tight = UploadLimits { max_catalog_bytes: 10, ..UploadLimits::default() };
        let (_d, r) = stage(zip_of(&[("c.jsonl", b"{\"id\":\"abcdefgh\"}\n")]), tight);
        assert!(matches!(r, Err(UploadError::TooLarge { .. })), "{r:?}");
    }

    #[test]
    fn the_entry_count_is_checked_before_the_directory_is_parsed() {
        let names: Vec<String> = (0..30).map(|i| format!("{i}.jpg")).collect();
        let mut entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        entries.push(("c.jsonl", b"{}\n"));
        let tight = UploadLimits { max_files: 10, ..UploadLimits::default() };
        let (_d, r) = stage(zip_of(&entries), tight);
        assert!(matches!(r, Err(UploadError::TooLarge { .. })), "{r:?}");
        // A declared count that lies (fewer than there are) is caught by counting as we go.
        let mut z = zip_of(&entries);
        let at = (0..z.len() - 21).rev().find(|&i| z[i..i + 4] == [0x50, 0x4b, 0x05, 0x06]).unwrap();
        z[at + 8..at + 12].copy_from_slice(&[5, 0, 5, 0]);
        let (_d, r) = stage(z, tight);
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn a_multipart_style_upload_stages_files_and_refuses_a_second_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staging::new(dir.path(), UploadLimits::default()).unwrap();
        s.add_catalog("catalog.csv", Format::Csv, &b"id,title,image\na,x,images/a.jpg\n"[..]).unwrap();
        s.add_file("images/a.jpg", &b"jpeg"[..], None).unwrap();
        assert!(s.add_catalog("more.jsonl", Format::Jsonl, &b"{}"[..]).is_err());
        assert!(s.add_file("images/a.jpg", &b"again"[..], None).is_err());
        let up = s.finish().unwrap();
        assert_eq!((up.format, up.base.as_str()), (Format::Csv, ""));
        assert_eq!(std::fs::read(up.root().join("images/a.jpg")).unwrap(), b"jpeg");
        remove_stale(dir.path());
        assert!(!up.dir.exists(), "remove_stale clears staging folders");
    }
}
