//! A remote that lies: hostile entries, manifests and blobs on a real S3 server (`s3s-fs`) and
//! in a shared directory. Every object is well formed where a liar would make it so (entries
//! re-encoded with a valid checksum, manifests sealed with a valid trailer), so what refuses
//! them is kache's checking, not a broken checksum.
//!
//! Machine A builds the fixture and uploads it honestly. Then, per variant, one of A's objects is
//! replaced on the remote and a fresh machine B asks for it (`kache remote lookup`): nothing of
//! a hostile object may be imported where import is the last line of defence, and nothing may
//! ever be written outside B's store. Then B builds the fixture against a remote where several
//! variants sit on different units at once: the build succeeds with A's exact outputs, and no
//! hostile unit is served (each is compiled by B).
//!
//! `KACHE_TORTURE_HOSTILE_ROUNDS`: build rounds per backend (default 1: the variants that only
//! a build can judge; `scripts/torture` asks for every variant in builds). The figure line
//! starting `TORTURE hostile` is what `scripts/torture` reads.
#![cfg(unix)] // symlinks, FIFOs and mode bits planted by the hostile remote

mod common;
mod remote_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use kache::store::manifest::FoundBy;
use kache::store::{manifest, Entry, Manifest, OutputFile, Record, Store};
use remote_support::*;

/// Every hostile output name holds this, so an escape is found by walking the sandbox.
const ESCAPE: &str = "kache-escape";

/// One unit of A's build as the remote holds it.
#[derive(Clone, Debug)]
struct Unit {
    name: String,
    /// A Rust unit (else C/C++).
    rust: bool,
    /// The direct key (Rust; C/C++ in direct mode): the manifest naming this unit.
    direct: Option<String>,
    result: String,
    entry: Entry,
}

fn sharded(kind: &str, key: &str) -> String {
    format!("v1/{kind}/{}/{key}", &key[..2])
}

/// The units A's store holds, one per entry, with the manifest naming each (if any).
fn units_of(store: &Path) -> Vec<Unit> {
    let s = Store::open(store).unwrap();
    let mut by_result: BTreeMap<String, Option<String>> = BTreeMap::new();
    for kind in ["entries", "manifests"] {
        for shard in fs::read_dir(store.join(kind)).unwrap().flatten() {
            for f in fs::read_dir(shard.path()).unwrap().flatten() {
                let key = f.file_name().to_string_lossy().into_owned();
                if kind == "entries" {
                    by_result.entry(key).or_insert(None);
                } else if let Ok(m) = s.get_manifest(&key) {
                    for r in &m.records {
                        by_result.insert(r.result.clone(), Some(key.clone()));
                    }
                }
            }
        }
    }
    by_result
        .into_iter()
        .filter_map(|(result, direct)| {
            let entry = s.get_entry(&result).ok()?;
            let name = entry.meta["crate"]
                .as_str()
                .or(entry.meta["source"].as_str())
                .unwrap_or("?")
                .to_string();
            Some(Unit {
                name,
                rust: entry.meta["crate"].is_string(),
                direct,
                result,
                entry,
            })
        })
        .collect()
}

/// What a variant does to the remote, and where kache must stop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Nothing of it may be imported.
    Import,
    /// It may be imported (it is well formed), but a hit must refuse it.
    Serve,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    S3,
    Dir,
}

struct Variant {
    name: &'static str,
    stop: Stop,
    /// Only for units looked up through a manifest (Rust).
    needs_manifest: bool,
    /// Only where objects are files kache's backend reads directly.
    dir_only: bool,
    apply: fn(&Ctx, &Unit),
}

/// Where hostile objects go, and the honest units to borrow from.
struct Ctx {
    /// The layout root (holding `v1/`).
    root: PathBuf,
    units: Vec<Unit>,
    /// A file outside every store and target, that nothing may change.
    sentinel: PathBuf,
}

