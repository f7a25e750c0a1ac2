//! Configuration: defaults, then `~/.config/kache/config.toml`, then the
//! nearest `.kache.toml` walking up from the current directory, then
//! `KACHE_*` environment variables, each overriding the one before.
//!
//! Every known key is one row of [`KEYS`]. A malformed file is an error that
//! names the file and line; an unknown key is a warning, never a silently
//! dropped file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a value came from (for `kache config show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "env {v}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    Size,
    Int,
    List,
}

/// One configuration key: its dotted name, its environment variable, its
/// type, its default, and what it is for.
pub struct KeyDef {
    pub name: &'static str,
    pub env: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub doc: &'static str,
}

pub const KEYS: &[KeyDef] = &[
    KeyDef {
        name: "cache.dir",
        env: "KACHE_DIR",
        kind: Kind::Str,
        default: "",
        doc: "store location (default $XDG_CACHE_HOME/kache)",
    },
    KeyDef {
        name: "cache.max_size",
        env: "KACHE_MAX_SIZE",
        kind: Kind::Size,
        default: "10GiB",
        doc: "store size limit; least recently used entries are evicted",
    },
    KeyDef {
        name: "cache.disable",
        env: "KACHE_DISABLE",
        kind: Kind::Bool,
        default: "false",
        doc: "run every compile uncached",
    },
    KeyDef {
        name: "cache.fallback",
        env: "KACHE_FALLBACK",
        kind: Kind::Str,
        default: "",
        doc: "wrapper for passthroughs (e.g. sccache); off/none/empty disables",
    },
    KeyDef {
        name: "cache.exclude",
        env: "KACHE_EXCLUDE",
        kind: Kind::List,
        default: "",
        doc: "globs of sources kache never touches",
    },
    KeyDef {
        name: "cache.hardlink",
        env: "KACHE_HARDLINK",
        kind: Kind::Bool,
        default: "true",
        doc: "allow hardlink restores (one consumer per blob)",
    },
    KeyDef {
        name: "cache.seed",
        env: "KACHE_SEED",
        kind: Kind::Bool,
        default: "true",
        doc: "seed a new target dir with the finished registry/git units of earlier builds",
    },
    KeyDef {
        name: "rust.incremental",
        env: "KACHE_RUST_INCREMENTAL",
        kind: Kind::Str,
        default: "strip",
        doc: "`strip`: drop -C incremental and cache; `passthrough`: leave such compiles uncached",
    },
    KeyDef {
        name: "rust.env",
        env: "KACHE_RUST_ENV",
        kind: Kind::List,
        default: "",
        doc: "extra environment variables read by proc-macros that dep-info cannot see; their values join the key",
    },
    KeyDef {
        name: "remote.url",
        env: "KACHE_REMOTE",
        kind: Kind::Str,
        default: "",
        doc: "s3://bucket/prefix or file:///path",
    },
    KeyDef {
        name: "remote.read_only",
        env: "KACHE_REMOTE_READ_ONLY",
        kind: Kind::Bool,
        default: "false",
        doc: "download only, never upload",
    },
    KeyDef {
        name: "remote.timeout_ms",
        env: "KACHE_REMOTE_TIMEOUT_MS",
        kind: Kind::Int,
        default: "2000",
        doc: "time budget of a remote lookup",
    },
    KeyDef {
        name: "remote.endpoint",
        env: "KACHE_S3_ENDPOINT",
        kind: Kind::Str,
        default: "",
        doc: "S3 endpoint URL (default AWS_ENDPOINT_URL, else AWS for the region)",
    },
    KeyDef {
        name: "remote.region",
        env: "KACHE_S3_REGION",
        kind: Kind::Str,
        default: "",
        doc: "S3 region (default AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)",
    },
    KeyDef {
        name: "remote.access_key_id",
        env: "KACHE_S3_ACCESS_KEY_ID",
        kind: Kind::Str,
        default: "",
        doc: "S3 access key (default: AWS variables, then ~/.aws profile files)",
    },
    KeyDef {
        name: "remote.secret_access_key",
        env: "KACHE_S3_SECRET_ACCESS_KEY",
        kind: Kind::Str,
        default: "",
        doc: "S3 secret key (default: AWS variables, then ~/.aws profile files)",
    },
    KeyDef {
        name: "remote.session_token",
        env: "KACHE_S3_SESSION_TOKEN",
        kind: Kind::Str,
        default: "",
        doc: "S3 session token for temporary credentials",
    },
    KeyDef {
        name: "remote.ec2_metadata",
        env: "KACHE_S3_EC2_METADATA",
        kind: Kind::Bool,
        default: "false",
        doc: "also ask the EC2 instance metadata service for credentials",
    },
    KeyDef {
        name: "remote.transfer_timeout_ms",
        env: "KACHE_REMOTE_TRANSFER_TIMEOUT_MS",
        kind: Kind::Int,
        default: "60000",
        doc: "time limit of one upload or status request (background work)",
    },
    KeyDef {
        name: "remote.max_blob_size",
        env: "KACHE_REMOTE_MAX_BLOB_SIZE",
        kind: Kind::Size,
        default: "1GiB",
        doc: "largest blob downloaded or uploaded",
    },
    KeyDef {
        name: "remote.max_entry_size",
        env: "KACHE_REMOTE_MAX_ENTRY_SIZE",
        kind: Kind::Size,
        default: "16MiB",
        doc: "largest entry or manifest downloaded",
    },
    KeyDef {
        name: "remote.negative_ttl_s",
        env: "KACHE_REMOTE_NEGATIVE_TTL_S",
        kind: Kind::Int,
        default: "30",
        doc: "seconds a remote 'not found' is remembered",
    },
    KeyDef {
        name: "remote.breaker_failures",
        env: "KACHE_REMOTE_BREAKER_FAILURES",
        kind: Kind::Int,
        default: "3",
        doc: "consecutive remote failures that open the circuit breaker",
    },
    KeyDef {
        name: "remote.breaker_cooldown_s",
        env: "KACHE_REMOTE_BREAKER_COOLDOWN_S",
        kind: Kind::Int,
        default: "60",
        doc: "seconds the remote is not asked once the breaker opened",
    },
    KeyDef {
        name: "remote.background_drain",
        env: "KACHE_REMOTE_BACKGROUND_DRAIN",
        kind: Kind::Bool,
        default: "true",
        doc: "after queueing an upload, start `kache remote drain --background` if none runs",
    },
    KeyDef {
        name: "log.level",
        env: "KACHE_LOG",
        kind: Kind::Str,
        default: "",
        doc: "diagnostic logging to stderr (error, warn, info, debug)",
    },
];

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(u64),
    List(Vec<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::List(l) => write!(f, "{l:?}"),
        }
    }
}

