//! Understanding a rustc command line: is it a compile kache can cache, what
//! does it produce, and which arguments belong in the key.
//!
//! Pure functions over argument lists; nothing here touches the filesystem.
//! Anything not understood is a refusal with a reason: the real compiler runs
//! and nothing is cached.

pub mod key;
pub mod link;

/// The outcome of parsing a rustc command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `-vV`, `--print …`, `-` (stdin) probes: run rustc, count nothing.
    NotACompile,
    /// A compile kache will not cache, and why.
    Refuse(Refusal),
    Compile(Box<RustcInvocation>),
}

/// Why a rustc compile is not cached. Each has a stable label (counted in
/// `kache stats` as `rust.passthrough_reasons.<label>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `@file` arguments: their content is not visible here.
    ResponseFile,
    /// A valued option given as the last argument.
    MissingValue(String),
    UnknownFlag(String),
    MultipleInputs,
    NoCrateName,
    NoOutDir,
    CrateType(String),
    /// `--emit kind=path`: outputs outside `--out-dir`.
    EmitPath,
    /// An emit kind other than dep-info, metadata, link.
    Emit(String),
    ExplicitOutputFile,
    /// `-Z` options that change where or how outputs are written.
    Unstable(String),
    Unsupported(String),
    SplitDebuginfo,
    /// Profile-guided or coverage codegen: reads or writes profile files.
    Codegen(String),
}