impl Ctx {
    fn put(&self, rel: &str, bytes: &[u8]) {
        let p = self.root.join(rel);
        let _ = fs::remove_file(&p);
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    fn entry(&self, u: &Unit, e: &Entry) {
        self.put(&sharded("entries", &u.result), &e.encode());
    }

    fn manifest_body(&self, u: &Unit, body: &[u8]) {
        let key = u.direct.as_ref().expect("a manifest unit");
        self.put(&sharded("manifests", key), &manifest::seal(body));
    }

    fn blob_of<'u>(&self, u: &'u Unit) -> &'u OutputFile {
        u.entry.outputs.iter().max_by_key(|o| o.size).unwrap()
    }

    fn other(&self, u: &Unit) -> &Unit {
        let names: BTreeSet<&String> = u.entry.outputs.iter().map(|o| &o.name).collect();
        self.units
            .iter()
            .find(|o| {
                o.direct.is_some()
                    && o.result != u.result
                    && o.entry.outputs.iter().all(|x| !names.contains(&x.name))
            })
            .expect("another rust unit")
    }
}

fn with_outputs(u: &Unit, f: impl Fn(&mut Vec<OutputFile>)) -> Entry {
    let mut e = u.entry.clone();
    f(&mut e.outputs);
    e
}

fn rename_first(u: &Unit, name: &str) -> Entry {
    with_outputs(u, |o| o[0].name = name.to_string())
}