/// A glob from `cache.exclude`, anchored at the directory of its file.
#[derive(Debug, Clone, PartialEq)]
pub struct ExcludeGlob {
    pub base: PathBuf,
    pub pattern: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub values: BTreeMap<&'static str, (Value, Origin)>,
    pub excludes: Vec<ExcludeGlob>,
    pub warnings: Vec<String>,
    pub project_file: Option<PathBuf>,
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// `10GiB`, `500M`, `1.5G`, `4096` → bytes. Binary and decimal suffixes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        _ => return None,
    };
    if num < 0.0 || !num.is_finite() {
        return None;
    }
    Some((num * mult) as u64)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn from_text(def: &KeyDef, s: &str) -> Option<Value> {
    Some(match def.kind {
        Kind::Str => Value::Str(s.to_string()),
        Kind::Bool => Value::Bool(parse_bool(s)?),
        Kind::Size => Value::Int(parse_size(s)?),
        Kind::Int => Value::Int(s.trim().parse().ok()?),
        Kind::List => Value::List(
            s.split(if s.contains(';') { ';' } else { ',' })
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        ),
    })
}

fn from_toml(def: &KeyDef, v: &toml::Value) -> Option<Value> {
    match (def.kind, v) {
        (Kind::Str, toml::Value::String(s)) => Some(Value::Str(s.clone())),
        (Kind::Bool, toml::Value::Boolean(b)) => Some(Value::Bool(*b)),
        (Kind::Size, toml::Value::String(s)) => parse_size(s).map(Value::Int),
        (Kind::Size | Kind::Int, toml::Value::Integer(i)) if *i >= 0 => Some(Value::Int(*i as u64)),
        (Kind::List, toml::Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Value::List),
        _ => None,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Str => "a string",
        Kind::Bool => "true or false",
        Kind::Size => "a size like \"10GiB\"",
        Kind::Int => "a non-negative integer",
        Kind::List => "a list of strings",
    }
}

/// Expands a leading `~` and `$VAR`/`${VAR}` in an exclude pattern.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut s = s.to_string();
    if s == "~" || s.starts_with("~/") {
        if let Some(h) = env("HOME") {
            s = format!("{h}{}", &s[1..]);
        }
    }
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        out.push_str(&env(&name).unwrap_or_default());
    }
    out
}

