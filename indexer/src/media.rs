//! The media store: the only images the service serves.
//!
//! Every product image is read once at ingest (from the merchant's file or URL), must decode, and
//! is stored here; its embedding is computed from the stored bytes. So a reindex or a model swap
//! re-embeds from here without the sources, and `/v1/images` and `/v1/thumbs` serve from here
//! without ever reading a server path or fetching a URL.
//!
//! Layout: `DATA/media/ab/abcdef….jpg`, content-addressed by the blake3 hash of the stored bytes
//! and fanned out by its first two hex digits. Thumbnails are a cache beside it, keyed by the same
//! hash: `DATA/cache/thumbs/{hash}-{side}.jpg`.
//!
//! What is stored ([`prepare`]): the original bytes when they are a JPEG, PNG, WebP or GIF of at
//! most [`ORIGINAL_MAX_BYTES`] and at most [`MAX_SIDE`] px on the long side; otherwise a JPEG
//! re-encoded from the decoded, upright image, at most [`MAX_SIDE`] px on the long side (quality
//! 82, core's thumbnail encoder). 2048 px is more than any product page shows and far more than
//! the model sees (224 px), and keeps a catalog of camera originals from filling the disk.
//!
//! Crash safety: `put_all` writes each file under a temporary name, fsyncs it, renames it into
//! place and fsyncs its folder, and the indexer calls it before the sled write of the products
//! that reference it: media exists whenever a record points at it. A crash leaves at most an
//! unreferenced file or a temporary one, which [`MediaStore::gc`] removes.
//!
//! Threading: `put_all` and `gc` belong to the single writer of the data directory (the indexer),
//! so a collection never races a write; `get`, `find`, `usage` and `thumbnail` are safe from any
//! thread or process (a reader of an older generation may find its media collected: a 404).

use std::collections::{BTreeSet, HashSet};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vitrine_core::catalog::{ImageFailure, MediaFormat, MediaRef};
use vitrine_core::error::ImageErrorKind;
use vitrine_core::CoreError;
use vitrine_model::preprocess::{decode, thumbnail_jpeg};
use vitrine_model::ImageLimits;

use crate::{IndexError, Result};

/// Originals up to this size are stored as they are.
pub const ORIGINAL_MAX_BYTES: u64 = 4 << 20;
/// The longest side of a stored image: originals up to it are kept, larger ones are scaled to it.
pub const MAX_SIDE: u32 = 2048;
/// Temporary files older than this are left by a crash (a write takes milliseconds).
const STALE_TEMP: Duration = Duration::from_secs(600);

/// How much the media store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MediaUsage {
    pub files: u64,
    pub bytes: u64,
}

/// What a collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub removed_files: u64,
    pub removed_bytes: u64,
}

/// Image bytes ready for the store.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub bytes: Arc<[u8]>,
    /// Whether these are a re-encoded copy rather than the original bytes.
    pub reencoded: bool,
}

/// The media store of one data directory.
#[derive(Debug, Clone)]
pub struct MediaStore {
    media: PathBuf,
    thumbs: PathBuf,
}

fn media_format(bytes: &[u8]) -> Option<MediaFormat> {
    match image::guess_format(bytes).ok()? {
        image::ImageFormat::Jpeg => Some(MediaFormat::Jpeg),
        image::ImageFormat::Png => Some(MediaFormat::Png),
        image::ImageFormat::WebP => Some(MediaFormat::Webp),
        image::ImageFormat::Gif => Some(MediaFormat::Gif),
        _ => None,
    }
}

fn image_format(f: MediaFormat) -> image::ImageFormat {
    match f {
        MediaFormat::Jpeg => image::ImageFormat::Jpeg,
        MediaFormat::Png => image::ImageFormat::Png,
        MediaFormat::Webp => image::ImageFormat::WebP,
        MediaFormat::Gif => image::ImageFormat::Gif,
    }
}