fn variants() -> Vec<Variant> {
    let v = |name, stop, apply| Variant {
        name,
        stop,
        needs_manifest: false,
        dir_only: false,
        apply,
    };
    let m = |name, stop, apply| Variant {
        name,
        stop,
        needs_manifest: true,
        dir_only: false,
        apply,
    };
    let d = |name, stop, apply| Variant {
        name,
        stop,
        needs_manifest: false,
        dir_only: true,
        apply,
    };
    vec![
        v("output name with ..", Stop::Import, |c, u| {
            c.entry(u, &rename_first(u, &format!("../../../{ESCAPE}-dotdot")))
        }),
        v("output name absolute", Stop::Import, |c, u| {
            let abs = std::env::temp_dir().join(format!("{ESCAPE}-abs-{}", std::process::id()));
            c.entry(u, &rename_first(u, &abs.to_string_lossy()))
        }),
        v("output name with a separator", Stop::Import, |c, u| {
            c.entry(u, &rename_first(u, &format!("sub/{ESCAPE}-sep")))
        }),
        v("output name ..", Stop::Import, |c, u| {
            c.entry(u, &rename_first(u, ".."))
        }),
        v("blob name a path", Stop::Import, |c, u| {
            c.entry(
                u,
                &with_outputs(u, |o| o[0].blob = "../../../../etc/passwd".into()),
            )
        }),
        v("output size 1 PiB", Stop::Import, |c, u| {
            c.entry(u, &with_outputs(u, |o| o[0].size = 1 << 50))
        }),
        v("output size understated", Stop::Import, |c, u| {
            let big = c.blob_of(u).blob.clone();
            c.entry(
                u,
                &with_outputs(u, |o| {
                    for x in o.iter_mut().filter(|x| x.blob == big) {
                        x.size /= 2;
                    }
                }),
            )
        }),
        v("setuid output mode", Stop::Import, |c, u| {
            c.entry(
                u,
                &with_outputs(u, |o| o.iter_mut().for_each(|x| x.mode |= 0o6000)),
            )
        }),
        v("unreadable output mode", Stop::Import, |c, u| {
            c.entry(
                u,
                &with_outputs(u, |o| o.iter_mut().for_each(|x| x.mode = 0o000)),
            )
        }),
        v("blob bytes do not match its name", Stop::Import, |c, u| {
            let b = c.blob_of(u);
            let mut bytes = vec![0x5a; b.size as usize];
            bytes[0] = 1;
            c.put(&sharded("blobs", &b.blob), &bytes);
        }),
        v("blob truncated", Stop::Import, |c, u| {
            let b = c.blob_of(u);
            let p = c.root.join(sharded("blobs", &b.blob));
            let bytes = fs::read(&p).unwrap();
            c.put(&sharded("blobs", &b.blob), &bytes[..bytes.len() / 2]);
        }),
        v("blob longer than stated", Stop::Import, |c, u| {
            let b = c.blob_of(u);
            let p = c.root.join(sharded("blobs", &b.blob));
            let mut bytes = fs::read(&p).unwrap();
            bytes.extend_from_slice(b"trailing");
            c.put(&sharded("blobs", &b.blob), &bytes);
        }),
        v("entry truncated", Stop::Import, |c, u| {
            let bytes = u.entry.encode();
            c.put(
                &sharded("entries", &u.result),
                &bytes[..bytes.len() * 2 / 3],
            );
        }),
        v("entry of another schema", Stop::Import, |c, u| {
            // A future format: its own magic, a valid checksum over it.
            let mut bytes = u.entry.encode();
            bytes.truncate(bytes.len() - 32);
            let body =
                String::from_utf8_lossy(&bytes).replacen("KACHE-ENTRY 1", "KACHE-ENTRY 2", 1);
            let mut b = body.into_bytes();
            let sum = blake3::hash(&b);
            b.extend_from_slice(sum.as_bytes());
            c.put(&sharded("entries", &u.result), &b);
        }),
        v("entry header of another shape", Stop::Import, |c, u| {
            let json = serde_json::json!({"outputs": {"x": 1}, "stdout_len": 0, "stderr_len": 0})
                .to_string();
            let mut b = format!("KACHE-ENTRY 1\n{}\n{json}", json.len()).into_bytes();
            let sum = blake3::hash(&b);
            b.extend_from_slice(sum.as_bytes());
            c.put(&sharded("entries", &u.result), &b);
        }),
        v("entry with an extra output", Stop::Serve, |c, u| {
            let extra = c.blob_of(u).clone();
            c.entry(
                u,
                &with_outputs(u, |o| {
                    o.push(OutputFile {
                        name: format!("{ESCAPE}-extra"),
                        ..extra.clone()
                    })
                }),
            )
        }),
        v(
            "entry whose outputs belong to another unit",
            Stop::Serve,
            |c, u| c.entry(u, &c.other(u).entry),
        ),
        m(
            "manifest record naming a path result",
            Stop::Import,
            |c, u| {
                let body = serde_json::json!({"records": [
                    {"files": [], "env": [], "result": format!("../../{ESCAPE}-result")}
                ]});
                c.manifest_body(u, body.to_string().as_bytes())
            },
        ),
        m(
            "manifest record with no inputs naming another unit",
            Stop::Serve,
            |c, u| {
                let other = c.other(u);
                let m = Manifest {
                    records: vec![Record {
                        result: other.result.clone(),
                        ..Record::default()
                    }],
                };
                c.manifest_body(u, &m.encode())
            },
        ),
        m(
            "manifest record reading files outside the worktree",
            Stop::Serve,
            |c, u| {
                // Inputs by absolute and climbing paths, with hashes that cannot match: a lookup
                // reads them (it must), and nothing may be written there.
                let other = c.other(u);
                let m = Manifest {
                    records: vec![Record {
                        files: vec![
                            (
                                c.sentinel.to_string_lossy().into_owned(),
                                "00".repeat(32),
                                1,
                            ),
                            ("../../../../../../etc/hostname".into(), "11".repeat(32), 1),
                        ],
                        env: vec![],
                        // Paths that must be absent, outside the worktree and climbing out.
                        absent: vec![format!("../../../{ESCAPE}-absent"), "/etc/hostname".into()],
                        result: other.result.clone(),
                        ..Record::default()
                    }],
                };
                c.manifest_body(u, &m.encode())
            },
        ),
        m(
            "observed record naming paths outside the worktree as present, listed, linked",
            Stop::Serve,
            |c, u| {
                // What a recorder's record holds besides files: existence checks, directory
                // listings and resolved links, all climbing out or absolute. A lookup may look at
                // them (it must), and nothing may be created there.
                let other = c.other(u);
                let m = Manifest {
                    records: vec![Record {
                        present: vec![format!("../../../{ESCAPE}-present"), "/etc".into()],
                        listed: vec![
                            ("/etc".into(), "22".repeat(32)),
                            (format!("../../../{ESCAPE}-listed"), "33".repeat(32)),
                        ],
                        links: vec![(format!("../../../{ESCAPE}-link"), "/etc/hostname".into())],
                        found_by: FoundBy::Observed,
                        result: other.result.clone(),
                        ..Record::default()
                    }],
                };
                c.manifest_body(u, &m.encode())
            },
        ),
        m(
            "manifest record claiming to be path-local",
            Stop::Import,
            |c, u| {
                // Path-local records never travel; one on a remote is a lie about this machine.
                let m = Manifest {
                    records: vec![Record {
                        local: vec![("ws".into(), "/".into())],
                        result: u.result.clone(),
                        ..Record::default()
                    }],
                };
                c.manifest_body(u, &m.encode())
            },
        ),
        m("manifest of another schema", Stop::Import, |c, u| {
            let body = serde_json::json!({"version": 2, "recs": [{"result": u.result}]});
            c.manifest_body(u, body.to_string().as_bytes())
        }),
        m("manifest truncated", Stop::Import, |c, u| {
            let key = u.direct.as_ref().unwrap();
            let p = c.root.join(sharded("manifests", key));
            let bytes = fs::read(&p).unwrap();
            c.put(&sharded("manifests", key), &bytes[..bytes.len() - 7]);
        }),
        m("manifest larger than allowed", Stop::Import, |c, u| {
            let pad = "x".repeat(17 << 20);
            let body = serde_json::json!({"records": [], "pad": pad});
            c.manifest_body(u, body.to_string().as_bytes())
        }),
        d("blob a symlink to a file outside", Stop::Import, |c, u| {
            let b = c.blob_of(u);
            let p = c.root.join(sharded("blobs", &b.blob));
            let _ = fs::remove_file(&p);
            std::os::unix::fs::symlink(&c.sentinel, &p).unwrap();
        }),
        d(
            "entry a symlink to another unit's entry",
            Stop::Serve,
            |c, u| {
                let p = c.root.join(sharded("entries", &u.result));
                let other = c.root.join(sharded("entries", &c.other(u).result));
                let _ = fs::remove_file(&p);
                std::os::unix::fs::symlink(other, &p).unwrap();
            },
        ),
        d("blob a directory", Stop::Import, |c, u| {
            let b = c.blob_of(u);
            let p = c.root.join(sharded("blobs", &b.blob));
            let _ = fs::remove_file(&p);
            fs::create_dir_all(p.join(ESCAPE)).unwrap();
        }),
        d(
            "manifest a FIFO that never answers",
            Stop::Import,
            |c, u| {
                let p = c
                    .root
                    .join(sharded("manifests", u.direct.as_ref().unwrap()));
                let _ = fs::remove_file(&p);
                let c_path = std::ffi::CString::new(p.to_string_lossy().as_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
            },
        ),
    ]
    .into_iter()
    .map(|mut x| {
        if x.name.starts_with("manifest a FIFO") {
            x.needs_manifest = true;
        }
        x
    })
    .collect()
}

/// Copies the honest objects (every regular file) from `from` to `to`.
fn copy_objects(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    copy_dir(from, to);
}

/// Every path under `dir` whose name holds [`ESCAPE`].
fn escapes(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            // The remotes' own directories hold what the variants put there.
            let in_remote = p.components().any(|c| c.as_os_str() == "remote");
            if e.file_name().to_string_lossy().contains(ESCAPE) && !in_remote {
                found.push(p.clone());
            }
            if is_dir && !e.file_type().unwrap().is_symlink() {
                stack.push(p);
            }
        }
    }
    found
}

