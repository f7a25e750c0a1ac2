//! The rustc adapter of the compile pipeline: direct mode (a hit never
//! starts rustc), inputs from dep-info and strict inference (the link
//! closure, bundled native code: `strict.rs`), worktree paths remapped.
//!
//! What a call means and how it is keyed is decided in `kache_wrapper::rustc`
//! (parsing, refusals, the keys as pure functions); this module gathers the
//! facts the key needs (tool identities, file contents, the environment)
//! and tells the pipeline where outputs go.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use kache_platform::HardlinkPolicy;
use kache_wrapper::paths::{TARGET_TOKEN, WS_TOKEN};
use kache_wrapper::rustc::key::{self, DirectInput, ReadInputs, Roots};
use kache_wrapper::rustc::{self, BadArtifact, Parsed, RustcInvocation};

use super::exec::Captured;
use super::observe::{self, Recording};
use super::outcome::{KeyedFile, MissReason, NotStored, Passthrough};
use super::pipeline::{self, Content, Dest, KeyAndGroups, Language, Observed, Produced};
use super::strict::{self, Found, Scope};
use super::{tools, Call};
use crate::config::Incremental;
use crate::store::manifest::FoundBy;
use crate::store::{memo, Entry};
use crate::worktree;

pub fn run(call: &mut Call, compiler: &OsStr, args: &[OsString]) -> i32 {
    match Rust::new(call, compiler, args) {
        Ok(Some(mut rust)) => pipeline::run(call, &mut rust, compiler, args),
        Ok(None) => {
            // cargo's compiler probes come before any freshness check: seed a new target.
            let seeded = crate::seed::at_probe(&call.ctx, &call.store, compiler, args);
            call.count_all(seeded);
            tracing::debug!("not a compile (a query such as -vV or --print): rustc runs as given");
            super::run_plainly(compiler, args)
        }
        Err(why) => call.passthrough(compiler, args, why),
    }
}

/// One cacheable rustc call.
struct Rust {
    compiler: OsString,
    inv: RustcInvocation,
    cwd: PathBuf,
    out_dir: PathBuf,
    roots: Roots,
    hardlink: HardlinkPolicy,
    /// Dep-info in stored (token) form, read after the compile.
    dep_info: Option<String>,
    /// Where rustc prints the linker's command line (linked outputs, when
    /// inputs are inferred strictly): next to the outputs, so it can be
    /// written wherever they can (a read-only or full store must not fail
    /// the compile).
    link_args: Option<PathBuf>,
    /// True once a compile was told to write `link_args`.
    link_args_used: std::cell::Cell<bool>,
    /// A build script's probe: cached like any compile when it succeeds;
    /// when it fails (by design, often), a passthrough, not a miss.
    probe: bool,
    /// The `-C incremental` directory the compile keeps (absolute), under
    /// `rust.incremental = "keep"`.
    incremental_dir: Option<PathBuf>,
}

impl Drop for Rust {
    fn drop(&mut self) {
        if let Some(p) = self
            .link_args
            .as_ref()
            .filter(|_| self.link_args_used.get())
        {
            let _ = fs::remove_file(p);
        }
    }
}

/// The `--out-dir` of a rustc command line, as given.
fn out_dir_arg(args: &[String]) -> Option<&str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--out-dir" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix("--out-dir=") {
            return Some(v);
        }
    }
    None
}

/// True for a compile a build script runs to ask the compiler a question
/// (anyhow's, proc-macro2's, autocfg's probes): cargo runs build scripts
/// with `TARGET` and `HOST` set and never runs a compile of its own into a
/// build script's `OUT_DIR`, which is where probes put their output. (A
/// probe on stdin, `rustc … -`, is not a compile kache caches at all.)
fn is_build_script_probe(args: &[String], cwd: &Path) -> bool {
    let build_script = ["TARGET", "HOST"]
        .iter()
        .all(|v| std::env::var_os(v).is_some());
    let out_dir = std::env::var_os("OUT_DIR").map(PathBuf::from);
    match (build_script, out_dir, out_dir_arg(args)) {
        (true, Some(od), Some(arg)) => od.is_absolute() && cwd.join(arg).starts_with(od),
        _ => false,
    }
}

