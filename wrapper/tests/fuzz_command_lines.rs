//! Generated command lines through the rustc and C/C++ parsers: none may panic, and no list
//! holding a flag outside the allow-list may come out cacheable.
//!
//! A plain seeded generator (xorshift), not a property-testing crate: a million cases must run
//! in seconds, replay exactly from `KACHE_FUZZ_SEED`, and need nothing from outside this crate.
//! `KACHE_FUZZ_CASES` sets the number of lists per compiler family (20,000 by default, so the
//! ordinary suite runs it; `scripts/torture` asks for a million). The last line printed is the
//! figure `scripts/torture` reads.
//!
//! What "outside the allow-list" means is said here independently of the parsers' own tables:
//! a reviewed corpus of real gcc/clang/rustc options that write files a cache would not restore,
//! read inputs the key does not hold, depend on the building machine, or are not compiles at
//! all; plus whatever is no option of either compiler (misspellings, junk). Each such token is
//! put where a flag is read (never where a flag's separate value is), into lists that would
//! otherwise be accepted, so a refusal is proven to come from that token.

use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use kache_wrapper::cc::{self, flags};
use kache_wrapper::rustc::{self, Parsed};

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

fn cases() -> u64 {
    std::env::var("KACHE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("KACHE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b61_6368_6531)
}

/// Values a flag may be given: real ones, then the odd ones a generator should try.
const VALUES: &[&str] = &[
    "x",
    "1",
    "0",
    "c11",
    "gnu++17",
    "x86-64-v3",
    "generic",
    "hidden",
    "/inc",
    "inc dir",
    "FOO=1",
    "A=B=C",
    "=",
    "",
    ",",
    "a,b",
    "-",
    "--",
    "-c",
    "-o",
    "x.c",
    "out.o",
    "..",
    "../../etc",
    "/",
    "native",
    "é",
    "😀",
    "\u{0}",
    "\u{7f}",
    "a\nb",
    "a b",
    "$HOME",
    "%s",
    "\\",
    "\"",
    "'",
    "*",
    "@rsp",
];

