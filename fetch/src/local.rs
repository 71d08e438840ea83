//! Which local files a source may name, and reading one without trusting what it claims to be.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::FetchError;

/// Which local files a source may name. URLs are not governed here (see
/// [`crate::FetchOptions::public_only`]); every policy refuses devices, FIFOs, sockets,
/// directories and `/proc`, `/sys`, `/dev`, and reads at most the size limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalFiles {
    /// The operator's own catalog (`vitrine index`): relative paths resolve against `base` (the
    /// catalog file's folder), absolute paths anywhere are allowed.
    Any { base: PathBuf },
    /// Sources that came over HTTP: only files inside these media roots. A relative path is
    /// looked up in each root in turn; an absolute one must lie inside a root. `..`, and symlinks
    /// that lead out of the roots, are refused. No roots (the default) refuses every local path.
    Roots(Vec<PathBuf>),
}

impl Default for LocalFiles {
    fn default() -> Self {
        LocalFiles::none()
    }
}

/// A source after the policy's checks: what to fetch or read, and the form to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A checked http(s) URL, as given.
    Url(String),
    /// An absolute path (canonical under [`LocalFiles::Roots`]).
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => f.write_str(u),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

const NO_ROOTS: &str = "local files are not accepted here (no media roots are configured)";
const OUTSIDE: &str = "the path is outside the media roots";
const PARENT: &str = "`..` is not allowed in a path";
const SPECIAL: &str = "files under /proc, /sys and /dev are never read";

/// `scheme://`, for any scheme: what tells a URL from a relative path such as `a:b.jpg`.
fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))).then_some(scheme)
}

/// Check an http(s) URL: no control characters (a CR/LF would otherwise be silently stripped by
/// the URL parser, or smuggled into a request line), parsable, http or https, with a host.
pub fn check_url(url: &str) -> Result<url::Url, FetchError> {
    if url.chars().any(char::is_control) {
        return Err(FetchError::BadUrl { reason: "control characters (such as CR or LF) in a URL" });
    }
    let parsed = url::Url::parse(url).map_err(|_| FetchError::BadUrl { reason: "not a valid URL" })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::BadUrl { reason: "only http and https URLs are fetched" });
    }
    if parsed.host().is_none() {
        return Err(FetchError::BadUrl { reason: "no host" });
    }
    Ok(parsed)
}

/// Whether a source string is a URL (any `scheme://` but `file://`) rather than a local path.
pub fn is_url(source: &str) -> bool {
    scheme_of(source.trim()).is_some_and(|s| !s.eq_ignore_ascii_case("file"))
}

fn is_special(p: &Path) -> bool {
    ["/proc", "/sys", "/dev"].iter().any(|d| p.starts_with(d))
}

impl LocalFiles {
    /// Every local path refused: the policy for HTTP when no media root is configured.
    pub fn none() -> Self {
        LocalFiles::Roots(vec![])
    }

    /// The operator's policy for a catalog file: relative paths against the catalog's folder.
    pub fn beside(catalog: &Path) -> Self {
        let base = catalog.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        LocalFiles::Any { base: base.canonicalize().unwrap_or(base) }
    }

    /// Check a source and say what it names: a URL (checked by [`check_url`]) or a local file
    /// (`file://` or a path) that this policy allows. Under `Roots` the file must exist and the
    /// result is its canonical path; under `Any` it is `base` joined with the path, untouched.
    pub fn resolve(&self, source: &str) -> Result<Source, FetchError> {
        let source = source.trim();
        if let Some(scheme) = scheme_of(source) {
            if !scheme.eq_ignore_ascii_case("file") {
                check_url(source)?;
                return Ok(Source::Url(source.to_string()));
            }
        }
        let path = match scheme_of(source) {
            Some(_) => &source["file://".len()..],
            None => source,
        };
        if path.is_empty() {
            return Err(FetchError::BadPath { reason: "empty" });
        }
        if path.chars().any(char::is_control) {
            return Err(FetchError::BadPath { reason: "control characters in a path" });
        }
        if source.len() != path.len() && !path.starts_with('/') {
            return Err(FetchError::BadPath { reason: "a file URL must name an absolute path (file:///...)" });
        }
        let path = Path::new(path);
        match self {
            LocalFiles::Any { base } => Ok(Source::File(if path.is_absolute() { path.to_path_buf() } else { base.join(path) })),
            LocalFiles::Roots(roots) => resolve_in_roots(path, roots).map(Source::File),
        }
    }

