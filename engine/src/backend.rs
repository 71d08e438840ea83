//! Which backend holds the catalog: the one setting (`--backend`, `VITRINE_BACKEND`, config key
//! `backend`) every command that reads or writes products takes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{EngineError, EngineUrl};

/// `embedded` (the default: sled, vector segments and tantivy in the data directory) or
/// `oceanbase://USER[:PASS]@HOST:PORT/DB` (an OceanBase cluster, or seekdb).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Embedded,
    OceanBase(EngineUrl),
}

impl Backend {
    pub fn engine_url(&self) -> Option<&EngineUrl> {
        match self {
            Backend::Embedded => None,
            Backend::OceanBase(u) => Some(u),
        }
    }

    /// The setting's value with its password, for the settings layers only (which pass values as
    /// JSON); `Display` is what logs and messages print.
    pub fn to_setting(&self) -> String {
        match self {
            Backend::Embedded => "embedded".into(),
            Backend::OceanBase(u) => u.to_url_with_password(),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, EngineError> {
        if s == "embedded" {
            return Ok(Backend::Embedded);
        }
        if s.starts_with("oceanbase://") {
            return Ok(Backend::OceanBase(s.parse()?));
        }
        Err(EngineError::BadUrl { message: "the backend is `embedded` or oceanbase://USER[:PASS]@HOST:PORT/DB".into() })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Embedded => f.write_str("embedded"),
            Backend::OceanBase(u) => write!(f, "{u}"),
        }
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({self})")
    }
}

impl Serialize for Backend {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_setting())
    }
}

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_never_prints_the_password() {
        assert_eq!("embedded".parse::<Backend>().unwrap(), Backend::Embedded);
        let b: Backend = "oceanbase://app:s%40cret@127.0.0.1:2881/shop".parse().unwrap();
        let u = b.engine_url().unwrap();
        assert_eq!((u.user.as_str(), u.port, u.database.as_str()), ("app", 2881, "shop"));
        assert_eq!(b.to_string(), "oceanbase://app:***@127.0.0.1:2881/shop");
        assert!(!format!("{b:?}").contains("cret"));
        // The settings form keeps the password (escaped) and parses back to the same backend.
        let setting = b.to_setting();
        assert!(setting.contains("s%40cret"), "{setting}");
        assert_eq!(setting.parse::<Backend>().unwrap(), b);
        // An OceanBase tenant user (`root@test`, as docker-compose.yml writes it).
        let tenant: Backend = "oceanbase://root%40test@oceanbase:2881/vitrine".parse().unwrap();
        assert_eq!(tenant.engine_url().unwrap().user, "root@test");
        assert_eq!(tenant.to_setting().parse::<Backend>().unwrap(), tenant);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Backend>(&json).unwrap(), b);
    }

    #[test]
    fn refuses_other_values_without_echoing_them() {
        for bad in ["", "Embedded", "mysql://root@127.0.0.1:3306/x", "file:///etc/passwd", "oceanbase://root:pw@h:1/a;b"] {
            let e = bad.parse::<Backend>().unwrap_err().to_string();
            assert!(!e.contains("pw@"), "{e}");
        }
        assert!(serde_json::from_str::<Backend>("\"sled\"").is_err());
    }
}