impl Config {
    /// Loads configuration for a process whose current directory is `cwd`.
    pub fn load(cwd: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            values: BTreeMap::new(),
            excludes: Vec::new(),
            warnings: Vec::new(),
            project_file: None,
        };
        for def in KEYS {
            let v = from_text(def, def.default).expect("defaults parse");
            cfg.values.insert(def.name, (v, Origin::Default));
        }
        if let Some(user) = user_config_path(env) {
            if user.is_file() {
                cfg.apply_file(&user, env)?;
            }
        }
        let mut dir = Some(cwd);
        while let Some(d) = dir {
            let candidate = d.join(".kache.toml");
            if candidate.is_file() {
                cfg.apply_file(&candidate, env)?;
                cfg.project_file = Some(candidate);
                break;
            }
            dir = d.parent();
        }
        for def in KEYS {
            if let Some(raw) = env(def.env) {
                match from_text(def, &raw) {
                    Some(v) => {
                        if def.name == "cache.exclude" {
                            if let Value::List(l) = &v {
                                for p in l {
                                    cfg.excludes.push(ExcludeGlob {
                                        base: cwd.to_path_buf(),
                                        pattern: expand(p, env),
                                    });
                                }
                            }
                        }
                        cfg.values.insert(def.name, (v, Origin::Env(def.env)));
                    }
                    None => {
                        return Err(ConfigError(format!(
                            "{}={raw:?} is not valid: expected {}",
                            def.env,
                            kind_name(def.kind)
                        )))
                    }
                }
            }
        }
        Ok(cfg)
    }

    fn apply_file(
        &mut self,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        for (section, inner) in &table {
            let Some(inner) = inner.as_table() else {
                self.warnings.push(format!(
                    "{}: unknown top-level key `{section}` (ignored)",
                    path.display()
                ));
                continue;
            };
            for (key, v) in inner {
                let name = format!("{section}.{key}");
                let Some(def) = KEYS.iter().find(|d| d.name == name) else {
                    self.warnings.push(format!(
                        "{}: unknown key `{name}` (ignored)",
                        path.display()
                    ));
                    continue;
                };
                let value = from_toml(def, v).ok_or_else(|| {
                    ConfigError(format!(
                        "{}: `{name}` must be {}, found {v}",
                        path.display(),
                        kind_name(def.kind)
                    ))
                })?;
                if def.name == "cache.exclude" {
                    if let Value::List(l) = &value {
                        for p in l {
                            self.excludes.push(ExcludeGlob {
                                base: base.clone(),
                                pattern: expand(p, env),
                            });
                        }
                    }
                }
                self.values
                    .insert(def.name, (value, Origin::File(path.to_path_buf())));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> &Value {
        &self.values.get(name).expect("known key").0
    }

    pub fn str(&self, name: &str) -> &str {
        match self.get(name) {
            Value::Str(s) => s,
            _ => "",
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Value::Bool(true))
    }

    pub fn list(&self, name: &str) -> &[String] {
        match self.get(name) {
            Value::List(l) => l,
            _ => &[],
        }
    }

    pub fn int(&self, name: &str) -> u64 {
        match self.get(name) {
            Value::Int(i) => *i,
            _ => 0,
        }
    }

    /// The store directory: `cache.dir`, else `$XDG_CACHE_HOME/kache`, else `~/.cache/kache`.
    pub fn store_dir(&self, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        let d = self.str("cache.dir");
        if !d.is_empty() {
            return PathBuf::from(expand(d, env));
        }
        if let Some(x) = env("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("kache");
        }
        let home = env("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache").join("kache")
    }

    pub fn max_size(&self) -> Option<u64> {
        match self.int("cache.max_size") {
            0 => None,
            n => Some(n),
        }
    }

    /// The fallback wrapper's name, or None when disabled.
    pub fn fallback(&self) -> Option<&str> {
        match self.str("cache.fallback").trim() {
            "" | "off" | "none" => None,
            f => Some(f),
        }
    }

    /// True when `source` (absolute) matches a `cache.exclude` glob.
    pub fn is_excluded(&self, source: &Path) -> bool {
        self.excludes.iter().any(|g| {
            let pat = Path::new(&g.pattern);
            let full = if pat.is_absolute() {
                pat.to_path_buf()
            } else {
                g.base.join(pat)
            };
            glob_match(&full.to_string_lossy(), &source.to_string_lossy())
        })
    }
}

pub fn user_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(x) = env("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("kache").join("config.toml"));
    }
    env("HOME").map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("kache")
            .join("config.toml")
    })
}