impl Refusal {
    /// The stable label (the spelling `kache stats` has always shown).
    pub fn label(&self) -> String {
        match self {
            Refusal::ResponseFile => "response-file".into(),
            Refusal::MissingValue(o) => format!("missing-value:{o}"),
            Refusal::UnknownFlag(f) => format!("unknown-flag:{f}"),
            Refusal::MultipleInputs => "multiple-inputs".into(),
            Refusal::NoCrateName => "no-crate-name".into(),
            Refusal::NoOutDir => "no-out-dir".into(),
            Refusal::CrateType(t) => format!("crate-type:{t}"),
            Refusal::EmitPath => "emit-path".into(),
            Refusal::Emit(e) => format!("emit:{e}"),
            Refusal::ExplicitOutputFile => "explicit-output-file".into(),
            Refusal::Unstable(v) => format!("unstable:{v}"),
            Refusal::Unsupported(o) => format!("unsupported:{o}"),
            Refusal::SplitDebuginfo => "split-debuginfo".into(),
            Refusal::Codegen(k) => format!("codegen:{k}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extern {
    pub name: String,
    pub path: Option<String>,
}

/// How one argument enters the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyArg {
    /// Keyed as written.
    Literal(String),
    /// `prefix` keyed as written, `path` normalized by the caller's roots.
    Path { prefix: String, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RustcInvocation {
    pub crate_name: String,
    pub crate_types: Vec<String>,
    /// Sorted, de-duplicated emit kinds (`dep-info`, `link`, `metadata`).
    pub emit: Vec<String>,
    pub input: String,
    pub out_dir: String,
    pub extra_filename: String,
    pub externs: Vec<Extern>,
    /// `-l [kind[:mods]=]name` as (kind, name).
    pub native_libs: Vec<(String, String)>,
    /// `-L [kind=]path` except `dependency=` as (kind, path).
    pub search_paths: Vec<(String, String)>,
    /// `-L dependency=` directories: where rustc finds the crates of the
    /// dependency graph that are not `--extern`s.
    pub dependency_dirs: Vec<String>,
    /// `-C target-cpu=native`: code for the CPU of the machine compiling.
    pub native_cpu: bool,
    /// The `-C incremental` directory, as given. Parsing keeps it out of
    /// both `key_args` and `compile_args` (the strip policy);
    /// [`RustcInvocation::keep_incremental`] puts it back.
    pub incremental: Option<String>,
    pub target: Option<String>,
    pub linker: Option<String>,
    pub is_test: bool,
    pub json_artifacts: bool,
    pub error_format_json: bool,
    /// Arguments in key form (order preserved), excluding what cannot
    /// change the output (out-dir, `-L dependency=`, width, colour, the
    /// incremental directory).
    pub key_args: Vec<KeyArg>,
    /// The arguments for the real compile (incremental removed unless
    /// kept).
    pub compile_args: Vec<String>,
}

/// Options that take a value (as `--opt value`, `--opt=value`, or for the
/// single-letter ones `-Xvalue`).
const VALUED: &[&str] = &[
    "--crate-name",
    "--edition",
    "--crate-type",
    "--emit",
    "--out-dir",
    "-o",
    "--error-format",
    "--json",
    "--color",
    "--diagnostic-width",
    "--cfg",
    "--check-cfg",
    "--target",
    "--cap-lints",
    "-C",
    "--codegen",
    "-Z",
    "-L",
    "-l",
    "--extern",
    "--remap-path-prefix",
    "-A",
    "-W",
    "-D",
    "-F",
    "--force-warn",
    "--allow",
    "--warn",
    "--deny",
    "--forbid",
    "--print",
    "--explain",
    "--sysroot",
    "--crate-version",
    "--env-set",
    "--extern-location",
];

const SIMPLE_FLAGS: &[&str] = &["--test", "-g", "-O"];
const NOT_COMPILE_FLAGS: &[&str] = &[
    "-V",
    "--version",
    "-vV",
    "-Vv",
    "-h",
    "--help",
    "-v",
    "--verbose",
];

/// Splits `arg` into (option, inline value) if it is a known valued option.
fn split_valued(arg: &str) -> Option<(&'static str, Option<String>)> {
    for &opt in VALUED {
        if arg == opt {
            return Some((opt, None));
        }
        if let Some(rest) = arg.strip_prefix(opt) {
            if let Some(v) = rest.strip_prefix('=') {
                if opt.starts_with("--") {
                    return Some((opt, Some(v.to_string())));
                }
            }
            // `-Copt-level=0`, `-Lnative=…`, `-lfoo`, `-Dwarnings`
            if opt.len() == 2 && !rest.is_empty() && !opt.starts_with("--") {
                return Some((opt, Some(rest.to_string())));
            }
        }
    }
    None
}

pub fn parse(args: &[String]) -> Parsed {
    let mut inv = RustcInvocation::default();
    let mut inputs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if NOT_COMPILE_FLAGS.contains(&arg.as_str()) {
            return Parsed::NotACompile;
        }
        if arg.starts_with('@') {
            return Parsed::Refuse(Refusal::ResponseFile);
        }
        if SIMPLE_FLAGS.contains(&arg.as_str()) {
            if arg == "--test" {
                inv.is_test = true;
            }
            inv.key_args.push(KeyArg::Literal(arg.clone()));
            inv.compile_args.push(arg.clone());
            continue;
        }
        if let Some((opt, inline)) = split_valued(arg) {
            let value = match inline {
                Some(v) => v,
                None => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        v.clone()
                    }
                    None => return Parsed::Refuse(Refusal::MissingValue(opt.to_string())),
                },
            };
            match handle_option(&mut inv, opt, &value) {
                Ok(Keep::Both) | Ok(Keep::CompileOnly) => {
                    push_original(
                        &mut inv.compile_args,
                        arg,
                        opt,
                        &value,
                        inline_was(arg, opt),
                    );
                }
                Ok(Keep::Neither) => {}
                Err(p) => return p,
            }
            continue;
        }
        if arg == "-" {
            return Parsed::NotACompile;
        }
        if arg.starts_with('-') {
            return Parsed::Refuse(Refusal::UnknownFlag(arg.clone()));
        }
        inputs.push(arg.clone());
        inv.compile_args.push(arg.clone());
    }
    if inputs.is_empty() {
        return Parsed::NotACompile;
    }
    if inputs.len() > 1 {
        return Parsed::Refuse(Refusal::MultipleInputs);
    }
    inv.input = inputs.remove(0);
    inv.key_args.push(KeyArg::Path {
        prefix: "input:".into(),
        path: inv.input.clone(),
    });
    if inv.crate_name.is_empty() {
        return Parsed::Refuse(Refusal::NoCrateName);
    }
    if inv.out_dir.is_empty() {
        return Parsed::Refuse(Refusal::NoOutDir);
    }
    if inv.crate_types.is_empty() {
        // rustc's default crate type (and the only one for `--test`).
        inv.crate_types.push("bin".into());
    }
    if inv.emit.is_empty() {
        inv.emit.push("link".into());
    }
    inv.emit.sort();
    inv.emit.dedup();
    Parsed::Compile(Box::new(inv))
}

fn inline_was(arg: &str, opt: &str) -> bool {
    arg != opt
}

fn push_original(out: &mut Vec<String>, arg: &str, opt: &str, value: &str, inline: bool) {
    if inline {
        out.push(arg.to_string());
    } else {
        out.push(opt.to_string());
        out.push(value.to_string());
    }
}

enum Keep {
    /// In the key and in the compile.
    Both,
    /// Passed to the compile, kept out of the key.
    CompileOnly,
    /// Dropped entirely (incremental, until the caller keeps it).
    Neither,
}

fn lit(inv: &mut RustcInvocation, opt: &str, value: &str) {
    inv.key_args.push(KeyArg::Literal(format!("{opt}={value}")));
}

fn handle_option(inv: &mut RustcInvocation, opt: &str, value: &str) -> Result<Keep, Parsed> {
    match opt {
        "--crate-name" => {
            inv.crate_name = value.to_string();
            lit(inv, opt, value);
        }
        "--crate-type" => {
            for t in value.split(',') {
                match t {
                    "lib" | "rlib" | "staticlib" | "proc-macro" | "dylib" | "cdylib" | "bin" => {
                        inv.crate_types.push(t.to_string())
                    }
                    _ => return Err(Parsed::Refuse(Refusal::CrateType(t.to_string()))),
                }
            }
            lit(inv, opt, value);
        }
        "--emit" => {
            for e in value.split(',') {
                if e.contains('=') {
                    return Err(Parsed::Refuse(Refusal::EmitPath));
                }
                match e {
                    "dep-info" | "metadata" | "link" => inv.emit.push(e.to_string()),
                    _ => return Err(Parsed::Refuse(Refusal::Emit(e.to_string()))),
                }
            }
            let mut kinds: Vec<&str> = value.split(',').collect();
            kinds.sort_unstable();
            kinds.dedup();
            lit(inv, opt, &kinds.join(","));
        }
        "--out-dir" => {
            inv.out_dir = value.to_string();
            return Ok(Keep::CompileOnly);
        }
        "-o" => return Err(Parsed::Refuse(Refusal::ExplicitOutputFile)),
        "--print" => return Err(Parsed::NotACompile),
        "--explain" => return Err(Parsed::NotACompile),
        "--error-format" => {
            inv.error_format_json = value == "json";
            lit(inv, opt, value);
        }
        "--json" => {
            if value.split(',').any(|v| v == "artifacts") {
                inv.json_artifacts = true;
            }
            lit(inv, opt, value);
        }
        "--color" | "--diagnostic-width" => return Ok(Keep::CompileOnly),
        "-L" => {
            let (kind, path) = match value.split_once('=') {
                Some((k, p))
                    if ["dependency", "crate", "native", "framework", "all"].contains(&k) =>
                {
                    (k, p)
                }
                _ => ("all", value),
            };
            if kind == "dependency" {
                inv.dependency_dirs.push(path.to_string());
                return Ok(Keep::CompileOnly);
            }
            inv.search_paths.push((kind.to_string(), path.to_string()));
            inv.key_args.push(KeyArg::Path {
                prefix: format!("-L{kind}="),
                path: path.to_string(),
            });
        }
        "-l" => {
            let (kind, name) = match value.split_once('=') {
                Some((k, n)) => (k, n),
                None => ("dylib", value),
            };
            inv.native_libs.push((kind.to_string(), name.to_string()));
            lit(inv, opt, value);
        }
        "--extern" => {
            let (name, path) = match value.split_once('=') {
                Some((n, p)) => (n.to_string(), Some(p.to_string())),
                None => (value.to_string(), None),
            };
            // The path is keyed by content by the caller; the name here.
            inv.key_args
                .push(KeyArg::Literal(format!("--extern-name={name}")));
            inv.externs.push(Extern { name, path });
        }
        "--target" => {
            inv.target = Some(value.to_string());
            if value.ends_with(".json") {
                // A target-spec file: the caller hashes its content.
                inv.key_args.push(KeyArg::Path {
                    prefix: "--target-file=".into(),
                    path: value.to_string(),
                });
            } else {
                lit(inv, opt, value);
            }
        }
        "--sysroot" => {
            inv.key_args.push(KeyArg::Path {
                prefix: "--sysroot=".into(),
                path: value.to_string(),
            });
        }
        "--remap-path-prefix" => lit(inv, opt, value),
        "-C" | "--codegen" => return codegen(inv, value),
        "-Z" => {
            if value.starts_with("incremental") || value.starts_with("split-dwarf") {
                return Err(Parsed::Refuse(Refusal::Unstable(value.to_string())));
            }
            lit(inv, "-Z", value);
        }
        "--env-set" | "--extern-location" => {
            return Err(Parsed::Refuse(Refusal::Unsupported(opt.to_string())));
        }
        _ => lit(inv, opt, value),
    }
    Ok(Keep::Both)
}

fn codegen(inv: &mut RustcInvocation, value: &str) -> Result<Keep, Parsed> {
    let (k, v) = value.split_once('=').unwrap_or((value, ""));
    match k {
        "incremental" => {
            inv.incremental = Some(v.to_string());
            return Ok(Keep::Neither);
        }
        "extra-filename" => inv.extra_filename = v.to_string(),
        "linker" => {
            inv.linker = Some(v.to_string());
            inv.key_args.push(KeyArg::Path {
                prefix: "-Clinker=".into(),
                path: v.to_string(),
            });
            return Ok(Keep::Both);
        }
        "target-cpu" if v == "native" => inv.native_cpu = true,
        "split-debuginfo" if v != "off" => {
            return Err(Parsed::Refuse(Refusal::SplitDebuginfo));
        }
        "profile-generate" | "profile-use" | "profile-sample-use" | "instrument-coverage" => {
            return Err(Parsed::Refuse(Refusal::Codegen(k.to_string())));
        }
        // Keeps rustc's intermediate files (objects, bitcode) in the output
        // directory: files the entry does not hold, so a hit would lack them.
        "save-temps" if !matches!(v, "no" | "n" | "off" | "false") => {
            return Err(Parsed::Refuse(Refusal::Codegen(k.to_string())));
        }
        _ => {}
    }
    lit(inv, "-C", value);
    Ok(Keep::Both)
}

impl RustcInvocation {
    /// The `-l native=`/`-l all=` search directories, in order.
    pub fn native_dirs(&self) -> Vec<String> {
        self.search_paths
            .iter()
            .filter(|(k, _)| k == "native" || k == "all")
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Each static native library (`-l static=NAME`) as its file name
    /// (`libNAME.a`, or NAME as given with `+verbatim`) and the search
    /// directories it may be in, in order.
    pub fn static_libs(&self) -> Vec<(String, Vec<String>)> {
        let dirs = self.native_dirs();
        self.native_libs
            .iter()
            .filter_map(|(kind, name)| {
                let (kind, modifiers) = kind.split_once(':').unwrap_or((kind, ""));
                if kind != "static" {
                    return None;
                }
                let name = name.split(':').next().unwrap_or(name);
                let verbatim = modifiers.split(',').any(|m| m == "+verbatim");
                let file = match verbatim {
                    true => name.to_string(),
                    false => format!("lib{name}.a"),
                };
                Some((file, dirs.clone()))
            })
            .collect()
    }

    /// True when the outputs are produced by a linker (so the linker and the
    /// host libc are part of the key, and the whole link closure is an
    /// input).
    pub fn is_linked(&self) -> bool {
        self.emit.iter().any(|e| e == "link")
            && self
                .crate_types
                .iter()
                .any(|t| matches!(t.as_str(), "bin" | "proc-macro" | "dylib" | "cdylib"))
    }

    /// True when a static library is archived: rustc copies every rlib of
    /// the dependency graph into it, with their bundled native code.
    pub fn is_staticlib(&self) -> bool {
        self.emit.iter().any(|e| e == "link") && self.crate_types.iter().any(|t| t == "staticlib")
    }

    /// True when the compile may copy native static libraries into its
    /// output (an rlib bundles those its crate links statically, whether
    /// named by `-l static=` or by `#[link(kind = "static")]` in its source).
    pub fn bundles_native_libs(&self) -> bool {
        self.emit.iter().any(|e| e == "link")
            && self
                .crate_types
                .iter()
                .any(|t| matches!(t.as_str(), "lib" | "rlib" | "staticlib"))
    }

    /// True when the `-C incremental` policy question applies.
    pub fn wants_incremental(&self) -> bool {
        self.incremental.is_some()
    }

    /// Keeps `-C incremental` (the `keep` policy): the real compile gets its
    /// directory back, so rustc reads and writes its incremental state
    /// there as without kache, and the key records that the compile is
    /// incremental but not where that state lives. Incremental or not is
    /// keyed because rustc partitions an incremental compile's code into
    /// other codegen units: its outputs are not a non-incremental compile's.
    /// The state itself is not keyed: rustc produces the same result from
    /// any previous session, or none.
    pub fn keep_incremental(&mut self) {
        let Some(dir) = &self.incremental else {
            return;
        };
        self.compile_args.push("-C".into());
        self.compile_args.push(format!("incremental={dir}"));
        self.key_args
            .push(KeyArg::Literal("-C=incremental".to_string()));
    }

    /// The files this compile writes into `out_dir`, by rustc's naming rules:
    /// (file name, is executable).
    pub fn expected_outputs(&self) -> Vec<(String, bool)> {
        let stem = format!("{}{}", self.crate_name, self.extra_filename);
        let mut out = Vec::new();
        for e in &self.emit {
            match e.as_str() {
                "dep-info" => out.push((format!("{stem}.d"), false)),
                "metadata" => out.push((format!("lib{stem}.rmeta"), false)),
                "link" => {
                    for t in &self.crate_types {
                        let f = match t.as_str() {
                            "lib" | "rlib" => (format!("lib{stem}.rlib"), false),
                            "staticlib" => (format!("lib{stem}.a"), false),
                            "bin" => (stem.clone(), true),
                            "proc-macro" | "dylib" | "cdylib" => (format!("lib{stem}.so"), true),
                            _ => continue,
                        };
                        if !out.contains(&f) {
                            out.push(f);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// What a rustc `.d` file says: the files read, and `env!` variables with values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepInfo {
    pub files: Vec<String>,
    pub env: Vec<(String, Option<String>)>,
}

/// Parses rustc's make-style dep-info. Only the prerequisites of the first
/// rule are taken (every rule lists the same inputs), plus `# env-dep:` lines.
pub fn parse_dep_info(text: &str) -> DepInfo {
    let mut d = DepInfo::default();
    let mut first_rule_done = false;
    for line in text.lines() {
        if let Some(env) = line.strip_prefix("# env-dep:") {
            let (k, v) = match env.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(unescape_env(v))),
                None => (env.to_string(), None),
            };
            d.env.push((k, v));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() || first_rule_done {
            continue;
        }
        if let Some(idx) = find_rule_colon(line) {
            for p in split_escaped(&line[idx + 1..]) {
                d.files.push(p);
            }
            first_rule_done = true;
        }
    }
    d
}

fn unescape_env(v: &str) -> String {
    v.replace("\\n", "\n").replace("\\\\", "\\")
}

/// The colon ending the targets: the first `: ` (or trailing `:`) that is not escaped.
pub(crate) fn find_rule_colon(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    (0..b.len()).find(|&i| {
        b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' ') && (i == 0 || b[i - 1] != b'\\')
    })
}

fn split_escaped(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            ' ' | '\t' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Why rustc's artifact notifications cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadArtifact {
    /// An `{"artifact":…}` line that is not JSON.
    Unparsable,
    /// An artifact that is not one of the expected outputs.
    Unexpected,
}

/// Checks that every artifact rustc announced on `stderr` is one of
/// `expected` (file names): anything else was written where kache does
/// not look, and storing the rest would serve an incomplete result.
pub fn check_artifacts(stderr: &str, expected: &[(String, bool)]) -> Result<(), BadArtifact> {
    for line in stderr.lines().filter(|l| l.starts_with("{\"artifact\":")) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|_| BadArtifact::Unparsable)?;
        let path = v["artifact"].as_str().unwrap_or_default();
        let name = path.rsplit('/').next().unwrap_or(path);
        if !expected.iter().any(|(e, _)| e == name) {
            return Err(BadArtifact::Unexpected);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn cargo_lib_args() -> Vec<String> {
        s(&[
            "--crate-name",
            "foo",
            "--edition=2021",
            "src/lib.rs",
            "--error-format=json",
            "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
            "--diagnostic-width=120",
            "--crate-type",
            "lib",
            "--emit=dep-info,metadata,link",
            "-C",
            "embed-bitcode=no",
            "-C",
            "debuginfo=2",
            "-C",
            "metadata=abc",
            "-C",
            "extra-filename=-abc",
            "--out-dir",
            "/w/target/debug/deps",
            "-C",
            "incremental=/w/target/debug/incremental",
            "-L",
            "dependency=/w/target/debug/deps",
            "--extern",
            "bar=/w/target/debug/deps/libbar-1.rmeta",
        ])
    }

    fn compile(args: &[String]) -> RustcInvocation {
        match parse(args) {
            Parsed::Compile(c) => *c,
            other => panic!("not a compile: {other:?}"),
        }
    }

    #[test]
    fn static_libs_are_searched_in_native_and_all_paths_only() {
        let mut a = cargo_lib_args();
        for x in [
            "-l",
            "static=z",
            "-l",
            "m",
            "-L",
            "native=/o",
            "-L",
            "crate=/c",
            "-L",
            "/all",
        ] {
            a.push(x.to_string());
        }
        let inv = compile(&a);
        assert_eq!(
            inv.static_libs(),
            vec![(
                "libz.a".to_string(),
                vec!["/o".to_string(), "/all".to_string()]
            )]
        );
        let mut v = cargo_lib_args();
        v.extend(s(&[
            "-l",
            "static:+verbatim,-bundle=foo.o",
            "-L",
            "native=/o",
        ]));
        assert_eq!(
            compile(&v).static_libs(),
            vec![("foo.o".to_string(), vec!["/o".to_string()])]
        );
    }

    #[test]
    fn native_cpu_and_dependency_dirs_are_noted_in_every_spelling() {
        for spelling in [
            &["-C", "target-cpu=native"][..],
            &["-Ctarget-cpu=native"],
            &["--codegen", "target-cpu=native"],
            &["--codegen=target-cpu=native"],
        ] {
            let mut a = cargo_lib_args();
            a.extend(s(spelling));
            assert!(compile(&a).native_cpu, "{spelling:?}");
        }
        let mut a = cargo_lib_args();
        a.extend(s(&["-C", "target-cpu=znver3"]));
        let inv = compile(&a);
        assert!(!inv.native_cpu);
        assert_eq!(inv.dependency_dirs, vec!["/w/target/debug/deps"]);
    }

    #[test]
    fn cargo_probes_are_not_compiles() {
        assert_eq!(parse(&s(&["-vV"])), Parsed::NotACompile);
        assert_eq!(
            parse(&s(&[
                "-",
                "--crate-name",
                "___",
                "--print=file-names",
                "--crate-type",
                "bin"
            ])),
            Parsed::NotACompile
        );
    }

    #[test]
    fn a_cargo_lib_compile_parses_with_outputs() {
        let inv = compile(&cargo_lib_args());
        assert_eq!(inv.crate_name, "foo");
        assert_eq!(inv.emit, vec!["dep-info", "link", "metadata"]);
        assert_eq!(
            inv.incremental.as_deref(),
            Some("/w/target/debug/incremental")
        );
        assert!(!inv.compile_args.iter().any(|a| a.contains("incremental")));
        assert!(inv.json_artifacts);
        let outs: Vec<String> = inv.expected_outputs().into_iter().map(|o| o.0).collect();
        assert_eq!(
            outs,
            vec!["foo-abc.d", "libfoo-abc.rlib", "libfoo-abc.rmeta"]
        );
        assert!(!inv.is_linked());
    }

    #[test]
    fn a_kept_incremental_dir_reaches_the_compile_and_only_the_fact_reaches_the_key() {
        let stripped = compile(&cargo_lib_args());
        let mut here = stripped.clone();
        here.keep_incremental();
        let mut elsewhere = compile(
            &cargo_lib_args()
                .iter()
                .map(|a| a.replace("/w/target/debug/incremental", "/other/wt/inc"))
                .collect::<Vec<_>>(),
        );
        elsewhere.keep_incremental();
        assert!(here
            .compile_args
            .ends_with(&s(&["-C", "incremental=/w/target/debug/incremental"])));
        assert!(elsewhere
            .compile_args
            .ends_with(&s(&["-C", "incremental=/other/wt/inc"])));
        assert_eq!(here.key_args, elsewhere.key_args);
        assert_ne!(here.key_args, stripped.key_args);
        let paths = |i: &RustcInvocation| format!("{:?}", i.key_args);
        assert!(!paths(&here).contains("/w/target/debug/incremental"));

        // Nothing to keep when cargo asked for no incremental compile.
        let mut args = cargo_lib_args();
        let at = args
            .iter()
            .position(|a| a.starts_with("incremental="))
            .unwrap();
        args.drain(at - 1..=at);
        let mut plain = compile(&args);
        let before = plain.clone();
        plain.keep_incremental();
        assert_eq!(plain, before);
    }

    #[test]
    fn out_dir_dependency_paths_width_and_colour_stay_out_of_the_key() {
        let a = compile(&cargo_lib_args());
        let mut other = cargo_lib_args();
        for x in other.iter_mut() {
            *x = x
                .replace("/w/", "/elsewhere/")
                .replace("width=120", "width=80");
        }
        let b = compile(&other);
        // Only the extern path differs, and externs are keyed by content.
        assert_eq!(a.key_args, b.key_args);
    }

    #[test]
    fn emit_kinds_and_lint_levels_are_keyed() {
        let a = compile(&cargo_lib_args());
        let mut check = cargo_lib_args();
        for x in check.iter_mut() {
            if x == "--emit=dep-info,metadata,link" {
                *x = "--emit=dep-info,metadata".into();
            }
        }
        assert_ne!(a.key_args, compile(&check).key_args);
        let mut deny = cargo_lib_args();
        deny.push("-Dwarnings".into());
        assert_ne!(a.key_args, compile(&deny).key_args);
    }

    #[test]
    fn unknown_shapes_are_refused_with_reasons() {
        let mut a = cargo_lib_args();
        a.push("--frobnicate".into());
        assert_eq!(
            parse(&a),
            Parsed::Refuse(Refusal::UnknownFlag("--frobnicate".into()))
        );
        let mut b = cargo_lib_args();
        b.push("--emit=asm".into());
        assert_eq!(parse(&b), Parsed::Refuse(Refusal::Emit("asm".into())));
        let mut c = cargo_lib_args();
        c.push("@args.txt".into());
        assert_eq!(parse(&c), Parsed::Refuse(Refusal::ResponseFile));
        let mut d = cargo_lib_args();
        d.extend(s(&["-C", "split-debuginfo=packed"]));
        assert_eq!(parse(&d), Parsed::Refuse(Refusal::SplitDebuginfo));
        let mut e = cargo_lib_args();
        e.push("other.rs".into());
        assert_eq!(parse(&e), Parsed::Refuse(Refusal::MultipleInputs));
    }

    #[test]
    fn save_temps_is_refused_since_its_files_are_not_in_the_entry() {
        for on in [
            &["-C", "save-temps"][..],
            &["-Csave-temps=yes"],
            &["-C", "save-temps=y"],
        ] {
            let mut a = cargo_lib_args();
            a.extend(s(on));
            assert_eq!(
                parse(&a),
                Parsed::Refuse(Refusal::Codegen("save-temps".into())),
                "{on:?}"
            );
        }
        let mut off = cargo_lib_args();
        off.extend(s(&["-C", "save-temps=no"]));
        assert!(matches!(parse(&off), Parsed::Compile(_)));
    }

    #[test]
    fn bins_and_proc_macros_are_linked_and_executable() {
        let mut a = cargo_lib_args();
        for x in a.iter_mut() {
            if x == "lib" {
                *x = "proc-macro".into();
            }
        }
        let inv = compile(&a);
        assert!(inv.is_linked());
        assert!(inv
            .expected_outputs()
            .contains(&("libfoo-abc.so".to_string(), true)));
    }

    #[test]
    fn dep_info_yields_files_and_env() {
        let d = parse_dep_info(
            "/t/debug/deps/foo-1.d: src/lib.rs src/a\\ b.rs /t/out/gen.rs\n\n\
             /t/debug/deps/libfoo-1.rlib: src/lib.rs src/a\\ b.rs /t/out/gen.rs\n\n\
             src/lib.rs:\n\n# env-dep:OUT_DIR=/t/out\n# env-dep:MISSING\n",
        );
        assert_eq!(d.files, vec!["src/lib.rs", "src/a b.rs", "/t/out/gen.rs"]);
        assert_eq!(
            d.env,
            vec![
                ("OUT_DIR".into(), Some("/t/out".into())),
                ("MISSING".into(), None)
            ]
        );
    }

    #[test]
    fn only_expected_artifacts_pass() {
        let expected = vec![("libfoo-1.rlib".to_string(), false)];
        let ok = "warning: x\n{\"artifact\":\"/t/deps/libfoo-1.rlib\",\"emit\":\"link\"}\n";
        assert_eq!(check_artifacts(ok, &expected), Ok(()));
        let other = "{\"artifact\":\"/t/deps/libbar.rlib\",\"emit\":\"link\"}";
        assert_eq!(
            check_artifacts(other, &expected),
            Err(BadArtifact::Unexpected)
        );
        assert_eq!(
            check_artifacts("{\"artifact\":", &expected),
            Err(BadArtifact::Unparsable)
        );
    }
}
