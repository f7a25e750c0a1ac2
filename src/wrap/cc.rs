//! The C/C++ wrapper glue: runs the preprocessor for the key, restores or
//! compiles, and stores the object and its dep file.
//!
//! What may be cached, and under which key, is decided in
//! `kache_wrapper::cc` (an allow-list table); this module only runs
//! processes and talks to the store. A hit serves a private, writable object
//! (reflink or copy, never a hardlink: build systems rewrite objects in place).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use kache_platform::{FileLock, HardlinkPolicy, LockMode};
use kache_wrapper::cc::{self, depfile, key, paths, CcInvocation};

use super::{exec, memo, Lang, Wrapper};
use crate::store::{Entry, OutputFile};

const OBJECT: &str = "object";
const DEPFILE: &str = "depfile";

/// Finds the real compiler for `name`: a path as given, or the first match
/// on PATH that is not a kache binary (a shim named `cc` must not find
/// itself, nor a shim of another kache install). A path that leads to kache
/// (the launcher form given a shim) is searched by its file name instead.
pub fn resolve_compiler(name: &OsStr) -> Option<PathBuf> {
    let name_s = name.to_string_lossy();
    if name_s.contains('/') {
        let p = PathBuf::from(name);
        if !p.is_file() {
            return None;
        }
        if !p.canonicalize().is_ok_and(|c| is_kache_binary(&c)) {
            return Some(p);
        }
        return resolve_compiler(p.file_name()?);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .find(|p| !p.canonicalize().is_ok_and(|c| is_kache_binary(&c)))
}

/// True when `canonical` (a resolved path) is this kache binary or another
/// one (any file named `kache`): running it as the compiler would loop.
pub fn is_kache_binary(canonical: &Path) -> bool {
    let stem = canonical.file_stem().map(|s| s.to_string_lossy());
    if stem.as_deref() == Some("kache") {
        return true;
    }
    std::env::current_exe()
        .ok()
        .and_then(|m| m.canonicalize().ok())
        .is_some_and(|me| me == canonical)
}

/// The worktree root for prefix maps: the nearest ancestor holding `.git`,
/// else the nearest holding `Cargo.lock` (a cargo workspace), else `cwd`.
pub fn worktree_root(cwd: &Path) -> PathBuf {
    for marker in [".git", "Cargo.lock"] {
        let mut d = Some(cwd);
        while let Some(dir) = d {
            if dir.join(marker).exists() {
                return dir.to_path_buf();
            }
            d = dir.parent();
        }
    }
    cwd.to_path_buf()
}

pub fn run(w: &mut Wrapper, compiler: &OsStr, args: &[OsString]) -> i32 {
    let Some(real) = resolve_compiler(compiler) else {
        eprintln!(
            "kache: compiler {} not found on PATH",
            compiler.to_string_lossy()
        );
        return 127;
    };
    let real = real.into_os_string();
    if let Err(r) = cc::args::refuse_env(|v| std::env::var_os(v).is_some()) {
        return refuse(w, &real, args, &r);
    }
    let inv = match cc::parse(&compiler.to_string_lossy(), args) {
        Ok(inv) => inv,
        Err(r) => return refuse(w, &real, args, &r),
    };
    let cwd = w.ctx.cwd.clone();
    let source_abs = cwd.join(&inv.source);
    if w.ctx.config.is_excluded(&source_abs) {
        return w.passthrough(Lang::Cc, &real, args, "excluded");
    }
    match cached_compile(w, &real, args, &inv, &cwd) {
        Ok(code) => code,
        Err(reason) => w.passthrough(Lang::Cc, &real, args, &reason),
    }
}

fn refuse(w: &mut Wrapper, real: &OsStr, args: &[OsString], r: &cc::Refusal) -> i32 {
    if let Some(flag) = r.flag() {
        w.count(
            format!("cc.passthrough_flags.{}", super::reason_key(flag)),
            1,
        );
    }
    w.passthrough(Lang::Cc, real, args, r.reason())
}

/// Version banner and binary content hash, memoized per compiler binary.
fn identity(w: &mut Wrapper, real: &OsStr) -> Result<String, String> {
    let bin = PathBuf::from(real);
    let (id, probed) = memo::tool_identity(&w.store, &bin, "cc", || {
        let out = Command::new(&bin).arg("--version").output()?;
        let (hash, _) = crate::store::hash_file(&bin)?;
        Ok(format!("{}\n{hash}", String::from_utf8_lossy(&out.stdout)))
    })
    .map_err(|_| "cc:identity".to_string())?;
    if probed {
        w.count("cc.compiler_runs", 1);
    }
    Ok(id)
}

fn cached_compile(
    w: &mut Wrapper,
    real: &OsStr,
    args: &[OsString],
    inv: &CcInvocation,
    cwd: &Path,
) -> Result<i32, String> {
    let ident = identity(w, real)?;
    let version = cc::compiler::parse_version_banner(&ident);
    let base = worktree_root(cwd);
    let plan = paths::plan(inv, &base, cwd, version);
    let sde = key::source_date_epoch(
        std::env::var_os("SOURCE_DATE_EPOCH").as_deref(),
        SystemTime::now(),
    );

    w.count("cc.compiler_runs", 1);
    let pre = Command::new(real)
        .args(&inv.preprocess_args)
        .args(&plan.extra_args)
        .env("SOURCE_DATE_EPOCH", &sde.value)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|_| "cc:preprocess-failed".to_string())?;
    if !pre.status.success() {
        return Err("cc:preprocess-failed".into());
    }
    let headers = key::included_files(&pre.stdout);
    if inv
        .pch_probe_paths(cwd, &headers)
        .iter()
        .any(|p| p.exists())
    {
        return Err("cc:pch".into());
    }
    let time = key::time_macro_policy(
        key::preprocessor_reported_time_macros(&pre.stderr),
        &sde,
        version,
    )
    .map_err(|r| r.reason().to_string())?;
    let result_key = key::cache_key(&key::KeyInput {
        compiler_identity: ident.as_bytes(),
        invocation: inv,
        paths: &plan,
        preprocessed: &pre.stdout,
        source_date_epoch: time.as_deref(),
    });

    if let Some(bytes) = try_hit(w, &result_key, inv, cwd, &base) {
        return Ok(finish_hit(w, inv, bytes));
    }
    if crate::remote::import_entry(w, &result_key) {
        if let Some(bytes) = try_hit(w, &result_key, inv, cwd, &base) {
            w.count("cc.remote_hits", 1);
            return Ok(finish_hit(w, inv, bytes));
        }
    }
    let lock = FileLock::acquire_timeout(
        &w.store.lock_path(&result_key),
        LockMode::Exclusive,
        Duration::from_secs(600),
    )
    .ok()
    .flatten();
    if let Some(bytes) = try_hit(w, &result_key, inv, cwd, &base) {
        return Ok(finish_hit(w, inv, bytes));
    }

    let output = cwd.join(&inv.output);
    let mut outs = vec![output.clone()];
    if let Some(d) = &inv.dep_file {
        outs.push(cwd.join(&d.path));
    }
    let _ = kache_platform::remove_readonly_outputs(&outs);
    let mut cmd = Command::new(real);
    cmd.args(args)
        .args(&plan.extra_args)
        .env("SOURCE_DATE_EPOCH", &sde.value)
        .current_dir(cwd);
    w.count("cc.compiler_runs", 1);
    w.count("cc.misses", 1);
    let cap = exec::run_captured(cmd).map_err(|_| "cc:spawn-failed".to_string())?;
    let code = exec::exit_code_of(&cap.status);
    if code == 0 {
        match store(w, &result_key, inv, cwd, &base, &cap) {
            Ok(bytes) => w.event(
                Lang::Cc,
                "miss",
                None,
                Some(&inv.source.to_string_lossy()),
                bytes,
            ),
            Err(why) => {
                w.count(format!("cc.not_stored.{}", super::reason_key(&why)), 1);
                w.event(
                    Lang::Cc,
                    "miss",
                    Some(&format!("not-stored:{why}")),
                    Some(&inv.source.to_string_lossy()),
                    0,
                );
            }
        }
    }
    drop(lock);
    Ok(code)
}

