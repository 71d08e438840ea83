//! Loading image bytes: local files, and http(s) URLs fetched concurrently with bounded
//! timeouts, retries with backoff, and a size limit.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FetchOptions {
    /// Connect and read timeout per attempt.
    pub timeout: Duration,
    /// Extra attempts after a failure that may pass (timeouts, 5xx, connection errors).
    pub retries: u32,
    pub max_bytes: u64,
    /// Downloads in flight at once.
    pub concurrency: usize,
    /// Refuse hosts that resolve only to loopback, private, link-local or other non-public
    /// addresses (redirects included): for URLs that come from untrusted users, such as a search
    /// request's `image_url`, so the server cannot be used to reach its own network.
    #[serde(default)]
    pub public_only: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { timeout: Duration::from_secs(10), retries: 2, max_bytes: 32 << 20, concurrency: 16, public_only: false }
    }
}

/// Why a source could not be loaded. (Placeholder: the `fetch` branch types every kind.)
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

pub struct Fetcher {
    agent: ureq::Agent,
    opts: FetchOptions,
}

fn is_url(r: &str) -> bool {
    r.starts_with("http://") || r.starts_with("https://")
}

impl Fetcher {
    pub fn new(opts: FetchOptions) -> Self {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(opts.timeout)
            .timeout_read(opts.timeout)
            .timeout(opts.timeout * 3)
            .user_agent(concat!("vitrine/", env!("CARGO_PKG_VERSION")));
        if opts.public_only {
            // The check sits in the resolver, so the address checked is the address connected
            // to (no second lookup to rebind), and every redirect goes through it too.
            builder = builder.resolver(PublicOnly);
        }
        Fetcher { agent: builder.build(), opts }
    }

    /// Load every reference (path or URL), `concurrency` at a time, results in input order.
    pub fn load_all(&self, refs: &[&str]) -> Vec<Result<Vec<u8>, String>> {
        let next = AtomicUsize::new(0);
        let mut out: Vec<Option<Result<Vec<u8>, String>>> = (0..refs.len()).map(|_| None).collect();
        let slots = parking_lot::Mutex::new(&mut out);
        let workers = self.opts.concurrency.clamp(1, refs.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= refs.len() {
                        break;
                    }
                    let r = self.load(refs[i]);
                    slots.lock()[i] = Some(r);
                });
            }
        });
        out.into_iter().map(|r| r.expect("every slot filled")).collect()
    }

    /// Load an http(s) URL.
    pub fn load_url(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        if !is_url(url) {
            return Err(FetchError("image_url must be http(s)".into()));
        }
        self.fetch(url).map_err(FetchError)
    }

    pub fn load(&self, r: &str) -> Result<Vec<u8>, String> {
        if is_url(r) {
            self.fetch(r)
        } else {
            read_file(Path::new(r), self.opts.max_bytes)
        }
    }

    fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut last = String::new();
        for attempt in 0..=self.opts.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
            match self.agent.get(url).call() {
                Ok(resp) => {
                    if let Some(len) = resp.header("content-length").and_then(|v| v.parse::<u64>().ok()) {
                        if len > self.opts.max_bytes {
                            return Err(format!("{url}: {len} bytes is over the limit of {}", self.opts.max_bytes));
                        }
                    }
                    let mut buf = Vec::new();
                    match resp.into_reader().take(self.opts.max_bytes + 1).read_to_end(&mut buf) {
                        Ok(_) if buf.len() as u64 > self.opts.max_bytes => {
                            return Err(format!("{url}: over the limit of {} bytes", self.opts.max_bytes))
                        }
                        Ok(_) => return Ok(buf),
                        Err(e) => last = format!("{url}: {e}"),
                    }
                }
                Err(ureq::Error::Status(code, _)) if code < 500 && code != 429 => return Err(format!("{url}: HTTP {code}")),
                Err(ureq::Error::Status(code, _)) => last = format!("{url}: HTTP {code}"),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(format!("{last} (after {} attempts)", self.opts.retries + 1))
    }
}

/// A resolver that keeps only public addresses.
struct PublicOnly;

impl ureq::Resolver for PublicOnly {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let all: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        let public: Vec<SocketAddr> = all.iter().copied().filter(|a| is_public(a.ip())).collect();
        if public.is_empty() && !all.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{netloc} resolves to a loopback, private or otherwise non-public address"),
            ));
        }
        Ok(public)
    }
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918, unique local
/// fc00::/7), link-local (169.254/16, including cloud metadata services, fe80::/10), carrier-grade
/// NAT (100.64/10), unspecified, broadcast, multicast, documentation or benchmarking ranges.
/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

fn read_file(p: &Path, max: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.len() > max {
        return Err(format!("{}: {} bytes is over the limit of {max}", p.display(), meta.len()));
    }
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private} is not public");
        }
        for public in ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn public_only_fetches_refuse_loopback_hosts() {
        let opts = FetchOptions { public_only: true, retries: 0, ..Default::default() };
        let err = Fetcher::new(opts).load("http://127.0.0.1:9/x.jpg").unwrap_err();
        assert!(err.contains("non-public"), "{err}");
        let err = Fetcher::new(FetchOptions { public_only: true, retries: 0, ..Default::default() })
            .load("http://localhost:9/x.jpg")
            .unwrap_err();
        assert!(err.contains("non-public"), "{err}");
    }
}
