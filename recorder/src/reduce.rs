//! From a log to the inputs of one compile: what was read, looked up, listed, executed, and
//! which variables were read, minus what the compile made itself and what the caller says is
//! covered elsewhere. Also decides whether the recording is complete: anything the recorder
//! could not see makes the result an `Incomplete`, which the caller must not cache.
//!
//! This module never touches the filesystem: it works on the log alone, so its result is
//! what the compile saw, not what is on disk now.

use crate::env_table;
use crate::log::{self, Record};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// What a compile was observed to depend on. Paths are absolute and lexically normalized
/// (`.` and repeated slashes removed); `..` is kept, since folding it is only correct when
/// the component before it is not a symbolic link, and looking the path up again as written
/// gives the kernel's own answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedInputs {
    /// Files opened for reading (and shared libraries mapped) that the compile did not make.
    pub files_read: BTreeSet<PathBuf>,
    /// Paths looked up and found but never read (stat, access, directories opened): their
    /// existence (and type) is an input.
    pub paths_present: BTreeSet<PathBuf>,
    /// Paths looked up and not found: an input too (a module candidate, a header earlier on
    /// the include path, a library earlier on the search path must stay absent).
    pub paths_absent: BTreeSet<PathBuf>,
    /// Directories whose listing was read.
    pub dirs_listed: BTreeSet<PathBuf>,
    /// Symbolic links read (`readlink`) and paths canonicalized (`realpath`): the path and
    /// what it resolved to.
    pub links: BTreeMap<PathBuf, PathBuf>,
    /// Environment variables the compile read, with the value it was given (`None`: unset).
    /// Variables a process of the compile set for its own children are not here (they derive
    /// from other inputs); neither are the rows `env_table` ignores. The variables glibc reads
    /// invisibly (`env_table`'s `AlwaysKey` rows) are always here, and the program search path
    /// (`KeyWhenProgramsRun`) whenever a program was started or looked for.
    pub env: BTreeMap<OsString, Option<OsString>>,
    /// Programs started: the paths exec was given and the executables that reported in.
    pub programs: BTreeSet<PathBuf>,
    /// Size of the log: records and processes that loaded the recorder.
    pub records: usize,
    pub processes: usize,
}

/// Something the recorder could not observe. Any of these makes a recording incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The process the session started never loaded the recorder (a static or set-ID
    /// compiler, or one whose loader ignored `LD_PRELOAD`).
    RootNotObserved,
    /// The root process's environment could not be recorded.
    RootEnvironmentUnknown,
    /// A statically linked program ran: the recorder cannot load into it.
    StaticProgram(PathBuf),
    /// A set-user/group-ID program or one with file capabilities ran: the loader ignores
    /// `LD_PRELOAD` for it.
    PrivilegedProgram(PathBuf),
    /// A program of another ELF class, machine or C library ran: it cannot load the recorder.
    ForeignProgram(PathBuf),
    /// A Go program ran: it makes its own system calls, which no libc hook sees.
    GoProgram(PathBuf),
    /// A program was started without `LD_PRELOAD` in its environment.
    PreloadStripped(PathBuf),
    /// A program was started recording into another log (a nested recorder).
    OtherRecorder(PathBuf),
    /// A program was started and never reported in (its loader did not load the recorder).
    NotObserved(PathBuf),
    /// A relative path was used where the directory it was relative to could not be read.
    UnknownDirectory(OsString),
    /// A file was read and later overwritten by the compile: what it held is gone.
    InputOverwritten(PathBuf),
    /// The same path was seen both present and absent (or resolving two ways) without the
    /// compile making it: something else changed it during the compile.
    ChangedDuringCompile(PathBuf),
    /// A library was loaded by bare name, through the loader's own search.
    LibraryByName(OsString),
    /// A signal handler called a hooked function while its thread was inside the recorder:
    /// that call went unrecorded.
    Reentered,
    /// The log holds a torn or truncated record at this byte offset.
    Malformed(usize),
    /// The log could not be read.
    LogUnreadable(String),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::RootNotObserved => write!(f, "the compiler did not load the recorder"),
            Lost::RootEnvironmentUnknown => {
                write!(f, "the compiler's environment was not recorded")
            }
            Lost::StaticProgram(p) => write!(f, "statically linked program {}", p.display()),
            Lost::PrivilegedProgram(p) => write!(f, "set-ID program {}", p.display()),
            Lost::ForeignProgram(p) => write!(f, "program of another platform {}", p.display()),
            Lost::GoProgram(p) => write!(f, "Go program {}", p.display()),
            Lost::PreloadStripped(p) => write!(f, "{} started without LD_PRELOAD", p.display()),
            Lost::OtherRecorder(p) => write!(f, "{} started under another recorder", p.display()),
            Lost::NotObserved(p) => write!(f, "{} never loaded the recorder", p.display()),
            Lost::UnknownDirectory(p) => {
                write!(
                    f,
                    "relative path {} in an unknown directory",
                    p.to_string_lossy()
                )
            }
            Lost::InputOverwritten(p) => {
                write!(f, "input {} overwritten by the compile", p.display())
            }
            Lost::ChangedDuringCompile(p) => {
                write!(f, "{} changed during the compile", p.display())
            }
            Lost::LibraryByName(n) => write!(f, "library {} loaded by name", n.to_string_lossy()),
            Lost::Reentered => write!(f, "a call from a signal handler went unrecorded"),
            Lost::Malformed(at) => write!(f, "torn record at byte {at} of the log"),
            Lost::LogUnreadable(e) => write!(f, "log unreadable: {e}"),
        }
    }
}

