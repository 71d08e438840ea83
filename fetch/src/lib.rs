//! Loading image sources: http(s) URLs and local files, each under a policy, with typed errors.
//!
//! Every rule about what may be loaded lives here, once: which addresses are public
//! ([`is_public`], applied in the resolver so redirects and DNS rebinding are covered), what a
//! well-formed URL is ([`check_url`]), which local files a source may name ([`LocalFiles`]), and
//! how much is read (the size cap, enforced while reading, never trusted from a header or `stat`).
//!
//! Who decides the policy: the operator's CLI (`vitrine index`) uses [`LocalFiles::Any`] and may
//! reach private networks; anything that came over HTTP uses [`LocalFiles::Roots`] (only files in
//! the configured media roots, none by default) and, for searchers' URLs, `public_only`.
//!
//! Threading: a [`Fetcher`] is `Sync`; [`Fetcher::load_all`] runs `concurrency` scoped threads.
//! Each attempt is bounded by `timeout` (connect and read) and `3 × timeout` overall.

mod address;
mod error;
mod local;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use address::is_public;
pub use error::{Blame, FetchError, NetworkFailure};
pub use local::{check_url, is_url, LocalFiles, Source};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FetchOptions {
    /// Connect and read timeout per attempt.
    pub timeout: Duration,
    /// Extra attempts after a failure that may pass (timeouts, 5xx, connection errors).
    pub retries: u32,
    /// The most bytes one source may have.
    pub max_bytes: u64,
    /// Downloads in flight at once in [`Fetcher::load_all`].
    pub concurrency: usize,
    /// Refuse hosts that resolve only to non-public addresses ([`is_public`]), redirects
    /// included, so a URL someone else wrote cannot make the server reach its own network. On by
    /// default; the operator's CLI turns it off.
    #[serde(default = "yes")]
    pub public_only: bool,
}

fn yes() -> bool {
    true
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { timeout: Duration::from_secs(10), retries: 2, max_bytes: 32 << 20, concurrency: 16, public_only: true }
    }
}

/// Loads sources. Cheap to build; holds a connection pool.
pub struct Fetcher {
    agent: ureq::Agent,
    opts: FetchOptions,
}

impl Fetcher {
    pub fn new(opts: FetchOptions) -> Self {
        // No proxy from the environment: the public-only check judges the address connected
        // to, and through a proxy that would be the proxy's.
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(opts.timeout)
            .timeout_read(opts.timeout)
            .timeout(opts.timeout * 3)
            .user_agent(concat!("vitrine/", env!("CARGO_PKG_VERSION")));
        if opts.public_only {
            builder = builder.resolver(address::PublicOnly);
        }
        Fetcher { agent: builder.build(), opts }
    }

    pub fn options(&self) -> &FetchOptions {
        &self.opts
    }

    /// Load one source: an http(s) URL, or a local path (`file://` or plain) that `local` allows.
    pub fn load(&self, source: &str, local: &LocalFiles) -> Result<Vec<u8>, FetchError> {
        match local.resolve(source)? {
            Source::Url(url) => self.fetch(&url),
            Source::File(path) => local.read_path(&path, self.opts.max_bytes),
        }
    }

    /// Load an http(s) URL only; anything else, a local path included, is [`FetchError::BadUrl`].
    /// For sources where a path is never meant (a searcher's `image_url`).
    pub fn load_url(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        if !is_url(url) {
            return Err(FetchError::BadUrl { reason: "only http and https URLs are fetched" });
        }
        self.load(url, &LocalFiles::none())
    }