/// Real gcc/clang options that must never be cached. Each with the reason it is dangerous, so
/// the list is reviewed as data. Written from the gcc 12-15 and clang 14-19 manuals.
const CC_NEVER: &[(&str, &str)] = &[
    ("-flto", "objects hold IR the key does not model"),
    ("-flto=thin", "as -flto"),
    ("-fsyntax-only", "no object"),
    ("-fstack-usage", "writes a .su file beside the object"),
    ("-fcallgraph-info", "writes a .ci file"),
    ("-fdump-tree-all", "writes dump files"),
    ("-fdump-rtl-expand", "writes dump files"),
    ("-fdump-ipa-all", "writes dump files"),
    ("-fopt-info-vec-all=vec.txt", "writes a report file"),
    (
        "-fsave-optimization-record",
        "clang: writes a .opt.yaml file",
    ),
    ("-ftime-trace", "clang: writes a .json beside the object"),
    ("-ftime-report", "timing on stderr differs per run"),
    (
        "-fdiagnostics-format=json-file",
        "gcc 13+: writes SOURCE.gcc.json",
    ),
    (
        "-fdiagnostics-format=sarif-file",
        "gcc 13+: writes SOURCE.sarif",
    ),
    (
        "-fdiagnostics-add-output=sarif",
        "gcc 15: writes a .sarif file",
    ),
    (
        "-fdiagnostics-add-output=sarif:file=x.sarif",
        "gcc 15: writes a file",
    ),
    (
        "-fdiagnostics-set-output=sarif",
        "gcc 15: writes a .sarif file",
    ),
    ("-save-temps", "writes .i/.s beside the object"),
    ("-save-temps=obj", "as -save-temps"),
    ("-dumpbase", "names auxiliary outputs"),
    ("-dumpdir", "directs auxiliary outputs"),
    (
        "-frecord-gcc-switches",
        "command line (paths) into the object",
    ),
    ("-grecord-command-line", "command line into the object"),
    ("-march=native", "depends on this machine's CPU"),
    ("-mtune=native", "depends on this machine's CPU"),
    ("-mcpu=native", "depends on this machine's CPU"),
    ("-pg", "profiling instrumentation"),
    (
        "-fprofile-generate",
        "writes profiles at run time, reads none at compile",
    ),
    (
        "-fprofile-use=x.profdata",
        "reads a profile the key does not hold",
    ),
    ("-fprofile-instr-generate", "clang instrumentation"),
    ("-fprofile-arcs", "gcov"),
    ("-ftest-coverage", "writes .gcno"),
    ("--coverage", "writes .gcno"),
    ("-fcoverage-mapping", "clang coverage"),
    ("-gsplit-dwarf", "writes a .dwo"),
    ("-gembed-source", "embeds unpreprocessed source"),
    ("-fembed-bitcode", "embeds IR"),
    ("-emit-llvm", "no object"),
    ("-fplugin=x.so", "code outside the compiler identity"),
    ("-fpass-plugin=x.so", "code outside the compiler identity"),
    ("-fmodules", "module files outside the key"),
    ("-fmodule-map-file=m.map", "module map outside the key"),
    ("-fmodules-cache-path=/tmp/m", "module cache"),
    ("-fsanitize-blacklist=b.txt", "reads a file outside the key"),
    (
        "-fsanitize-ignorelist=b.txt",
        "reads a file outside the key",
    ),
    (
        "-fsanitize-coverage=trace-pc",
        "instrumentation not modeled",
    ),
    ("-finstrument-functions", "instrumentation not modeled"),
    ("-specs=x.specs", "rewrites the driver"),
    ("-B/opt/other", "other compiler programs"),
    ("-fuse-ld=lld", "a link option"),
    ("--gcc-toolchain=/opt/gcc", "another toolchain"),
    ("-no-integrated-as", "external assembler"),
    ("-Wl,--version", "linker option"),
    ("-Wa,-adhln=listing.txt", "assembler writes a listing file"),
    ("-Wp,-MD,dep.d", "preprocessor writes a file"),
    ("-Wp,-DX,-MD,f", "one -Wp carrying a file-writing option"),
    ("-mllvm", "raw LLVM options"),
    ("-Xclang", "raw frontend options"),
    ("-Xlinker", "raw linker options"),
    ("-Xassembler", "raw assembler options"),
    ("-Xpreprocessor", "raw preprocessor options"),
    ("-include-pch", "precompiled header"),
    ("-emit-pch", "precompiled header"),
    ("-E", "no object"),
    ("-S", "no object"),
    ("-M", "no object"),
    ("-MM", "no object"),
    ("-v", "a probe"),
    ("-###", "a probe"),
    ("--version", "a probe"),
    ("-dumpmachine", "a probe"),
    ("-print-file-name=libc.so", "a probe"),
    ("-shared", "a link option"),
    ("-static", "a link option"),
    ("-lm", "a link option"),
    ("-L/lib", "a link option"),
    ("-aux-info", "writes prototypes to a file"),
    ("-iprefix", "include prefix for -iwithprefix: not modeled"),
    ("-fdirectives-only", "changes what -E produces"),
    ("-ObjC", "Objective-C"),
    ("--param=max-inline-insns-single=10", "not modeled"),
    ("-fno-fast-math-x", "not an option"),
    ("-fPICx", "not an option"),
    ("-O9x", "not an option"),
    ("--fPIC", "not an option"),
    ("-FPIC", "not an option"),
    ("-c=1", "not an option"),
    ("-ofoo.o", "not a form the parser reads"),
    ("-", "stdin"),
];

/// A well-formed, cacheable C compile to put the generated flags into.
fn cc_base(rng: &mut Rng) -> Vec<String> {
    let src = rng.pick(&["x.c", "src/dir/y.c", "/abs/z.c", "w.cpp", "k.cc"]);
    let mut v = vec!["-c".to_string(), src.to_string()];
    if rng.chance(70) {
        v.push("-o".into());
        v.push((rng.pick(&["out.o", "obj/x.o", "/t/o.o"])).to_string());
    }
    v
}

/// A flag from an allow-listed row of the table, with a (possibly odd) value.
fn cc_allowed(rng: &mut Rng) -> Vec<String> {
    loop {
        let row = &flags::FLAGS[rng.below(flags::FLAGS.len())];
        let allowed = matches!(
            row.category,
            flags::Category::Modeled | flags::Category::Preprocessor | flags::Category::NoEffect
        );
        if !allowed {
            continue;
        }
        let value = rng.pick(VALUES).to_string();
        let t = row.pattern.text();
        return match row.pattern {
            flags::Pattern::Exact(_) => vec![t.into()],
            flags::Pattern::Joined(_) | flags::Pattern::JoinedNoComma(_) => {
                vec![format!("{t}{value}")]
            }
            flags::Pattern::Separate(_) => vec![t.into(), value],
            flags::Pattern::JoinedOrSeparate(_) => match rng.chance(50) {
                true => vec![t.into(), value],
                false => vec![format!("{t}{value}")],
            },
        };
    }
}