/// Glob match over `/`-separated paths: `*` and `?` stay within a component,
/// `**` spans components; a pattern ending in `/**` also matches the directory.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let s: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    match_parts(&p, &s)
}

fn match_parts(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => (0..=s.len()).any(|i| match_parts(&p[1..], &s[i..])),
        Some(seg) => {
            !s.is_empty()
                && match_component(seg.as_bytes(), s[0].as_bytes())
                && match_parts(&p[1..], &s[1..])
        }
    }
}

fn match_component(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| match_component(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && match_component(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && match_component(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn precedence_is_default_user_project_env() {
        let home = tempfile::tempdir().unwrap();
        let proj = tempfile::tempdir().unwrap();
        let cfgdir = home.path().join(".config/kache");
        std::fs::create_dir_all(&cfgdir).unwrap();
        std::fs::write(
            cfgdir.join("config.toml"),
            "[cache]\nmax_size = \"1GiB\"\nfallback = \"sccache\"\n",
        )
        .unwrap();
        std::fs::write(
            proj.path().join(".kache.toml"),
            "[cache]\nmax_size = \"2GiB\"\n",
        )
        .unwrap();
        let sub = proj.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let h = home.path().to_str().unwrap();
        let c = Config::load(&sub, &env_of(&[("HOME", h)])).unwrap();
        assert_eq!(c.max_size(), Some(2 << 30));
        assert_eq!(c.fallback(), Some("sccache"));
        assert_eq!(
            c.values["cache.max_size"].1,
            Origin::File(proj.path().join(".kache.toml"))
        );
        let c = Config::load(&sub, &env_of(&[("HOME", h), ("KACHE_MAX_SIZE", "3G")])).unwrap();
        assert_eq!(c.max_size(), Some(3_000_000_000));
        assert_eq!(c.values["cache.max_size"].1, Origin::Env("KACHE_MAX_SIZE"));
    }

    #[test]
    fn malformed_file_names_file_and_line() {
        let proj = tempfile::tempdir().unwrap();
        std::fs::write(
            proj.path().join(".kache.toml"),
            "[cache]\nmax_size = \"1G\"\nfallback = \n",
        )
        .unwrap();
        let err = Config::load(proj.path(), &env_of(&[])).unwrap_err().0;
        assert!(err.contains(".kache.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error_and_unknown_key_a_warning() {
        let proj = tempfile::tempdir().unwrap();
        let f = proj.path().join(".kache.toml");
        std::fs::write(&f, "[cache]\nmax_size = \"lots\"\n").unwrap();
        assert!(Config::load(proj.path(), &env_of(&[])).is_err());
        std::fs::write(&f, "[cache]\nmax_sise = \"1G\"\n[colour]\nx = 1\n").unwrap();
        let c = Config::load(proj.path(), &env_of(&[])).unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("cache.max_sise"));
    }

    #[test]
    fn exclude_globs_are_relative_to_their_file_and_expand_vars() {
        let proj = tempfile::tempdir().unwrap();
        std::fs::write(
            proj.path().join(".kache.toml"),
            "[cache]\nexclude = [\"crates/bad/**\", \"$VENDOR/*.c\"]\n",
        )
        .unwrap();
        let c = Config::load(proj.path(), &env_of(&[("VENDOR", "/opt/v")])).unwrap();
        assert!(c.is_excluded(&proj.path().join("crates/bad/src/lib.rs")));
        assert!(!c.is_excluded(&proj.path().join("crates/good/src/lib.rs")));
        assert!(c.is_excluded(Path::new("/opt/v/x.c")));
        assert!(!c.is_excluded(Path::new("/opt/v/sub/x.c")));
    }

    #[test]
    fn sizes_parse_in_both_unit_systems() {
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("500M"), Some(500_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("ten"), None);
    }

    #[test]
    fn store_dir_defaults_to_xdg_cache() {
        let c = Config::load(Path::new("/"), &env_of(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(
            c.store_dir(&env_of(&[("HOME", "/home/u")])),
            PathBuf::from("/home/u/.cache/kache")
        );
        assert_eq!(
            c.store_dir(&env_of(&[("XDG_CACHE_HOME", "/x")])),
            PathBuf::from("/x/kache")
        );
    }
}
