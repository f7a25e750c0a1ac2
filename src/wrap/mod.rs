//! Wrapper mode: `kache <compiler> <args…>`.
//!
//! Every call ends in one [`Outcome`], counted per language and logged as
//! one event by [`Call::record`]: a **hit** (outputs restored, no compiler
//! process), a **miss** (the real compiler ran; its result stored or not,
//! with why), a **passthrough** (the real compiler ran, nothing cached, with
//! a reason), or an **error** (the compiler could not be started). kache's
//! own failures degrade to a passthrough or a miss: they never change the
//! compiler's exit status or output.
//!
//! `rust.rs` and `cc.rs` understand their compiler's calls; `pipeline.rs`
//! is the one way any call is looked up, compiled, stored and restored.

pub mod cc;
pub mod exec;
pub mod inputs;
pub mod observe;
pub mod outcome;
mod path_local;
pub mod pipeline;
pub mod rust;
mod strict;
mod tools;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

pub use outcome::{MissReason, NotStored, Outcome, Passthrough};

use crate::env::Context;
use crate::log;
use crate::path_search;
use crate::stats::{key_segment, Breakdown, Counter, Lang, Tally};
use crate::store::Store;

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
            log::init_from_env();
            log::warn(&format!("{e}; compiling without the cache"));
            return plain(compiler, rest);
        }
    };
    log::init_from_config(&ctx.config);
    if ctx.config.cache_disabled() {
        tracing::debug!("cache disabled: running the compiler plainly");
        return plain(compiler, rest);
    }
    crate::mount::notice::at_wrapper_start(&ctx.store_dir, is_rustc(compiler), rest);
    let store = match ctx.open_store() {
        Ok(s) => s,
        Err(e) => {
            log::warn(&format!(
                "store {} unusable ({e}); compiling without the cache",
                ctx.store_dir.display()
            ));
            return plain(compiler, rest);
        }
    };
    let lang = if is_rustc(compiler) {
        Lang::Rust
    } else {
        Lang::Cc
    };
    let observe = observe::enabled(&ctx.config, &store);
    let mut call = Call {
        observe,
        ctx,
        store,
        lang,
        started: Instant::now(),
        tally: Tally::default(),
        key_groups: BTreeMap::new(),
        direct_fallback: None,
        build: None,
        background: None,
    };
    let code = match lang {
        Lang::Rust => rust::run(&mut call, compiler, rest),
        Lang::Cc
            if kache_wrapper::cc::compiler_kind(&compiler.to_string_lossy()).is_none()
                && is_rustc_call(rest) =>
        {
            run_unrecognized_rustc(&mut call, compiler, rest)
        }
        Lang::Cc => cc::run(&mut call, compiler, rest),
    };
    if let Err(e) = std::mem::take(&mut call.tally).flush(&call.store) {
        tracing::debug!("cannot update counters: {e}");
    }
    ExitCode::from(code.clamp(0, 255) as u8)
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
fn run_unrecognized_rustc(call: &mut Call, program: &OsStr, args: &[OsString]) -> i32 {
    if !is_rustc_probe(args) {
        call.lang = Lang::Rust;
        return call.passthrough(program, args, Passthrough::UnrecognizedCompiler);
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
        false => path_search::real_compiler(compiler),
    };
    let compiler = real.as_deref().map_or(compiler, |p| p.as_os_str());
    ExitCode::from(run_plainly(compiler, args).clamp(0, 255) as u8)
}

/// Runs `compiler` with inherited streams and returns its exit code (1 with
/// a message when it cannot be started).
fn run_plainly(compiler: &OsStr, args: &[OsString]) -> i32 {
    match exec::run_inherited(compiler, args) {
        Ok(s) => exec::exit_code_of(&s),
        Err(e) => {
            log::error(&format!("cannot run {}: {e}", compiler.to_string_lossy()));
            1
        }
    }
}

/// What a log line calls a call kache did not take apart: its crate name,
/// else its C/C++ source, else `-`.
fn unit_in_args(args: &[OsString]) -> String {
    let crate_name = args
        .iter()
        .position(|a| a == "--crate-name")
        .and_then(|i| args.get(i + 1));
    let source = || {
        args.iter().rev().find(|a| {
            let ext = Path::new(a).extension().and_then(OsStr::to_str);
            matches!(
                ext,
                Some("c" | "cc" | "cpp" | "cxx" | "m" | "mm" | "s" | "S")
            )
        })
    };
    crate_name
        .or_else(source)
        .map_or_else(|| "-".into(), |a| a.to_string_lossy().into_owned())
}

