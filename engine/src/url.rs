//! `oceanbase://USER[:PASS]@HOST:PORT/DB`: where the engine is, parsed strictly.
//!
//! The database name becomes an identifier in `CREATE DATABASE`, which cannot be a bound
//! parameter, so it must match [`is_identifier`]; everything else reaches the server only through
//! the client's handshake. The password never leaves this type: `Display` and `Debug` print `***`,
//! and no error quotes the URL.

use std::fmt;

use crate::{EngineError, Result};

/// The longest URL accepted: far above any real one, low enough that a hostile value costs nothing.
pub const MAX_URL_BYTES: usize = 2048;

const SCHEME: &str = "oceanbase://";

/// Where the engine is and which database holds Vitrine's tables.
#[derive(Clone, PartialEq, Eq)]
pub struct EngineUrl {
    pub user: String,
    password: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
}

/// A database name Vitrine may create and use: `^[A-Za-z_][A-Za-z0-9_]{0,63}$`.
pub fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn bad(message: impl Into<String>) -> EngineError {
    EngineError::BadUrl { message: message.into() }
}

/// `%XX` decoding of a user or password; anything that does not decode to UTF-8 is refused.
fn percent_decode(s: &str, what: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| bad(format!("bad %-escape in the {what}")))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("the {what} is not UTF-8 after %-decoding")))
}

impl EngineUrl {
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The whole URL, password included (%-escaped): for the settings layers, never for printing.
    pub fn to_url_with_password(&self) -> String {
        let escape = |s: &str| {
            let mut out = String::new();
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        };
        let pass = self.password.as_deref().map(|p| format!(":{}", escape(p))).unwrap_or_default();
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{SCHEME}{}{pass}@{host}:{}/{}", escape(&self.user), self.port, self.database)
    }

    /// The same server and credentials, another database (tests use a sibling per test).
    pub fn with_database(&self, db: &str) -> Result<EngineUrl> {
        if !is_identifier(db) {
            return Err(bad("the database name must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$"));
        }
        Ok(EngineUrl { database: db.to_string(), ..self.clone() })
    }
}

impl std::str::FromStr for EngineUrl {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        if s.len() > MAX_URL_BYTES {
            return Err(bad(format!("longer than {MAX_URL_BYTES} bytes")));
        }
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| bad("the scheme must be oceanbase://"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("no query string or fragment is allowed"));
        }
        if rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("whitespace or control characters"));
        }
        // The credentials end at the last '@' (a password may hold an unescaped '@').
        let (cred, hostpart) = rest.rsplit_once('@').ok_or_else(|| bad("no USER@ before the host"))?;
        let (user, password) = match cred.split_once(':') {
            Some((u, p)) => (u, Some(percent_decode(p, "password")?)),
            None => (cred, None),
        };
        let user = percent_decode(user, "user")?;
        if user.is_empty() {
            return Err(bad("the user is empty"));
        }
        let (authority, database) = hostpart.split_once('/').ok_or_else(|| bad("no /DATABASE after HOST:PORT"))?;
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("the port is required (HOST:PORT)"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')) {
            return Err(bad("the host must be a name or an IP address"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port must be a number in 1..=65535"))?;
        if port == 0 {
            return Err(bad("the port must be a number in 1..=65535"));
        }
        if !is_identifier(database) {
            return Err(bad("the database name must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$"));
        }
        Ok(EngineUrl { user, password, host: host.to_string(), port, database: database.to_string() })
    }
}

impl fmt::Display for EngineUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pass = if self.password.is_some() { ":***" } else { "" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{SCHEME}{}{pass}@{host}:{}/{}", self.user, self.port, self.database)
    }
}