/// Whether `h` is a blake3 hash as the store names files: 64 lowercase hex digits. Everything that
/// becomes a path goes through this, so a tampered record or a `media:` reference cannot escape.
pub fn is_hash(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The bytes the store keeps for an image (see the module doc); `name` labels errors.
///
/// Originals are only probed (format and header dimensions), not decoded: the embedding that
/// follows decodes them, and an image whose embedding fails is never stored.
pub fn prepare(bytes: &[u8], name: &str, limits: &ImageLimits) -> vitrine_core::Result<Prepared> {
    if bytes.is_empty() {
        return Err(CoreError::image(name, ImageErrorKind::Empty));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(CoreError::image(name, ImageErrorKind::TooManyBytes { bytes: bytes.len() as u64, limit: limits.max_bytes }));
    }
    if let Some(format) = media_format(bytes).filter(|_| bytes.len() as u64 <= ORIGINAL_MAX_BYTES) {
        let dims = image::ImageReader::with_format(Cursor::new(bytes), image_format(format)).into_dimensions();
        if let Ok((w, h)) = dims {
            let fits = w.max(h) <= MAX_SIDE && u64::from(w) * u64::from(h) <= limits.max_pixels && w.max(h) <= limits.max_side;
            if fits && w > 0 && h > 0 {
                return Ok(Prepared { bytes: Arc::from(bytes), reencoded: false });
            }
        }
        // A header that does not parse falls through to the full decode, which says why.
    }
    let img = decode(bytes, name, limits)?;
    Ok(Prepared { bytes: thumbnail_jpeg(&img, MAX_SIDE).into(), reencoded: true })
}

/// The short reason shown for an image that failed with `e`.
pub fn failure_of(e: &CoreError) -> ImageFailure {
    match e {
        CoreError::Image { kind, .. } => match kind {
            ImageErrorKind::Empty | ImageErrorKind::Read(_) => ImageFailure::Unreadable,
            ImageErrorKind::TooManyBytes { .. } | ImageErrorKind::TooLarge { .. } => ImageFailure::TooLarge,
            ImageErrorKind::UnknownFormat => ImageFailure::UnsupportedFormat,
            ImageErrorKind::Decode(_) => ImageFailure::Corrupt,
        },
        _ => ImageFailure::NotEmbedded,
    }
}

fn io(path: &Path, e: std::io::Error) -> IndexError {
    IndexError::Core(CoreError::io(path.display().to_string(), e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// A temporary name in `dir`, unique across threads and processes.
fn temp_path(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(".tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Write `bytes` to `path` through a fsynced temporary file and a rename: readers see the whole
/// file or none. The caller fsyncs the folder.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("media paths have a folder");
    let tmp = temp_path(dir);
    let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    Ok(())
}

/// Whether a directory entry is a temporary file left long enough ago to be a crash's.
fn stale_temp(e: &std::fs::DirEntry) -> bool {
    e.file_name().to_string_lossy().starts_with(".tmp-")
        && e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > STALE_TEMP)
}

impl MediaStore {
    /// The media store of data directory `data` (nothing is created until the first write).
    pub fn new(data: &Path) -> Self {
        MediaStore { media: data.join("media"), thumbs: data.join("cache").join("thumbs") }
    }

    fn path(&self, hash: &str, format: MediaFormat) -> Option<PathBuf> {
        is_hash(hash).then(|| self.media.join(&hash[..2]).join(format!("{hash}.{}", format.ext())))
    }

    /// Store one image's bytes (see [`MediaStore::put_all`]).
    pub fn put(&self, bytes: &[u8]) -> Result<MediaRef> {
        Ok(self.put_all(&[bytes])?.remove(0))
    }

    /// Store images durably, each under the hash of its bytes; bytes already stored are not
    /// written again. Every file is fsynced, then every folder touched once, before this returns.
    /// Only JPEG, PNG, WebP and GIF bytes are taken ([`prepare`] makes them).
    pub fn put_all(&self, items: &[&[u8]]) -> Result<Vec<MediaRef>> {
        let mut refs = Vec::with_capacity(items.len());
        let mut touched = BTreeSet::new();
        for bytes in items {
            let format = media_format(bytes)
                .ok_or_else(|| IndexError::Invalid("the media store keeps only JPEG, PNG, WebP and GIF bytes".into()))?;
            let hash = blake3::hash(bytes).to_hex().to_string();
            let path = self.path(&hash, format).expect("a blake3 hex digest is a hash");
            let r = MediaRef { hash, format, bytes: bytes.len() as u64 };
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == r.bytes) {
                refs.push(r);
                continue;
            }
            let dir = path.parent().expect("fanned out").to_path_buf();
            if !dir.exists() {
                if !self.media.exists() {
                    touched.insert(self.media.parent().expect("DATA/media has a parent").to_path_buf());
                }
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                touched.insert(self.media.clone());
            }
            write_file(&path, bytes)?;
            touched.insert(dir);
            refs.push(r);
        }
        // Parents after children: a new fan-out folder's entry is made durable in media/ too.
        for dir in touched.iter().rev() {
            sync_dir(dir)?;
        }
        Ok(refs)
    }

    /// The stored bytes of `r`, or `None` when they are not in the store (never stored, collected,
    /// or damaged: bytes that no longer match their hash are not handed out).
    pub fn get(&self, r: &MediaRef) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.path(&r.hash, r.format) else { return Ok(None) };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        if blake3::hash(&bytes).to_hex().as_str() != r.hash {
            tracing::error!(path = %path.display(), "stored media does not match its hash; not serving it");
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// The stored image with hash `hash`, whatever its format.
    pub fn find(&self, hash: &str) -> Result<Option<(MediaRef, Vec<u8>)>> {
        if !is_hash(hash) {
            return Ok(None);
        }
        for format in MediaFormat::ALL {
            let r = MediaRef { hash: hash.to_string(), format, bytes: 0 };
            if let Some(bytes) = self.get(&r)? {
                return Ok(Some((MediaRef { bytes: bytes.len() as u64, ..r }, bytes)));
            }
        }
        Ok(None)
    }

    /// Files and bytes stored (temporary files not counted).
    pub fn usage(&self) -> MediaUsage {
        let mut u = MediaUsage::default();
        self.each_file(|e, name| {
            if !name.starts_with('.') {
                u.files += 1;
                u.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        });
        u
    }

    fn each_file(&self, mut f: impl FnMut(&std::fs::DirEntry, &str)) {
        let Ok(fans) = std::fs::read_dir(&self.media) else { return };
        for fan in fans.flatten() {
            let Ok(files) = std::fs::read_dir(fan.path()) else { continue };
            for e in files.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                f(&e, &name);
            }
        }
    }

    /// Remove every stored image whose hash is not in `referenced`, with its thumbnails, and the
    /// temporary files a crash left. For the single writer only: a `put_all` running at the same
    /// time could lose a file it has just written.
    pub fn gc(&self, referenced: &HashSet<String>) -> Result<GcReport> {
        self.gc_older_than(referenced, Duration::ZERO)
    }

    /// [`MediaStore::gc`], keeping files written less than `min_age` ago. Where several writers
    /// share the media directory (the engine backend), another node may have stored an image whose
    /// product row is not committed yet: a grace period keeps it.
    pub fn gc_older_than(&self, referenced: &HashSet<String>, min_age: Duration) -> Result<GcReport> {
        let young = |e: &std::fs::DirEntry| {
            !min_age.is_zero()
                && e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_none_or(|age| age < min_age)
        };
        let mut report = GcReport::default();
        let mut remove = |e: &std::fs::DirEntry| {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    report.removed_files += 1;
                    report.removed_bytes += len;
                }
                Err(err) => tracing::warn!(path = %e.path().display(), "could not remove unreferenced media: {err}"),
            }
        };
        self.each_file(|e, name| {
            let keep = match name.split_once('.') {
                Some((hash, _)) if !hash.is_empty() => referenced.contains(hash) || young(e),
                _ => !stale_temp(e),
            };
            if !keep {
                remove(e);
            }
        });
        // Thumbnails are named `{hash}-{side}.jpg`; anything else is from an older cache scheme.
        if let Ok(rd) = std::fs::read_dir(&self.thumbs) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let keep = match name.split_once('-') {
                    Some(("", _)) | None => false,
                    Some((".tmp", _)) => !stale_temp(&e),
                    Some((hash, _)) => referenced.contains(hash),
                };
                if !keep {
                    remove(&e);
                }
            }
        }
        if report.removed_files > 0 {
            tracing::info!(files = report.removed_files, bytes = report.removed_bytes, "collected unreferenced media");
        }
        Ok(report)
    }

    /// A JPEG of `r` at most `side` px on the long side, made from the stored bytes on first use
    /// and cached; `None` when the media is not in the store.
    pub fn thumbnail(&self, r: &MediaRef, side: u32) -> Result<Option<Vec<u8>>> {
        if !is_hash(&r.hash) {
            return Ok(None);
        }
        let cached = self.thumbs.join(format!("{}-{side}.jpg", r.hash));
        if let Ok(b) = std::fs::read(&cached) {
            return Ok(Some(b));
        }
        let Some(bytes) = self.get(r)? else { return Ok(None) };
        let img = decode(&bytes, &r.hash, &ImageLimits::default())?;
        let jpeg = thumbnail_jpeg(&img, side);
        // A cache: a failed write only costs the next request another resize.
        if let Err(e) =
            std::fs::create_dir_all(&self.thumbs).map_err(|e| io(&self.thumbs, e)).and_then(|_| write_file(&cached, &jpeg))
        {
            tracing::warn!("thumbnail cache: {e}");
        }
        Ok(Some(jpeg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([seed, (x % 256) as u8, (y % 256) as u8]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out.sort();
        out
    }

    #[test]
    fn put_get_round_trip_is_content_addressed_and_fanned_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path());
        let bytes = png(40, 30, 1);
        let r = store.put(&bytes).unwrap();
        assert_eq!(r.hash, blake3::hash(&bytes).to_hex().as_str());
        assert_eq!((r.format, r.bytes), (MediaFormat::Png, bytes.len() as u64));
        let expected = dir.path().join("media").join(&r.hash[..2]).join(format!("{}.png", r.hash));
        assert_eq!(files_under(dir.path()), vec![expected]);
        assert_eq!(store.get(&r).unwrap().unwrap(), bytes);
        let (found, again) = store.find(&r.hash).unwrap().unwrap();
        assert_eq!((found, again), (r, bytes));
    }

    #[test]
    fn equal_bytes_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path());
        let (a, b) = (png(20, 20, 1), png(20, 20, 2));
        let refs = store.put_all(&[&a[..], &b[..], &a[..]]).unwrap();
        assert_eq!(refs[0], refs[2]);
        assert_ne!(refs[0].hash, refs[1].hash);
        assert_eq!(store.put(&a).unwrap(), refs[0]);
        assert_eq!(store.usage(), MediaUsage { files: 2, bytes: (a.len() + b.len()) as u64 });
    }

    #[test]
    fn a_failed_write_leaves_no_partial_file_and_readers_never_see_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path());
        let bytes = png(30, 30, 3);
        let hash = blake3::hash(&bytes).to_hex().to_string();
        // The final name is taken by a folder, so the rename fails after the data was written.
        let target = dir.path().join("media").join(&hash[..2]).join(format!("{hash}.png"));
        std::fs::create_dir_all(&target).unwrap();
        assert!(store.put(&bytes).is_err());
        let left: Vec<_> = files_under(dir.path());
        assert!(left.is_empty(), "the temporary file is removed: {left:?}");
        std::fs::remove_dir(&target).unwrap();
        // A truncated file under a hash's name (a disk fault) is never handed out as that image.
        std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap();
        let r = MediaRef { hash: hash.clone(), format: MediaFormat::Png, bytes: bytes.len() as u64 };
        assert_eq!(store.get(&r).unwrap(), None);
        // And put replaces it, since its length is wrong.
        store.put(&bytes).unwrap();
        assert_eq!(store.get(&r).unwrap().unwrap(), bytes);
    }

    #[test]
    fn gc_with_a_grace_period_keeps_young_unreferenced_media() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path());
        let r = store.put(&png(40, 30, 7)).unwrap();
        let report = store.gc_older_than(&HashSet::new(), Duration::from_secs(3600)).unwrap();
        assert_eq!(report.removed_files, 0, "another node's image may still await its product row");
        assert!(store.get(&r).unwrap().is_some());
        std::thread::sleep(Duration::from_millis(20));
        let report = store.gc_older_than(&HashSet::new(), Duration::from_millis(10)).unwrap();
        assert_eq!(report.removed_files, 1, "past the grace period it goes");
        assert!(store.get(&r).unwrap().is_none());
    }

    #[test]
    fn gc_removes_only_unreferenced_media_their_thumbnails_and_stale_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path());
        let (a, b) = (png(300, 200, 1), png(300, 200, 2));
        let (ra, rb) = (store.put(&a).unwrap(), store.put(&b).unwrap());
        store.thumbnail(&ra, 64).unwrap().unwrap();
        store.thumbnail(&rb, 64).unwrap().unwrap();
        let fresh_temp = dir.path().join("media").join(&ra.hash[..2]).join(".tmp-1-1");
        std::fs::write(&fresh_temp, b"being written").unwrap();
        let legacy_thumb = dir.path().join("cache/thumbs/0123abc.jpg");
        std::fs::write(&legacy_thumb, b"old cache key").unwrap();
        let report = store.gc(&HashSet::from([ra.hash.clone()])).unwrap();
        assert_eq!(report.removed_files, 3, "b, b's thumbnail, the legacy thumbnail");
        assert_eq!(store.get(&ra).unwrap().unwrap(), a);
        assert_eq!(store.get(&rb).unwrap(), None);
        assert!(fresh_temp.exists(), "a temporary file may belong to a write in progress");
        assert!(dir.path().join(format!("cache/thumbs/{}-64.jpg", ra.hash)).exists());
        assert!(!dir.path().join(format!("cache/thumbs/{}-64.jpg", rb.hash)).exists());
        assert_eq!(store.usage(), MediaUsage { files: 1, bytes: a.len() as u64 });
        store.gc(&HashSet::new()).unwrap();
        assert_eq!(store.usage(), MediaUsage::default());
    }

    #[test]
    fn hostile_hashes_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), b"not media").unwrap();
        let store = MediaStore::new(&dir.path().join("data"));
        for h in ["../secret", "../../secret", "/etc/passwd", "", "AB", &"A".repeat(64), &format!("{}/..", "a".repeat(61))] {
            assert!(!is_hash(h), "{h}");
            assert_eq!(store.find(h).unwrap(), None);
            let r = MediaRef { hash: h.to_string(), format: MediaFormat::Jpeg, bytes: 0 };
            assert_eq!(store.get(&r).unwrap(), None);
            assert_eq!(store.thumbnail(&r, 64).unwrap(), None);
        }
    }

    #[test]
    fn small_originals_are_kept_and_large_ones_are_scaled_to_2048() {
        let limits = ImageLimits::default();
        let small = png(64, 48, 5);
        let p = prepare(&small, "small", &limits).unwrap();
        assert!(!p.reencoded);
        assert_eq!(&*p.bytes, &small[..]);
        let wide = png(3000, 1000, 6);
        let p = prepare(&wide, "wide", &limits).unwrap();
        assert!(p.reencoded);
        assert_eq!(media_format(&p.bytes), Some(MediaFormat::Jpeg));
        let img = image::load_from_memory(&p.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (2048, 683));
        for (bytes, want) in
            [(b"root:x:0:0:root:/root:/bin/bash\n".to_vec(), ImageFailure::UnsupportedFormat), (vec![], ImageFailure::Unreadable)]
        {
            let e = prepare(&bytes, "bad", &limits).map(|_| ()).unwrap_err();
            assert_eq!(failure_of(&e), want, "{e}");
        }
        // A truncated small original is only probed here; the embedding's decode refuses it.
        assert!(!prepare(&small[..small.len() / 2], "cut", &limits).unwrap().reencoded);
        let tight = ImageLimits { max_bytes: 100, ..limits };
        assert_eq!(failure_of(&prepare(&small, "big", &tight).map(|_| ()).unwrap_err()), ImageFailure::TooLarge);
    }
}
