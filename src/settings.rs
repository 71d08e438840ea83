//! Layered settings: defaults < config file < `VITRINE_*` environment < flags.
//!
//! Every command's settings are one struct that derives clap and serde (see `vitrine_web::config`).
//! clap already resolves three of the four layers for each argument (its default, its environment
//! variable, the command line) and says which one a value came from (`ArgMatches::value_source`).
//! The config file slots in between: a key in the file replaces a value clap took from its default,
//! and nothing else. Values pass between the layers as JSON, the form `vitrine config --json` prints.
//!
//! One file serves every command: a command ignores the keys of other commands, but a key no
//! command has is an error (a typo would otherwise be silently ignored). A file value must have the
//! key's type even where the environment or a flag overrides it, so a broken file fails everywhere.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use vitrine_web::config::InvalidSetting;

/// A command's settings struct.
pub trait Settings: Args + FromArgMatches + Serialize + DeserializeOwned {
    /// Keys whose values `vitrine config` masks.
    const SECRETS: &'static [&'static str] = &[];

    /// Refuse values the command cannot run with.
    fn validate(&self) -> Result<(), InvalidSetting> {
        Ok(())
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    /// A default that depends on where `vitrine demo` finds the bundled model and catalog.
    DemoDefault,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl Source {
    /// `default`, `file`, `env` or `flag`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Default | Source::DemoDefault => "default",
            Source::File(_) => "file",
            Source::Env(_) => "env",
            Source::Flag(_) => "flag",
        }
    }

    /// The file, variable or flag; `None` for defaults.
    pub fn origin(&self) -> Option<String> {
        match self {
            Source::Default => None,
            Source::DemoDefault => Some("vitrine demo".into()),
            Source::File(p) => Some(p.display().to_string()),
            Source::Env(v) | Source::Flag(v) => Some(v.clone()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin() {
            Some(o) => write!(f, "{} {o}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// A parsed config file: flat `key = value` pairs.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// Read and parse `path`, refusing keys that are not in `known` (every command's keys).
    pub fn load(path: &Path, known: &BTreeSet<String>) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the config file {}", path.display()))?;
        Self::parse(path, &text, known)
    }

    fn parse(path: &Path, text: &str, known: &BTreeSet<String>) -> Result<Self> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow!("config file {} is not valid TOML: {e}", path.display()))?;
        for key in table.keys() {
            if !known.contains(key) {
                let hint = match closest(key, known) {
                    Some(k) => format!("; did you mean `{k}`?"),
                    None => String::new(),
                };
                bail!(
                    "config file {}: unknown key `{key}`{hint} (keys are the long flags with `_` for `-`; `vitrine config` lists them)",
                    path.display()
                );
            }
        }
        Ok(ConfigFile { path: path.to_path_buf(), table })
    }

    fn get(&self, key: &str) -> Option<Value> {
        self.table.get(key).map(|v| serde_json::to_value(v).expect("TOML values are JSON values"))
    }
}

/// The known key nearest to a typo, if it is close (at most two edits).
fn closest<'a>(key: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    known.iter().map(|k| (edit_distance(key, k), k)).filter(|(d, _)| *d <= 2).min().map(|(_, k)| k.as_str())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The keys of a settings struct, in declaration order: its clap argument ids.
pub fn keys(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments().filter(|a| a.get_long().is_some()).map(|a| a.get_id().to_string()).collect()
}

/// A command's effective settings and where each value came from.
pub struct Resolved<T> {
    pub value: T,
    sources: Vec<(String, Source)>,
}

/// One line of `vitrine config`: a key, its value (masked for secrets) and its source.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    pub value: Value,
    pub source: Source,
}

impl<T: Settings> Resolved<T> {
    pub fn source(&self, key: &str) -> &Source {
        &self.sources.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("`{key}` is not a setting of this command")).1
    }

    pub fn set_source(&mut self, key: &str, source: Source) {
        if let Some(s) = self.sources.iter_mut().find(|(k, _)| k == key) {
            s.1 = source;
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        let values = serde_json::to_value(&self.value).expect("settings serialize");
        self.sources
            .iter()
            .map(|(key, source)| {
                let mut value = values.get(key).cloned().unwrap_or(Value::Null);
                if T::SECRETS.contains(&key.as_str()) && !value.is_null() {
                    value = Value::String("***".into());
                } else if let Value::String(s) = &value {
                    value = Value::String(mask_url_password(s));
                }
                Row { key: key.clone(), value, source: source.clone() }
            })
            .collect()
    }
}

