//! Configuration: defaults, then `~/.config/kache/config.toml`, then the
//! nearest `.kache.toml` walking up from the current directory, then
//! `KACHE_*` environment variables, each overriding the one before.
//!
//! Every known key is one row of [`KEYS`]. A malformed file is an error that
//! names the file and line; an unknown key is a warning, never a silently
//! dropped file.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use kache_platform::{normalize_path, PathKind};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
        // Off: a hardlinked output shares the blob's read-only inode, and rustc refuses to
        // replace a read-only output, so a later build without kache failed on an edit.
        default: "false",
        doc: "allow hardlink restores (one consumer per blob; the restored outputs are \
              read-only, so a build without kache cannot recompile them)",
    },
    KeyDef {
        name: "cache.background_store",
        env: "KACHE_BACKGROUND_STORE",
        kind: Kind::Bool,
        default: "true",
        doc: "store large outputs (a linked binary) after the compile returns, so the \
              build does not wait for hashing and copying them (Linux)",
    },
    KeyDef {
        name: "cache.seed",
        env: "KACHE_SEED",
        kind: Kind::Bool,
        default: "true",
        doc: "seed a new target dir with the finished registry/git units of earlier builds",
    },
    KeyDef {
        name: "cache.observe",
        env: "KACHE_OBSERVE",
        kind: Kind::Str,
        default: "auto",
        doc: "`auto`: observe what a compile reads where an input recorder can run, else strict inference; `off`: always strict inference",
    },
    KeyDef {
        name: "rust.incremental",
        env: "KACHE_RUST_INCREMENTAL",
        kind: Kind::Str,
        default: "keep",
        doc: "`keep`: compile incrementally in the worktree and cache the result, keyed as incremental; `strip`: drop -C incremental and cache; `passthrough`: leave such compiles uncached",
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
        doc: "diagnostics: a level or filter (debug, kache::wrap=trace); any other value means debug",
    },
    KeyDef {
        name: "log.file",
        env: "KACHE_LOG_FILE",
        kind: Kind::Str,
        default: "",
        doc: "append diagnostics to this file instead of stderr (debug unless log.level says)",
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

/// What to do with a Rust compile that asks for incremental compilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incremental {
    /// Keep `-C incremental` on the compile of a miss (its state stays in
    /// the worktree, so the next edit recompiles incrementally) and cache
    /// the result under a key that says "incremental" without the path.
    Keep,
    /// Drop `-C incremental` and cache the compile.
    Strip,
    /// Leave it uncached.
    Passthrough,
}

/// How a compile's inputs are found (`cache.observe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// Observed by the input recorder where it can run; strict inference
    /// elsewhere. Until the recorder is part of kache, strict everywhere.
    Auto,
    /// Strict inference always (what runs where no recorder can).
    Off,
}

/// The values a key of kind `Str` may take, for the keys that have a fixed
/// set; anything else is an error naming the choices.
fn choices(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "cache.observe" => Some(&["auto", "off"]),
        "rust.incremental" => Some(&["keep", "strip", "passthrough"]),
        _ => None,
    }
}

/// A glob from `cache.exclude`, anchored at the directory of its file (the
/// current directory for `KACHE_EXCLUDE`), with `~` and `$VAR` already
/// expanded as literal text. A leading `!` re-includes what an earlier glob
/// excluded.
#[derive(Debug, Clone, PartialEq)]
pub struct ExcludeGlob {
    pub base: PathBuf,
    pub pattern: String,
    /// The glob over whole normalized paths: the base (escaped, so a `[` in
    /// a directory name is not a class) joined with the pattern, without
    /// the `!`.
    full: String,
}

impl ExcludeGlob {
    fn new(base: &Path, raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let (bang, raw) = raw.strip_prefix('!').map_or(("", raw), |r| ("!", r));
        let pat = expand_with(raw, env, globset::escape);
        let full = if normalize_path(&pat).kind == PathKind::Relative {
            let base = normalize_path(&base.to_string_lossy()).as_string();
            format!("{}/{pat}", globset::escape(&base))
        } else {
            pat.clone()
        };
        let g = ExcludeGlob {
            base: base.to_path_buf(),
            pattern: format!("{bang}{pat}"),
            full: normalize_path(&full).as_string(),
        };
        g.compile().map(|_| g)
    }