impl Rust {
    /// `Ok(None)`: not a compile (`-vV`, `--print`), run rustc plainly.
    fn new(call: &Call, compiler: &OsStr, args: &[OsString]) -> Result<Option<Rust>, Passthrough> {
        let file = Path::new(compiler).file_name().map(|f| f.to_string_lossy());
        if file.is_some_and(|f| f.starts_with("clippy-driver")) {
            return Err(Passthrough::ClippyDriver);
        }
        let sargs: Vec<String> = args
            .iter()
            .map(|a| a.to_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or(Passthrough::NonUtf8Args)?;
        let probe = is_build_script_probe(&sargs, &call.ctx.cwd);
        let mut inv = match rustc::parse(&sargs) {
            Parsed::NotACompile => return Ok(None),
            Parsed::Refuse(r) => return Err(Passthrough::RustRefused(r)),
            Parsed::Compile(inv) => *inv,
        };
        let config = &call.ctx.config;
        let cwd = call.ctx.cwd.clone();
        let mut incremental_dir = None;
        if inv.wants_incremental() {
            match config.rust_incremental() {
                Incremental::Passthrough => return Err(Passthrough::Incremental),
                Incremental::Strip => {}
                Incremental::Keep => {
                    incremental_dir = inv.incremental.as_deref().map(|d| cwd.join(d));
                    inv.keep_incremental();
                }
            }
        }
        if config.is_excluded(&cwd.join(&inv.input)) {
            return Err(Passthrough::Excluded);
        }
        let out_dir = cwd.join(&inv.out_dir);
        let (ws, target) = worktree::cargo_roots(&cwd, &out_dir);
        let text = |p: PathBuf| p.to_string_lossy().into_owned();
        let roots = Roots::new(ws.map(text), target.map(text));
        // Roots are substituted inside JSON diagnostics as plain text.
        let plain = |p: &String| !p.chars().any(|c| c == '"' || c == '\\' || c.is_control());
        if !roots.ws.iter().chain(&roots.target).all(plain) {
            return Err(Passthrough::UnusualPath);
        }
        let hardlink = match config.hardlink_allowed() {
            true => HardlinkPolicy::IfSoleConsumer,
            false => HardlinkPolicy::Never,
        };
        // Printed for every linked output: a compile the recorder could not
        // see whole falls back to the link closure it names.
        let link_args = inv.is_linked().then(|| {
            let stem = format!("{}{}", inv.crate_name, inv.extra_filename);
            out_dir.join(format!("{stem}.kache-link-args"))
        });
        Ok(Some(Rust {
            compiler: compiler.to_os_string(),
            inv,
            cwd,
            out_dir,
            roots,
            hardlink,
            dep_info: None,
            link_args,
            link_args_used: std::cell::Cell::new(false),
            probe,
            incremental_dir,
        }))
    }

    /// Directories whose files are a cache of rustc's, not inputs of the
    /// compile: the `-C incremental` directory it keeps. rustc reads the
    /// previous session's state there and writes the new one, but promises
    /// the same result from any state or none, which is why the key holds
    /// only "incremental". A file under it taken for an input would tie the
    /// record to this worktree's state, and no other worktree, nor the next
    /// session here, would ever hit it. Whatever finds inputs (strict
    /// inference, an input recorder) leaves these out.
    fn not_inputs(&self) -> Vec<PathBuf> {
        self.incremental_dir.iter().cloned().collect()
    }

    /// What dep-info does not name and no recorder saw: the link closure of
    /// a linked output, the native archives a library may bundle, the rlibs
    /// a static library copies.
    fn strict_inputs(&self, call: &mut Call, started: SystemTime) -> Result<Found, NotStored> {
        let inv = &self.inv;
        let mut found = Found::default();
        if !inv.is_linked() && !inv.bundles_native_libs() {
            return Ok(found);
        }
        let sysroot = tools::rustc_sysroot(call, &self.compiler.to_string_lossy())
            .map_err(|_| NotStored::LinkInputUnknown)?;
        let outputs = self.written_paths();
        let stem = format!("{}{}", inv.crate_name, inv.extra_filename);
        let not_inputs = self.not_inputs();
        let scope = Scope {
            cwd: &self.cwd,
            roots: &self.roots,
            sysroot: Path::new(&sysroot),
            out_dir: &self.out_dir,
            outputs: &outputs,
            stem: &stem,
            started,
            not_inputs: &not_inputs,
        };
        let store = &call.store;
        let mut add = |more: Found| {
            for f in more.files {
                if !found.files.iter().any(|(p, _, _)| p == &f.0) {
                    found.files.push(f);
                }
            }
            for a in more.absent {
                if !found.absent.contains(&a) {
                    found.absent.push(a);
                }
            }
        };
        if inv.is_linked() {
            let p = self.link_args.as_ref().ok_or(NotStored::LinkLineUnknown)?;
            let printed = fs::read_to_string(p).map_err(|_| NotStored::LinkLineUnknown)?;
            add(strict::link_closure(store, &scope, &printed)?);
        }
        if inv.bundles_native_libs() {
            let dirs = inv.native_dirs();
            add(strict::files_in(
                store,
                &scope,
                &dirs,
                strict::is_archive,
                false,
            )?);
        }
        if inv.is_staticlib() {
            let dirs = &inv.dependency_dirs;
            add(strict::files_in(
                store,
                &scope,
                dirs,
                strict::is_rlib,
                true,
            )?);
        }
        Ok(found)
    }

    /// rustc's sysroot, as a root the recording leaves out. Without it the
    /// standard library would be keyed file by file: correct, and slower on
    /// every hit.
    fn sysroot(&self, call: &mut Call) -> Vec<PathBuf> {
        tools::rustc_sysroot(call, &self.compiler.to_string_lossy())
            .map(|s| vec![PathBuf::from(s)])
            .unwrap_or_default()
    }

    /// The record fields of what the recorder saw this compile read (all of
    /// it when `complete`, else what it did see, on top of inference).
    /// Values are in token form: whether one that names a worktree path is
    /// baked into the outputs is found by looking at them (path-local).
    fn to_observed(
        &self,
        call: &mut Call,
        seen: &kache_recorder::ObservedInputs,
        started: SystemTime,
        complete: bool,
    ) -> Result<Observed, NotStored> {
        let roots = self.sysroot(call);
        let inv = &self.inv;
        let own_search_dirs: Vec<PathBuf> = (inv.search_paths.iter().map(|(_, d)| d))
            .chain(&inv.dependency_dirs)
            .map(|d| self.cwd.join(d))
            .collect();
        // A proc-macro is a shared library named by `--extern`.
        let loads_plugins = self.inv.externs.iter().any(|e| {
            e.path
                .as_deref()
                .is_some_and(|p| p.ends_with(std::env::consts::DLL_SUFFIX))
        });
        let tokenize = |t: &str| self.roots.tokenize(t);
        let mut roots_tokens = Vec::new();
        if let Some(ws) = &self.roots.ws {
            roots_tokens.push((ws.as_str(), WS_TOKEN));
        }
        if let Some(t) = &self.roots.target {
            roots_tokens.push((t.as_str(), TARGET_TOKEN));
        }
        let scope = observe::Scope {
            roots: &roots_tokens,
            tokenize: &tokenize,
            own_search_dirs: &own_search_dirs,
            loads_plugins,
            started,
            filter: &observe::filter(&call.store, &roots, &[]),
            collapse_absent: false,
        };
        match complete {
            true => observe::to_observed(&call.store, seen, &scope),
            false => Ok(observe::partial(&call.store, seen, &scope)),
        }
    }

    fn digest(&self, call: &Call, p: &Path, what: KeyedFile) -> Result<String, Passthrough> {
        memo::file_digest(&call.store, &self.cwd.join(p))
            .map(|(h, _)| h)
            .map_err(|_| Passthrough::Unreadable(what))
    }
}

impl Language for Rust {
    fn unit(&self) -> String {
        self.inv.crate_name.clone()
    }

