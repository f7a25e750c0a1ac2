//! The C/C++ adapter of the compile pipeline: keyed by the preprocessed
//! source, storing the object and its dep file.
//!
//! What may be cached, and under which key, is decided in
//! `kache_wrapper::cc` (an allow-list table); this module runs the
//! preprocessor and tells the pipeline where outputs go. A hit serves a
//! private, writable object (reflink or copy, never a hardlink: build systems
//! rewrite objects in place).
//!
//! Direct mode, where the input recorder runs: a manifest per direct key
//! (compiler identity, the arguments and working directory with the
//! worktree root as a token, the source's content), whose records hold what
//! the preprocessor or the compile was seen to read (headers by content,
//! include-path candidates that were absent, variables). A record that
//! validates gives the result key without starting any process. Otherwise
//! the preprocessor runs (under the recorder, so a hit through its key also
//! records a manifest), as it does everywhere direct mode is not available.
//!
//! What direct mode does not serve (left to the preprocessor, and counted
//! in `kache report` under the label `time-macros`): translation units that
//! use `__DATE__`/`__TIME__`/`__TIMESTAMP__`, as the preprocessor reported
//! or as the arguments and files it read spell them; and any compile whose
//! recording was incomplete. A `.gch` GCC would load is found by GCC itself
//! (`-fpch-preprocess` on the preprocessor run) and passes through; its
//! lookups of `.gch` candidates are in the records. A source with an assembler
//! `.incbin`/`.include` has no key ahead (its preprocessed text does not
//! hold the file the assembler reads): under the recorder it is keyed by
//! everything the compile was seen to read, without it it passes through.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use kache_platform::HardlinkPolicy;
use kache_wrapper::cc::{self, compiler, depfile, key, paths, CcInvocation};
use kache_wrapper::paths::{from_placeholders, tokenize_bounded, BASE_TOKEN};

use super::exec::Captured;
use super::observe::{self, Recording};
use super::outcome::{MissReason, NotStored, Passthrough};
use super::pipeline::{self, Content, Dest, KeyAndGroups, Language, Observed, Produced};
use super::{tools, Call};
use crate::path_search;
use crate::stats::Counter;
use crate::store::{memo, Entry};

const OBJECT: &str = "object";
/// The fallback label of a source whose object depends on time macros.
const TIME_MACROS: &str = "time-macros";
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
    let sde = key::source_date_epoch(
        std::env::var_os("SOURCE_DATE_EPOCH").as_deref(),
        SystemTime::now(),
    );
    let mut c = Cc {
        real: real.clone(),
        args: args.to_vec(),
        inv,
        cwd,
        base,
        output,
        out_dir,
        extra_args: Vec::new(),
        sde,
        plan: None,
        seen_ahead: None,
        no_direct_record: None,
        ahead_incomplete: false,
        direct: false,
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
    /// `SOURCE_DATE_EPOCH` of both runs (and what a recorded read of it is
    /// compared with on a direct hit).
    sde: key::SourceDateEpoch,
    /// The compiler identity and path plan, once known.
    plan: Option<(String, paths::PathPlan)>,
    /// What the preprocessor run was seen to read (a record of the direct
    /// key after a hit through the key ahead).
    seen_ahead: Option<Observed>,
    /// Why no record may map the direct key to a result (the label of the
    /// fallback `kache report` shows). Time macros: what the object holds
    /// depends on more than the files read (`__TIMESTAMP__` is the mtime
    /// of the file it is in; `__DATE__` the clock unless pinned).
    no_direct_record: Option<&'static str>,
    /// The preprocessed text does not describe the object whole (an
    /// assembler include): no key ahead, only what the compile read.
    ahead_incomplete: bool,
    /// This call has a direct key (it observes its compiles).
    direct: bool,
}

impl Cc {
    fn dep_path(&self) -> Option<PathBuf> {
        self.inv.dep_file.as_ref().map(|d| self.cwd.join(&d.path))
    }