fn absolute_escape() -> PathBuf {
    std::env::temp_dir().join(format!("{ESCAPE}-abs-{}", std::process::id()))
}

struct Sandbox {
    tmp: PathBuf,
    a: PathBuf,
    app_output: String,
    units: Vec<Unit>,
    /// Honest objects as A uploaded them.
    honest: PathBuf,
    sentinel: PathBuf,
    sentinel_bytes: Vec<u8>,
}

/// Figures of one backend.
#[derive(Default, Debug)]
struct Figures {
    variants: u64,
    lookups: u64,
    imported_when_refusal_due: Vec<String>,
    builds: u64,
    build_failures: Vec<String>,
    served: Vec<String>,
    escaped: Vec<String>,
    slow: Vec<String>,
}

fn lookup(store: &Path, remote: &Remote, u: &Unit) -> (String, Duration) {
    let mut c = kache(store, remote, &["remote", "lookup"]);
    match &u.direct {
        Some(d) => c.arg(d),
        None => c.args(["--entry", &u.result]),
    };
    c.env("KACHE_REMOTE_TIMEOUT_MS", "1500");
    let t = Instant::now();
    let out = c.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        format!(
            "{} {}",
            v["outcome"].as_str().unwrap_or("?"),
            v["reason"].as_str().unwrap_or("")
        ),
        t.elapsed(),
    )
}

