//! Strict inference: the inputs of a Rust compile that dep-info does not
//! name, found without an input recorder (on platforms or with tools it
//! cannot watch, or with `cache.observe = "off"`).
//!
//! - A linked output (bin, test harness, cdylib, dylib, proc-macro) reads
//!   its whole link closure. rustc prints the linker's command line
//!   (`--print link-args=FILE`); every file it names is keyed by content
//!   (each rlib of the dependency graph, objects and archives, linker
//!   scripts, the linker program), and every `-l` library is resolved the
//!   way the linker resolves it: found in a `-L` directory, it is keyed by
//!   content, and each candidate it passed over in earlier directories is
//!   keyed as absent; not found there (a system library), every candidate
//!   in every `-L` directory is keyed as absent.
//! - A crate that archives native code (an rlib bundles the static
//!   libraries its crate links, named by `-l static=` or by
//!   `#[link(kind = "static")]` in its source, which is not visible before
//!   compiling) keys every archive of its `-L native=`/`-L all=`
//!   directories.
//! - A static library copies every rlib of the dependency graph: with no
//!   linker line to say which, every rlib of its `-L dependency=`
//!   directories is keyed (a superset).
//!
//! What lies in rustc's sysroot is the compiler's identity, not an input;
//! rustc's temporary files and the compile's own outputs are not inputs
//! either. A named input that cannot be keyed means the result is not
//! stored. Must never: key a file written during the compile as an input
//! (that is refused: it was an output), or pass over a library candidate
//! without keying it as absent.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kache_wrapper::rustc::key::Roots;
use kache_wrapper::rustc::link::{self, LinkInputs};

use super::outcome::NotStored;
use crate::path_search;
use crate::store::{memo, Store};

/// Where a compile ran and what it may not count as an input.
pub struct Scope<'a> {
    pub cwd: &'a Path,
    pub roots: &'a Roots,
    /// rustc's sysroot: covered by the compiler's identity.
    pub sysroot: &'a Path,
    /// The compile's output directory (rustc's temporaries live below it).
    pub out_dir: &'a Path,
    /// The files this compile writes.
    pub outputs: &'a [PathBuf],
    /// `crate_name + extra_filename`: rustc's intermediate objects start
    /// with it.
    pub stem: &'a str,
    /// When the compile started: a file changed since was written by it.
    pub started: SystemTime,
    /// Directories holding a cache of the compiler's, not inputs (the
    /// incremental directory it keeps).
    pub not_inputs: &'a [PathBuf],
}

/// Inputs found by strict inference, in the form a manifest record holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub files: Vec<(String, String, u64)>,
    pub absent: Vec<String>,
}

impl Found {
    fn absent(&mut self, s: &Scope, p: &Path) {
        let shown = shown(s, p);
        if !self.absent.contains(&shown) {
            self.absent.push(shown);
        }
    }

    /// Keys the file at `p` by content, unless it is the toolchain's.
    fn file(&mut self, store: &Store, s: &Scope, p: &Path) -> Result<(), NotStored> {
        if p.starts_with(s.sysroot) {
            return Ok(());
        }
        let meta = fs::metadata(p).map_err(|_| NotStored::LinkInputUnknown)?;
        if meta.modified().is_ok_and(|m| m > s.started) {
            return Err(NotStored::InputModifiedDuringCompile);
        }
        let (h, size) = memo::file_digest(store, p).map_err(|_| NotStored::InputUnreadable)?;
        let shown = shown(s, p);
        if !self.files.iter().any(|(f, _, _)| f == &shown) {
            self.files.push((shown, h, size));
        }
        Ok(())
    }
}

/// A path as a record holds it: worktree roots as tokens.
fn shown(s: &Scope, p: &Path) -> String {
    s.roots.tokenize(&p.to_string_lossy())
}

/// True for a directory rustc made for one compile (`rustcXXXXXX`, in the
/// output directory or the system's temporary one) or anything below it.
fn is_rustc_temp(s: &Scope, p: &Path) -> bool {
    let tmp = std::env::temp_dir();
    p.ancestors().any(|a| {
        let named = a.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
            n.len() == 11
                && n.starts_with("rustc")
                && n[5..].bytes().all(|b| b.is_ascii_alphanumeric())
        });
        named && a.parent().is_some_and(|d| d == s.out_dir || d == tmp)
    })
}

/// True for rustc's own intermediate object of this compile
/// (`<stem>.<cgu>.rcgu.o` and the like next to the outputs).
fn is_intermediate(s: &Scope, p: &Path) -> bool {
    p.parent() == Some(s.out_dir)
        && p.file_name()
            .map(|n| n.to_string_lossy())
            .is_some_and(|n| n.starts_with(&format!("{}.", s.stem)) && n.ends_with(".o"))
}

