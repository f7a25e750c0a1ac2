//! The C/C++ adapter of the compile pipeline: keyed by the preprocessed
//! source, storing the object and its dep file.
//!
//! What may be cached, and under which key, is decided in
//! `kache_wrapper::cc` (an allow-list table); this module runs the
//! preprocessor and tells the pipeline where outputs go. A hit serves a
//! private, writable object (reflink or copy, never a hardlink: build systems
//! rewrite objects in place).
//!
//! Direct mode (a manifest per direct key, validated without running the
//! preprocessor) would be a [`Language::direct_key`] here, with the headers
//! the preprocessor names as the observed inputs.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use kache_platform::HardlinkPolicy;
use kache_wrapper::cc::{self, compiler, depfile, key, paths, CcInvocation};

use super::exec::Captured;
use super::outcome::{MissReason, NotStored, Passthrough};
use super::pipeline::{self, Content, Dest, Language, Produced};
use super::{tools, Call};
use crate::path_search;
use crate::stats::Counter;
use crate::store::Entry;

const OBJECT: &str = "object";
const DEPFILE: &str = "depfile";

pub fn run(call: &mut Call, compiler: &OsStr, args: &[OsString]) -> i32 {
    let Some(real) = path_search::real_compiler(compiler) else {
        crate::log::error(&format!(
            "compiler {} not found on PATH",
            compiler.to_string_lossy()
        ));
        return 127;
    };
    let real = real.into_os_string();
    let parsed = cc::args::refuse_env(|v| std::env::var_os(v).is_some())
        .and_then(|_| cc::parse(&compiler.to_string_lossy(), args));
    let inv = match parsed {
        Ok(inv) => inv,
        Err(r) => return call.passthrough(&real, args, Passthrough::CcRefused(r)),
    };
    let cwd = call.ctx.cwd.clone();
    if call.ctx.config.is_excluded(&cwd.join(&inv.source)) {
        return call.passthrough(&real, args, Passthrough::Excluded);
    }
    let base = crate::worktree::root(&cwd);
    let output = cwd.join(&inv.output);
    let out_dir = output
        .parent()
        .map_or_else(|| cwd.clone(), Path::to_path_buf);
    let mut c = Cc {
        real: real.clone(),
        args: args.to_vec(),
        inv,
        cwd,
        base,
        output,
        out_dir,
        extra_args: Vec::new(),
        sde: String::new(),
    };
    pipeline::run(call, &mut c, &real, args)
}

/// One cacheable C/C++ compile.
struct Cc {
    /// The real compiler (never kache itself).
    real: OsString,
    args: Vec<OsString>,
    inv: CcInvocation,
    cwd: PathBuf,
    base: PathBuf,
    output: PathBuf,
    out_dir: PathBuf,
    /// Path-plan arguments of both the preprocessor run and the compile.
    extra_args: Vec<OsString>,
    /// `SOURCE_DATE_EPOCH` of both runs.
    sde: String,
}

impl Cc {
    fn dep_path(&self) -> Option<PathBuf> {
        self.inv.dep_file.as_ref().map(|d| self.cwd.join(&d.path))
    }
}

impl Language for Cc {
    fn unit(&self) -> String {
        self.inv.source.to_string_lossy().into_owned()
    }