    fn negated(&self) -> bool {
        self.pattern.starts_with('!')
    }

    /// `*` and `?` stay inside one component, `**` spans components; no
    /// backslash escapes, so a glob means the same on every OS (`[*]` is a
    /// literal `*`).
    fn compile(&self) -> Result<Glob, String> {
        GlobBuilder::new(&self.full)
            .literal_separator(true)
            .backslash_escape(false)
            .build()
            .map_err(|e| format!("invalid glob {:?}: {e}", self.pattern))
    }

    /// The text every path this glob matches starts with (up to its first
    /// wildcard, class or alternative).
    fn literal_prefix(&self) -> &str {
        let end = self
            .full
            .find(['*', '?', '[', '{'])
            .unwrap_or(self.full.len());
        &self.full[..end]
    }
}

/// Every `cache.exclude` glob in one matcher; the last glob that matches a
/// path decides (excluded, or re-included by a `!` glob).
#[derive(Debug, Clone)]
struct ExcludeMatcher {
    set: GlobSet,
    negated: Vec<bool>,
}

impl ExcludeMatcher {
    fn new(globs: &[ExcludeGlob]) -> ExcludeMatcher {
        let mut b = GlobSetBuilder::new();
        let mut negated = Vec::new();
        // Each glob compiled when it was read; one failing now (a caller
        // that pushed into `excludes` itself) is left out.
        for g in globs {
            if let Ok(glob) = g.compile() {
                b.add(glob);
                negated.push(g.negated());
            }
        }
        match b.build() {
            Ok(set) => ExcludeMatcher { set, negated },
            Err(_) => ExcludeMatcher {
                set: GlobSet::empty(),
                negated: Vec::new(),
            },
        }
    }