/// A recording that missed something. `observed` is what was seen anyway (for diagnostics);
/// it must not be used as a key.
#[derive(Debug, Clone)]
pub struct Incomplete {
    pub reasons: Vec<Lost>,
    pub observed: Box<ObservedInputs>,
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input recording incomplete")?;
        if let Some(first) = self.reasons.first() {
            write!(f, ": {first}")?;
        }
        if self.reasons.len() > 1 {
            write!(f, " (and {} more)", self.reasons.len() - 1)?;
        }
        Ok(())
    }
}

impl std::error::Error for Incomplete {}

/// Paths the caller accounts for otherwise and wants left out: the toolchain's sysroot and
/// the linker's own files (covered by the compiler identity), pseudo-filesystems. A path is
/// dropped when it is a root or lies below one (by components, as recorded).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    roots: Vec<Norm>,
    /// (another spelling, the spelling to use): a directory reached through
    /// a symbolic link is one directory, whichever way a process names it.
    aliases: Vec<(Norm, Norm)>,
}

/// Kernel pseudo-filesystems: their files describe the running system, not sources.
pub const PSEUDO_FILESYSTEMS: &[&str] = &["/proc", "/sys", "/dev"];

impl Filter {
    /// A filter that drops nothing.
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Drops `/proc`, `/sys` and `/dev`.
    pub fn pseudo_filesystems() -> Filter {
        let mut f = Filter::new();
        for r in PSEUDO_FILESYSTEMS {
            f = f.drop_under(r);
        }
        f
    }

    /// Also drops `root` and everything below it.
    pub fn drop_under(mut self, root: impl Into<PathBuf>) -> Filter {
        self.roots
            .push(normalize(root.into().as_os_str().as_encoded_bytes()));
        self
    }

    /// Treats paths below `other` as below `spelling`: the same directory
    /// named two ways (a `target` that is a symbolic link, a worktree below
    /// one) must be one for what the compile made and what it read, and is
    /// reported under `spelling`. The caller knows both names (the reducer
    /// never looks at the filesystem).
    pub fn alias(mut self, other: impl Into<PathBuf>, spelling: impl Into<PathBuf>) -> Filter {
        let other = normalize(other.into().as_os_str().as_encoded_bytes());
        let spelling = normalize(spelling.into().as_os_str().as_encoded_bytes());
        if other != spelling {
            self.aliases.push((other, spelling));
        }
        self
    }

    /// `path` in the spelling its aliases give it.
    fn respell(&self, path: Norm) -> Norm {
        for (other, spelling) in &self.aliases {
            if under(&path, other) {
                let mut p = spelling.clone();
                p.extend_from_slice(&path[other.len()..]);
                return p;
            }
        }
        path
    }

    /// Whether `path` is left out.
    pub fn covers(&self, path: &Path) -> bool {
        self.covers_norm(&normalize(path.as_os_str().as_encoded_bytes()))
    }

    fn covers_norm(&self, path: &[u8]) -> bool {
        self.roots.iter().any(|r| under(path, r))
    }
}