/// Adds a separate value after `flag` when the table reads one, so the dangerous token that
/// follows is in a flag position.
fn with_its_value(flag: &str, rng: &mut Rng) -> Vec<String> {
    let mut v = vec![flag.to_string()];
    if let flags::Lookup::Found(m) = flags::lookup(flag, Some("v")) {
        if m.consumed == 2 {
            v.push((rng.pick(&["v", "x86_64", "arg"])).into());
        }
    }
    v
}

fn os(args: &[String]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Odd encodings: arguments that are not UTF-8 at all (stray continuation bytes on Unix,
/// lone low surrogates on Windows, where arguments are UTF-16: a low surrogate never starts
/// a pair, so none of them pairs up into a valid character).
#[cfg(unix)]
fn non_utf8(rng: &mut Rng) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let mut b = b"-fx".to_vec();
    for _ in 0..rng.below(4) + 1 {
        b.push(0x80 | (rng.next() as u8 & 0x3f));
    }
    OsString::from_vec(b)
}

#[cfg(windows)]
fn non_utf8(rng: &mut Rng) -> OsString {
    use std::os::windows::ffi::OsStringExt;
    let mut w: Vec<u16> = "-fx".encode_utf16().collect();
    for _ in 0..rng.below(4) + 1 {
        w.push(0xDC00 | (rng.next() as u16 & 0x03ff));
    }
    OsString::from_wide(&w)
}

#[derive(Default)]
struct Figures {
    lists: u64,
    accepted: u64,
    unsafe_accepted: Vec<String>,
    panics: Vec<String>,
    inconsistent: Vec<String>,
}

fn fuzz_cc(n: u64, rng: &mut Rng) -> Figures {
    let mut f = Figures::default();
    let compilers = [
        "gcc",
        "clang",
        "g++",
        "clang++",
        "cc",
        "/usr/bin/gcc-12",
        "x86_64-linux-gnu-gcc",
    ];
    for _ in 0..n {
        f.lists += 1;
        let mut args = cc_base(rng);
        for _ in 0..rng.below(8) {
            let at = flag_position(&args, rng);
            let flag = cc_allowed(rng);
            args.splice(at..at, flag);
        }
        let poisoned = rng.chance(40);
        let mut poison_text = String::new();
        if poisoned {
            let (never, _) = CC_NEVER[rng.below(CC_NEVER.len())];
            poison_text = never.to_string();
            let at = flag_position(&args, rng);
            let flag = with_its_value(never, rng);
            args.splice(at..at, flag);
        }
        let mut argv = os(&args);
        let odd = rng.chance(2);
        if odd {
            let at = flag_position(&args, rng);
            argv.insert(at, non_utf8(rng));
        }
        let compiler = compilers[rng.below(compilers.len())];
        let result = panic::catch_unwind(AssertUnwindSafe(|| cc::parse(compiler, &argv)));
        let parsed = match result {
            Ok(p) => p,
            Err(_) => {
                f.panics.push(format!("cc {compiler} {args:?}"));
                continue;
            }
        };
        let Ok(inv) = parsed else { continue };
        f.accepted += 1;
        if poisoned || odd {
            f.unsafe_accepted
                .push(format!("{compiler} {args:?} (poison {poison_text:?})"));
        }
        if let Some(why) = cc_inconsistency(&args, &inv) {
            f.inconsistent.push(format!("{compiler} {args:?}: {why}"));
        }
        // The parts a cacheable call hands on to the rest of the pipeline, with odd text.
        let base = Path::new("/w/tree");
        let text = args.join(" ");
        let _ = cc::depfile::from_placeholders(&text, base);
        let _ = cc::depfile::named_paths(&text);
        let _ = cc::paths::diagnostics_from_placeholders(text.as_bytes(), base);
    }
    f
}

/// An index of `args` where a flag is read (not right after a flag that takes a separate value).
fn flag_position(args: &[String], rng: &mut Rng) -> usize {
    let mut positions = vec![0];
    let mut i = 0;
    while i < args.len() {
        let step = match flags::lookup(&args[i], args.get(i + 1).map(String::as_str)) {
            flags::Lookup::Found(m) if args[i].starts_with('-') => m.consumed,
            // The last argument waits for its value: what comes next is that value.
            flags::Lookup::MissingValue(_) if args[i].starts_with('-') => 2,
            _ => 1,
        };
        i += step;
        if i <= args.len() {
            positions.push(i);
        }
    }
    positions[rng.below(positions.len())]
}

/// What an accepted call must be, whatever the table says: every argument in a flag position
/// has an allow-listed row, there is one source and `-c`, and the real compile runs the
/// command line as given.
fn cc_inconsistency(args: &[String], inv: &cc::CcInvocation) -> Option<String> {
    if inv.compile_args != os(args) {
        return Some("compile arguments differ from the command line".into());
    }
    if !args.iter().any(|a| a == "-c") {
        return Some("accepted without -c".into());
    }
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if !a.starts_with('-') {
            i += 1;
            continue;
        }
        match flags::lookup(a, args.get(i + 1).map(String::as_str)) {
            flags::Lookup::Found(m) => {
                if matches!(m.row.category, flags::Category::Refused(_)) {
                    return Some(format!("{a} is refused by its row"));
                }
                i += m.consumed;
            }
            _ => return Some(format!("{a} has no row")),
        }
    }
    None
}

