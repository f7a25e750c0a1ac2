//! Wrapper mode: `kache <compiler> <args…>`.
//!
//! Every call ends in one of four outcomes, each counted per language:
//! a **hit** (outputs restored, no compiler process), a **miss** (the real
//! compiler ran and its outputs were stored), a **passthrough** (the real
//! compiler ran, nothing cached, with a reason), or an **error** inside kache
//! (which degrades to a passthrough: kache's own failures never change the
//! compiler's exit status or output).

pub mod cc;
pub mod exec;
pub mod memo;
pub mod rust;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::env::Context;
use crate::stats;
use crate::store::Store;

/// The language section a call is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Cc,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Cc => "cc",
        }
    }
}

fn file_name(arg: &OsStr) -> String {
    Path::new(arg)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// True when `name` (a bare name or a path) is rustc or clippy-driver.
pub fn is_rustc(arg: &OsStr) -> bool {
    let f = file_name(arg);
    let f = f.strip_suffix(".exe").unwrap_or(&f);
    f == "rustc" || f == "clippy-driver" || (f.starts_with("rustc-") && !f.contains("wrapper"))
}

/// True when the first argument of `kache …` names a compiler kache wraps.
pub fn is_compiler(arg: &OsStr) -> bool {
    is_rustc(arg) || kache_wrapper::cc::compiler_kind(&arg.to_string_lossy()).is_some()
}

/// Entry point of wrapper mode; `args[0]` is the compiler.
pub fn run(args: &[OsString]) -> ExitCode {
    let compiler = &args[0];
    let rest = &args[1..];
    let ctx = match Context::load() {
        Ok(c) => c,
        Err(e) => {
            // A broken config must not break the build: say so, compile plainly.
            eprintln!("kache: warning: {e}; compiling without the cache");
            return plain(compiler, rest);
        }
    };
    if ctx.config.bool("cache.disable") {
        return plain(compiler, rest);
    }
    let store = match ctx.open_store() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "kache: warning: store {} unusable ({e}); compiling without the cache",
                ctx.store_dir.display()
            );
            return plain(compiler, rest);
        }
    };
    let mut w = Wrapper {
        ctx,
        store,
        started: Instant::now(),
        counters: Vec::new(),
        key_groups: Default::default(),
    };
    let code = if is_rustc(compiler) {
        rust::run(&mut w, compiler, rest)
    } else if kache_wrapper::cc::compiler_kind(&compiler.to_string_lossy()).is_none()
        && is_rustc_call(rest)
    {
        run_unrecognized_rustc(&mut w, compiler, rest)
    } else {
        run_cc(&mut w, compiler, rest)
    };
    w.flush_counters();
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn run_cc(w: &mut Wrapper, compiler: &OsStr, args: &[OsString]) -> i32 {
    cc::run(w, compiler, args)
}

/// The arguments of a rustc call behind a program kache has no name for:
/// `kache <workspace-wrapper> <rustc> ARGS` (`RUSTC_WORKSPACE_WRAPPER`), or
/// rustc installed under another name (`RUSTC=/path/myrustc`).
fn rustc_args_behind(args: &[OsString]) -> &[OsString] {
    match args.first() {
        Some(first) if is_rustc(first) => &args[1..],
        _ => args,
    }
}

/// True for calls that are not compiles (`-vV`, `--print …`), as rustc
/// would read the arguments.
fn is_rustc_probe(args: &[OsString]) -> bool {
    rustc_args_behind(args)
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect::<Option<Vec<_>>>()
        .is_some_and(|a| {
            matches!(
                kache_wrapper::rustc::parse(&a),
                kache_wrapper::rustc::Parsed::NotACompile
            )
        })
}

fn is_rustc_call(args: &[OsString]) -> bool {
    args.first().is_some_and(|a| is_rustc(a))
        || args.iter().any(|a| a == "--crate-name")
        || is_rustc_probe(args)
}

/// A rustc call through a program kache does not know: what that program
/// does with its arguments is unknown, so it runs as given and nothing is
/// cached. cargo's probes (`-vV`, `--print`) run uncounted, as they do for
/// rustc itself; compiles are passthroughs with a reason.
fn run_unrecognized_rustc(w: &mut Wrapper, program: &OsStr, args: &[OsString]) -> i32 {
    if !is_rustc_probe(args) {
        return w.passthrough(Lang::Rust, program, args, "unrecognized-compiler");
    }
    match exec::run_inherited(program, args) {
        Ok(s) => exec::exit_code_of(&s),
        Err(e) => {
            eprintln!("kache: cannot run {}: {e}", program.to_string_lossy());
            1
        }
    }
}