    fn direct_key(&mut self, call: &mut Call) -> Result<Option<String>, Passthrough> {
        let inv = &self.inv;
        let rustc_id = tools::rustc(call, &self.compiler.to_string_lossy())?;
        let linker_id = match inv.is_linked() {
            true => Some(tools::linker(call, inv.linker.as_deref().unwrap_or("cc"))?),
            false => None,
        };
        let target_spec = match inv.target.as_deref().filter(|t| t.ends_with(".json")) {
            Some(t) => Some(self.digest(call, Path::new(t), KeyedFile::TargetSpec)?),
            None => None,
        };
        let mut extern_contents = Vec::new();
        for e in &inv.externs {
            extern_contents.push(match &e.path {
                Some(p) => Some(self.digest(call, Path::new(p), KeyedFile::Extern)?),
                None => None,
            });
        }
        let mut static_libs = Vec::new();
        for (file, dirs) in inv.static_libs() {
            let mut found = dirs.iter().map(|d| self.cwd.join(d).join(&file));
            let p = found
                .find(|p| p.is_file())
                .ok_or(Passthrough::NativeLibNotFound)?;
            static_libs.push((file, self.digest(call, &p, KeyedFile::NativeLib)?));
        }
        let native_cpu = match inv.native_cpu {
            true => Some(tools::native_cpu(
                call,
                &self.compiler.to_string_lossy(),
                inv.target.as_deref(),
            )?),
            false => None,
        };
        let declared = call.ctx.config.rust_env();
        let env =
            key::keyed_vars(std::env::vars_os(), declared).map_err(|_| Passthrough::NonUtf8Env)?;
        let cwd = self.cwd.to_string_lossy();
        let (k, groups) = key::direct_key(&DirectInput {
            invocation: inv,
            roots: &self.roots,
            rustc_identity: &rustc_id,
            linker_identity: linker_id.as_deref(),
            cwd: self.roots.ws.is_none().then_some(&*cwd),
            target_spec: target_spec.as_deref(),
            extern_contents: &extern_contents,
            static_libs: &static_libs,
            native_cpu: native_cpu.as_deref(),
            env: &env,
            declared_env: declared,
        });
        for (g, d) in groups {
            call.key_groups.insert(format!("direct.{g}"), d);
        }
        Ok(Some(k))
    }

