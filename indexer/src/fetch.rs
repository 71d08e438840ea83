//! Loading image bytes: local files, and http(s) URLs fetched concurrently with bounded
//! timeouts, retries with backoff, and a size limit.

use std::io::Read;
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
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { timeout: Duration::from_secs(10), retries: 2, max_bytes: 32 << 20, concurrency: 16 }
    }
}

pub struct Fetcher {
    agent: ureq::Agent,
    opts: FetchOptions,
}

fn is_url(r: &str) -> bool {
    r.starts_with("http://") || r.starts_with("https://")
}

impl Fetcher {
    pub fn new(opts: FetchOptions) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(opts.timeout)
            .timeout_read(opts.timeout)
            .timeout(opts.timeout * 3)
            .user_agent(concat!("vitrine/", env!("CARGO_PKG_VERSION")))
            .build();
        Fetcher { agent, opts }
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

fn read_file(p: &Path, max: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.len() > max {
        return Err(format!("{}: {} bytes is over the limit of {max}", p.display(), meta.len()));
    }
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}