    /// Load every source, `concurrency` at a time; results in input order.
    pub fn load_all(&self, sources: &[&str], local: &LocalFiles) -> Vec<Result<Vec<u8>, FetchError>> {
        let next = AtomicUsize::new(0);
        let mut out: Vec<Option<Result<Vec<u8>, FetchError>>> = (0..sources.len()).map(|_| None).collect();
        let slots = parking_lot::Mutex::new(&mut out);
        let workers = self.opts.concurrency.clamp(1, sources.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= sources.len() {
                        break;
                    }
                    let r = self.load(sources[i], local);
                    slots.lock()[i] = Some(r);
                });
            }
        });
        out.into_iter().map(|r| r.expect("every slot filled")).collect()
    }

    fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let mut attempt = 0;
        loop {
            match self.fetch_once(url) {
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(200 << attempt.min(6)));
                }
                r => return r,
            }
        }
    }

    fn fetch_once(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let max = self.opts.max_bytes;
        let resp = self.agent.get(url).call().map_err(from_ureq)?;
        if resp.header("content-length").and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|len| len > max) {
            return Err(FetchError::TooLarge { limit: max });
        }
        match local::read_capped(resp.into_reader(), max) {
            Ok(Some(body)) => Ok(body),
            Ok(None) => Err(FetchError::TooLarge { limit: max }),
            Err(e) if is_timeout(&e) => Err(FetchError::Timeout),
            Err(e) => Err(FetchError::Network { failure: NetworkFailure::Io, detail: Some(e.to_string()) }),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

/// Map ureq's error to a kind, by its type and its source chain, never by its text.
fn from_ureq(e: ureq::Error) -> FetchError {
    use std::error::Error as _;
    let transport = match e {
        ureq::Error::Status(status, _) => return FetchError::Http { status },
        ureq::Error::Transport(t) => t,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = transport.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(np) = io.get_ref().and_then(|inner| inner.downcast_ref::<address::NonPublicHost>()) {
                return FetchError::NotPublic { host: np.host.clone() };
            }
            if is_timeout(io) {
                return FetchError::Timeout;
            }
        }
        cause = c.source();
    }
    let failure = match transport.kind() {
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme | ureq::ErrorKind::InsecureRequestHttpsOnly => {
            return FetchError::BadUrl { reason: "not a URL that can be fetched" }
        }
        ureq::ErrorKind::Dns => NetworkFailure::Dns,
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::ProxyConnect => NetworkFailure::Connect,
        ureq::ErrorKind::TooManyRedirects => NetworkFailure::TooManyRedirects,
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => NetworkFailure::BadResponse,
        ureq::ErrorKind::Io => NetworkFailure::Io,
        _ => NetworkFailure::Other,
    };
    FetchError::Network { failure, detail: transport.source().map(|s| s.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn public_only() -> Fetcher {
        Fetcher::new(FetchOptions { public_only: true, retries: 0, timeout: Duration::from_secs(2), ..Default::default() })
    }

    fn not_public(r: Result<Vec<u8>, FetchError>) -> String {
        match r {
            Err(FetchError::NotPublic { host }) => host,
            other => panic!("expected NotPublic, got {other:?}"),
        }
    }

    #[test]
    fn public_only_refuses_every_spelling_of_a_private_host() {
        let f = public_only();
        for url in [
            "http://127.0.0.1:9/x.jpg",
            "http://localhost:9/x.jpg",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/latest/meta-data/",
            "http://[64:ff9b::a00:1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://0.0.0.0:9/",
            "https://10.0.0.1/",
        ] {
            let host = not_public(f.load_url(url));
            assert!(!host.is_empty(), "{url}");
        }
    }

    #[test]
    fn private_hosts_are_reachable_when_allowed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten().take(3) {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply: Vec<u8> = if req.starts_with("GET /ok") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec()
                } else if req.starts_with("GET /big") {
                    // Lies about its length, then sends more than the cap.
                    let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
                    r.extend(std::iter::repeat_n(b'x', 100));
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                };
                let _ = s.write_all(&reply);
            }
        });
        let f = Fetcher::new(FetchOptions { public_only: false, retries: 0, max_bytes: 10, ..Default::default() });
        assert_eq!(f.load_url(&format!("http://{addr}/ok")).unwrap(), b"hello");
        assert!(matches!(f.load_url(&format!("http://{addr}/big")), Err(FetchError::TooLarge { limit: 10 })));
        assert!(matches!(f.load_url(&format!("http://{addr}/gone")), Err(FetchError::Http { status: 404 })));
        // The same server, public only.
        assert_eq!(not_public(public_only().load_url(&format!("http://{addr}/ok"))), "127.0.0.1");
    }

    #[test]
    fn a_closed_port_is_a_transient_network_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let f = Fetcher::new(FetchOptions { public_only: false, retries: 0, ..Default::default() });
        let e = f.load_url(&format!("http://127.0.0.1:{port}/")).unwrap_err();
        assert!(matches!(e, FetchError::Network { failure: NetworkFailure::Connect, .. }), "{e:?}");
        assert!(e.is_transient());
    }

    #[test]
    fn load_url_refuses_paths_and_bad_urls() {
        let f = public_only();
        for bad in
            ["/etc/passwd", "file:///etc/passwd", "x.jpg", "http://x.test/a\r\nX: y", "ftp://x.test/", "javascript:alert(1)"]
        {
            assert!(matches!(f.load_url(bad), Err(FetchError::BadUrl { .. })), "{bad:?}");
        }
    }

    #[test]
    fn load_reads_local_files_under_the_policy() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.jpg"), b"abc").unwrap();
        let f = public_only();
        let roots = LocalFiles::Roots(vec![d.path().to_path_buf()]);
        assert_eq!(f.load("a.jpg", &roots).unwrap(), b"abc");
        assert!(matches!(f.load("a.jpg", &LocalFiles::none()), Err(FetchError::NotAllowed { .. })));
        let all = f.load_all(&["a.jpg", "/etc/passwd", "b.jpg", "http://127.0.0.1:9/"], &roots);
        assert_eq!(all[0].as_deref().unwrap(), b"abc");
        assert!(matches!(all[1], Err(FetchError::NotAllowed { .. })));
        assert!(matches!(all[2], Err(FetchError::NotFound)));
        assert!(matches!(all[3], Err(FetchError::NotPublic { .. })));
        let small = Fetcher::new(FetchOptions { max_bytes: 2, ..Default::default() });
        assert!(matches!(small.load("a.jpg", &roots), Err(FetchError::TooLarge { limit: 2 })));
    }

    #[test]
    fn options_deserialize_public_only_by_default() {
        let o: FetchOptions =
            serde_json::from_str(r#"{"timeout":{"secs":1,"nanos":0},"retries":0,"max_bytes":1,"concurrency":1}"#).unwrap();
        assert!(o.public_only);
    }
}