/// One wrapper call: where it runs, the store, and what it has counted so
/// far (written once, at the end).
pub struct Call {
    pub ctx: Context,
    pub store: Store,
    pub lang: Lang,
    started: Instant,
    tally: Tally,
    /// Digests of the key groups of this call (for `why-miss`), recorded
    /// with the call's event.
    pub key_groups: BTreeMap<String, String>,
    /// Whether this call's compiles run under the input recorder
    /// (`cache.observe = "auto"` in a build that carries it).
    pub observe: bool,
    /// Why the direct lookup could not serve this call, which then fell
    /// back to its key ahead (C/C++: the preprocessor); counted and logged
    /// with the call's outcome.
    pub direct_fallback: Option<String>,
    /// The build this call belongs to ([`kache_platform::process::build_id`]) when it was
    /// found ahead of recording (a background store records after cargo may be gone);
    /// otherwise it is found when the outcome is recorded.
    build: Option<String>,
    /// Held by the background side of a call whose outputs are stored after it returned,
    /// until the process ends (after its counters are written).
    background: Option<kache_platform::FileLock>,
}

impl Call {
    /// This process's part of the call ends here: a background copy of it records the
    /// outcome and writes the counters, so nothing counted so far is written here.
    fn hand_over(&mut self) {
        self.tally = Tally::default();
    }

    /// Adds `n` to a counter (of this call's language when per-language).
    pub fn count(&mut self, c: Counter, n: u64) {
        self.tally.add(self.lang, c, n);
    }

    /// Adds what a hook (remote, gc) reported.
    pub fn count_all(&mut self, t: Tally) {
        self.tally.extend(t);
    }

    /// Counts how the call ended and appends its event, from the one value.
    pub fn record(&mut self, outcome: &Outcome, unit: Option<&str>) {
        self.log(outcome, unit.unwrap_or("-"));
        self.count_and_append(outcome, unit);
    }

    fn count_and_append(&mut self, outcome: &Outcome, unit: Option<&str>) {
        self.tally.extend(outcome.tally(self.lang));
        let mut e = outcome.event(self.lang);
        if let Some(why) = &self.direct_fallback {
            self.tally
                .add_label(Some(self.lang), Breakdown::DirectFallbacks, why);
            e.direct_fallback = Some(why.clone());
        }
        e.t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        e.unit = unit.map(String::from);
        e.ms = self.started.elapsed().as_millis() as u64;
        e.build = self.build.take().or_else(kache_platform::process::build_id);
        e.groups = (!self.key_groups.is_empty()).then(|| self.key_groups.clone());
        crate::events::append(self.store.root(), &e);
    }

    /// The diagnostics of an outcome (`KACHE_LOG=kache::wrap=debug`): what
    /// went into the key, group by group (digests, never contents), then
    /// how the call ended and why.
    fn log(&self, outcome: &Outcome, unit: &str) {
        let lang = self.lang.as_str();
        for (group, digest) in &self.key_groups {
            tracing::debug!(
                lang = %lang,
                unit = %unit,
                group = %group,
                digest = %digest,
                "key group"
            );
        }
        match outcome {
            Outcome::Hit {
                bytes,
                remote,
                direct,
            } => {
                tracing::debug!(lang = %lang, unit = %unit, bytes, remote, direct, "hit")
            }
            Outcome::Miss {
                reason,
                stored: Ok(bytes),
            } => tracing::debug!(
                lang = %lang,
                unit = %unit,
                bytes,
                "miss: {}; compiled and stored",
                reason.label()
            ),
            Outcome::Miss {
                reason,
                stored: Err(why),
            } => tracing::debug!(
                lang = %lang,
                unit = %unit,
                "miss: {}; compiled, not stored: {}",
                reason.label(),
                why.label()
            ),
            Outcome::Passthrough(why) => {
                tracing::debug!(lang = %lang, unit = %unit, "passthrough: {}", why.label())
            }
            Outcome::Error => {
                tracing::debug!(lang = %lang, unit = %unit, "error: the compiler could not be run")
            }
        }
    }

    /// Runs the real compiler (or the fallback wrapper) uncached and records
    /// the passthrough with its reason.
    pub fn passthrough(&mut self, compiler: &OsStr, args: &[OsString], why: Passthrough) -> i32 {
        let outcome = Outcome::Passthrough(why);
        // The event keeps no unit (the call was not understood); the log
        // names what it can, so a reader finds the call.
        self.log(&outcome, &unit_in_args(args));
        self.count_and_append(&outcome, None);
        match self.fallback() {
            Some(fb) => {
                let mut all = vec![compiler.to_os_string()];
                all.extend_from_slice(args);
                run_plainly(fb.as_os_str(), &all)
            }
            None => run_plainly(compiler, args),
        }
    }

    /// The fallback wrapper to hand passthroughs to, if configured and
    /// present. A missing one warns once per store, not once per compile.
    fn fallback(&self) -> Option<std::path::PathBuf> {
        let name = self.ctx.config.fallback()?;
        if let Some(p) = path_search::which(name) {
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
            .join(format!("fallback-missing-{}", key_segment(name)));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok()
        {
            log::warn(&format!(
                "fallback wrapper `{name}` is not on PATH; passthroughs run the compiler directly (warned once)"
            ));
        }
        None
    }
}