/// Real rustc options that must never be cached, with why.
const RUSTC_NEVER: &[(&[&str], &str)] = &[
    (&["@args.txt"], "response file: contents unseen"),
    (&["-o", "out"], "output outside --out-dir"),
    (&["--emit=asm"], "emit kind not stored"),
    (&["--emit", "llvm-ir"], "emit kind not stored"),
    (&["--emit=link=/tmp/x"], "emit to a path"),
    (&["--emit=obj"], "emit kind not stored"),
    (&["--emit=mir"], "emit kind not stored"),
    (
        &["-C", "save-temps"],
        "keeps intermediate files the entry does not hold",
    ),
    (
        &["-Csave-temps=yes"],
        "keeps intermediate files the entry does not hold",
    ),
    (
        &["-C", "profile-generate=/tmp/p"],
        "instrumentation writing profiles",
    ),
    (&["-Cprofile-use=/tmp/p.profdata"], "reads a profile"),
    (&["-C", "instrument-coverage"], "coverage"),
    (&["-C", "split-debuginfo=packed"], "writes .dwp/.dwo"),
    (&["-Z", "incremental=/tmp/i"], "incremental state"),
    (&["-Zsplit-dwarf-kind=split"], "writes .dwo"),
    (&["--crate-type", "foo"], "unknown crate type"),
    (&["--env-set", "A=1"], "environment not modeled"),
    (&["--extern-location", "x=raw:y"], "not modeled"),
    (&["--frobnicate"], "not an option"),
    (&["--crate-namex"], "not an option"),
    (&["-Q"], "not an option"),
    (&["--pretty"], "not an option"),
    (&["--unpretty=expanded"], "not an option of stable rustc"),
    (&["--remap-path-scope=macro"], "not modeled"),
    (&["-"], "stdin"),
    (&["second.rs"], "two inputs"),
    (&["--print", "cfg"], "a query"),
    (&["-vV"], "a query"),
];