/// The settings `T` for a parsed command line `m`: clap's defaults, then `file`, then the
/// environment and flags as clap read them. Validates the result.
pub fn resolve<T: Settings>(m: &ArgMatches, file: Option<&ConfigFile>) -> Result<Resolved<T>> {
    let from_clap = T::from_arg_matches(m).map_err(|e| anyhow!("{e}"))?;
    let mut merged = serde_json::to_value(&from_clap).expect("settings serialize");
    let cmd = T::augment_args(clap::Command::new("settings"));
    let mut sources = Vec::new();
    for arg in cmd.get_arguments().filter(|a| a.get_long().is_some()) {
        let key = arg.get_id().as_str();
        let from_file = file.and_then(|f| f.get(key).map(|v| (f, v)));
        if let Some((f, v)) = &from_file {
            // Type-check the file's value on its own, even if a later layer overrides it.
            let mut probe = merged.clone();
            probe[key] = v.clone();
            if let Err(e) = serde_json::from_value::<T>(probe) {
                bail!("config file {}: `{key}` = {v}: {e}", f.path.display());
            }
        }
        let source = match m.value_source(key) {
            Some(ValueSource::CommandLine) => Source::Flag(format!("--{}", arg.get_long().expect("filtered"))),
            Some(ValueSource::EnvVariable) => {
                Source::Env(arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default())
            }
            _ => match from_file {
                Some((f, v)) => {
                    merged[key] = v;
                    Source::File(f.path.clone())
                }
                None => Source::Default,
            },
        };
        sources.push((key.to_string(), source));
    }
    let value: T = serde_json::from_value(merged).context("merging the settings layers")?;
    let resolved = Resolved { value, sources };
    if let Err(e) = resolved.value.validate() {
        let source = resolved.sources.iter().find(|(k, _)| k == e.key).map(|(_, s)| s.clone()).unwrap_or(Source::Default);
        let change = match &source {
            Source::Default | Source::DemoDefault => {
                format!("set `{}` in the config file, VITRINE_{}, or --{}", e.key, e.key.to_uppercase(), e.key.replace('_', "-"))
            }
            other => format!("change it in {other}"),
        };
        bail!("invalid setting {e} (from {source}; {change})");
    }
    Ok(resolved)
}

/// A URL's password as `***` (`oceanbase://app:***@host:2881/shop`): credentials in a URL
/// setting never print, whatever the setting. Anything else is returned unchanged.
pub fn mask_url_password(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else { return s.to_string() };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return s.to_string() };
    let Some(colon) = rest[..at].find(':') else { return s.to_string() };
    format!("{}{}:***{}", &s[..scheme_end + 3], &rest[..colon], &rest[at..])
}