/// The inputs of a link, from the command line rustc printed.
pub fn link_closure(store: &Store, s: &Scope, printed: &str) -> Result<Found, NotStored> {
    let line = link::parse_link_line(printed).ok_or(NotStored::LinkLineUnknown)?;
    let li = link::link_inputs(&line).map_err(|_| NotStored::LinkLineUnknown)?;
    let mut found = Found::default();
    let abs = |p: &str| s.cwd.join(p);

    let program = match line.program.contains('/') {
        true => Some(abs(&line.program)),
        false => path_search::which(&line.program),
    };
    found.file(store, s, &program.ok_or(NotStored::LinkInputUnknown)?)?;
    linker_choice(store, s, &li, &mut found)?;

    let output = li.output.as_deref().map(abs);
    for p in li.paths.iter().map(|p| abs(p)) {
        if Some(&p) == output.as_ref() || s.outputs.contains(&p) {
            continue;
        }
        // Objects of the incremental session are this compile's own work
        // (made now, or reused as rustc would make them). rustc 1.95 links
        // copies next to the outputs (temporaries, below), but a link line
        // naming the session directory must not make them inputs.
        if s.not_inputs.iter().any(|d| p.starts_with(d)) {
            continue;
        }
        if !p.exists() {
            // Gone after the link: rustc's temporaries are; nothing else
            // the link read may be.
            if is_rustc_temp(s, &p) || is_intermediate(s, &p) {
                continue;
            }
            return Err(NotStored::LinkInputUnknown);
        }
        if p.is_file() {
            found.file(store, s, &p)?;
        }
    }

    let dirs: Vec<PathBuf> = li
        .search_dirs
        .iter()
        .map(|d| abs(d))
        .filter(|d| !is_rustc_temp(s, d))
        .collect();
    for lib in &li.libs {
        let candidates = lib.candidates();
        'dirs: for d in &dirs {
            for c in &candidates {
                let p = d.join(c);
                if p.is_file() {
                    found.file(store, s, &p)?;
                    break 'dirs;
                }
                if !d.starts_with(s.sysroot) {
                    found.absent(s, &p);
                }
            }
        }
    }
    Ok(found)
}

/// The programs the compiler driver runs to link: `-B` directories must be
/// the toolchain's, and a `-fuse-ld=` linker is keyed by content unless the
/// toolchain provides it.
fn linker_choice(
    store: &Store,
    s: &Scope,
    li: &LinkInputs,
    found: &mut Found,
) -> Result<(), NotStored> {
    let dirs: Vec<PathBuf> = li.program_dirs.iter().map(|d| s.cwd.join(d)).collect();
    if dirs.iter().any(|d| !d.starts_with(s.sysroot)) {
        return Err(NotStored::LinkInputUnknown);
    }
    for ld in &li.use_ld {
        if ld.contains('/') {
            found.file(store, s, &s.cwd.join(ld))?;
            continue;
        }
        let name = format!("ld.{ld}");
        if dirs.iter().any(|d| d.join(&name).is_file()) {
            continue;
        }
        let bin = path_search::which(&name).ok_or(NotStored::LinkInputUnknown)?;
        found.file(store, s, &bin)?;
    }
    Ok(())
}