impl fmt::Debug for EngineUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EngineUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<EngineUrl> {
        s.parse()
    }

    #[test]
    fn parses_the_documented_form() {
        let u = parse("oceanbase://root@127.0.0.1:2881/vitrine").unwrap();
        assert_eq!((u.user.as_str(), u.host.as_str(), u.port, u.database.as_str()), ("root", "127.0.0.1", 2881, "vitrine"));
        assert_eq!(u.password(), None);
        assert_eq!(u.to_string(), "oceanbase://root@127.0.0.1:2881/vitrine");
        let u = parse("oceanbase://app%40corp:s%3Ac%40ret@db.example:3306/_v2").unwrap();
        assert_eq!(u.user, "app@corp");
        assert_eq!(u.password(), Some("s:c@ret"));
        // A raw '@' in the password still parses (the last '@' ends the credentials).
        assert_eq!(parse("oceanbase://u:p@ss@h:1/d").unwrap().password(), Some("p@ss"));
        assert_eq!(parse("oceanbase://u@[::1]:2881/d").unwrap().host, "::1");
        let sib = u.with_database("other_db").unwrap();
        assert_eq!((sib.database.as_str(), sib.password()), ("other_db", Some("s:c@ret")));
        assert!(u.with_database("x;DROP").is_err());
    }

    #[test]
    fn the_password_is_never_shown() {
        let secret = "hunter2-SECRET";
        let u = parse(&format!("oceanbase://root:{secret}@127.0.0.1:2881/db")).unwrap();
        for shown in [u.to_string(), format!("{u:?}"), format!("{:?}", u.with_database("x").unwrap())] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains(":***@"), "{shown}");
        }
        // Nor in the errors of URLs that fail after the password.
        for s in [
            format!("oceanbase://root:{secret}@127.0.0.1/db"),
            format!("oceanbase://root:{secret}@127.0.0.1:99999/db"),
            format!("oceanbase://root:{secret}@127.0.0.1:1/d;b"),
            format!("mysql://root:{secret}@127.0.0.1:1/db"),
            format!("oceanbase://root:{secret}%zz@127.0.0.1:1/db"),
        ] {
            let e = parse(&s).unwrap_err();
            assert!(!e.to_string().contains(secret) && !format!("{e:?}").contains(secret), "{e}");
        }
    }

    #[test]
    fn hostile_urls_are_refused_with_the_reason() {
        let cases = [
            ("mysql://root@h:1/db", "scheme"),
            ("OCEANBASE://root@h:1/db", "scheme"),
            ("oceanbase://root@h/db", "port"),
            ("oceanbase://root@h:0/db", "port"),
            ("oceanbase://root@h:65536/db", "port"),
            ("oceanbase://root@h:-1/db", "port"),
            ("oceanbase://root@h:1", "/DATABASE"),
            ("oceanbase://@h:1/db", "user is empty"),
            ("oceanbase://h:1/db", "USER@"),
            ("oceanbase://root@h:1/", "database name"),
            ("oceanbase://root@h:1/a;b", "database name"),
            ("oceanbase://root@h:1/a`b", "database name"),
            ("oceanbase://root@h:1/..", "database name"),
            ("oceanbase://root@h:1/../etc", "database name"),
            ("oceanbase://root@h:1/1db", "database name"),
            ("oceanbase://root@h:1/db-x", "database name"),
            ("oceanbase://root@h:1/db?ssl=0", "query string"),
            ("oceanbase://root@h:1/db#x", "fragment"),
            ("oceanbase://root@h :1/db", "whitespace"),
            ("oceanbase://root@h/x:1/db", "port"),
            ("oceanbase://ro%zzot@h:1/db", "%-escape"),
            ("oceanbase://ro%ffot@h:1/db", "UTF-8"),
        ];
        for (s, why) in cases {
            let e = parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
        let long_db = format!("oceanbase://root@h:1/{}", "a".repeat(65));
        assert!(parse(&long_db).unwrap_err().to_string().contains("database name"));
        let huge = format!("oceanbase://root@h:1/{}", "a".repeat(1 << 20));
        let e = parse(&huge).unwrap_err().to_string();
        assert!(e.contains("longer than") && e.len() < 200, "{e}");
    }
}