    /// The compiler identity and path plan (probed once per compiler
    /// binary, then memoized: no process on a direct hit).
    fn plan(&mut self, call: &mut Call) -> Result<(String, paths::PathPlan), Passthrough> {
        if let Some(p) = &self.plan {
            return Ok(p.clone());
        }
        let ident = tools::cc(call, Path::new(&self.real))?;
        let version = compiler::parse_version_banner(&ident);
        let plan = paths::plan(&self.inv, &self.base, &self.cwd, version);
        self.extra_args = plan.extra_args.clone();
        self.plan = Some((ident.clone(), plan.clone()));
        Ok((ident, plan))
    }

    /// The worktree root and its token, when the root can stand for paths
    /// (absolute, UTF-8, not `/`).
    fn roots(&self) -> Vec<(&str, &'static str)> {
        match self.base.to_str() {
            Some(b) if self.base.is_absolute() && self.base.parent().is_some() => {
                vec![(b, BASE_TOKEN)]
            }
            _ => Vec::new(),
        }
    }

    /// Whether the arguments or a file the preprocessor read (`files`, as
    /// its line markers name them) spell a time macro, or a file may have
    /// silenced the preprocessor's `-Wdate-time` report (a diagnostic pragma;
    /// the run asks for the report in system headers too), which alone sees
    /// a time macro made by token pasting. A file that cannot be read counts
    /// as one that does.
    fn mentions_time_macros(&self, files: &[String]) -> bool {
        let in_args = self
            .args
            .iter()
            .any(|a| key::uses_time_macros(a.as_encoded_bytes()));
        in_args
            || files.iter().any(|f| {
                fs::read(self.cwd.join(f)).map_or(true, |text| {
                    key::uses_time_macros(&text) || key::may_silence_time_macro_report(&text)
                })
            })
    }

    /// What the recorder saw the compile (or the preprocessor) read, as
    /// record fields.
    fn to_observed(
        &self,
        call: &Call,
        seen: &kache_recorder::ObservedInputs,
        started: SystemTime,
    ) -> Result<Observed, NotStored> {
        let roots = self.roots();
        let tokenize = |t: &str| tokenize_bounded(t, &roots);
        let scope = observe::Scope {
            roots: &roots,
            tokenize: &tokenize,
            own_search_dirs: &[],
            // gcc and clang load plugins only when told to (-fplugin),
            // which the flag table refuses.
            loads_plugins: false,
            started,
            filter: &observe::filter(&call.store, &[], &[]),
            // Absent paths enter the result key only without a key ahead.
            collapse_absent: !self.ahead_incomplete,
        };
        observe::to_observed(&call.store, seen, &scope)
    }
}

impl Language for Cc {
    fn unit(&self) -> String {
        self.inv.source.to_string_lossy().into_owned()
    }

    /// Where the recorder runs: the direct key (no process is started to
    /// compute it). `None` elsewhere, or when a part of it cannot be known
    /// (then the preprocessor decides, as without direct mode).
    fn direct_key(&mut self, call: &mut Call) -> Result<Option<String>, Passthrough> {
        if !call.observe {
            return Ok(None);
        }
        let (ident, plan) = self.plan(call)?;
        let roots = self.roots();
        if roots.is_empty() {
            return Ok(None);
        }
        let name = Path::new(&self.inv.compiler)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut args = vec![name];
        for a in &self.args {
            match a.to_str() {
                Some(a) if !a.contains(BASE_TOKEN) => args.push(tokenize_bounded(a, &roots)),
                _ => return Ok(None),
            }
        }
        let Some(cwd) = self.cwd.to_str().map(|c| tokenize_bounded(c, &roots)) else {
            return Ok(None);
        };
        let Ok((source, _)) = memo::file_digest(&call.store, &self.cwd.join(&self.inv.source))
        else {
            return Ok(None);
        };
        self.direct = true;
        Ok(Some(key::direct_key(&key::DirectInput {
            compiler_identity: ident.as_bytes(),
            args: &args,
            cwd: &cwd,
            source: &source,
            paths: &plan,
        })))
    }