    /// `path` already normalized.
    fn is_excluded(&self, path: &str) -> bool {
        match self.set.matches(path).into_iter().max() {
            Some(last) => !self.negated[last],
            None => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub values: BTreeMap<&'static str, (Value, Origin)>,
    pub excludes: Vec<ExcludeGlob>,
    pub warnings: Vec<String>,
    pub project_file: Option<PathBuf>,
    /// Built on the first [`Config::is_excluded`] that needs it.
    exclude_matcher: OnceLock<ExcludeMatcher>,
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
        Kind::Str => Value::Str(chosen(def, s)?.to_string()),
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

/// `s`, if `def` takes any string or `s` is one of its choices.
fn chosen<'a>(def: &KeyDef, s: &'a str) -> Option<&'a str> {
    match choices(def.name) {
        Some(c) if !c.contains(&s) => None,
        _ => Some(s),
    }
}

fn from_toml(def: &KeyDef, v: &toml::Value) -> Option<Value> {
    match (def.kind, v) {
        (Kind::Str, toml::Value::String(s)) => Some(Value::Str(chosen(def, s)?.to_string())),
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

fn expected(def: &KeyDef) -> String {
    match choices(def.name) {
        Some(c) => format!("one of {}", c.join(", ")),
        None => kind_name(def.kind).to_string(),
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

/// Expands a leading `~` and `$VAR`/`${VAR}` in a path setting.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    expand_with(s, env, |v| v.to_string())
}

/// [`expand`], with every substituted value passed through `literal` (for
/// globs: escaped, so a variable's value never acts as a pattern).
fn expand_with(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
    literal: impl Fn(&str) -> String,
) -> String {
    let mut s = s.to_string();
    if s == "~" || s.starts_with("~/") {
        if let Some(h) = env("HOME") {
            s = format!("{}{}", literal(&h), &s[1..]);
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
        out.push_str(&literal(&env(&name).unwrap_or_default()));
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
            exclude_matcher: OnceLock::new(),
        };
        for def in KEYS {
            // Every default parses (a test holds it); should one not, the
            // key reads as empty rather than failing a build.
            if let Some(v) = from_text(def, def.default) {
                cfg.values.insert(def.name, (v, Origin::Default));
            }
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
                                    let g = ExcludeGlob::new(cwd, p, env)
                                        .map_err(|e| ConfigError(format!("{}: {e}", def.env)))?;
                                    cfg.excludes.push(g);
                                }
                            }
                        }
                        cfg.values.insert(def.name, (v, Origin::Env(def.env)));
                    }
                    None => {
                        return Err(ConfigError(format!(
                            "{}={raw:?} is not valid: expected {}",
                            def.env,
                            expected(def)
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
                        expected(def)
                    ))
                })?;
                if def.name == "cache.exclude" {
                    if let Value::List(l) = &value {
                        for p in l {
                            let g = ExcludeGlob::new(&base, p, env).map_err(|e| {
                                ConfigError(format!("{}: `{name}`: {e}", path.display()))
                            })?;
                            self.excludes.push(g);
                        }
                    }
                }
                self.values
                    .insert(def.name, (value, Origin::File(path.to_path_buf())));
            }
        }
        Ok(())
    }

    /// The value of a key; `None` only for a name that is not a row of
    /// [`KEYS`] (a typo in kache itself), which the getters below read as
    /// the empty value rather than panic on: wrapper mode must not fail.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).map(|(v, _)| v)
    }

    pub fn str(&self, name: &str) -> &str {
        match self.get(name) {
            Some(Value::Str(s)) => s,
            _ => "",
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }

    pub fn list(&self, name: &str) -> &[String] {
        match self.get(name) {
            Some(Value::List(l)) => l,
            _ => &[],
        }
    }

    pub fn int(&self, name: &str) -> u64 {
        match self.get(name) {
            Some(Value::Int(i)) => *i,
            _ => 0,
        }
    }

    /// `cache.disable`: every compile runs uncached.
    pub fn cache_disabled(&self) -> bool {
        self.bool("cache.disable")
    }

    /// `cache.hardlink`: hardlink restores are allowed.
    pub fn hardlink_allowed(&self) -> bool {
        self.bool("cache.hardlink")
    }

    /// `cache.background_store`: large outputs may be stored after the call returned.
    pub fn background_store(&self) -> bool {
        self.bool("cache.background_store")
    }

    /// `rust.incremental`.
    pub fn rust_incremental(&self) -> Incremental {
        match self.str("rust.incremental") {
            "passthrough" => Incremental::Passthrough,
            "strip" => Incremental::Strip,
            _ => Incremental::Keep,
        }
    }

    /// `cache.observe`.
    pub fn observe(&self) -> Observe {
        match self.str("cache.observe") {
            "off" => Observe::Off,
            _ => Observe::Auto,
        }
    }

    /// `rust.env`: variables declared as inputs of every Rust compile.
    pub fn rust_env(&self) -> &[String] {
        self.list("rust.env")
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

    /// True when `source` (absolute) matches a `cache.exclude` glob and no
    /// later `!` glob re-includes it.
    pub fn is_excluded(&self, source: &Path) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        let path = normalize_path(&source.to_string_lossy()).as_string();
        // Compiling the set costs a fresh process ~0.2 ms; a path outside
        // every excluding glob's literal prefix cannot match, so most
        // compiles never pay it.
        let may_match = self
            .excludes
            .iter()
            .any(|g| !g.negated() && path.starts_with(g.literal_prefix()));
        may_match
            && self
                .exclude_matcher
                .get_or_init(|| ExcludeMatcher::new(&self.excludes))
                .is_excluded(&path)
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

    fn project_with_excludes(globs: &[&str]) -> tempfile::TempDir {
        let proj = tempfile::tempdir().unwrap();
        let list: Vec<String> = globs.iter().map(|g| format!("{g:?}")).collect();
        std::fs::write(
            proj.path().join(".kache.toml"),
            format!("[cache]\nexclude = [{}]\n", list.join(", ")),
        )
        .unwrap();
        proj
    }

    #[test]
    fn double_star_spans_directories_and_single_star_stays_in_one() {
        let proj = project_with_excludes(&["vendor/**/*.c", "gen/*.rs"]);
        let c = Config::load(proj.path(), &env_of(&[])).unwrap();
        let p = proj.path();
        assert!(c.is_excluded(&p.join("vendor/x.c")));
        assert!(c.is_excluded(&p.join("vendor/a/b/x.c")));
        assert!(!c.is_excluded(&p.join("vendor/a/b/x.h")));
        assert!(c.is_excluded(&p.join("gen/out.rs")));
        assert!(!c.is_excluded(&p.join("gen/sub/out.rs")));
        // A path spelled with `..` is compared in its normal form.
        assert!(c.is_excluded(&p.join("src/../gen/out.rs")));
        assert!(!c.is_excluded(&p.join("gen/../src/out.rs")));
    }

    #[test]
    fn character_classes_and_alternatives_match_as_globs() {
        let proj = project_with_excludes(&["gen/part[0-9].rs", "gen/[!a-m]*.c", "{third,ext}/**"]);
        let c = Config::load(proj.path(), &env_of(&[])).unwrap();
        let p = proj.path();
        assert!(c.is_excluded(&p.join("gen/part7.rs")));
        assert!(!c.is_excluded(&p.join("gen/partx.rs")));
        assert!(c.is_excluded(&p.join("gen/zlib.c")));
        assert!(!c.is_excluded(&p.join("gen/adler.c")));
        assert!(c.is_excluded(&p.join("third/a.c")));
        assert!(c.is_excluded(&p.join("ext/x/y.c")));
        assert!(!c.is_excluded(&p.join("other/a.c")));
    }

    #[test]
    fn a_later_bang_glob_re_includes_what_an_earlier_one_excluded() {
        let proj = project_with_excludes(&["vendor/**", "!vendor/ours/**"]);
        let c = Config::load(proj.path(), &env_of(&[])).unwrap();
        let p = proj.path();
        assert!(c.is_excluded(&p.join("vendor/theirs/a.c")));
        assert!(!c.is_excluded(&p.join("vendor/ours/a.c")));
        // The environment comes last, so it can exclude again.
        let e = env_of(&[("KACHE_EXCLUDE", "vendor/ours/bad.c")]);
        let c = Config::load(proj.path(), &e).unwrap();
        assert!(c.is_excluded(&p.join("vendor/ours/bad.c")));
        assert!(!c.is_excluded(&p.join("vendor/ours/good.c")));
    }

    #[test]
    fn a_leading_double_star_matches_at_any_depth_below_its_file_only() {
        let proj = project_with_excludes(&["**/gen/*.c", "!**/gen/keep.c"]);
        let other = tempfile::tempdir().unwrap();
        let c = Config::load(proj.path(), &env_of(&[])).unwrap();
        let p = proj.path();
        assert!(c.is_excluded(&p.join("gen/x.c")));
        assert!(c.is_excluded(&p.join("a/b/gen/x.c")));
        assert!(!c.is_excluded(&p.join("a/b/gen/keep.c")));
        assert!(!c.is_excluded(&other.path().join("gen/x.c")));
        // A lone `!` glob excludes nothing.
        let proj = project_with_excludes(&["!src/**"]);
        let c = Config::load(proj.path(), &env_of(&[])).unwrap();
        assert!(!c.is_excluded(&proj.path().join("src/lib.rs")));
    }

    #[test]
    fn glob_characters_in_a_directory_or_variable_are_literal() {
        let root = tempfile::tempdir().unwrap();
        let proj = root.path().join("proj[1]");
        std::fs::create_dir(&proj).unwrap();
        std::fs::write(
            proj.join(".kache.toml"),
            "[cache]\nexclude = [\"gen/*.rs\", \"$V/*.c\"]\n",
        )
        .unwrap();
        let c = Config::load(&proj, &env_of(&[("V", "/opt/v{1,2}")])).unwrap();
        assert!(c.is_excluded(&proj.join("gen/a.rs")));
        assert!(!c.is_excluded(&root.path().join("proj1/gen/a.rs")));
        assert!(c.is_excluded(Path::new("/opt/v{1,2}/x.c")));
        assert!(!c.is_excluded(Path::new("/opt/v1/x.c")));
    }

    #[test]
    fn an_invalid_exclude_glob_is_an_error_naming_its_file() {
        let proj = project_with_excludes(&["gen/[a-"]);
        let err = Config::load(proj.path(), &env_of(&[])).unwrap_err().0;
        assert!(err.contains(".kache.toml"), "{err}");
        assert!(err.contains("gen/[a-"), "{err}");
        let e = env_of(&[("KACHE_EXCLUDE", "{a,b")]);
        let err = Config::load(Path::new("/"), &e).unwrap_err().0;
        assert!(err.contains("KACHE_EXCLUDE"), "{err}");
    }

    #[test]
    fn every_default_parses() {
        for def in KEYS {
            assert!(from_text(def, def.default).is_some(), "{}", def.name);
        }
    }

    #[test]
    fn typed_getters_read_known_keys_and_unknown_names_never_panic() {
        let c = Config::load(
            Path::new("/"),
            &env_of(&[
                ("KACHE_RUST_INCREMENTAL", "passthrough"),
                ("KACHE_RUST_ENV", "A,B"),
            ]),
        )
        .unwrap();
        for name in [
            "cache.disable",
            "cache.hardlink",
            "rust.incremental",
            "rust.env",
            "cache.max_size",
            "cache.fallback",
        ] {
            assert!(c.get(name).is_some(), "{name} is not a row of KEYS");
        }
        assert!(!c.cache_disabled());
        assert!(
            !c.hardlink_allowed(),
            "hardlink restores are off unless asked for"
        );
        assert_eq!(c.rust_incremental(), Incremental::Passthrough);
        assert_eq!(c.rust_env(), ["A", "B"]);
        assert_eq!(c.str("cache.no_such_key"), "");
        assert!(!c.bool("no.such"));
        assert_eq!(c.int("no.such"), 0);
        assert!(c.list("no.such").is_empty());
    }

    #[test]
    fn observation_is_auto_unless_switched_off_and_typos_are_errors() {
        let c = Config::load(Path::new("/"), &env_of(&[])).unwrap();
        assert_eq!(c.observe(), Observe::Auto);
        let c = Config::load(Path::new("/"), &env_of(&[("KACHE_OBSERVE", "off")])).unwrap();
        assert_eq!(c.observe(), Observe::Off);
        let err = Config::load(Path::new("/"), &env_of(&[("KACHE_OBSERVE", "of")]))
            .unwrap_err()
            .0;
        assert!(err.contains("one of auto, off"), "{err}");
        let proj = tempfile::tempdir().unwrap();
        std::fs::write(
            proj.path().join(".kache.toml"),
            "[cache]\nobserve = \"maybe\"\n",
        )
        .unwrap();
        assert!(Config::load(proj.path(), &env_of(&[])).is_err());
    }

    #[test]
    fn incremental_compiles_are_kept_by_default_and_every_policy_still_parses() {
        let c = Config::load(Path::new("/"), &env_of(&[])).unwrap();
        assert_eq!(c.rust_incremental(), Incremental::Keep);
        for (text, want) in [
            ("keep", Incremental::Keep),
            ("strip", Incremental::Strip),
            ("passthrough", Incremental::Passthrough),
        ] {
            let c =
                Config::load(Path::new("/"), &env_of(&[("KACHE_RUST_INCREMENTAL", text)])).unwrap();
            assert_eq!(c.rust_incremental(), want, "{text}");
        }
        let err = Config::load(
            Path::new("/"),
            &env_of(&[("KACHE_RUST_INCREMENTAL", "strp")]),
        )
        .unwrap_err()
        .0;
        assert!(err.contains("one of keep, strip, passthrough"), "{err}");
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
