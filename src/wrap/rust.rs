//! The rustc wrapper: direct-mode lookups that never start rustc on a hit,
//! and misses that store what rustc produced.
//!
//! Hit path: parse → direct key (args, compiler, extern contents, env) →
//! manifest → validate recorded inputs by stat memo (hash only what changed)
//! → result key → entry → open blobs → place outputs → replay diagnostics.
//! Miss path: per-direct-key lock (a concurrent identical compile waits and
//! then hits) → rustc with `--remap-path-prefix` from the same normalization
//! that built the key → dep-info names the inputs → blobs, entry, manifest.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use kache_platform::{FileLock, HardlinkPolicy, LockMode};
use kache_wrapper::key::KeyBuilder;
use kache_wrapper::paths::{from_placeholders, Normalizer};
use kache_wrapper::rustc::{self, KeyArg, Parsed, RustcInvocation};
use serde::{Deserialize, Serialize};

use super::{exec, memo, Lang, Wrapper};
use crate::store::{Entry, OutputFile, Store};

const WS_TOKEN: &str = "@KACHE_WS@";
const TARGET_TOKEN: &str = "@KACHE_TARGET@";
/// What the worktree root and target dir become inside outputs.
const WS_REMAP: &str = ".";
const TARGET_REMAP: &str = "/kache/target";
/// How many (inputs → result) records a manifest keeps, newest first.
const MANIFEST_RECORDS: usize = 8;

/// Env variables that can change rustc's output without appearing in
/// dep-info (rustc itself, cargo's package facts that proc-macros read).
fn keyed_env(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_CFG_")
        || matches!(
            name,
            "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTFLAGS"
                | "RUSTC_BOOTSTRAP"
                | "SOURCE_DATE_EPOCH"
                | "CARGO_MANIFEST_DIR"
                | "OUT_DIR"
        )
}

/// Variables whose values are worktree paths: normalized in the direct key,
/// and only kept normalized in the result key when every use is an include.
const PATH_VARS: [&str; 2] = ["CARGO_MANIFEST_DIR", "OUT_DIR"];

/// One (inputs → result key) record of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    /// (path in token form, blake3, size)
    files: Vec<(String, String, u64)>,
    /// (name, value in token form or raw, or None when unset)
    env: Vec<(String, Option<String>)>,
    result: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    records: Vec<Record>,
}

/// The roots of one compile and the normalization built from them.
struct Roots {
    ws: Option<String>,
    target: Option<String>,
    norm: Normalizer,
}

impl Roots {
    fn tokens(&self) -> Vec<(&str, &str)> {
        let mut t = Vec::new();
        if let Some(ws) = &self.ws {
            t.push((ws.as_str(), WS_TOKEN));
        }
        if let Some(tg) = &self.target {
            t.push((tg.as_str(), TARGET_TOKEN));
        }
        t
    }

    /// Absolute path text → token form (for stored records and files).
    fn tokenize(&self, text: &str) -> String {
        self.norm.to_placeholders(text, &self.tokens())
    }

    fn expand(&self, text: &str) -> String {
        from_placeholders(text, &self.tokens())
    }

    /// Key form of a path: its remapped spelling.
    fn key_path(&self, p: &str) -> String {
        self.norm.apply(p)
    }
}

fn str_args(args: &[OsString]) -> Option<Vec<String>> {
    args.iter().map(|a| a.to_str().map(String::from)).collect()
}