    /// The check made again on the file actually opened (its path as the kernel reports it), so
    /// a path component swapped for a symlink between [`LocalFiles::resolve`] and the read is
    /// caught.
    fn check_opened(&self, real: &Path) -> Result<(), FetchError> {
        if is_special(real) {
            return Err(FetchError::NotAllowed { reason: SPECIAL });
        }
        match self {
            LocalFiles::Any { .. } => Ok(()),
            LocalFiles::Roots(roots) => {
                if canonical_roots(roots).iter().any(|r| real.starts_with(r)) {
                    Ok(())
                } else {
                    Err(FetchError::NotAllowed { reason: OUTSIDE })
                }
            }
        }
    }

    /// Read a local file this policy allows, at most `max` bytes.
    pub fn read(&self, source: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        match self.resolve(source)? {
            Source::File(p) => self.read_path(&p, max),
            Source::Url(_) => Err(FetchError::BadPath { reason: "a URL, not a local path" }),
        }
    }

    pub(crate) fn read_path(&self, path: &Path, max: u64) -> Result<Vec<u8>, FetchError> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it would hold this thread, the
        // indexer's, forever); the type is checked on the opened file below.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(FetchError::from_io)?;
        self.check_opened(&opened_path(&file, path)?)?;
        let meta = file.metadata().map_err(FetchError::from_io)?;
        if !meta.is_file() {
            return Err(FetchError::NotRegularFile);
        }
        // Only a shortcut: the cap below is what bounds the read (a file can grow, and /proc
        // files report size 0).
        if meta.len() > max {
            return Err(FetchError::TooLarge { limit: max });
        }
        read_capped(file, max).map_err(FetchError::from_io)?.ok_or(FetchError::TooLarge { limit: max })
    }
}

/// The path of an opened file as the kernel sees it, symlinks resolved.
#[cfg(target_os = "linux")]
fn opened_path(file: &std::fs::File, _asked: &Path) -> Result<PathBuf, FetchError> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(FetchError::from_io)
}

#[cfg(not(target_os = "linux"))]
fn opened_path(_file: &std::fs::File, asked: &Path) -> Result<PathBuf, FetchError> {
    asked.canonicalize().map_err(FetchError::from_io)
}

fn canonical_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots.iter().filter_map(|r| r.canonicalize().ok()).collect()
}

fn resolve_in_roots(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, FetchError> {
    let canon = canonical_roots(roots);
    if canon.is_empty() {
        return Err(FetchError::NotAllowed { reason: NO_ROOTS });
    }
    // Refused before touching the file system, so a client cannot probe which files exist
    // outside the roots (`NotFound` against `NotAllowed`).
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(FetchError::NotAllowed { reason: PARENT });
    }
    let candidates: Vec<PathBuf> = if path.is_absolute() {
        if !canon.iter().chain(roots).any(|r| path.starts_with(r)) {
            return Err(FetchError::NotAllowed { reason: OUTSIDE });
        }
        vec![path.to_path_buf()]
    } else {
        canon.iter().map(|r| r.join(path)).collect()
    };
    for c in candidates {
        let real = match c.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FetchError::from_io(e)),
        };
        if is_special(&real) {
            return Err(FetchError::NotAllowed { reason: SPECIAL });
        }
        if !canon.iter().any(|r| real.starts_with(r)) {
            return Err(FetchError::NotAllowed { reason: OUTSIDE });
        }
        let meta = std::fs::metadata(&real).map_err(FetchError::from_io)?;
        if !meta.is_file() {
            return Err(FetchError::NotRegularFile);
        }
        return Ok(real);
    }
    Err(FetchError::NotFound)
}

