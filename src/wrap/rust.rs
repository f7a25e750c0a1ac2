//! The rustc adapter of the compile pipeline: direct mode (a hit never
//! starts rustc), inputs from dep-info, worktree paths remapped.
//!
//! What a call means and how it is keyed is decided in `kache_wrapper::rustc`
//! (parsing, refusals, the keys as pure functions); this module gathers the
//! facts the key needs (tool identities, file contents, the environment)
//! and tells the pipeline where outputs go.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use kache_platform::HardlinkPolicy;
use kache_wrapper::rustc::key::{self, DirectInput, Roots, PATH_VARS};
use kache_wrapper::rustc::{self, Parsed, RustcInvocation};

use super::exec::Captured;
use super::outcome::{KeyedFile, MissReason, NotStored, Passthrough, Tool};
use super::pipeline::{self, Content, Dest, Language, Observed, Produced};
use super::Call;
use crate::config::Incremental;
use crate::path_search;
use crate::stats::Counter;
use crate::store::{memo, Entry};

pub fn run(call: &mut Call, compiler: &OsStr, args: &[OsString]) -> i32 {
    match Rust::new(call, compiler, args) {
        Ok(Some(mut rust)) => pipeline::run(call, &mut rust, compiler, args),
        Ok(None) => super::run_plainly(compiler, args),
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
        let inv = match rustc::parse(&sargs) {
            Parsed::NotACompile => return Ok(None),
            Parsed::Refuse(r) => return Err(Passthrough::RustRefused(r)),
            Parsed::Compile(inv) => *inv,
        };
        let config = &call.ctx.config;
        if inv.wants_incremental() && config.rust_incremental() == Incremental::Passthrough {
            return Err(Passthrough::Incremental);
        }
        let cwd = call.ctx.cwd.clone();
        if config.is_excluded(&cwd.join(&inv.input)) {
            return Err(Passthrough::Excluded);
        }
        let out_dir = cwd.join(&inv.out_dir);
        let roots = roots_for(&cwd, &out_dir);
        // Roots are substituted inside JSON diagnostics as plain text.
        let plain = |p: &String| !p.chars().any(|c| c == '"' || c == '\\' || c.is_control());
        if !roots.ws.iter().chain(&roots.target).all(plain) {
            return Err(Passthrough::UnusualPath);
        }
        let hardlink = match config.hardlink_allowed() {
            true => HardlinkPolicy::IfSoleConsumer,
            false => HardlinkPolicy::Never,
        };
        Ok(Some(Rust {
            compiler: compiler.to_os_string(),
            inv,
            cwd,
            out_dir,
            roots,
            hardlink,
            dep_info: None,
        }))
    }

    fn digest(&self, call: &Call, p: &Path, what: KeyedFile) -> Result<String, Passthrough> {
        memo::file_digest(&call.store, &self.cwd.join(p))
            .map(|(h, _)| h)
            .map_err(|_| Passthrough::Unreadable(what))
    }
}

/// cargo marks its target directory with CACHEDIR.TAG, and `.rustc_info.json`
/// covers one it did not create itself (made beforehand, or a mount point).
fn find_target_dir(out_dir: &Path) -> Option<PathBuf> {
    out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file() || d.join(".rustc_info.json").is_file())
        .map(Path::to_path_buf)
}

fn roots_for(cwd: &Path, out_dir: &Path) -> Roots {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    // A registry or git dependency is compiled with its package directory
    // (inside CARGO_HOME) as cwd: that is not a worktree root, and remapping
    // it would change the paths its panics print.
    let in_cargo_home = cargo_home.as_ref().is_some_and(|h| cwd.starts_with(h));
    let ws = (!in_cargo_home && cwd.parent().is_some()).then(|| cwd.to_string_lossy().into_owned());
    let target = find_target_dir(out_dir).map(|t| t.to_string_lossy().into_owned());
    Roots::new(ws, target)
}

/// A tool's identity text, memoized by the binary's stat (and `extra`);
/// counts a compiler run when it had to be probed.
fn identity(
    call: &mut Call,
    bin: &Path,
    extra: &str,
    probe: impl FnOnce() -> io::Result<String>,
) -> io::Result<String> {
    let (id, probed) = memo::tool_identity(&call.store, bin, extra, probe)?;
    if probed {
        call.count(Counter::CompilerRuns, 1);
    }
    Ok(id)
}