/// Values rustc flags are given, real and odd.
const RUSTC_VALUED: &[(&str, &[&str])] = &[
    ("--cfg", &["feature=\"std\"", "unix", "x=\"é\"", ""]),
    ("--check-cfg", &["cfg(feature, values(\"a\"))", "cfg()"]),
    (
        "-C",
        &[
            "opt-level=3",
            "debuginfo=2",
            "panic=abort",
            "codegen-units=1",
            "lto",
            "strip=symbols",
            "metadata=abc",
            "extra-filename=-x",
            "incremental=/t/i",
            "embed-bitcode=no",
            "target-cpu=x86-64-v2",
            "linker=cc",
            "link-arg=-Wl,-O1",
            "split-debuginfo=off",
            "",
        ],
    ),
    ("--codegen", &["opt-level=1", "debug-assertions=on"]),
    (
        "-L",
        &[
            "dependency=/t/deps",
            "native=/n",
            "crate=/c",
            "all=/a",
            "/plain",
            "framework=/f",
            "odd=/o",
        ],
    ),
    (
        "-l",
        &[
            "static=z",
            "dylib=m",
            "z",
            "static:+whole-archive=y",
            "framework=F",
        ],
    ),
    (
        "--extern",
        &[
            "bar=/t/deps/libbar.rlib",
            "baz",
            "noprelude:q=/q.rlib",
            "=x",
        ],
    ),
    ("-A", &["warnings", "dead_code"]),
    ("-W", &["unused", "rust-2018-idioms"]),
    ("-D", &["warnings"]),
    ("-F", &["unsafe_code"]),
    ("--force-warn", &["x"]),
    ("--cap-lints", &["allow", "warn"]),
    ("--edition", &["2015", "2018", "2021", "2024", "3000"]),
    (
        "--target",
        &[
            "x86_64-unknown-linux-gnu",
            "aarch64-apple-darwin",
            "/t/custom.json",
        ],
    ),
    ("--error-format", &["json", "human", "short"]),
    (
        "--json",
        &[
            "diagnostic-rendered-ansi,artifacts,future-incompat",
            "artifacts",
            "",
        ],
    ),
    ("--color", &["always", "never"]),
    ("--diagnostic-width", &["80", "x"]),
    ("--remap-path-prefix", &["/a=b", "=", "x"]),
    (
        "--crate-type",
        &[
            "lib",
            "rlib",
            "bin",
            "proc-macro",
            "cdylib",
            "staticlib",
            "dylib",
            "lib,rlib",
        ],
    ),
    (
        "--emit",
        &[
            "dep-info,metadata,link",
            "metadata",
            "link",
            "dep-info",
            "metadata,metadata",
        ],
    ),
    (
        "-Z",
        &["threads=8", "share-generics=y", "incremental-info", ""],
    ),
    ("--sysroot", &["/s"]),
    ("--crate-version", &["1.0.0"]),
];

fn rustc_base(rng: &mut Rng) -> Vec<String> {
    let ty = rng.pick(&["lib", "bin", "proc-macro", "rlib"]);
    let mut v: Vec<String> = [
        "--crate-name",
        "foo",
        "--edition=2021",
        "src/lib.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        ty,
        "--emit=dep-info,metadata,link",
        "-C",
        "embed-bitcode=no",
        "-C",
        "metadata=abc",
        "-C",
        "extra-filename=-abc",
        "--out-dir",
        "/w/target/debug/deps",
        "-L",
        "dependency=/w/target/debug/deps",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if rng.chance(50) {
        v.extend([
            "--extern".into(),
            "bar=/w/target/debug/deps/libbar-1.rmeta".into(),
        ]);
    }
    v
}

/// A known rustc option with a value, joined or separate, sometimes with an odd value.
fn rustc_allowed(rng: &mut Rng) -> Vec<String> {
    if rng.chance(8) {
        return vec![(rng.pick(&["--test", "-g", "-O"])).to_string()];
    }
    let (opt, values) = RUSTC_VALUED[rng.below(RUSTC_VALUED.len())];
    let value = match rng.chance(85) {
        true => values[rng.below(values.len())].to_string(),
        false => (rng.pick(VALUES)).to_string(),
    };
    let short = opt.len() == 2;
    match rng.below(3) {
        0 => vec![opt.into(), value],
        // A bare `-C` would take the next argument as its value.
        1 if short && !value.is_empty() => vec![format!("{opt}{value}")],
        _ if !short => vec![format!("{opt}={value}")],
        _ => vec![opt.into(), value],
    }
}

/// Indexes of `args` where rustc reads an option (not right after one taking a separate value).
fn rustc_flag_position(args: &[String], rng: &mut Rng) -> usize {
    let mut separate: Vec<&str> = RUSTC_VALUED.iter().map(|(o, _)| *o).collect();
    separate.extend(["--crate-name", "--out-dir", "-o", "--print", "--explain"]);
    let mut positions = vec![0];
    let mut i = 0;
    while i < args.len() {
        i += if separate.contains(&args[i].as_str()) {
            2
        } else {
            1
        };
        if i <= args.len() {
            positions.push(i);
        }
    }
    positions[rng.below(positions.len())]
}

fn fuzz_rustc(n: u64, rng: &mut Rng) -> Figures {
    let mut f = Figures::default();
    for _ in 0..n {
        f.lists += 1;
        let mut args = rustc_base(rng);
        for _ in 0..rng.below(8) {
            let at = rustc_flag_position(&args, rng);
            let flag = rustc_allowed(rng);
            args.splice(at..at, flag);
        }
        let poisoned = rng.chance(40);
        let mut poison_text = String::new();
        if poisoned {
            let (never, _) = RUSTC_NEVER[rng.below(RUSTC_NEVER.len())];
            poison_text = never.join(" ");
            let at = rustc_flag_position(&args, rng);
            args.splice(at..at, never.iter().map(|s| s.to_string()));
        }
        let result = panic::catch_unwind(AssertUnwindSafe(|| rustc::parse(&args)));
        let inv = match result {
            Ok(Parsed::Compile(inv)) => inv,
            Ok(_) => continue,
            Err(_) => {
                f.panics.push(format!("rustc {args:?}"));
                continue;
            }
        };
        f.accepted += 1;
        if poisoned {
            f.unsafe_accepted
                .push(format!("{args:?} (poison {poison_text:?})"));
        }
        // What an accepted call hands on must hold up with odd values too.
        let outs = panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = inv.static_libs();
            let _ = inv.is_linked();
            inv.expected_outputs()
        }));
        match outs {
            Ok(o) if o.is_empty() => f.inconsistent.push(format!("{args:?}: no outputs")),
            Ok(_) => {}
            Err(_) => f.panics.push(format!("rustc outputs of {args:?}")),
        }
        if inv.key_args.iter().any(|k| matches!(k, rustc::KeyArg::Literal(l) if l.contains("/w/target/debug/deps") && !l.starts_with("--remap"))) {
            f.inconsistent.push(format!("{args:?}: an output directory reached the key"));
        }
        let text = args.join(" ");
        let _ = rustc::parse_dep_info(&text);
        let _ = rustc::check_artifacts(&text, &inv.expected_outputs());
        if let Some(line) = rustc::link::parse_link_line(&text) {
            let _ = rustc::link::link_inputs(&line);
        }
    }
    f
}