/// Every file of `dirs` (relative to the call's directory) whose name
/// `wanted` accepts, keyed by content, in a stable order. A directory that
/// does not exist holds nothing. `skip_new`: files changed since the
/// compile began are left out instead of refused (a concurrent compile's
/// outputs in a shared directory).
pub fn files_in(
    store: &Store,
    s: &Scope,
    dirs: &[String],
    wanted: impl Fn(&str) -> bool,
    skip_new: bool,
) -> Result<Found, NotStored> {
    let mut found = Found::default();
    for d in dirs {
        let d = s.cwd.join(d);
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
            .filter(|e| wanted(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| !s.outputs.contains(p))
            .collect();
        names.sort();
        for p in names {
            let new = fs::metadata(&p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > s.started);
            if skip_new && new {
                continue;
            }
            found.file(store, s, &p)?;
        }
    }
    Ok(found)
}

/// True for a file name rustc may bundle into an rlib as a static library.
pub fn is_archive(name: &str) -> bool {
    name.ends_with(".a") || name.ends_with(".lib")
}

/// True for an rlib.
pub fn is_rlib(name: &str) -> bool {
    name.ends_with(".rlib")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        store: Store,
        roots: Roots,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let store = Store::open(&root.join("store")).unwrap();
        let ws = root.join("ws").to_string_lossy().into_owned();
        let roots = Roots::new(Some(ws.clone()), Some(format!("{ws}/target")));
        Fixture {
            _tmp: tmp,
            root,
            store,
            roots,
        }
    }

    fn write(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn libraries_are_keyed_where_found_and_absent_where_passed_over() {
        let f = fixture();
        let ws = f.root.join("ws");
        let out1 = ws.join("target/out1");
        let out2 = ws.join("target/out2");
        fs::create_dir_all(&out1).unwrap();
        write(&out2.join("libfoo.a"), "archive");
        write(&ws.join("target/deps/libmid-1.rlib"), "rlib");
        let sysroot = f.root.join("sysroot");
        let deps = ws.join("target/deps");
        let outputs = [deps.join("app-1")];
        let s = Scope {
            cwd: &ws,
            roots: &f.roots,
            sysroot: &sysroot,
            out_dir: &deps,
            outputs: &outputs,
            stem: "app-1",
            started: SystemTime::now() + std::time::Duration::from_secs(60),
            not_inputs: &[],
        };
        let printed = format!(
            r#"LC_ALL="C" "/bin/sh" "{deps}/rustcAbC123/symbols.o" "{deps}/app-1.x.rcgu.o" "{deps}/libmid-1.rlib" "-Wl,-Bstatic" "-lfoo" "-Wl,-Bdynamic" "-lc" "-L" "{deps}/rustcAbC123/raw-dylibs" "-L" "{o1}" "-L" "{o2}" "-o" "{deps}/app-1""#,
            deps = deps.display(),
            o1 = out1.display(),
            o2 = out2.display()
        );
        let found = link_closure(&f.store, &s, &printed).unwrap();
        let names: Vec<&str> = found.files.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "/bin/sh",
                "@KACHE_TARGET@/deps/libmid-1.rlib",
                "@KACHE_TARGET@/out2/libfoo.a"
            ]
        );
        assert_eq!(
            found.absent,
            vec![
                "@KACHE_TARGET@/out1/libfoo.a",
                "@KACHE_TARGET@/out1/libc.so",
                "@KACHE_TARGET@/out1/libc.a",
                "@KACHE_TARGET@/out2/libc.so",
                "@KACHE_TARGET@/out2/libc.a",
            ]
        );
    }

    #[test]
    fn a_vanished_input_or_a_foreign_program_dir_is_not_stored() {
        let f = fixture();
        let ws = f.root.join("ws");
        let deps = ws.join("target/deps");
        fs::create_dir_all(&deps).unwrap();
        let sysroot = f.root.join("sysroot");
        let s = Scope {
            cwd: &ws,
            roots: &f.roots,
            sysroot: &sysroot,
            out_dir: &deps,
            outputs: &[],
            stem: "app-1",
            started: SystemTime::now() + std::time::Duration::from_secs(60),
            not_inputs: &[],
        };
        let gone = format!(r#""/bin/sh" "{}/libgone.rlib""#, deps.display());
        assert_eq!(
            link_closure(&f.store, &s, &gone),
            Err(NotStored::LinkInputUnknown)
        );
        let foreign = r#""/bin/sh" "-B/opt/other-ld""#;
        assert_eq!(
            link_closure(&f.store, &s, foreign),
            Err(NotStored::LinkInputUnknown)
        );
        assert_eq!(
            link_closure(&f.store, &s, r#""/bin/sh" "@/tmp/args""#),
            Err(NotStored::LinkLineUnknown)
        );
    }

    #[test]
    fn objects_in_the_incremental_dir_are_not_inputs_of_the_link() {
        let f = fixture();
        let ws = f.root.join("ws");
        let deps = ws.join("target/debug/deps");
        let inc = ws.join("target/debug/incremental");
        fs::create_dir_all(&deps).unwrap();
        // A reused object of the finished session is there; the working
        // session directory the link line names was renamed away.
        let reused = inc.join("app-1x/s-old-abc/a.o");
        write(&reused, "object");
        let working = inc.join("app-1x/s-new-working/b.o");
        let sysroot = f.root.join("sysroot");
        let not_inputs = [inc];
        let mut s = Scope {
            cwd: &ws,
            roots: &f.roots,
            sysroot: &sysroot,
            out_dir: &deps,
            outputs: &[],
            stem: "app-1",
            started: SystemTime::now() + std::time::Duration::from_secs(60),
            not_inputs: &not_inputs,
        };
        let printed = format!(
            r#""/bin/sh" "{}" "{}""#,
            reused.display(),
            working.display()
        );
        let found = link_closure(&f.store, &s, &printed).unwrap();
        let names: Vec<&str> = found.files.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(names, vec!["/bin/sh"]);
        // Without the incremental dir declared, the same line is refused.
        s.not_inputs = &[];
        assert_eq!(
            link_closure(&f.store, &s, &printed),
            Err(NotStored::LinkInputUnknown)
        );
    }

    #[test]
    fn a_file_written_during_the_compile_is_refused_as_an_input() {
        let f = fixture();
        let ws = f.root.join("ws");
        let map = ws.join("target/out.map");
        write(&map, "map");
        let sysroot = f.root.join("sysroot");
        let deps = ws.join("target/deps");
        let s = Scope {
            cwd: &ws,
            roots: &f.roots,
            sysroot: &sysroot,
            out_dir: &deps,
            outputs: &[],
            stem: "app-1",
            started: SystemTime::now() - std::time::Duration::from_secs(60),
            not_inputs: &[],
        };
        let printed = format!(r#""/bin/sh" "-Wl,-Map={}""#, map.display());
        assert_eq!(
            link_closure(&f.store, &s, &printed),
            Err(NotStored::InputModifiedDuringCompile)
        );
    }
}