fn stdout_of(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host glibc, as the dynamic loader reports it (linked outputs embed
/// its symbol versions).
fn host_libc() -> String {
    ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .iter()
        .filter_map(|ld| stdout_of(Command::new(ld).arg("--version")).ok())
        .find_map(|out| out.lines().next().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

impl Language for Rust {
    fn unit(&self) -> String {
        self.inv.crate_name.clone()
    }

    fn direct_key(&mut self, call: &mut Call) -> Result<Option<String>, Passthrough> {
        let inv = &self.inv;
        let rustc = path_search::which(&self.compiler.to_string_lossy())
            .ok_or(Passthrough::ToolNotFound(Tool::Rustc))?;
        let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_default();
        let compiler = self.compiler.clone();
        let rustc_id = identity(call, &rustc, &toolchain, || {
            let out = Command::new(&compiler).arg("-vV").output()?;
            if !out.status.success() {
                return Err(io::Error::other("rustc -vV failed"));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .map_err(|_| Passthrough::ToolIdentity(Tool::Rustc))?;
        let linker_id = match inv.is_linked() {
            false => None,
            true => {
                let name = inv.linker.as_deref().unwrap_or("cc");
                let bin =
                    path_search::which(name).ok_or(Passthrough::ToolNotFound(Tool::Linker))?;
                let probe = || {
                    Ok(format!(
                        "{}\nlibc {}",
                        stdout_of(Command::new(&bin).arg("--version"))?,
                        host_libc()
                    ))
                };
                let (id, _) = memo::tool_identity(&call.store, &bin, "linker", probe)
                    .map_err(|_| Passthrough::ToolIdentity(Tool::Linker))?;
                Some(id)
            }
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
        for (kind, name) in inv
            .native_libs
            .iter()
            .filter(|(k, _)| k.starts_with("static"))
        {
            let _ = kind;
            let file = format!("lib{}.a", name.split(':').next().unwrap_or(name));
            let found = inv
                .search_paths
                .iter()
                .filter(|(k, _)| k == "native" || k == "all")
                .map(|(_, d)| self.cwd.join(d).join(&file))
                .find(|p| p.is_file())
                .ok_or(Passthrough::NativeLibNotFound)?;
            static_libs.push((file, self.digest(call, &found, KeyedFile::NativeLib)?));
        }
        let mut env = Vec::new();
        for (n, v) in std::env::vars_os() {
            let Some(n) = n.to_str() else { continue };
            let declared = call.ctx.config.rust_env().iter().any(|d| d == n);
            if key::keyed_env(n) || declared {
                let v = v.into_string().map_err(|_| Passthrough::NonUtf8Env)?;
                env.push((n.to_string(), v));
            }
        }
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
            env: &env,
            declared_env: call.ctx.config.rust_env(),
        });
        for (g, d) in groups {
            call.key_groups.insert(format!("direct.{g}"), d);
        }
        Ok(Some(k))
    }

    fn key_ahead(&mut self, _: &mut Call) -> Result<Option<String>, Passthrough> {
        Ok(None)
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

    fn rewrite(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason> {
        Ok(self.expand(&String::from_utf8_lossy(stored)).into_bytes())
    }

    fn replay_stderr(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason> {
        self.rewrite(stored)
    }

    fn written_paths(&self) -> Vec<PathBuf> {
        let outs = self.inv.expected_outputs();
        outs.iter().map(|(n, _)| self.out_dir.join(n)).collect()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.compiler);
        cmd.args(&self.inv.compile_args)
            .args(self.roots.norm.remap_args());
        cmd
    }

    fn observed_inputs(
        &mut self,
        call: &mut Call,
        run: &Captured,
        started: SystemTime,
    ) -> Result<Observed, NotStored> {
        if !self.inv.emit.iter().any(|e| e == "dep-info") {
            return Err(NotStored::NoDepInfo);
        }
        // Every artifact rustc announced must be one we expect.
        let expected = self.inv.expected_outputs();
        let stderr = std::str::from_utf8(&run.stderr).map_err(|_| NotStored::NonUtf8Output)?;
        for line in stderr.lines().filter(|l| l.starts_with("{\"artifact\":")) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|_| NotStored::BadArtifactLine)?;
            let name = Path::new(v["artifact"].as_str().unwrap_or_default()).file_name();
            if !name.is_some_and(|n| expected.iter().any(|(e, _)| n == e.as_str())) {
                return Err(NotStored::UnexpectedArtifact);
            }
        }
        let dep_name = format!("{}{}.d", self.inv.crate_name, self.inv.extra_filename);
        let dep_text = fs::read_to_string(self.out_dir.join(dep_name))
            .map_err(|_| NotStored::DepInfoUnreadable)?;
        let dep = rustc::parse_dep_info(&dep_text);
        self.dep_info = Some(self.roots.tokenize(&dep_text));

        // Inputs by (token path, content), checked unchanged since the compile began.
        let mut seen = Observed::default();
        let mut sources = Vec::new();
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
            if f.ends_with(".rs") {
                sources.push(abs);
            }
        }
        for (name, value) in &dep.env {
            let value = value.as_ref().map(|v| {
                let tokenized = self.roots.tokenize(v);
                // A worktree path baked into the crate stays this worktree's
                // unless every use of it is an include (then it is only read
                // at compile time, and any worktree's copy is the same).
                let keep_token = tokenized != *v
                    && PATH_VARS.contains(&name.as_str())
                    && every_use_is_include(&sources, name);
                if keep_token {
                    tokenized
                } else {
                    v.clone()
                }
            });
            seen.env.push((name.clone(), value));
        }
        Ok(seen)
    }

    fn result_key(
        &self,
        direct: Option<&str>,
        seen: &Observed,
    ) -> (String, BTreeMap<String, String>) {
        key::result_key(direct.unwrap_or_default(), &seen.files, &seen.env)
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
        serde_json::json!({ "crate": self.inv.crate_name, "groups": groups })
    }

    fn out_dir(&self) -> &Path {
        &self.out_dir
    }
}

fn every_use_is_include(sources: &[PathBuf], var: &str) -> bool {
    let (mut uses, mut includes) = (0, 0);
    for s in sources {
        let Ok(text) = fs::read_to_string(s) else {
            return false;
        };
        let (u, i) = rustc::env_var_uses(&text, var);
        uses += u;
        includes += i;
    }
    uses > 0 && uses == includes
}