/// Turns a log into the compile's inputs. `library` is the recorder's own path, removed from
/// `LD_PRELOAD` values.
pub fn parse(log: &[u8], library: &Path, filter: &Filter) -> Result<ObservedInputs, Incomplete> {
    let (records, malformed) = log::records(log);
    let mut r = Reducer::new(library, filter);
    if let Some(at) = malformed {
        r.lose(Lost::Malformed(at));
    }
    r.collect_made(&records);
    for (i, rec) in records.iter().enumerate() {
        r.record(i, rec);
    }
    r.finish(records.len())
}

fn os(bytes: &[u8]) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        OsString::from_vec(bytes.to_vec())
    }
    #[cfg(not(unix))]
    {
        OsString::from(String::from_utf8_lossy(bytes).into_owned())
    }
}

fn path_of(norm: &[u8]) -> PathBuf {
    PathBuf::from(os(norm))
}

/// A normalized absolute path as bytes: the reducer compares and hashes these, and builds
/// `PathBuf`s only for its result (component-wise `Path` comparisons cost most of the time).
type Norm = Vec<u8>;

/// `/`-joined components without empty ones and `.`; `..` kept (see `ObservedInputs`).
fn normalize(path: &[u8]) -> Norm {
    let mut out = Vec::with_capacity(path.len() + 1);
    for part in path.split(|&b| b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Whether normalized `path` is `dir` or lies below it.
fn under(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && (path.len() == dir.len() || dir == b"/" || path[dir.len()] == b'/')
}

/// The absolute path of a (base, path) pair, or `None` when the base is unknown.
fn join(base: &[u8], path: &[u8]) -> Option<Norm> {
    if path.starts_with(b"/") {
        return Some(normalize(path));
    }
    if base.is_empty() || base == b"?" {
        return None;
    }
    let mut full = Vec::with_capacity(base.len() + path.len() + 1);
    full.extend_from_slice(base);
    full.push(b'/');
    full.extend_from_slice(path);
    Some(normalize(&full))
}

/// Linux errno values a failed exec reports when the program is not there.
const ENOENT: &[u8] = b"2";
const ENOTDIR: &[u8] = b"20";

struct Reducer<'a> {
    library: &'a [u8],
    filter: &'a Filter,
    lost: Vec<Lost>,
    /// Paths the compile wrote, created, renamed or removed, with the first record doing so.
    made: HashMap<Norm, usize>,
    /// Directories the compile created: everything below was made by the compile.
    made_dirs: HashMap<Norm, usize>,
    read: HashSet<Norm>,
    present: HashSet<Norm>,
    absent: HashSet<Norm>,
    listed: HashSet<Norm>,
    links: HashMap<Norm, Norm>,
    programs: HashSet<Norm>,
    env_reads: Vec<(&'a [u8], Option<&'a [u8]>)>,
    root_env: Option<HashMap<&'a [u8], &'a [u8]>>,
    started: HashSet<u32>,
    pending_exec: HashMap<u32, Norm>,
    spawned: Vec<(u32, Norm)>,
    processes: usize,
    /// A process of the compile started or tried to start a program.
    ran_programs: bool,
}

impl<'a> Reducer<'a> {
    fn new(library: &'a Path, filter: &'a Filter) -> Reducer<'a> {
        Reducer {
            library: library.as_os_str().as_encoded_bytes(),
            filter,
            lost: Vec::new(),
            made: HashMap::new(),
            made_dirs: HashMap::new(),
            read: HashSet::new(),
            present: HashSet::new(),
            absent: HashSet::new(),
            listed: HashSet::new(),
            links: HashMap::new(),
            programs: HashSet::new(),
            env_reads: Vec::new(),
            root_env: None,
            started: HashSet::new(),
            pending_exec: HashMap::new(),
            spawned: Vec::new(),
            processes: 0,
            ran_programs: false,
        }
    }

    fn lose(&mut self, l: Lost) {
        if !self.lost.contains(&l) {
            self.lost.push(l);
        }
    }

    /// The absolute path of fields (i, i+1), noting a loss when it cannot be known; `None`
    /// too when the filter drops it (the caller accounts for it, so nothing about it can be a
    /// loss either: /dev/null is opened both ways, /proc/self/exe differs per process).
    fn path(&mut self, rec: &Record<'a>, i: usize) -> Option<Norm> {
        let p = join(rec.field(i), rec.field(i + 1)).map(|p| self.filter.respell(p));
        match p {
            None => {
                self.lose(Lost::UnknownDirectory(os(rec.field(i + 1))));
                None
            }
            Some(p) if self.filter.covers_norm(&p) => None,
            Some(p) => Some(p),
        }
    }

    /// First pass: what the compile itself made, so that reads of its own files (outputs,
    /// temporaries, files written then read back) are not taken for inputs.
    fn collect_made(&mut self, records: &[Record<'a>]) {
        let filter = self.filter;
        let join = |base: &[u8], path: &[u8]| join(base, path).map(|p| filter.respell(p));
        for (i, rec) in records.iter().enumerate() {
            let mut mark = |p: Option<Norm>| {
                if let Some(p) = p {
                    self.made.entry(p).or_insert(i);
                }
            };
            match rec.kind {
                b'W' | b'C' | b'U' => mark(join(rec.field(0), rec.field(1))),
                b'N' => {
                    mark(join(rec.field(0), rec.field(1)));
                    mark(join(rec.field(2), rec.field(3)));
                }
                b'M' => {
                    if let Some(p) = join(rec.field(0), rec.field(1)) {
                        self.made_dirs.entry(p).or_insert(i);
                    }
                }
                _ => {}
            }
        }
    }

    /// The record index from which `p` counts as made by the compile, if it ever does.
    fn made_from(&self, p: &[u8]) -> Option<usize> {
        let direct = self.made.get(p).copied();
        // `p` itself and each of its ancestors, looked up among the created directories.
        let ancestors = p
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'/' && i > 0)
            .map(|(i, _)| &p[..i])
            .chain(std::iter::once(p));
        let below = ancestors
            .filter_map(|a| self.made_dirs.get(a))
            .min()
            .copied();
        match (direct, below) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn record(&mut self, i: usize, rec: &Record<'a>) {
        if matches!(rec.kind, b'X' | b'x' | b'P' | b'H') {
            self.ran_programs = true;
        }
        match rec.kind {
            b'S' => {
                self.processes += 1;
                self.started.insert(rec.pid);
                self.pending_exec.remove(&rec.pid);
                if rec.field(0).starts_with(b"/") {
                    let p = self.filter.respell(normalize(rec.field(0)));
                    self.programs.insert(p);
                }
            }
            b'I' => {
                if rec.fields == [b"?"] {
                    self.lose(Lost::RootEnvironmentUnknown);
                }
                // The first root is the process the caller started: its
                // environment is what the compile was given. A program it
                // exec'd (a wrapper script running the compiler) reports
                // again from the same pid with what the wrapper changed.
                if self.root_env.is_some() {
                    return;
                }
                let mut env = HashMap::new();
                for entry in &rec.fields {
                    if let Some(eq) = entry.iter().position(|&b| b == b'=') {
                        env.entry(&entry[..eq]).or_insert(&entry[eq + 1..]);
                    }
                }
                self.root_env = Some(env);
            }
            b'R' | b'F' | b'E' | b'A' | b'L' | b'K' | b'Q' => {
                let Some(p) = self.path(rec, 0) else { return };
                if let Some(from) = self.made_from(&p) {
                    // Reading a file the compile later replaces: its old content was an
                    // input, and it is gone.
                    if rec.kind == b'R'
                        && rec.field(2) == b"f"
                        && i < from
                        && self.made.contains_key(&p)
                    {
                        self.lose(Lost::InputOverwritten(path_of(&p)));
                    }
                    return;
                }
                match rec.kind {
                    b'R' if rec.field(2) == b"d" => {
                        self.present.insert(p);
                    }
                    b'R' => {
                        self.read.insert(p);
                    }
                    b'F' | b'E' => {
                        self.present.insert(p);
                    }
                    b'A' => {
                        self.absent.insert(p);
                    }
                    b'L' => {
                        self.listed.insert(p);
                    }
                    _ => {
                        let mut target = normalize_target(rec.kind, rec.field(2));
                        if rec.kind == b'Q' {
                            target = self.filter.respell(target);
                        }
                        if let Some(old) = self.links.insert(p.clone(), target.clone()) {
                            if old != target {
                                self.lose(Lost::ChangedDuringCompile(path_of(&p)));
                            }
                        }
                    }
                }
            }
            b'V' => {
                let value = (rec.field(1) == b"=").then(|| rec.field(2));
                self.env_reads.push((rec.field(0), value));
            }
            b'X' => {
                let Some(p) = self.path(rec, 0) else { return };
                self.classify(&p, rec.field(2), rec.field(3));
                self.programs.insert(p.clone());
                self.pending_exec.insert(rec.pid, p);
            }
            b'x' => {
                self.pending_exec.remove(&rec.pid);
                let Some(p) = self.path(rec, 0) else { return };
                if self.made_from(&p).is_none() {
                    if rec.field(2) == ENOENT || rec.field(2) == ENOTDIR {
                        self.absent.insert(p.clone());
                    } else {
                        self.present.insert(p.clone());
                    }
                }
                self.programs.remove(&p);
            }
            b'P' => {
                let Some(p) = self.path(rec, 1) else { return };
                self.classify(&p, rec.field(3), rec.field(4));
                self.programs.insert(p.clone());
                let child = std::str::from_utf8(rec.field(0))
                    .ok()
                    .and_then(|s| s.parse().ok());
                match child {
                    Some(c) => self.spawned.push((c, p)),
                    None => self.lose(Lost::NotObserved(path_of(&p))),
                }
            }
            b'H' => {
                let p = self.filter.respell(normalize(rec.field(0)));
                self.classify(&p, rec.field(1), rec.field(2));
                self.programs.insert(p);
            }
            b'D' => self.lose(Lost::LibraryByName(os(rec.field(0)))),
            b'Z' => self.lose(Lost::Reentered),
            _ => {}
        }
    }

    /// Losses an exec's class and preload state imply.
    fn classify(&mut self, p: &[u8], class: &[u8], state: &[u8]) {
        let p = path_of(p);
        match class {
            b"s" => self.lose(Lost::StaticProgram(p.clone())),
            b"u" => self.lose(Lost::PrivilegedProgram(p.clone())),
            b"f" => self.lose(Lost::ForeignProgram(p.clone())),
            b"g" => self.lose(Lost::GoProgram(p.clone())),
            _ => {}
        }
        match state {
            b"z" => self.lose(Lost::PreloadStripped(p)),
            b"o" => self.lose(Lost::OtherRecorder(p)),
            b"r" => self.lose(Lost::ForeignProgram(p)),
            _ => {}
        }
    }

    /// `LD_PRELOAD` as the user set it: the recorder's own entry removed.
    fn without_library(&self, name: &[u8], value: Option<&'a [u8]>) -> Option<Vec<u8>> {
        let v = value?;
        if name != b"LD_PRELOAD" {
            return Some(v.to_vec());
        }
        let kept: Vec<&[u8]> = v
            .split(|&b| b == b':' || b == b' ')
            .filter(|e| !e.is_empty() && *e != self.library)
            .collect();
        (!kept.is_empty()).then(|| kept.join(&b':'))
    }

    fn finish(mut self, records: usize) -> Result<ObservedInputs, Incomplete> {
        let mut pending: Vec<Norm> = self.pending_exec.drain().map(|(_, p)| p).collect();
        pending.sort();
        for p in pending {
            self.lose(Lost::NotObserved(path_of(&p)));
        }
        for (child, p) in std::mem::take(&mut self.spawned) {
            if !self.started.contains(&child) {
                self.lose(Lost::NotObserved(path_of(&p)));
            }
        }
        if self.root_env.is_none() {
            self.lose(Lost::RootNotObserved);
        }
        let mut both: Vec<&Norm> = self
            .absent
            .iter()
            .filter(|p| self.read.contains(*p) || self.present.contains(*p))
            .collect();
        both.sort();
        let both: Vec<PathBuf> = both.into_iter().map(|p| path_of(p)).collect();
        for p in both {
            self.lose(Lost::ChangedDuringCompile(p));
        }
        let read = &self.read;
        self.present.retain(|p| !read.contains(p));

        let env = self.env();
        let paths =
            |set: HashSet<Norm>| -> BTreeSet<PathBuf> { set.iter().map(|p| path_of(p)).collect() };
        let observed = ObservedInputs {
            files_read: paths(self.read),
            paths_present: paths(self.present),
            paths_absent: paths(self.absent),
            dirs_listed: paths(self.listed),
            links: self
                .links
                .iter()
                .map(|(p, t)| (path_of(p), path_of(t)))
                .collect(),
            env,
            programs: paths(self.programs),
            records,
            processes: self.processes,
        };
        if self.lost.is_empty() {
            Ok(observed)
        } else {
            Err(Incomplete {
                reasons: self.lost,
                observed: Box::new(observed),
            })
        }
    }

    /// Variables read with the value the root process was given; reads that saw another
    /// value saw one a process of the compile set. The table's `AlwaysKey` rows are always
    /// added, its `KeyWhenProgramsRun` rows when a program was started or looked for.
    fn env(&self) -> BTreeMap<OsString, Option<OsString>> {
        let empty = HashMap::new();
        let root = self.root_env.as_ref().unwrap_or(&empty);
        let mut out = BTreeMap::new();
        for &(name, seen) in &self.env_reads {
            if env_table::ignored(name) {
                continue;
            }
            let given = self.without_library(name, root.get(name).copied());
            if self.without_library(name, seen) == given {
                out.insert(os(name), given.map(|v| os(&v)));
            }
        }
        let programs = self
            .ran_programs
            .then(env_table::keyed_when_programs_run)
            .into_iter()
            .flatten();
        for name in env_table::always_keyed().chain(programs) {
            let n = name.as_bytes();
            let given = self.without_library(n, root.get(n).copied());
            out.insert(os(n), given.map(|v| os(&v)));
        }
        out
    }
}

/// A readlink target is kept as written (it may be relative to the link); a realpath result
/// is absolute.
fn normalize_target(kind: u8, target: &[u8]) -> Norm {
    if kind == b'Q' {
        normalize(target)
    } else {
        target.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Log(Vec<u8>);

    impl Log {
        fn new() -> Log {
            let mut l = Log(Vec::new());
            l.add('S', 10, &["/bin/cc", "/w", "1"]);
            l.add(
                'I',
                10,
                &["HOME=/root", "LD_PRELOAD=/k/rec.so:/u/mine.so", "KEEP=1"],
            );
            l
        }
        fn add(&mut self, kind: char, pid: u32, fields: &[&str]) -> &mut Log {
            let mut body = format!("{kind}{pid}").into_bytes();
            for f in fields {
                body.push(0);
                body.extend_from_slice(f.as_bytes());
            }
            body.push(b'\n');
            self.0.extend(format!("{}:", body.len()).into_bytes());
            self.0.extend(body);
            self
        }
        fn parse(&self) -> Result<ObservedInputs, Incomplete> {
            parse(
                &self.0,
                Path::new("/k/rec.so"),
                &Filter::pseudo_filesystems(),
            )
        }
    }

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn relative_paths_are_resolved_against_their_base_and_normalized() {
        let mut l = Log::new();
        l.add('R', 10, &["/w/src", "./lib.rs", "f"])
            .add('R', 10, &["", "//w//x/../y.rs", "f"])
            .add('A', 10, &["/w", "src/foo/mod.rs"]);
        let o = l.parse().unwrap();
        assert_eq!(o.files_read, set(&["/w/src/lib.rs", "/w/x/../y.rs"]));
        assert_eq!(o.paths_absent, set(&["/w/src/foo/mod.rs"]));
    }

    #[test]
    fn outputs_temporaries_and_files_written_then_read_back_are_not_inputs() {
        let mut l = Log::new();
        l.add('M', 10, &["", "/tmp/rustcAbc"])
            .add('W', 10, &["", "/tmp/rustcAbc/x.o"])
            .add('R', 11, &["", "/tmp/rustcAbc/x.o", "f"])
            .add('A', 10, &["", "/t/out.rlib"])
            .add('N', 10, &["", "/tmp/rustcAbc/lib.rlib", "", "/t/out.rlib"])
            .add('R', 11, &["", "/t/out.rlib", "f"])
            .add('R', 11, &["", "/w/input.rs", "f"]);
        let o = l.parse().unwrap();
        assert_eq!(o.files_read, set(&["/w/input.rs"]));
        assert!(o.paths_absent.is_empty(), "{:?}", o.paths_absent);
    }

    #[test]
    fn an_input_overwritten_by_the_compile_makes_the_recording_incomplete() {
        let mut l = Log::new();
        l.add('R', 10, &["", "/w/data.txt", "f"])
            .add('W', 10, &["", "/w/data.txt"]);
        let e = l.parse().unwrap_err();
        assert_eq!(
            e.reasons,
            vec![Lost::InputOverwritten("/w/data.txt".into())]
        );
    }

    #[test]
    fn env_reads_keep_the_value_the_compile_was_given() {
        let mut l = Log::new();
        l.add('V', 10, &["KEEP", "=", "1"])
            .add('V', 10, &["UNSET", "-"])
            .add('V', 12, &["SET_BY_RUSTC", "=", "x"])
            .add(
                'V',
                10,
                &["CARGO_MAKEFLAGS", "=", "-j --jobserver-auth=3,4"],
            )
            .add('V', 10, &["LD_PRELOAD", "=", "/k/rec.so:/u/mine.so"]);
        let o = l.parse().unwrap();
        let get = |n: &str| o.env.get(&OsString::from(n)).cloned();
        assert_eq!(get("KEEP"), Some(Some("1".into())));
        assert_eq!(get("UNSET"), Some(None));
        assert_eq!(get("SET_BY_RUSTC"), None);
        assert_eq!(get("CARGO_MAKEFLAGS"), None);
        assert_eq!(
            get("LD_PRELOAD"),
            Some(Some("/u/mine.so".into())),
            "the loader reads it invisibly: keyed without the recorder's own entry"
        );
        assert_eq!(get("PATH"), None, "no program was started or looked for");
        assert_eq!(get("TZ"), Some(None), "always keyed even when not seen");
    }

    #[test]
    fn the_program_search_path_is_keyed_once_a_program_is_looked_for() {
        let mut l = Log(Vec::new());
        l.add('S', 10, &["/bin/cc", "/w", "1"])
            .add('I', 10, &["PATH=/u/bin:/usr/bin", "KEEP=1"]);
        assert_eq!(l.parse().unwrap().env.get(&OsString::from("PATH")), None);
        // A lookup that found nothing still searched the path.
        l.add('X', 20, &["", "/usr/bin/cc", "n", "k"])
            .add('x', 20, &["", "/usr/bin/cc", "2"]);
        assert_eq!(
            l.parse().unwrap().env.get(&OsString::from("PATH")),
            Some(&Some("/u/bin:/usr/bin".into()))
        );
    }

    #[test]
    fn the_environment_given_is_the_first_roots_not_what_a_wrapper_it_execs_changed() {
        let mut l = Log::new();
        // A shell script as the root sets PWD, then execs the compiler
        // (same pid), which reports its environment again.
        l.add('S', 10, &["/usr/bin/cc", "/w", "1"])
            .add('I', 10, &["HOME=/root", "KEEP=2", "PWD=/w"])
            .add('V', 10, &["KEEP", "=", "2"])
            .add('V', 10, &["PWD", "=", "/w"]);
        let o = l.parse().unwrap();
        let get = |n: &str| o.env.get(&OsString::from(n)).cloned();
        assert_eq!(get("KEEP"), None, "a value the wrapper set is derived");
        assert_eq!(get("PWD"), None, "a value the wrapper set is derived");
    }

    #[test]
    fn ld_preload_values_are_compared_without_the_recorder() {
        let f = Filter::new();
        let r = Reducer::new(Path::new("/k/rec.so"), &f);
        let v = |s: &'static str| r.without_library(b"LD_PRELOAD", Some(s.as_bytes()));
        assert_eq!(v("/k/rec.so:/u/mine.so"), Some(b"/u/mine.so".to_vec()));
        assert_eq!(v("/u/mine.so /k/rec.so"), Some(b"/u/mine.so".to_vec()));
        assert_eq!(v("/k/rec.so"), None);
    }

    #[test]
    fn an_exec_that_never_reports_in_is_a_loss() {
        let mut l = Log::new();
        l.add('X', 20, &["", "/usr/bin/ld", "d", "k"]);
        let e = l.parse().unwrap_err();
        assert_eq!(e.reasons, vec![Lost::NotObserved("/usr/bin/ld".into())]);
        l.add('S', 20, &["/usr/bin/ld", "/w", "10"]);
        let o = l.parse().unwrap();
        assert!(o.programs.contains(Path::new("/usr/bin/ld")));
    }

    #[test]
    fn a_failed_exec_is_a_lookup_not_a_loss() {
        let mut l = Log::new();
        l.add('X', 20, &["", "/nope/cc", "n", "k"])
            .add('x', 20, &["", "/nope/cc", "2"]);
        let o = l.parse().unwrap();
        assert!(o.paths_absent.contains(Path::new("/nope/cc")));
        assert!(!o.programs.contains(Path::new("/nope/cc")));
    }

    #[test]
    fn static_stripped_and_spawned_unobserved_programs_are_losses() {
        let mut l = Log::new();
        l.add('X', 20, &["", "/s/static", "s", "k"])
            .add('S', 20, &["/s/static", "/w", "10"])
            .add('P', 10, &["33", "", "/usr/bin/env", "d", "z"]);
        let e = l.parse().unwrap_err();
        assert_eq!(
            e.reasons,
            vec![
                Lost::StaticProgram("/s/static".into()),
                Lost::PreloadStripped("/usr/bin/env".into()),
                Lost::NotObserved("/usr/bin/env".into()),
            ]
        );
    }

    #[test]
    fn no_root_environment_means_the_compiler_was_not_observed() {
        let mut l = Log(Vec::new());
        l.add('R', 10, &["", "/w/a", "f"]);
        let e = l.parse().unwrap_err();
        assert_eq!(e.reasons, vec![Lost::RootNotObserved]);
    }

    #[test]
    fn filtered_roots_and_pseudo_filesystems_are_dropped() {
        let mut l = Log::new();
        l.add('R', 10, &["", "/proc/self/maps", "f"])
            .add('R', 10, &["", "/sysroot/lib/libstd.rlib", "f"])
            .add('R', 10, &["", "/sysrootx/a", "f"]);
        let f = Filter::pseudo_filesystems().drop_under("/sysroot/");
        let o = parse(&l.0, Path::new("/k/rec.so"), &f).unwrap();
        assert_eq!(o.files_read, set(&["/sysrootx/a"]));
    }

    #[test]
    fn a_directory_named_through_a_link_is_one_directory() {
        // `target` is a link into a mount: rustc writes a temporary archive
        // through one name and reads it back through the other.
        let mut l = Log::new();
        l.add('W', 10, &["", "/w/target/deps/.tmp1.temp-archive"])
            .add('R', 10, &["", "/m/mnt/deps/.tmp1.temp-archive", "f"])
            .add('R', 10, &["", "/m/mnt/deps/libdep.rlib", "f"])
            .add('Q', 10, &["", "/w/target/deps", "/m/mnt/deps"]);
        let f = Filter::pseudo_filesystems().alias("/m/mnt", "/w/target");
        let o = parse(&l.0, Path::new("/k/rec.so"), &f).unwrap();
        assert_eq!(o.files_read, set(&["/w/target/deps/libdep.rlib"]));
        assert_eq!(
            o.links.get(Path::new("/w/target/deps")),
            Some(&PathBuf::from("/w/target/deps"))
        );
    }

    #[test]
    fn pseudo_files_used_both_ways_are_no_loss() {
        let mut l = Log::new();
        l.add('R', 10, &["", "/dev/null", "c"])
            .add('W', 10, &["", "/dev/null"])
            .add('K', 10, &["", "/proc/self/exe", "/bin/cc"])
            .add('K', 11, &["", "/proc/self/exe", "/usr/bin/ld"]);
        assert!(l.parse().is_ok());
    }

    #[test]
    fn a_path_both_absent_and_found_is_a_change_during_the_compile() {
        let mut l = Log::new();
        l.add('A', 10, &["", "/w/a.h"])
            .add('R', 11, &["", "/w/a.h", "f"]);
        let e = l.parse().unwrap_err();
        assert_eq!(e.reasons, vec![Lost::ChangedDuringCompile("/w/a.h".into())]);
    }

    #[test]
    fn a_relative_path_in_an_unknown_directory_is_a_loss() {
        let mut l = Log::new();
        l.add('R', 10, &["?", "a.rs", "f"]);
        assert_eq!(
            l.parse().unwrap_err().reasons,
            vec![Lost::UnknownDirectory("a.rs".into())]
        );
    }
}