fn finish_hit(w: &mut Wrapper, inv: &CcInvocation, bytes: u64) -> i32 {
    w.count("cc.hits", 1);
    w.count("restore.bytes_saved", bytes);
    w.event(
        Lang::Cc,
        "hit",
        None,
        Some(&inv.source.to_string_lossy()),
        bytes,
    );
    0
}

fn try_hit(w: &mut Wrapper, key: &str, inv: &CcInvocation, cwd: &Path, base: &Path) -> Option<u64> {
    let entry = w.store.get_entry(key).ok()?;
    let opened = w.store.open_blobs(&entry).ok()?;
    for out in &entry.outputs {
        let path = w.store.blob_path(&out.blob);
        match memo::file_digest(&w.store, &path) {
            Ok((h, _)) if h == out.blob => {}
            _ => {
                let _ = fs::remove_file(&path);
                return None;
            }
        }
    }
    // The dep file first: every path it names must exist in this worktree.
    let dep_text = match (
        entry.outputs.iter().find(|o| o.name == DEPFILE),
        &inv.dep_file,
    ) {
        (Some(d), Some(_)) => {
            let stored = fs::read_to_string(w.store.blob_path(&d.blob)).ok()?;
            let text = depfile::from_placeholders(&stored, base)?;
            let output_s = inv.output.to_string_lossy();
            for p in depfile::named_paths(&text) {
                if p != output_s && !cwd.join(&p).exists() && p != inv.output.to_string_lossy() {
                    return None;
                }
            }
            Some(text)
        }
        (None, None) => None,
        _ => return None,
    };
    let stderr = cc::paths::diagnostics_from_placeholders(&entry.stderr, base)?;
    // The object is the one output to place. Only the last step differs in a
    // kache-mounted target dir (a build script's OUT_DIR): the object is
    // placed by reference; otherwise, or if placing fails, it is restored.
    let obj_dest = cwd.join(&inv.output);
    let mut mount_bytes = 0;
    if let Some(obj) = entry.outputs.iter().find(|o| o.name == OBJECT) {
        let root = obj_dest.parent().and_then(crate::mount::mount_root_of);
        if let Some((root, rel)) = root.and_then(|r| Some((r, obj_dest.strip_prefix(r).ok()?))) {
            let one = [kache_fs::Placement {
                path: rel.to_path_buf(),
                hash: obj.blob.clone(),
                size: obj.size,
                mode: obj.mode,
            }];
            match crate::mount::place_outputs(root, &one) {
                Ok(bytes) => mount_bytes = bytes,
                Err(_) => w.count("restore.mount_errors", 1),
            }
        }
    }
    let report = w
        .store
        .restore(&entry, &opened, |o| {
            (o.name == OBJECT && mount_bytes == 0)
                .then(|| (obj_dest.clone(), HardlinkPolicy::Never))
        })
        .ok()?;
    if mount_bytes > 0 {
        w.count("restore.mount_bytes", mount_bytes);
        w.count("restore.mount_files", 1);
    }
    if let (Some(text), Some(d)) = (dep_text, &inv.dep_file) {
        let dest = cwd.join(&d.path);
        let _ = fs::remove_file(&dest);
        fs::write(&dest, text).ok()?;
    }
    w.count("restore.reflink_bytes", report.reflink_bytes);
    w.count("restore.copy_bytes", report.copy_bytes);
    w.count("restore.files", report.files);
    let _ = io::stdout().write_all(&entry.stdout);
    let _ = io::stderr().write_all(&stderr);
    Some(report.total_bytes() + mount_bytes)
}