/// Read at most `max` bytes; `None` when there is more. Bounds memory whatever the source claims
/// (Content-Length, `stat`), so an endless body or a growing file stops at the cap.
pub(crate) fn read_capped(r: impl Read, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    const MAX: u64 = 1 << 20;

    fn media() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("media");
        std::fs::create_dir_all(root.join("shoes")).unwrap();
        std::fs::write(root.join("shoes/a.jpg"), b"jpeg bytes").unwrap();
        std::fs::write(d.path().join("secret.txt"), b"outside").unwrap();
        (d, root)
    }

    fn refused(r: Result<impl std::fmt::Debug, FetchError>) -> &'static str {
        match r {
            Err(FetchError::NotAllowed { reason }) => reason,
            other => panic!("expected a policy refusal, got {other:?}"),
        }
    }

    #[test]
    fn roots_read_relative_and_absolute_paths_inside_a_root() {
        let (_d, root) = media();
        let p = LocalFiles::Roots(vec![root.clone()]);
        assert_eq!(p.read("shoes/a.jpg", MAX).unwrap(), b"jpeg bytes");
        let abs = root.join("shoes/a.jpg");
        assert_eq!(p.read(abs.to_str().unwrap(), MAX).unwrap(), b"jpeg bytes");
        assert_eq!(p.read(&format!("file://{}", abs.display()), MAX).unwrap(), b"jpeg bytes");
        assert_eq!(p.resolve("shoes/a.jpg").unwrap(), Source::File(abs.canonicalize().unwrap()));
        assert!(matches!(p.read("shoes/missing.jpg", MAX), Err(FetchError::NotFound)));
    }

    #[test]
    fn relative_paths_are_looked_up_in_each_root_in_turn() {
        let (d, root) = media();
        let second = d.path().join("second");
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(second.join("b.jpg"), b"b").unwrap();
        let p = LocalFiles::Roots(vec![root, second]);
        assert_eq!(p.read("b.jpg", MAX).unwrap(), b"b");
        assert_eq!(p.read("shoes/a.jpg", MAX).unwrap(), b"jpeg bytes");
    }

    #[test]
    fn no_roots_refuses_every_local_path() {
        let (_d, root) = media();
        let p = LocalFiles::none();
        assert_eq!(refused(p.read("shoes/a.jpg", MAX)), NO_ROOTS);
        assert_eq!(refused(p.read(root.join("shoes/a.jpg").to_str().unwrap(), MAX)), NO_ROOTS);
        assert_eq!(refused(p.read("/etc/passwd", MAX)), NO_ROOTS);
    }

    #[test]
    fn roots_refuse_system_files_and_escapes() {
        let (d, root) = media();
        let p = LocalFiles::Roots(vec![root.clone()]);
        assert_eq!(refused(p.read("/etc/passwd", MAX)), OUTSIDE);
        assert_eq!(refused(p.read("/proc/self/environ", MAX)), OUTSIDE);
        assert_eq!(refused(p.read("file:///etc/passwd", MAX)), OUTSIDE);
        assert_eq!(refused(p.read("../../../etc/shadow", MAX)), PARENT);
        assert_eq!(refused(p.read("shoes/../../secret.txt", MAX)), PARENT);
        // `..` after a root's own path is still `..`.
        assert_eq!(refused(p.read(&format!("{}/../secret.txt", root.display()), MAX)), PARENT);
        // A root's name as a prefix of a sibling's name is not inside the root.
        let sibling = d.path().join("media-private");
        std::fs::create_dir_all(&sibling).unwrap();
        std::fs::write(sibling.join("x.jpg"), b"x").unwrap();
        assert_eq!(refused(p.read(sibling.join("x.jpg").to_str().unwrap(), MAX)), OUTSIDE);
    }

    #[test]
    fn a_symlink_inside_a_root_that_leads_out_is_refused() {
        let (d, root) = media();
        symlink(d.path().join("secret.txt"), root.join("link.jpg")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("/proc/self", root.join("me")).unwrap();
        let p = LocalFiles::Roots(vec![root.clone()]);
        assert_eq!(refused(p.resolve("link.jpg")), OUTSIDE);
        assert_eq!(refused(p.read("link.jpg", MAX)), OUTSIDE);
        assert_eq!(refused(p.read(root.join("link.jpg").to_str().unwrap(), MAX)), OUTSIDE);
        assert_eq!(refused(p.read("etc/passwd", MAX)), OUTSIDE);
        assert_eq!(refused(p.read("me/environ", MAX)), SPECIAL);
        // A symlink that stays inside is fine.
        symlink(root.join("shoes/a.jpg"), root.join("alias.jpg")).unwrap();
        assert_eq!(p.read("alias.jpg", MAX).unwrap(), b"jpeg bytes");
    }

    #[test]
    fn the_opened_file_is_checked_again() {
        // What a swap between resolve and open looks like: the path opened leads out of the roots.
        let (d, root) = media();
        symlink(d.path().join("secret.txt"), root.join("swapped.jpg")).unwrap();
        let p = LocalFiles::Roots(vec![root.clone()]);
        assert_eq!(refused(p.read_path(&root.join("swapped.jpg"), MAX)), OUTSIDE);
        let any = LocalFiles::Any { base: root.clone() };
        assert_eq!(refused(any.read_path(Path::new("/proc/self/environ"), MAX)), SPECIAL);
    }

    #[test]
    fn devices_are_refused_and_never_read_even_by_the_operator() {
        let any = LocalFiles::Any { base: PathBuf::from("/") };
        for dev in ["/dev/zero", "/dev/urandom", "/proc/self/environ", "/sys/kernel/mm/transparent_hugepage/enabled"] {
            let r = any.read(dev, MAX);
            assert!(matches!(r, Err(FetchError::NotAllowed { .. }) | Err(FetchError::NotFound)), "{dev}: {r:?}");
        }
        let (_d, root) = media();
        symlink("/dev/zero", root.join("zero.jpg")).unwrap();
        assert_eq!(refused(LocalFiles::Roots(vec![root.clone()]).read("zero.jpg", MAX)), SPECIAL);
        assert_eq!(refused(LocalFiles::Any { base: root }.read("zero.jpg", MAX)), SPECIAL);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (_d, root) = media();
        let fifo = root.join("pipe.jpg");
        let ok = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(ok.success());
        // Run in a thread so a regression shows as a failed assertion, not a hung test run.
        let (tx, rx) = std::sync::mpsc::channel();
        let r2 = root.clone();
        std::thread::spawn(move || {
            let any = LocalFiles::Any { base: r2.clone() }.read("pipe.jpg", MAX).map(|_| ());
            let roots = LocalFiles::Roots(vec![r2.clone()]).read("pipe.jpg", MAX).map(|_| ());
            let opened = LocalFiles::Roots(vec![r2.clone()]).read_path(&r2.join("pipe.jpg"), MAX).map(|_| ());
            let _ = tx.send((any, roots, opened));
        });
        let (any, roots, opened) = rx.recv_timeout(Duration::from_secs(10)).expect("reading a FIFO blocked");
        assert!(matches!(any, Err(FetchError::NotRegularFile)), "{any:?}");
        assert!(matches!(roots, Err(FetchError::NotRegularFile)), "{roots:?}");
        assert!(matches!(opened, Err(FetchError::NotRegularFile)), "{opened:?}");
    }

    #[test]
    fn directories_are_not_regular_files() {
        let (_d, root) = media();
        assert!(matches!(LocalFiles::Roots(vec![root.clone()]).read("shoes", MAX), Err(FetchError::NotRegularFile)));
        assert!(matches!(LocalFiles::Any { base: root }.read("shoes", MAX), Err(FetchError::NotRegularFile)));
    }

    #[test]
    fn the_size_cap_holds_whatever_stat_says() {
        let t = Instant::now();
        // An endless source stops at the cap.
        assert!(read_capped(std::io::repeat(0), MAX).unwrap().is_none());
        assert_eq!(read_capped(&b"12345"[..], 5).unwrap().unwrap(), b"12345");
        assert!(read_capped(&b"123456"[..], 5).unwrap().is_none());
        // A sparse 1 TiB file is refused without reading it.
        let (_d, root) = media();
        let big = std::fs::File::create(root.join("big.jpg")).unwrap();
        big.set_len(1 << 40).unwrap();
        let any = LocalFiles::Any { base: root.clone() };
        assert!(matches!(any.read("big.jpg", MAX), Err(FetchError::TooLarge { limit: MAX })));
        std::fs::write(root.join("six.jpg"), b"123456").unwrap();
        assert!(matches!(any.read("six.jpg", 5), Err(FetchError::TooLarge { limit: 5 })));
        assert_eq!(any.read("six.jpg", 6).unwrap(), b"123456");
        assert!(t.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn the_operator_policy_resolves_against_the_catalog_folder() {
        let (d, root) = media();
        let cat = root.join("catalog.jsonl");
        let p = LocalFiles::beside(&cat);
        assert_eq!(p.read("shoes/a.jpg", MAX).unwrap(), b"jpeg bytes");
        assert_eq!(p.read(d.path().join("secret.txt").to_str().unwrap(), MAX).unwrap(), b"outside");
        assert_eq!(p.resolve("x/y.jpg").unwrap(), Source::File(root.canonicalize().unwrap().join("x/y.jpg")));
        assert_eq!(LocalFiles::beside(Path::new("c.jsonl")), LocalFiles::Any { base: std::env::current_dir().unwrap() });
    }

    #[test]
    fn malformed_sources_are_typed_errors() {
        let p = LocalFiles::Any { base: PathBuf::from("/") };
        for bad in ["http://x.test/a.jpg\r\nHost: evil", "https://x.test/a\n.jpg", "http://x.test/\0", "http://x.te\tst/"] {
            assert!(matches!(p.resolve(bad), Err(FetchError::BadUrl { .. })), "{bad:?}");
        }
        assert!(matches!(p.resolve("ftp://x.test/a.jpg"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(p.resolve("gopher://x.test/"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(p.resolve("http://"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(p.resolve("http://exa mple.test/"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(p.resolve(""), Err(FetchError::BadPath { .. })));
        assert!(matches!(p.resolve("a\nb.jpg"), Err(FetchError::BadPath { .. })));
        assert!(matches!(p.resolve("a\0b.jpg"), Err(FetchError::BadPath { .. })));
        assert!(matches!(p.resolve("file://host/etc/passwd"), Err(FetchError::BadPath { .. })));
        assert_eq!(p.resolve(" https://x.test/a b.jpg ").unwrap(), Source::Url("https://x.test/a b.jpg".into()));
        // A colon in a file name is not a scheme.
        assert_eq!(p.resolve("a:b.jpg").unwrap(), Source::File(PathBuf::from("/a:b.jpg")));
    }

    #[test]
    fn messages_name_no_server_path() {
        let (d, root) = media();
        symlink(d.path().join("secret.txt"), root.join("link.jpg")).unwrap();
        let p = LocalFiles::Roots(vec![root.clone()]);
        for source in ["link.jpg", "/etc/passwd", "../secret.txt", "nope.jpg"] {
            let msg = p.read(source, MAX).unwrap_err().to_string();
            assert!(!msg.contains(d.path().to_str().unwrap()) && !msg.contains("/etc"), "{source}: {msg}");
        }
    }
}