/// `vitrine config` output for one command: TOML lines with the source as a comment, or one JSON object.
pub fn render(command: &str, file: Option<&ConfigFile>, rows: &[Row], json: bool) -> String {
    let file_name = file.map(|f| f.path.display().to_string());
    if json {
        let settings: serde_json::Map<String, Value> = rows
            .iter()
            .map(|r| {
                let mut o = serde_json::json!({ "value": r.value, "source": r.source.kind() });
                if let Some(from) = r.source.origin() {
                    o["from"] = from.into();
                }
                (r.key.clone(), o)
            })
            .collect();
        return serde_json::json!({ "command": command, "file": file_name, "settings": settings }).to_string() + "\n";
    }
    let mut out = format!(
        "# vitrine {command}: {}\n",
        file_name.map_or_else(|| "no config file".to_string(), |f| format!("config file {f}"))
    );
    let lines: Vec<String> = rows
        .iter()
        .map(|r| if r.value.is_null() { format!("# {} (not set)", r.key) } else { format!("{} = {}", r.key, r.value) })
        .collect();
    let width = lines.iter().map(String::len).max().unwrap_or(0);
    for (line, r) in lines.iter().zip(rows) {
        out.push_str(&format!("{line:<width$}  # {}\n", r.source));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_url_settings_are_masked() {
        assert_eq!(mask_url_password("oceanbase://app:s%40c:ret@127.0.0.1:2881/shop"), "oceanbase://app:***@127.0.0.1:2881/shop");
        for unchanged in ["oceanbase://root@127.0.0.1:2881/shop", "embedded", "data/dir", "http://h/a:b@c", "x://@"] {
            assert_eq!(mask_url_password(unchanged), unchanged);
        }
    }

    #[derive(clap::Parser, Serialize, serde::Deserialize, Debug)]
    struct Demo {
        #[arg(long, default_value_t = 4)]
        size: usize,
        #[arg(long, default_value = "a")]
        name: String,
        #[arg(long)]
        secret_key: Option<String>,
    }

    impl Settings for Demo {
        const SECRETS: &'static [&'static str] = &["secret_key"];
        fn validate(&self) -> Result<(), InvalidSetting> {
            if self.size == 0 {
                return Err(InvalidSetting { key: "size", problem: "is 0".into() });
            }
            Ok(())
        }
    }

    fn known() -> BTreeSet<String> {
        ["size", "name", "secret_key", "other_command_key"].map(String::from).into()
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("test.toml"), text, &known()).unwrap()
    }

    fn matches(args: &[&str]) -> ArgMatches {
        <Demo as clap::CommandFactory>::command()
            .try_get_matches_from(std::iter::once("demo").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn a_file_value_replaces_the_default_and_a_flag_replaces_the_file() {
        let f = file("size = 9\nname = \"b\"\nother_command_key = 1\n");
        let r = resolve::<Demo>(&matches(&["--name", "c"]), Some(&f)).unwrap();
        assert_eq!((r.value.size, r.value.name.as_str()), (9, "c"));
        assert_eq!(r.source("size"), &Source::File("test.toml".into()));
        assert_eq!(r.source("name"), &Source::Flag("--name".into()));
        assert_eq!(r.source("secret_key"), &Source::Default);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_nearest_known_key() {
        let e = ConfigFile::parse(Path::new("x.toml"), "sise = 3\n", &known()).unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("`sise`") && e.contains("did you mean `size`"), "{e}");
        let e = ConfigFile::parse(Path::new("x.toml"), "[serve]\nsize = 3\n", &known()).unwrap_err().to_string();
        assert!(e.contains("unknown key `serve`"), "sections are not keys: {e}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_file_even_when_overridden() {
        let f = file("size = \"big\"\n");
        for args in [&[][..], &["--size", "3"][..]] {
            let e = resolve::<Demo>(&matches(args), Some(&f)).err().unwrap().to_string();
            assert!(e.contains("test.toml") && e.contains("`size`") && e.contains("invalid type"), "{e}");
        }
        let e = resolve::<Demo>(&matches(&[]), Some(&file("size = -1\n"))).err().unwrap().to_string();
        assert!(e.contains("`size`"), "{e}");
    }

    #[test]
    fn an_invalid_value_says_where_it_came_from() {
        let e = resolve::<Demo>(&matches(&[]), Some(&file("size = 0\n"))).err().unwrap().to_string();
        assert!(e.contains("`size` is 0") && e.contains("file test.toml"), "{e}");
        let e = resolve::<Demo>(&matches(&["--size", "0"]), None).err().unwrap().to_string();
        assert!(e.contains("flag --size"), "{e}");
    }

    #[test]
    fn secrets_are_masked_and_unset_values_are_null() {
        let r = resolve::<Demo>(&matches(&["--secret-key", "hunter2"]), None).unwrap();
        let rows = r.rows();
        let secret = rows.iter().find(|r| r.key == "secret_key").unwrap();
        assert_eq!(secret.value, "***");
        let text = render("demo", None, &rows, false);
        assert!(!text.contains("hunter2") && text.contains("secret_key = \"***\""), "{text}");
        let r = resolve::<Demo>(&matches(&[]), None).unwrap();
        assert!(render("demo", None, &r.rows(), false).contains("# secret_key (not set)"));
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("queue", "queue"), 0);
        assert_eq!(edit_distance("qeue", "queue"), 1);
        assert_eq!(edit_distance("bnid", "bind"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