/// True when a path can be substituted safely inside JSON diagnostics.
fn plain_path(p: &str) -> bool {
    !p.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

fn find_target_dir(out_dir: &Path) -> Option<PathBuf> {
    // cargo marks its target directory with CACHEDIR.TAG and .rustc_info.json.
    let mut d = Some(out_dir);
    while let Some(dir) = d {
        // `.rustc_info.json` covers a target dir cargo did not create
        // itself (made beforehand, or a mount point), which has no tag.
        if dir.join("CACHEDIR.TAG").is_file() || dir.join(".rustc_info.json").is_file() {
            return Some(dir.to_path_buf());
        }
        d = dir.parent();
    }
    None
}

fn roots_for(cwd: &Path, out_dir: &Path) -> Roots {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    // A registry or git dependency is compiled with its package directory
    // (inside CARGO_HOME) as cwd: that is not a worktree root, and remapping
    // it would change the paths its panics print.
    let ws = if cargo_home.as_ref().is_some_and(|h| cwd.starts_with(h)) || cwd.parent().is_none() {
        None
    } else {
        Some(cwd.to_string_lossy().into_owned())
    };
    let target = find_target_dir(out_dir).map(|t| t.to_string_lossy().into_owned());
    let mut norm = Normalizer::new();
    if let Some(ws) = &ws {
        norm.add(ws, WS_REMAP);
    }
    if let Some(t) = &target {
        norm.add(t, TARGET_REMAP);
    }
    Roots { ws, target, norm }
}

enum Lookup {
    Hit { bytes: u64 },
    Miss(String),
}

pub fn run(w: &mut Wrapper, compiler: &OsStr, args: &[OsString]) -> i32 {
    if Path::new(compiler)
        .file_name()
        .is_some_and(|f| f.to_string_lossy().starts_with("clippy-driver"))
    {
        // Lints depend on clippy.toml files that no dep-info names.
        return w.passthrough(Lang::Rust, compiler, args, "clippy-driver");
    }
    let Some(sargs) = str_args(args) else {
        return w.passthrough(Lang::Rust, compiler, args, "non-utf8-args");
    };
    let inv = match rustc::parse(&sargs) {
        Parsed::NotACompile => {
            // cargo's compiler probes come before any freshness check: seed a new target.
            crate::seed::at_probe(&w.ctx, &w.store, compiler, &sargs);
            return match exec::run_inherited(compiler, args) {
                Ok(s) => exec::exit_code_of(&s),
                Err(e) => {
                    eprintln!("kache: cannot run {}: {e}", compiler.to_string_lossy());
                    1
                }
            };
        }
        Parsed::Refuse(reason) => return w.passthrough(Lang::Rust, compiler, args, &reason),
        Parsed::Compile(inv) => *inv,
    };
    if inv.wants_incremental() && w.ctx.config.str("rust.incremental") == "passthrough" {
        return w.passthrough(Lang::Rust, compiler, args, "incremental");
    }
    let cwd = w.ctx.cwd.clone();
    let input_abs = cwd.join(&inv.input);
    if w.ctx.config.is_excluded(&input_abs) {
        return w.passthrough(Lang::Rust, compiler, args, "excluded");
    }
    let out_dir = cwd.join(&inv.out_dir);
    let roots = roots_for(&cwd, &out_dir);
    let all_plain = [&roots.ws, &roots.target]
        .iter()
        .all(|r| r.as_ref().is_none_or(|p| plain_path(p)));
    if !all_plain {
        return w.passthrough(Lang::Rust, compiler, args, "unusual-path");
    }

    let direct = match direct_key(w, compiler, &inv, &cwd, &roots) {
        Ok(k) => k,
        Err(reason) => return w.passthrough(Lang::Rust, compiler, args, &reason),
    };

    if let Lookup::Hit { bytes } = lookup(w, &direct, &inv, &cwd, &out_dir, &roots) {
        return finish_hit(w, &inv, bytes);
    }
    if crate::remote::import_direct(w, &direct) {
        if let Lookup::Hit { bytes } = lookup(w, &direct, &inv, &cwd, &out_dir, &roots) {
            w.count("rust.remote_hits", 1);
            return finish_hit(w, &inv, bytes);
        }
    }

    // Miss: one compile per direct key at a time; a peer that finished while
    // we waited has published the entry, so look again under the lock.
    let lock = FileLock::acquire_timeout(
        &w.store.lock_path(&direct),
        LockMode::Exclusive,
        Duration::from_secs(600),
    )
    .ok()
    .flatten();
    let reason = match lookup(w, &direct, &inv, &cwd, &out_dir, &roots) {
        Lookup::Hit { bytes } => return finish_hit(w, &inv, bytes),
        Lookup::Miss(r) => r,
    };
    let code = compile_and_store(w, compiler, &inv, &direct, &cwd, &out_dir, &roots, &reason);
    drop(lock);
    code
}

fn finish_hit(w: &mut Wrapper, inv: &RustcInvocation, bytes: u64) -> i32 {
    w.count("rust.hits", 1);
    w.count("restore.bytes_saved", bytes);
    w.event(Lang::Rust, "hit", None, Some(&inv.crate_name), bytes);
    0
}

/// Compiler identity: `rustc -vV`, memoized by the binary's stat and the
/// selected rustup toolchain.
fn rustc_identity(w: &mut Wrapper, compiler: &OsStr) -> Result<String, String> {
    let bin = memo::which(&compiler.to_string_lossy()).ok_or("rustc-not-found")?;
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_default();
    let (id, probed) = memo::tool_identity(&w.store, &bin, &toolchain, || {
        let out = Command::new(compiler).arg("-vV").output()?;
        if !out.status.success() {
            return Err(io::Error::other("rustc -vV failed"));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .map_err(|_| "rustc-identity".to_string())?;
    if probed {
        w.count("rust.compiler_runs", 1);
    }
    Ok(id)
}

/// Linker identity and host libc for linked outputs.
fn linker_identity(w: &mut Wrapper, inv: &RustcInvocation) -> Result<String, String> {
    let name = inv.linker.clone().unwrap_or_else(|| "cc".to_string());
    let bin = memo::which(&name).ok_or_else(|| "linker-not-found".to_string())?;
    let (id, _) = memo::tool_identity(&w.store, &bin, "linker", || {
        let out = Command::new(&bin).arg("--version").output()?;
        let libc = host_libc();
        Ok(format!(
            "{}\nlibc {libc}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
    .map_err(|_| "linker-identity".to_string())?;
    Ok(id)
}

fn host_libc() -> String {
    // ld.so prints its version; it is the host glibc.
    for ld in ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"] {
        if let Ok(out) = Command::new(ld).arg("--version").output() {
            if let Some(first) = String::from_utf8_lossy(&out.stdout).lines().next() {
                return first.to_string();
            }
        }
    }
    "unknown".into()
}

fn direct_key(
    w: &mut Wrapper,
    compiler: &OsStr,
    inv: &RustcInvocation,
    cwd: &Path,
    roots: &Roots,
) -> Result<String, String> {
    let mut k = KeyBuilder::new("kache-rust-direct-v1");
    k.group("compiler")
        .str("rustc", &rustc_identity(w, compiler)?);
    if inv.is_linked() {
        k.str("linker", &linker_identity(w, inv)?);
    }
    // Where the compile runs matters only when it is not a worktree root
    // (registry crates: an absolute, machine-local path that outputs embed).
    if roots.ws.is_none() {
        k.str("cwd", &cwd.to_string_lossy());
    }
    k.str("remap", &format!("{WS_REMAP}\0{TARGET_REMAP}"));

    k.group("args");
    for a in &inv.key_args {
        match a {
            KeyArg::Literal(s) => k.str("arg", s),
            KeyArg::Path { prefix, path } => {
                if prefix == "--target-file=" {
                    let p = cwd.join(path);
                    let (h, _) =
                        memo::file_digest(&w.store, &p).map_err(|_| "target-spec-unreadable")?;
                    k.str("target-spec", &h)
                } else {
                    k.str("arg", &format!("{prefix}{}", roots.key_path(path)))
                }
            }
        };
    }

    k.group("externs");
    for e in &inv.externs {
        k.str("name", &e.name);
        if let Some(p) = &e.path {
            let p = cwd.join(p);
            let (h, _) =
                memo::file_digest(&w.store, &p).map_err(|_| "extern-unreadable".to_string())?;
            k.str("content", &h);
        }
    }

    k.group("native");
    for (kind, name) in &inv.native_libs {
        if !kind.starts_with("static") {
            continue;
        }
        let name = name.split(':').next().unwrap_or(name);
        let file = format!("lib{name}.a");
        let found = inv
            .search_paths
            .iter()
            .filter(|(k, _)| k == "native" || k == "all")
            .map(|(_, d)| cwd.join(d).join(&file))
            .find(|p| p.is_file());
        let Some(p) = found else {
            return Err("native-lib-not-found".into());
        };
        let (h, _) =
            memo::file_digest(&w.store, &p).map_err(|_| "native-lib-unreadable".to_string())?;
        k.str(&file, &h);
    }

    k.group("env");
    // Declared extra inputs (lesson 7): variables a proc-macro reads at
    // expansion time, which no dep-info records.
    let declared = w.ctx.config.list("rust.env").to_vec();
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(n, _)| keyed_env(n) || declared.contains(n))
        .collect();
    for name in &declared {
        if std::env::var_os(name).is_none() {
            env.push((name.clone(), "\0unset".to_string()));
        }
    }
    env.sort();
    for (n, v) in &env {
        let v = if PATH_VARS.contains(&n.as_str()) {
            roots.key_path(v)
        } else {
            v.clone()
        };
        k.str(n, &v);
    }
    let (key, groups) = k.finish();
    for (g, d) in groups {
        w.key_groups.insert(format!("direct.{g}"), d);
    }
    Ok(key)
}

/// Looks the compile up by direct key; on success the outputs are in place
/// and the diagnostics replayed.
fn lookup(
    w: &mut Wrapper,
    direct: &str,
    inv: &RustcInvocation,
    cwd: &Path,
    out_dir: &Path,
    roots: &Roots,
) -> Lookup {
    let Some(bytes) = w.store.get_manifest(direct) else {
        return Lookup::Miss("no-manifest".into());
    };
    let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
        return Lookup::Miss("bad-manifest".into());
    };
    let mut last = "inputs-changed".to_string();
    for rec in &manifest.records {
        if !record_matches(&w.store, rec, cwd, roots) {
            continue;
        }
        let entry = match w.store.get_entry(&rec.result) {
            Ok(e) => e,
            Err(r) => {
                last = r.label().to_string();
                continue;
            }
        };
        match restore(w, &entry, inv, out_dir, roots) {
            Ok(n) => return Lookup::Hit { bytes: n },
            Err(r) => last = r,
        }
    }
    Lookup::Miss(last)
}

fn record_matches(store: &Store, rec: &Record, cwd: &Path, roots: &Roots) -> bool {
    for (name, want) in &rec.env {
        let now = std::env::var(name).ok();
        let now_form = now.as_deref().map(|v| {
            if want
                .as_deref()
                .is_some_and(|w| w.contains(WS_TOKEN) || w.contains(TARGET_TOKEN))
            {
                roots.tokenize(v)
            } else {
                v.to_string()
            }
        });
        if &now_form != want {
            return false;
        }
    }
    for (p, hash, size) in &rec.files {
        let abs = cwd.join(roots.expand(p));
        match memo::file_digest(store, &abs) {
            Ok((h, s)) if &h == hash && s == *size => {}
            _ => return false,
        }
    }
    true
}

fn restore(
    w: &mut Wrapper,
    entry: &Entry,
    inv: &RustcInvocation,
    out_dir: &Path,
    roots: &Roots,
) -> Result<u64, String> {
    let opened = w
        .store
        .open_blobs(entry)
        .map_err(|r| r.label().to_string())?;
    // Sizes are checked by open_blobs; content is checked through the digest
    // memo, which re-hashes any blob whose stat changed since it was last
    // hashed (a write into a blob always changes its ctime).
    for out in &entry.outputs {
        let path = w.store.blob_path(&out.blob);
        match memo::file_digest(&w.store, &path) {
            Ok((h, _)) if h == out.blob => {}
            _ => {
                let _ = fs::remove_file(&path);
                return Err("blob-corrupt".into());
            }
        }
    }
    let expected = inv.expected_outputs();
    // An entry must hold exactly the files this invocation produces.
    for out in &entry.outputs {
        if !expected.iter().any(|(n, _)| n == &out.name) {
            return Err("entry-output-mismatch".into());
        }
    }
    let allow_hardlink = w.ctx.config.bool("cache.hardlink");
    // The outputs to place are every output but dep-info (rewritten for this
    // worktree below). Only the last step differs in a kache-mounted target:
    // they are placed by reference, in one request, instead of restored (see
    // `crate::mount::place_outputs` for why small ones are placed too). A
    // failed placement falls back to restoring.
    let mut by_reference: Vec<&str> = Vec::new();
    let mut mount_bytes = 0;
    let mounted = roots
        .target
        .as_deref()
        .map(Path::new)
        .filter(|t| kache_fs::is_kache_mount(t));
    if let Some((root, rel)) = mounted.and_then(|t| Some((t, out_dir.strip_prefix(t).ok()?))) {
        let large = mount_placements(entry, rel);
        match crate::mount::place_outputs(root, &large) {
            Ok(bytes) => {
                w.count("restore.mount_bytes", bytes);
                w.count("restore.mount_files", large.len() as u64);
                mount_bytes = bytes;
                by_reference = large.iter().map(|p| p.blob).collect();
            }
            Err(_) => w.count("restore.mount_errors", 1),
        }
    }
    let report = w
        .store
        .restore(entry, &opened, |out| {
            if out.name.ends_with(".d") || by_reference.contains(&out.blob.as_str()) {
                return None;
            }
            // Executables too: their blob is stored 0555, and placement
            // only hardlinks when the blob's exec bits match the output's.
            let policy = if allow_hardlink {
                HardlinkPolicy::IfSoleConsumer
            } else {
                HardlinkPolicy::Never
            };
            Some((out_dir.join(&out.name), policy))
        })
        .map_err(|e| format!("restore-io:{}", e.kind()))?;
    if let Some(d) = entry.outputs.iter().find(|o| o.name.ends_with(".d")) {
        let text = fs::read(w.store.blob_path(&d.blob)).map_err(|_| "depinfo-blob".to_string())?;
        let text = roots.expand(&String::from_utf8_lossy(&text));
        let dest = out_dir.join(&d.name);
        let _ = fs::remove_file(&dest);
        fs::write(&dest, text).map_err(|_| "depinfo-write".to_string())?;
    }
    for out in &entry.outputs {
        if !out.name.ends_with(".d") {
            memo::remember_output(&w.store, &out_dir.join(&out.name), &out.blob);
        }
    }
    if report.hardlink_bytes > 0 {
        // A hardlink restore re-stamped the blob's inode; its content was
        // verified above, so refresh its memo instead of re-hashing next time.
        for out in &entry.outputs {
            memo::remember_output(&w.store, &w.store.blob_path(&out.blob), &out.blob);
        }
    }
    w.count("restore.reflink_bytes", report.reflink_bytes);
    w.count("restore.hardlink_bytes", report.hardlink_bytes);
    w.count("restore.copy_bytes", report.copy_bytes);
    w.count("restore.files", report.files);
    replay(
        &roots.expand(&String::from_utf8_lossy(&entry.stderr)),
        &entry.stdout,
    );
    Ok(report.total_bytes() + mount_bytes)
}

fn replay(stderr: &str, stdout: &[u8]) {
    let _ = io::stdout().write_all(stdout);
    let _ = io::stdout().flush();
    let _ = io::stderr().write_all(stderr.as_bytes());
    let _ = io::stderr().flush();
}

#[allow(clippy::too_many_arguments)]
fn compile_and_store(
    w: &mut Wrapper,
    compiler: &OsStr,
    inv: &RustcInvocation,
    direct: &str,
    cwd: &Path,
    out_dir: &Path,
    roots: &Roots,
    miss_reason: &str,
) -> i32 {
    let expected = inv.expected_outputs();
    let paths: Vec<PathBuf> = expected.iter().map(|(n, _)| out_dir.join(n)).collect();
    let _ = kache_platform::remove_readonly_outputs(&paths);

    let mut cmd = Command::new(compiler);
    cmd.args(&inv.compile_args).args(roots.norm.remap_args());
    let started = SystemTime::now();
    w.count("rust.compiler_runs", 1);
    let cap = match exec::run_captured(cmd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kache: cannot run {}: {e}", compiler.to_string_lossy());
            w.count("rust.errors", 1);
            return 1;
        }
    };
    let code = exec::exit_code_of(&cap.status);
    w.count("rust.misses", 1);
    w.count(
        format!("rust.miss_reasons.{}", super::reason_key(miss_reason)),
        1,
    );
    if code != 0 {
        w.event(
            Lang::Rust,
            "miss",
            Some("compile-failed"),
            Some(&inv.crate_name),
            0,
        );
        return code;
    }
    match store_result(w, inv, direct, cwd, out_dir, roots, &cap, started) {
        Ok(bytes) => w.event(
            Lang::Rust,
            "miss",
            Some(miss_reason),
            Some(&inv.crate_name),
            bytes,
        ),
        Err(why) => {
            w.count(format!("rust.not_stored.{}", super::reason_key(&why)), 1);
            w.event(
                Lang::Rust,
                "miss",
                Some(&format!("not-stored:{why}")),
                Some(&inv.crate_name),
                0,
            );
        }
    }
    0
}

#[allow(clippy::too_many_arguments)]
fn store_result(
    w: &mut Wrapper,
    inv: &RustcInvocation,
    direct: &str,
    cwd: &Path,
    out_dir: &Path,
    roots: &Roots,
    cap: &exec::Captured,
    started: SystemTime,
) -> Result<u64, String> {
    if !inv.emit.iter().any(|e| e == "dep-info") {
        // Without dep-info kache cannot know what the compile read (lesson 2).
        return Err("no-dep-info".into());
    }
    let stderr = String::from_utf8(cap.stderr.clone()).map_err(|_| "non-utf8-output")?;
    // Every artifact rustc announced must be one we expect.
    let expected = inv.expected_outputs();
    for line in stderr.lines().filter(|l| l.starts_with("{\"artifact\":")) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|_| "bad-artifact-line")?;
        let path = v["artifact"].as_str().unwrap_or_default();
        let name = Path::new(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned());
        if !name.is_some_and(|n| expected.iter().any(|(e, _)| *e == n)) {
            return Err("unexpected-artifact".into());
        }
    }
    let dep_name = format!("{}{}.d", inv.crate_name, inv.extra_filename);
    let dep_text =
        fs::read_to_string(out_dir.join(&dep_name)).map_err(|_| "dep-info-unreadable")?;
    let dep = rustc::parse_dep_info(&dep_text);

    // Inputs by (token path, content), checked unchanged since the compile began.
    let mut files = Vec::new();
    let mut sources = Vec::new();
    for f in &dep.files {
        let abs = cwd.join(f);
        let meta = fs::metadata(&abs).map_err(|_| "input-vanished")?;
        if meta.modified().is_ok_and(|m| m > started) {
            return Err("input-modified-during-compile".into());
        }
        let (h, size) = memo::file_digest(&w.store, &abs).map_err(|_| "input-unreadable")?;
        let shown = if Path::new(f).is_absolute() {
            roots.tokenize(f)
        } else {
            f.clone()
        };
        files.push((shown, h, size));
        if f.ends_with(".rs") {
            sources.push(abs);
        }
    }
    let mut env = Vec::new();
    for (name, value) in &dep.env {
        let value = value.as_ref().map(|v| {
            let tokenized = roots.tokenize(v);
            if tokenized == *v || !PATH_VARS.contains(&name.as_str()) {
                return v.clone();
            }
            // A worktree path baked into the crate: normalize only when
            // every use is an include (lessons 4 and 5).
            if every_use_is_include(&sources, name) {
                tokenized
            } else {
                v.clone()
            }
        });
        env.push((name.clone(), value));
    }

    let mut rk = KeyBuilder::new("kache-rust-result-v1");
    rk.group("direct").str("key", direct);
    rk.group("sources");
    for (p, h, _) in &files {
        rk.str(p, h);
    }
    rk.group("env");
    for (n, v) in &env {
        rk.str(n, v.as_deref().unwrap_or("\0unset"));
    }
    let (result_key, groups) = rk.finish();
    for (g, d) in &groups {
        if g != "direct" && g != "domain" {
            w.key_groups.insert(format!("result.{g}"), d.clone());
        }
    }

    let mut outputs = Vec::new();
    let mut bytes = 0;
    for (name, exec_bit) in &expected {
        let p = out_dir.join(name);
        if name.ends_with(".d") {
            let blob = w
                .store
                .put_blob_bytes(roots.tokenize(&dep_text).as_bytes())
                .map_err(|e| format!("store:{}", e.kind()))?;
            outputs.push(OutputFile {
                name: name.clone(),
                blob: blob.hash,
                size: blob.size,
                mode: 0o644,
            });
            continue;
        }
        let meta = fs::metadata(&p).map_err(|_| format!("output-missing:{name}"))?;
        let blob = w
            .store
            .put_blob_from_path_as(&p, *exec_bit)
            .map_err(|e| format!("store:{}", e.kind()))?;
        memo::remember_output(&w.store, &p, &blob.hash);
        let mode = kache_platform::file_mode(&meta) | if *exec_bit { 0o111 } else { 0 };
        bytes += blob.size;
        outputs.push(OutputFile {
            name: name.clone(),
            blob: blob.hash,
            size: blob.size,
            mode,
        });
    }
    let entry = Entry {
        outputs,
        exit_status: 0,
        stdout: cap.stdout.clone(),
        stderr: roots.tokenize(&stderr).into_bytes(),
        meta: serde_json::json!({ "crate": inv.crate_name, "groups": groups }),
    };
    w.store
        .put_entry(&result_key, &entry)
        .map_err(|e| format!("store:{}", e.kind()))?;

    let mut manifest = w
        .store
        .get_manifest(direct)
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .unwrap_or_default();
    let rec = Record {
        files,
        env,
        result: result_key,
    };
    manifest.records.retain(|r| r != &rec);
    manifest.records.insert(0, rec);
    manifest.records.truncate(MANIFEST_RECORDS);
    let bytes_json = serde_json::to_vec(&manifest).map_err(|_| "manifest-encode")?;
    w.store
        .put_manifest(direct, &bytes_json)
        .map_err(|e| format!("store:{}", e.kind()))?;
    crate::remote::queue_upload(w, Some(direct), &entry_key_for_upload(&manifest));
    dedup_into_mount(w, &entry, out_dir, roots);
    crate::gc::maybe_collect(w, bytes);
    Ok(bytes)
}

/// The placements for an entry's outputs in a mounted target (`rel`: the
/// out-dir below the mount root): every output but dep-info, which is
/// rewritten for the worktree and written as a plain file.
fn mount_placements<'a>(entry: &'a Entry, rel: &Path) -> Vec<crate::mount::ToPlace<'a>> {
    entry
        .outputs
        .iter()
        .filter(|o| !o.name.ends_with(".d"))
        .map(|o| crate::mount::ToPlace {
            path: rel.join(&o.name),
            blob: &o.blob,
            size: o.size,
            mode: o.mode,
        })
        .collect()
}