/// Units whose B build events are hits.
fn hit_units(store: &Path) -> BTreeSet<String> {
    kache::events::read(store)
        .into_iter()
        .filter(|e| e.outcome == "hit")
        .filter_map(|e| e.unit)
        .collect()
}

fn run_backend(sb: &Sandbox, backend: Backend, rounds: usize) -> Figures {
    let mut f = Figures::default();
    let base = sb.tmp.join(format!("{backend:?}"));
    fs::create_dir_all(&base).unwrap();
    let server;
    let (remote, root) = match backend {
        Backend::S3 => {
            server = S3Server::start(&base.join("remote")).unwrap();
            (Remote::s3(&server), server.objects_dir())
        }
        Backend::Dir => {
            let root = base.join("remote/dir");
            (Remote::Dir(root.clone()), root)
        }
    };
    let ctx = Ctx {
        root: root.clone(),
        units: sb.units.clone(),
        sentinel: sb.sentinel.clone(),
    };
    let all: Vec<Variant> = variants()
        .into_iter()
        .filter(|v| backend == Backend::Dir || !v.dir_only)
        .collect();
    // Victims have a unit name no other unit has (every build script is
    // `build_script_build`), so a hit is told apart by name.
    let unique = |u: &&Unit| sb.units.iter().filter(|o| o.name == u.name).count() == 1;
    let with_manifest: Vec<&Unit> = sb
        .units
        .iter()
        .filter(|u| u.direct.is_some())
        .filter(unique)
        .collect();
    // Build victims are Rust units: a C/C++ unit in direct mode has a second way to its entry
    // (the key ahead, from the preprocessed source), so a hit on one whose manifest is hostile
    // is the honest entry (the build's bytes are compared with A's all the same); and its
    // outputs are named by role, so another unit's well-formed entry fits it. Trusting a
    // remote's well-formed entries is the remote's contract; what the builds test is that
    // nothing of a hostile object is used.
    let rust: Vec<&Unit> = with_manifest.iter().copied().filter(|u| u.rust).collect();
    let any: Vec<&Unit> = sb.units.iter().collect();

    // Each variant alone, looked up by a fresh B.
    for (i, v) in all.iter().enumerate() {
        f.variants += 1;
        copy_objects(&sb.honest, &root);
        let pool = if v.needs_manifest {
            &with_manifest
        } else {
            &any
        };
        let u = pool[i % pool.len()];
        (v.apply)(&ctx, u);
        let store = base.join(format!("lookup-{i}"));
        let (outcome, took) = lookup(&store, &remote, u);
        f.lookups += 1;
        if v.stop == Stop::Import && outcome.starts_with("imported") {
            f.imported_when_refusal_due
                .push(format!("{}: {outcome}", v.name));
        }
        if took > Duration::from_secs(6) {
            f.slow.push(format!("{}: {took:?}", v.name));
        }
        for e in escapes(&sb.tmp) {
            f.escaped.push(format!("{}: {}", v.name, e.display()));
        }
        let _ = fs::remove_dir_all(&store);
    }

    // Builds: variants spread over distinct units, as many at once as there are units.
    let in_builds: Vec<&Variant> = match rounds {
        0 => vec![],
        1 => all.iter().filter(|v| v.stop == Stop::Serve).collect(),
        _ => all.iter().collect(),
    };
    let per_build = (rust.len() / 2).max(1);
    for (round, chunk) in in_builds.chunks(per_build).enumerate() {
        copy_objects(&sb.honest, &root);
        let mut hostile: BTreeMap<String, &str> = BTreeMap::new();
        // A unit another variant borrows from stays honest.
        let mut free: Vec<&Unit> = rust.clone();
        for v in chunk {
            let u = free.pop().expect("a free unit");
            let borrowed = ctx.other(u).result.clone();
            free.retain(|x| x.result != borrowed);
            (v.apply)(&ctx, u);
            hostile.insert(u.name.clone(), v.name);
        }
        let b = fixture_at(&base.join(format!("b{round}/checkout")));
        let store = base.join(format!("b{round}/store"));
        // A symlink where an output goes, pointing outside: a restore must replace the
        // link, never write through it.
        let deps = b.join("target/debug/deps");
        fs::create_dir_all(&deps).unwrap();
        if let Some(out) = rust
            .first()
            .and_then(|u| u.entry.outputs.iter().find(|o| o.name.ends_with(".rlib")))
        {
            std::os::unix::fs::symlink(&sb.sentinel, deps.join(&out.name)).unwrap();
        }
        f.builds += 1;
        let out = cargo_remote(&b, &store, &remote, &[("KACHE_REMOTE_TIMEOUT_MS", "1500")])
            .output()
            .unwrap();
        if !out.status.success() {
            f.build_failures.push(format!(
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            continue;
        }
        if run_app(&b, "debug") != sb.app_output {
            f.build_failures
                .push(format!("round {round}: the app prints something else"));
        }
        let (oa, ob) = (
            remote_support::deps_outputs(&sb.a),
            remote_support::deps_outputs(&b),
        );
        for (name, bytes) in &oa {
            if ob.get(name) != Some(bytes) {
                f.build_failures
                    .push(format!("round {round}: {name} differs from A's"));
            }
        }
        let hits = hit_units(&store);
        for (unit, variant) in &hostile {
            if hits.contains(unit) {
                f.served.push(format!("{variant} (unit {unit})"));
            }
        }
        for e in escapes(&sb.tmp) {
            f.escaped.push(format!("round {round}: {}", e.display()));
        }
    }
    if fs::read(&sb.sentinel).unwrap() != sb.sentinel_bytes {
        f.escaped
            .push("the sentinel outside every store was written".into());
    }
    if absolute_escape().exists() {
        f.escaped.push(absolute_escape().display().to_string());
    }
    f
}

#[test]
fn hostile_remote_objects_are_never_imported_served_or_written_outside_the_store() {
    let rounds: usize = std::env::var("KACHE_TORTURE_HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_path_buf();
    // Machine A: honest build and upload through a shared directory.
    let honest = tmp_path.join("remote/honest");
    let a = fixture_at(&tmp_path.join("a/proj"));
    let store_a = tmp_path.join("a/store");
    machine_a_builds_and_uploads(&a, &store_a, &Remote::Dir(honest.clone()));
    let sentinel = tmp_path.join("sentinel.txt");
    let sentinel_bytes = b"nothing may write here\n".to_vec();
    fs::write(&sentinel, &sentinel_bytes).unwrap();
    fs::set_permissions(&sentinel, fs::Permissions::from_mode(0o644)).unwrap();
    let sb = Sandbox {
        tmp: tmp_path.clone(),
        app_output: run_app(&a, "debug"),
        units: units_of(&store_a),
        a,
        honest,
        sentinel,
        sentinel_bytes,
    };
    assert!(
        sb.units
            .iter()
            .filter(|u| u.rust && u.direct.is_some())
            .count()
            >= 6,
        "{:?}",
        sb.units.len()
    );

    let t = Instant::now();
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for backend in [Backend::Dir, Backend::S3] {
        let f = run_backend(&sb, backend, rounds);
        lines.push(format!(
            "TORTURE hostile backend={backend:?} variants={} lookups={} builds={} \
             imported={} build_failures={} served={} escaped={} slow={}",
            f.variants,
            f.lookups,
            f.builds,
            f.imported_when_refusal_due.len(),
            f.build_failures.len(),
            f.served.len(),
            f.escaped.len(),
            f.slow.len()
        ));
        for (what, xs) in [
            ("imported", &f.imported_when_refusal_due),
            ("build failed", &f.build_failures),
            ("served", &f.served),
            ("written outside", &f.escaped),
            ("lookup over its budget", &f.slow),
        ] {
            for x in xs {
                failures.push(format!("{backend:?} {what}: {x}"));
            }
        }
    }
    for l in &lines {
        println!("{l}");
    }
    println!("hostile remote runs took {:?}", t.elapsed());
    let _ = fs::remove_file(absolute_escape());
    assert!(failures.is_empty(), "{failures:#?}");
}