/// Runs the compiler with no cache and nothing counted. A C/C++ name is
/// resolved past kache first, so a shim never runs itself.
fn plain(compiler: &OsStr, args: &[OsString]) -> ExitCode {
    let real = match is_rustc(compiler) {
        true => None,
        false => cc::resolve_compiler(compiler),
    };
    let compiler = real.as_deref().map_or(compiler, |p| p.as_os_str());
    match exec::run_inherited(compiler, args) {
        Ok(s) => ExitCode::from(exec::exit_code_of(&s).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("kache: cannot run {}: {e}", compiler.to_string_lossy());
            ExitCode::from(1)
        }
    }
}

/// State of one wrapper call.
pub struct Wrapper {
    pub ctx: Context,
    pub store: Store,
    pub started: Instant,
    counters: Vec<(String, u64)>,
    /// Digests of the key groups of this call (for `why-miss`), recorded
    /// with the call's event.
    pub key_groups: std::collections::BTreeMap<String, String>,
}

impl Wrapper {
    pub fn count(&mut self, key: impl Into<String>, n: u64) {
        self.counters.push((key.into(), n));
    }

    fn flush_counters(&mut self) {
        let c = std::mem::take(&mut self.counters);
        if let Err(e) = stats::bump(&self.store, &c) {
            log_warn(&format!("cannot update counters: {e}"));
        }
    }

    /// Runs the real compiler (or the fallback wrapper) uncached and counts
    /// the passthrough with its reason.
    pub fn passthrough(
        &mut self,
        lang: Lang,
        compiler: &OsStr,
        args: &[OsString],
        reason: &str,
    ) -> i32 {
        let l = lang.as_str();
        self.count(format!("{l}.passthroughs"), 1);
        self.count(format!("{l}.passthrough_reasons.{}", reason_key(reason)), 1);
        self.count(format!("{l}.compiler_runs"), 1);
        self.event(lang, "passthrough", Some(reason), None, 0);
        let status = match self.fallback() {
            Some(fb) => {
                let mut all = vec![compiler.to_os_string()];
                all.extend_from_slice(args);
                exec::run_inherited(fb.as_os_str(), &all)
            }
            None => exec::run_inherited(compiler, args),
        };
        match status {
            Ok(s) => exec::exit_code_of(&s),
            Err(e) => {
                eprintln!("kache: cannot run {}: {e}", compiler.to_string_lossy());
                1
            }
        }
    }

    /// The fallback wrapper to hand passthroughs to, if configured and
    /// present. A missing one warns once per store, not once per compile.
    fn fallback(&self) -> Option<std::path::PathBuf> {
        let name = self.ctx.config.fallback()?;
        if let Some(p) = memo::which(name) {
            // Never hand a compile back to ourselves.
            let me = std::env::current_exe()
                .ok()
                .and_then(|m| m.canonicalize().ok());
            if me.is_some() && p.canonicalize().ok() == me {
                return None;
            }
            return Some(p);
        }
        let marker = self
            .store
            .root()
            .join(format!("fallback-missing-{}", reason_key(name)));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok()
        {
            eprintln!(
                "kache: warning: fallback wrapper `{name}` is not on PATH; passthroughs run the compiler directly (warned once)"
            );
        }
        None
    }

    /// Appends one record to the event log that `kache report` reads.
    pub fn event(
        &self,
        lang: Lang,
        outcome: &str,
        reason: Option<&str>,
        unit: Option<&str>,
        bytes: u64,
    ) {
        let rec = serde_json::json!({
            "t": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "lang": lang.as_str(),
            "outcome": outcome,
            "reason": reason,
            "unit": unit,
            "ms": self.started.elapsed().as_millis() as u64,
            "bytes": bytes,
            "build": kache_platform::process::build_id(),
            "groups": if self.key_groups.is_empty() { serde_json::Value::Null } else { serde_json::json!(self.key_groups) },
        });
        let mut line = rec.to_string();
        line.push('\n');
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.store.root().join("events.jsonl"))
        {
            // One write of a short line with O_APPEND: records never interleave.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// A reason as a counter key segment (no dots, no spaces).
pub fn reason_key(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c == '.' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

pub fn log_warn(msg: &str) {
    if std::env::var_os("KACHE_LOG").is_some() {
        eprintln!("kache: {msg}");
    }
}