/// In a kache-mounted target, what rustc just wrote sits in the mount's
/// upper directory while the same bytes are now blobs: replace those files
/// by placements so a miss costs the disk once, not twice. Measured on the
/// fixture workspace before this existed: a cold mounted build left 25.3 MB
/// in the upper directory, 100% of it identical to store blobs. Readers that
/// already opened an output (cargo pipelining) keep the old inode; new opens
/// see the same bytes through the placement. Best effort: on failure the
/// files simply stay in the upper directory.
fn dedup_into_mount(w: &mut Wrapper, entry: &Entry, out_dir: &Path, roots: &Roots) {
    let Some(root) = roots
        .target
        .as_deref()
        .map(Path::new)
        .filter(|t| kache_fs::is_kache_mount(t))
    else {
        return;
    };
    let Ok(rel) = out_dir.strip_prefix(root) else {
        return;
    };
    let outs = mount_placements(entry, rel);
    // Placement stamps "now"; put back the times rustc gave the files, or a
    // dependent that already compiled against the rmeta (pipelining) would
    // look older than its dependency to cargo's next freshness check.
    let times: Vec<Option<SystemTime>> = outs
        .iter()
        .map(|o| {
            fs::metadata(root.join(&o.path))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect();
    match crate::mount::place_outputs(root, &outs) {
        Ok(bytes) => {
            w.count("mount.deduplicated_bytes", bytes);
            for (o, t) in outs.iter().zip(times) {
                let reset = t.and_then(|t| {
                    fs::File::open(root.join(&o.path))
                        .and_then(|f| f.set_modified(t))
                        .ok()
                });
                if reset.is_none() {
                    w.count("mount.dedup_errors", 1);
                }
            }
        }
        Err(_) => w.count("mount.dedup_errors", 1),
    }
}

fn entry_key_for_upload(m: &Manifest) -> String {
    m.records
        .first()
        .map(|r| r.result.clone())
        .unwrap_or_default()
}

fn every_use_is_include(sources: &[PathBuf], var: &str) -> bool {
    let mut uses = 0;
    let mut includes = 0;
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