    fn key_ahead(&mut self, call: &mut Call) -> Result<Option<String>, Passthrough> {
        let (ident, plan) = self.plan(call)?;
        let version = compiler::parse_version_banner(&ident);
        let sde = self.sde.clone();
        call.count(Counter::CompilerRuns, 1);
        let mut cmd = Command::new(&self.real);
        cmd.args(&self.inv.preprocess_args)
            .args(&plan.extra_args)
            .env("SOURCE_DATE_EPOCH", &sde.value)
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        // Observed only when a direct key can use what it reads.
        let session = match self.direct {
            true => observe::recorder(&call.store)
                .ok()
                .and_then(|r| r.session().ok()),
            false => None,
        };
        if let Some(s) = &session {
            s.apply(&mut cmd);
        }
        let started = SystemTime::now();
        let pre = cmd.output().map_err(|_| Passthrough::PreprocessFailed)?;
        if !pre.status.success() {
            return Err(Passthrough::PreprocessFailed);
        }
        let reported = key::preprocessor_reported_time_macros(&pre.stderr);
        let headers = key::included_files(&pre.stdout);
        if key::preprocessed_uses_pch(&pre.stdout)
            || self
                .inv
                .pch_probe_paths(&self.cwd, &headers)
                .iter()
                .any(|p| p.exists())
        {
            return Err(Passthrough::PchFound);
        }
        // Only a direct record needs more than the report: the preprocessed
        // text holds every expansion the preprocessor made.
        let time_macros = reported || (self.direct && self.mentions_time_macros(&headers));
        if key::uses_assembler_include(&pre.stdout) {
            // The assembler reads a file the preprocessed text does not
            // hold. Observed, the compile's reads key it (unless time macros
            // make the object depend on more than what is read); unobserved,
            // refuse.
            return match self.direct && !time_macros {
                true => {
                    self.ahead_incomplete = true;
                    Ok(None)
                }
                false => Err(Passthrough::AssemblerInclude),
            };
        }
        if time_macros {
            self.no_direct_record = Some(TIME_MACROS);
        }
        let time =
            key::time_macro_policy(reported, &sde, version).map_err(Passthrough::CcRefused)?;
        let filter = observe::filter(&call.store, &[], &self.spelled_roots());
        if let Some(Ok(seen)) = session.map(|s| s.finish(&filter)) {
            self.seen_ahead = self.to_observed(call, &seen, started).ok();
        }
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
        tokenize_bounded(text, &self.roots())
    }

    fn expand(&self, text: &str) -> String {
        from_placeholders(text, &self.roots())
    }

    fn seen_ahead(&mut self) -> Option<Observed> {
        match self.no_direct_record {
            Some(_) => None,
            None => self.seen_ahead.take(),
        }
    }

    fn direct_refusal(&self) -> Option<&'static str> {
        self.no_direct_record
    }

    fn spelled_roots(&self) -> Vec<PathBuf> {
        self.roots().iter().map(|(r, _)| PathBuf::from(r)).collect()
    }

    fn compile_env(&self, name: &str) -> Option<OsString> {
        match name {
            "SOURCE_DATE_EPOCH" => Some(self.sde.value.clone().into()),
            _ => std::env::var_os(name),
        }
    }

    /// With a key ahead, a record of the direct key is what the compile was
    /// seen to read, when all of it was seen (else none: the preprocessor
    /// decides next time). Without one (an assembler include), what the
    /// compile read is the only key there is.
    fn observed_inputs(
        &mut self,
        call: &mut Call,
        _run: &Captured,
        started: SystemTime,
        recording: Option<Recording>,
    ) -> Result<Option<Observed>, NotStored> {
        let seen = match recording {
            Some(Ok(seen)) => seen,
            Some(Err(_)) => {
                return match self.ahead_incomplete {
                    true => Err(NotStored::RecordingIncomplete),
                    false => Ok(None),
                };
            }
            None if self.ahead_incomplete => return Err(NotStored::RecordingIncomplete),
            None => return Ok(None),
        };
        if self.no_direct_record.is_some() {
            return Ok(None);
        }
        match self.to_observed(call, &seen, started) {
            Ok(o) => Ok(Some(o)),
            Err(e) if self.ahead_incomplete => Err(e),
            Err(_) => Ok(None),
        }
    }

    fn result_key(&self, direct: &str, o: &Observed) -> Option<KeyAndGroups> {
        let k = key::observed_result_key(direct, &o.files, &o.env, &o.absent);
        Some((k, BTreeMap::new()))
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
            .env("SOURCE_DATE_EPOCH", &self.sde.value)
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

    fn outputs_read_by_later_compiles(&self) -> bool {
        false
    }
}