fn show(what: &str, xs: &[String]) -> String {
    // One example per distinct cause (the text after the list).
    let mut seen = std::collections::BTreeSet::new();
    let shown: Vec<&String> = xs
        .iter()
        .filter(|x| {
            seen.insert(
                x.rsplit_once(']')
                    .map_or(x.as_str(), |(_, t)| t)
                    .to_string(),
            )
        })
        .take(12)
        .collect();
    format!("{} {what}, first: {shown:#?}", xs.len())
}

#[test]
fn generated_command_lines_never_panic_and_never_cache_an_unlisted_flag() {
    let n = cases();
    let seed = seed();
    // Panics are counted, not printed one by one.
    panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(seed);
    let r = fuzz_rustc(n, &mut rng);
    let c = fuzz_cc(n, &mut rng);
    let _ = panic::take_hook();
    let panics = r.panics.len() + c.panics.len();
    let unsafe_accepted = r.unsafe_accepted.len() + c.unsafe_accepted.len();
    let inconsistent = r.inconsistent.len() + c.inconsistent.len();
    println!(
        "TORTURE fuzz lists={} rustc_lists={} cc_lists={} accepted={} panics={panics} \
         unlisted_accepted={unsafe_accepted} inconsistent={inconsistent} seed={seed}",
        r.lists + c.lists,
        r.lists,
        c.lists,
        r.accepted + c.accepted,
    );
    assert!(
        inconsistent == 0,
        "{}",
        show(
            "accepted lists inconsistent",
            &[r.inconsistent.clone(), c.inconsistent.clone()].concat()
        )
    );
    assert!(
        panics == 0,
        "{}",
        show("panics", &[r.panics, c.panics].concat())
    );
    assert!(
        unsafe_accepted == 0,
        "{}",
        show(
            "lists with an unlisted flag accepted",
            &[r.unsafe_accepted, c.unsafe_accepted].concat()
        )
    );
    assert!(
        inconsistent == 0,
        "{}",
        show(
            "accepted lists inconsistent",
            &[r.inconsistent, c.inconsistent].concat()
        )
    );
    // The generator must also make cacheable lists, or refusals prove nothing.
    assert!(
        r.accepted * 10 > r.lists,
        "rustc: only {} of {} accepted",
        r.accepted,
        r.lists
    );
    assert!(
        c.accepted * 20 > c.lists,
        "cc: only {} of {} accepted",
        c.accepted,
        c.lists
    );
}
