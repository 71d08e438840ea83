//! The one error type of the crate.
//!
//! Messages are written to be shown to whoever sent the source, an HTTP client included: they
//! name the host or the limit the client gave, never a server-side path (a refused local file says
//! why it was refused, not where it resolved to). Callers that want the reference in a message
//! (the indexer's failure report) prefix it themselves.

use std::fmt;

/// Why loading a source failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A URL that cannot be fetched as written.
    #[error("bad URL: {reason}")]
    BadUrl { reason: &'static str },
    /// A local path that cannot name a file (empty, control characters, `file://host/...`).
    #[error("bad file path: {reason}")]
    BadPath { reason: &'static str },
    /// The body or file is larger than `limit` bytes.
    #[error("over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// With `public_only`, the host resolved only to loopback, private or other non-public addresses.
    #[error("refused {host}: it resolves only to non-public addresses (loopback, private, link-local or reserved), and this fetches only from public ones")]
    NotPublic { host: String },
    /// The server answered with an error status.
    #[error("HTTP {status}")]
    Http { status: u16 },
    /// Connecting or reading took longer than the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection failed for another reason.
    #[error("{failure}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Network { failure: NetworkFailure, detail: Option<String> },
    /// No such file (or no such file in any media root).
    #[error("not found")]
    NotFound,
    /// The local-file policy refuses this path.
    #[error("local file refused by policy: {reason}")]
    NotAllowed { reason: &'static str },
    /// A directory, device, FIFO or socket.
    #[error("not a regular file")]
    NotRegularFile,
    /// Reading an allowed local file failed (permissions, I/O). `std::io::Error` names no path.
    #[error("could not read the file: {source}")]
    Io {
        #[source]
        source: std::io::Error,
    },
}

/// The kinds of network failure ureq reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkFailure {
    Dns,
    Connect,
    TooManyRedirects,
    /// A status line or header that could not be parsed.
    BadResponse,
    Io,
    Other,
}

impl fmt::Display for NetworkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkFailure::Dns => "the host name does not resolve",
            NetworkFailure::Connect => "the host refused or did not accept the connection",
            NetworkFailure::TooManyRedirects => "too many redirects",
            NetworkFailure::BadResponse => "the host sent a malformed response",
            NetworkFailure::Io => "the connection broke",
            NetworkFailure::Other => "the request failed",
        })
    }
}

/// Who an error is down to, for callers that answer someone (HTTP: 4xx for `Source`, 502/503 for
/// `Upstream`, 500 for `Local`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The source itself: a bad or refused reference, a missing file, a 4xx, too large. Retrying
    /// the same source cannot help.
    Source,
    /// The remote end or the network: timeouts, connection failures, 5xx, 429. May pass later.
    Upstream,
    /// This machine: reading an allowed local file failed.
    Local,
}

impl FetchError {
    pub fn blame(&self) -> Blame {
        match self {
            FetchError::BadUrl { .. }
            | FetchError::BadPath { .. }
            | FetchError::TooLarge { .. }
            | FetchError::NotPublic { .. }
            | FetchError::NotFound
            | FetchError::NotAllowed { .. }
            | FetchError::NotRegularFile => Blame::Source,
            FetchError::Http { status } if *status >= 500 || *status == 408 || *status == 429 => Blame::Upstream,
            FetchError::Http { .. } => Blame::Source,
            FetchError::Timeout | FetchError::Network { .. } => Blame::Upstream,
            FetchError::Io { .. } => Blame::Local,
        }
    }

    /// The client sent something that cannot be loaded (answer 4xx).
    pub fn is_client_fault(&self) -> bool {
        self.blame() == Blame::Source
    }

    /// Worth another attempt: the remote end or the network failed, not the source.
    pub fn is_transient(&self) -> bool {
        self.blame() == Blame::Upstream
    }

    pub(crate) fn from_io(e: std::io::Error) -> FetchError {
        match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NotFound,
            _ => FetchError::Io { source: e },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_separates_the_clients_fault_from_transient_failures() {
        for e in [
            FetchError::BadUrl { reason: "x" },
            FetchError::TooLarge { limit: 1 },
            FetchError::NotPublic { host: "h".into() },
            FetchError::Http { status: 404 },
            FetchError::NotFound,
            FetchError::NotAllowed { reason: "x" },
            FetchError::NotRegularFile,
        ] {
            assert!(e.is_client_fault() && !e.is_transient(), "{e:?}");
        }
        for e in [
            FetchError::Http { status: 503 },
            FetchError::Http { status: 429 },
            FetchError::Timeout,
            FetchError::Network { failure: NetworkFailure::Connect, detail: None },
        ] {
            assert!(!e.is_client_fault() && e.is_transient(), "{e:?}");
        }
        // Each message says what happened once: no error text repeated inside its own cause.
        let e = FetchError::NotPublic { host: "127.0.0.1".into() };
        let m = e.to_string();
        assert_eq!(m.matches("127.0.0.1").count(), 1, "{m}");
        assert!(m.starts_with("refused") && m.contains("public"), "{m}");
        let e = FetchError::Network { failure: NetworkFailure::Dns, detail: Some("no such host".into()) };
        assert_eq!(e.to_string(), "the host name does not resolve (no such host)");
        let io = FetchError::Io { source: std::io::Error::from(std::io::ErrorKind::PermissionDenied) };
        assert_eq!(io.blame(), Blame::Local);
    }
}