fn store(
    w: &mut Wrapper,
    key: &str,
    inv: &CcInvocation,
    cwd: &Path,
    base: &Path,
    cap: &exec::Captured,
) -> Result<u64, String> {
    let obj_path = cwd.join(&inv.output);
    let blob = w
        .store
        .put_blob_from_path(&obj_path)
        .map_err(|e| format!("store:{}", e.kind()))?;
    let mut outputs = vec![OutputFile {
        name: OBJECT.into(),
        blob: blob.hash,
        size: blob.size,
        mode: 0o644,
    }];
    let bytes = blob.size;
    if let Some(d) = &inv.dep_file {
        let text = fs::read_to_string(cwd.join(&d.path)).map_err(|_| "depfile-unreadable")?;
        let stored = depfile::to_placeholders(&text, base).ok_or("depfile-unstorable")?;
        let b = w
            .store
            .put_blob_bytes(stored.as_bytes())
            .map_err(|e| format!("store:{}", e.kind()))?;
        outputs.push(OutputFile {
            name: DEPFILE.into(),
            blob: b.hash,
            size: b.size,
            mode: 0o644,
        });
    }
    let stderr = cc::paths::diagnostics_to_placeholders(&cap.stderr, base)
        .ok_or("diagnostics-unstorable")?;
    let entry = Entry {
        outputs,
        exit_status: 0,
        stdout: cap.stdout.clone(),
        stderr,
        meta: serde_json::json!({ "source": inv.source.to_string_lossy() }),
    };
    w.store
        .put_entry(key, &entry)
        .map_err(|e| format!("store:{}", e.kind()))?;
    crate::remote::queue_upload(w, None, key);
    crate::gc::maybe_collect(w, bytes);
    Ok(bytes)
}