    fn key_ahead(&mut self, call: &mut Call) -> Result<Option<String>, Passthrough> {
        let ident = tools::cc(call, Path::new(&self.real))?;
        let version = compiler::parse_version_banner(&ident);
        let plan = paths::plan(&self.inv, &self.base, &self.cwd, version);
        let sde = key::source_date_epoch(
            std::env::var_os("SOURCE_DATE_EPOCH").as_deref(),
            SystemTime::now(),
        );
        self.extra_args = plan.extra_args.clone();
        self.sde = sde.value.clone();
        call.count(Counter::CompilerRuns, 1);
        let pre = Command::new(&self.real)
            .args(&self.inv.preprocess_args)
            .args(&plan.extra_args)
            .env("SOURCE_DATE_EPOCH", &sde.value)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .output()
            .map_err(|_| Passthrough::PreprocessFailed)?;
        if !pre.status.success() {
            return Err(Passthrough::PreprocessFailed);
        }
        // An assembler `.incbin`/`.include` reads a file no dep file names;
        // without an input recorder to see it, refuse.
        if key::uses_assembler_include(&pre.stdout) {
            return Err(Passthrough::AssemblerInclude);
        }
        let headers = key::included_files(&pre.stdout);
        if self
            .inv
            .pch_probe_paths(&self.cwd, &headers)
            .iter()
            .any(|p| p.exists())
        {
            return Err(Passthrough::PchFound);
        }
        let reported = key::preprocessor_reported_time_macros(&pre.stderr);
        let time =
            key::time_macro_policy(reported, &sde, version).map_err(Passthrough::CcRefused)?;
        // C/C++ keys have no named groups (no `why-miss` yet); the log shows
        // what went in, by digest, for whoever compares two builds.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let digest = |b: &[u8]| blake3::hash(b).to_hex().to_string();
            tracing::debug!(
                unit = %self.unit(),
                compiler = %digest(ident.as_bytes()),
                preprocessed = %digest(&pre.stdout),
                modeled_flags = ?self.inv.modeled,
                source_date_epoch = ?time,
                "key inputs"
            );
        }
        Ok(Some(key::cache_key(&key::KeyInput {
            compiler_identity: ident.as_bytes(),
            invocation: &self.inv,
            paths: &plan,
            preprocessed: &pre.stdout,
            source_date_epoch: time.as_deref(),
        })))
    }

    fn tokenize(&self, text: &str) -> String {
        depfile::to_placeholders(text, &self.base).unwrap_or_else(|| text.to_string())
    }

    fn expand(&self, text: &str) -> String {
        depfile::from_placeholders(text, &self.base).unwrap_or_else(|| text.to_string())
    }

    fn destinations(&self, entry: &Entry) -> Result<Vec<Dest>, MissReason> {
        let has_dep = entry.outputs.iter().any(|o| o.name == DEPFILE);
        if has_dep != self.inv.dep_file.is_some() {
            return Err(MissReason::OutputMismatch);
        }
        let mut dests = Vec::new();
        for o in &entry.outputs {
            dests.push(match (o.name.as_str(), self.dep_path()) {
                (OBJECT, _) => Dest::Place {
                    path: self.output.clone(),
                    hardlink: HardlinkPolicy::Never,
                },
                (DEPFILE, Some(path)) => Dest::Rewrite { path },
                _ => return Err(MissReason::OutputMismatch),
            });
        }
        Ok(dests)
    }

    /// The dep file for this worktree; every path it names must exist here.
    fn rewrite(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason> {
        let stored = std::str::from_utf8(stored).map_err(|_| MissReason::TextUnusable)?;
        let text =
            depfile::from_placeholders(stored, &self.base).ok_or(MissReason::TextUnusable)?;
        let output = self.inv.output.to_string_lossy();
        for p in depfile::named_paths(&text) {
            if p != output && !self.cwd.join(&p).exists() {
                return Err(MissReason::DepFileStale);
            }
        }
        Ok(text.into_bytes())
    }

    fn replay_stderr(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason> {
        paths::diagnostics_from_placeholders(stored, &self.base).ok_or(MissReason::TextUnusable)
    }

    fn written_paths(&self) -> Vec<PathBuf> {
        std::iter::once(self.output.clone())
            .chain(self.dep_path())
            .collect()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.real);
        cmd.args(&self.args)
            .args(&self.extra_args)
            .env("SOURCE_DATE_EPOCH", &self.sde)
            .current_dir(&self.cwd);
        cmd
    }

    fn produced(&self, _: &Captured) -> Result<Vec<Produced>, NotStored> {
        let mut out = vec![Produced {
            name: OBJECT.into(),
            content: Content::File {
                path: self.output.clone(),
                executable: false,
            },
        }];
        if let Some(path) = self.dep_path() {
            let text = fs::read_to_string(path).map_err(|_| NotStored::DepInfoUnreadable)?;
            let stored =
                depfile::to_placeholders(&text, &self.base).ok_or(NotStored::DepFileUnstorable)?;
            out.push(Produced {
                name: DEPFILE.into(),
                content: Content::Text(stored.into_bytes()),
            });
        }
        Ok(out)
    }

    fn stored_stderr(&self, run: &Captured) -> Result<Vec<u8>, NotStored> {
        paths::diagnostics_to_placeholders(&run.stderr, &self.base)
            .ok_or(NotStored::DiagnosticsUnstorable)
    }

    fn meta(&self, _: &BTreeMap<String, String>) -> serde_json::Value {
        serde_json::json!({ "source": self.inv.source.to_string_lossy() })
    }

    fn out_dir(&self) -> &Path {
        &self.out_dir
    }
}