    fn tokenize(&self, text: &str) -> String {
        self.roots.tokenize(text)
    }

    fn expand(&self, text: &str) -> String {
        self.roots.expand(text)
    }

    fn destinations(&self, entry: &Entry) -> Result<Vec<Dest>, MissReason> {
        let expected = self.inv.expected_outputs();
        // An entry must hold exactly the files this invocation produces.
        let mut dests = Vec::new();
        for out in &entry.outputs {
            if !expected.iter().any(|(n, _)| n == &out.name) {
                return Err(MissReason::OutputMismatch);
            }
            let path = self.out_dir.join(&out.name);
            dests.push(match out.name.ends_with(".d") {
                true => Dest::Rewrite { path },
                false => Dest::Place {
                    path,
                    hardlink: self.hardlink,
                },
            });
        }
        Ok(dests)
    }

    /// The dep-info file for this worktree; every file it names must exist
    /// here, or cargo would take the unit for stale on every build.
    fn rewrite(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason> {
        let stored = std::str::from_utf8(stored).map_err(|_| MissReason::TextUnusable)?;
        let text = self.roots.expand_dep_info(stored);
        for f in rustc::parse_dep_info(&text).files {
            if !self.cwd.join(&f).exists() {
                return Err(MissReason::DepFileStale);
            }
        }
        Ok(text.into_bytes())
    }

    fn replay_stderr(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason> {
        Ok(self.expand(&String::from_utf8_lossy(stored)).into_bytes())
    }

    fn written_paths(&self) -> Vec<PathBuf> {
        let outs = self.inv.expected_outputs();
        outs.iter().map(|(n, _)| self.out_dir.join(n)).collect()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.compiler);
        cmd.args(&self.inv.compile_args)
            .args(self.roots.norm.remap_args());
        if let Some(p) = &self.link_args {
            let mut arg = std::ffi::OsString::from("--print=link-args=");
            arg.push(p);
            cmd.arg(arg);
            self.link_args_used.set(true);
        }
        cmd
    }

    fn unobserved_roots(&mut self, call: &mut Call) -> Vec<PathBuf> {
        let mut roots = self.sysroot(call);
        // rustc's own cache, which the compile reads and rewrites: not an
        // input (see `not_inputs`), under either spelling of a linked target.
        for d in self.not_inputs() {
            if let Ok(real) = std::fs::canonicalize(&d) {
                roots.push(real);
            }
            roots.push(d);
        }
        roots
    }

    fn spelled_roots(&self) -> Vec<PathBuf> {
        let roots = [&self.roots.ws, &self.roots.target];
        roots.into_iter().flatten().map(PathBuf::from).collect()
    }

    /// Observed, what the recorder saw; unobserved, dep-info and strict
    /// inference; a recording that missed something, both (the record says
    /// `fallback`).
    fn observed_inputs(
        &mut self,
        call: &mut Call,
        run: &Captured,
        started: SystemTime,
        recording: Option<Recording>,
    ) -> Result<Option<Observed>, NotStored> {
        if !self.inv.emit.iter().any(|e| e == "dep-info") {
            return Err(NotStored::NoDepInfo);
        }
        let stderr = std::str::from_utf8(&run.stderr).map_err(|_| NotStored::NonUtf8Output)?;
        rustc::check_artifacts(stderr, &self.inv.expected_outputs()).map_err(|e| match e {
            BadArtifact::Unparsable => NotStored::BadArtifactLine,
            BadArtifact::Unexpected => NotStored::UnexpectedArtifact,
        })?;
        let dep_name = format!("{}{}.d", self.inv.crate_name, self.inv.extra_filename);
        let dep_text = fs::read_to_string(self.out_dir.join(dep_name))
            .map_err(|_| NotStored::DepInfoUnreadable)?;
        let dep = rustc::parse_dep_info(&dep_text);
        self.dep_info = Some(self.roots.tokenize_dep_info(&dep_text));
        let partial = match recording {
            Some(Ok(seen)) => return self.to_observed(call, &seen, started, true).map(Some),
            Some(Err(incomplete)) => Some(*incomplete.observed),
            None => None,
        };

        // Inputs by (token path, content), checked unchanged since the compile began.
        let mut seen = Observed::default();
        for f in &dep.files {
            let abs = self.cwd.join(f);
            let meta = fs::metadata(&abs).map_err(|_| NotStored::InputVanished)?;
            if meta.modified().is_ok_and(|m| m > started) {
                return Err(NotStored::InputModifiedDuringCompile);
            }
            let (h, size) =
                memo::file_digest(&call.store, &abs).map_err(|_| NotStored::InputUnreadable)?;
            let shown = if Path::new(f).is_absolute() {
                self.roots.tokenize(f)
            } else {
                f.clone()
            };
            seen.files.push((shown, h, size));
        }
        // Values in token form: whether one that names a worktree path is
        // baked into the outputs is found by looking at them (path-local).
        for (name, value) in dep.env {
            seen.env
                .push((name, value.map(|v| self.roots.tokenize(&v))));
        }
        let found = self.strict_inputs(call, started)?;
        for f in found.files {
            if !seen.files.iter().any(|(p, _, _)| p == &f.0) {
                seen.files.push(f);
            }
        }
        seen.absent = found.absent;
        if let Some(partial) = partial {
            // What the recorder did see is kept on top of the inference.
            let more = self.to_observed(call, &partial, started, false)?;
            merge(&mut seen, more);
            seen.found_by = FoundBy::Fallback;
        }
        Ok(Some(seen))
    }

    fn expected_failure(&self) -> Option<Passthrough> {
        self.probe.then_some(Passthrough::Probe)
    }

    fn path_roots(&self) -> Vec<(String, String)> {
        // OUT_DIR and CARGO_MANIFEST_DIR are under these roots whenever the
        // key normalizes them; elsewhere they are keyed as they are, and an
        // output holding them is as specific as its key.
        let mut roots = Vec::new();
        if let Some(ws) = &self.roots.ws {
            roots.push(("ws".to_string(), ws.clone()));
        }
        if let Some(t) = &self.roots.target {
            roots.push(("target".to_string(), t.clone()));
        }
        roots
    }

    fn result_key(&self, direct: &str, seen: &Observed) -> Option<KeyAndGroups> {
        Some(key::result_key(
            direct,
            &ReadInputs {
                files: &seen.files,
                env: &seen.env,
                absent: &seen.absent,
                local: &seen.local,
            },
        ))
    }

    fn produced(&self, _: &Captured) -> Result<Vec<Produced>, NotStored> {
        let mut out = Vec::new();
        for (name, executable) in self.inv.expected_outputs() {
            let content = match name.ends_with(".d") {
                true => Content::Text(self.dep_info.clone().unwrap_or_default().into_bytes()),
                false => Content::File {
                    path: self.out_dir.join(&name),
                    executable,
                },
            };
            out.push(Produced { name, content });
        }
        Ok(out)
    }

    fn stored_stderr(&self, run: &Captured) -> Result<Vec<u8>, NotStored> {
        let text = std::str::from_utf8(&run.stderr).map_err(|_| NotStored::NonUtf8Output)?;
        Ok(self.roots.tokenize(text).into_bytes())
    }

    fn meta(&self, groups: &BTreeMap<String, String>) -> serde_json::Value {
        serde_json::json!({ "crate": self.inv.crate_name, "groups": groups, "inputs": "strict" })
    }

    fn out_dir(&self) -> &Path {
        &self.out_dir
    }
}

/// Adds to `into` what `more` has and it lacks.
fn merge(into: &mut Observed, more: Observed) {
    for f in more.files {
        if !into.files.iter().any(|(p, _, _)| p == &f.0) {
            into.files.push(f);
        }
    }
    for e in more.env {
        if !into.env.iter().any(|(n, _)| n == &e.0) {
            into.env.push(e);
        }
    }
    let add = |into: &mut Vec<String>, more: Vec<String>| {
        for p in more {
            if !into.contains(&p) {
                into.push(p);
            }
        }
    };
    add(&mut into.absent, more.absent);
    add(&mut into.present, more.present);
    into.listed.extend(more.listed);
    into.links.extend(more.links);
}
