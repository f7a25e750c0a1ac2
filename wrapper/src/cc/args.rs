//! Parsing a C/C++ compiler command line into a cacheable invocation, or a refusal.
//!
//! Owns the structural rules (one source, `-c`, an object output, a C-family language) and the
//! argument lists derived from the command line (preprocessor run, real compile). Every flag is
//! classified through the table in `flags.rs`; a flag without a row refuses the whole call.
//! Pure: never touches the filesystem or the environment (see [`refuse_env`] for the latter).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use super::compiler::{compiler_kind, CompilerKind, Language};
use super::flags::{self, Category, Lookup};

/// Why a call is not cached. [`Refusal::reason`] is the machine-readable string that stats and
/// `kache report` count; [`Refusal::flag`] is the offending flag where there is one, so a report
/// can count flags (`cc.passthrough_flags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The first argument is not a recognised C/C++ compiler name.
    NotACompiler(String),
    NonUtf8Argument,
    ResponseFile(String),
    /// A flag with no row in the table.
    UnknownFlag(String),
    /// A flag whose row refuses it; `reason` comes from the row.
    RefusedFlag {
        reason: &'static str,
        flag: String,
    },
    /// A flag that takes a value was the last argument.
    MissingArgument(String),
    /// No `-c`, and no source either: a pure link.
    LinkStep,
    /// A source but no `-c`: compile-and-link in one call.
    NoCompileFlag,
    NoSource,
    PreprocessOnly(String),
    AssembleOnly,
    MultipleSources,
    MultipleOutputs,
    OutputToStdout,
    SourceFromStdin,
    /// `-x` outside c/c++, or a source extension that is not C or C++.
    Language(String),
    /// Precompiled header produced or consumed.
    PrecompiledHeader(String),
    MultipleArch,
    /// An environment variable that changes the compile in a way the key does not hold.
    Environment(&'static str),
    /// `__DATE__`/`__TIME__`/`__TIMESTAMP__` used without a pinned, honoured
    /// `SOURCE_DATE_EPOCH` (see `key::time_macro_policy`).
    TimeMacros,
}

impl Refusal {
    /// The reason string counted in stats (`cc:…`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotACompiler(_) => "cc:not-a-compiler",
            Refusal::NonUtf8Argument => "cc:non-utf8-argument",
            Refusal::ResponseFile(_) => "cc:response-file",
            Refusal::UnknownFlag(_) => "cc:unknown-flag",
            Refusal::RefusedFlag { reason, .. } => reason,
            Refusal::MissingArgument(_) => "cc:missing-argument",
            Refusal::LinkStep => "cc:link-step",
            Refusal::NoCompileFlag => "cc:no-c",
            Refusal::NoSource => "cc:no-source",
            Refusal::PreprocessOnly(_) => "cc:preprocess-only",
            Refusal::AssembleOnly => "cc:assemble-only",
            Refusal::MultipleSources => "cc:multiple-sources",
            Refusal::MultipleOutputs => "cc:multiple-outputs",
            Refusal::OutputToStdout => "cc:output-stdout",
            Refusal::SourceFromStdin => "cc:stdin",
            Refusal::Language(_) => "cc:language",
            Refusal::PrecompiledHeader(_) => "cc:pch",
            Refusal::MultipleArch => "cc:multiple-arch",
            Refusal::Environment(_) => "cc:environment",
            Refusal::TimeMacros => "cc:time-macros",
        }
    }

    /// The flag (or argument, or variable) that caused the refusal, for per-flag counts. For
    /// `-fflag=value` forms only the part before `=` is given, so values do not split counts.
    pub fn flag(&self) -> Option<&str> {
        let whole = match self {
            // A probe (`cc --version`) is nothing a user would classify.
            Refusal::RefusedFlag {
                reason: "cc:probe", ..
            } => return None,
            Refusal::UnknownFlag(f)
            | Refusal::RefusedFlag { flag: f, .. }
            | Refusal::MissingArgument(f)
            | Refusal::PreprocessOnly(f)
            | Refusal::PrecompiledHeader(f) => f.as_str(),
            Refusal::Environment(v) => v,
            _ => return None,
        };
        Some(whole.split_once('=').map_or(whole, |(name, _)| name))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotACompiler(s) | Refusal::ResponseFile(s) | Refusal::Language(s) => {
                write!(f, "{} ({s})", self.reason())
            }
            _ => match self.flag() {
                Some(flag) => write!(f, "{} ({flag})", self.reason()),
                None => f.write_str(self.reason()),
            },
        }
    }
}

impl std::error::Error for Refusal {}

/// A code-generation flag recorded in the key, in command-line order (the last of `-O2 -O0`
/// wins, so order matters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModeledFlag {
    /// The table row's text: `-O2`, `-march=`, `-target`.
    pub flag: &'static str,
    /// The value, if the row takes one: `x86-64-v3`.
    pub value: Option<String>,
}

/// `-MD` (all headers) or `-MMD` (user headers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DepKind {
    Md,
    Mmd,
}

/// A dependency-file target: `-MT` as written, or `-MQ` (make-quoted by the compiler).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DepTarget {
    Plain(String),
    Quoted(String),
}

/// The dependency file a compile writes besides the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepFile {
    pub kind: DepKind,
    /// `-MF`, or the default: the output with a `.d` extension.
    pub path: PathBuf,
    /// `-MT`/`-MQ` in order; when empty the compiler writes the output path (quoted).
    pub targets: Vec<DepTarget>,
    /// `-MP`: a phony rule per header.
    pub phony_headers: bool,
}

/// A single-source `-c` compile that kache may cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcInvocation {
    /// The compiler as given (name or path).
    pub compiler: String,
    pub kind: CompilerKind,
    /// The language the source is compiled as (from `-x`, the extension and the driver).
    pub language: Language,
    /// The source path as given (relative paths are relative to the compile's cwd).
    pub source: PathBuf,
    /// `-o`, or `<source stem>.o` in the cwd.
    pub output: PathBuf,
    /// True when `-o` was given (the dep file's default target is then that path as written).
    pub explicit_output: bool,
    /// Set when `-MD`/`-MMD` asks for a dependency file.
    pub dep_file: Option<DepFile>,
    /// The dep-file flags seen, even without `-MD` (they are part of the key's dep-file shape).
    pub dep_targets: Vec<DepTarget>,
    pub dep_phony: bool,
    /// Codegen flags for the key, in order.
    pub modeled: Vec<ModeledFlag>,
    /// Diagnostic flags (`-W…`, `-w`, `-pedantic`, `-fdiagnostics-…`, error limits), one
    /// argument per element, in order. They cannot change a successful compile's object, but
    /// they decide which warnings a hit replays and whether the compile fails at all
    /// (`-Werror`), so the key holds them.
    pub diagnostic_flags: Vec<String>,
    /// Files named by `-include` (a `.gch`/`.pch` next to one is a precompiled header).
    pub forced_includes: Vec<PathBuf>,
    /// Debug info is (probably) on: some `-g…` flag other than `-g0`/`-ggdb0` is last.
    pub debug_info: bool,
    /// Arguments for the preprocessor run whose output is keyed: the command line without
    /// `-c`, `-o x`, the dependency-file flags and `-w`, plus `-E`, `-Wdate-time
    /// -Wsystem-headers -Wno-error -Wno-error=date-time` (so [`super::key::preprocessor_reported_time_macros`] can read
    /// the diagnostics) and `-fpch-preprocess` (so [`super::key::preprocessed_uses_pch`] sees
    /// where GCC would load a precompiled header).
    /// Add the path arguments of `paths::plan` (same as for the real compile); the output goes
    /// to stdout.
    pub preprocess_args: Vec<OsString>,
    /// Arguments for the real compile: the command line as given. Add the path arguments of
    /// `paths::plan`.
    pub compile_args: Vec<OsString>,
}

const C_EXTENSIONS: &[&str] = &["c"];
const CPP_EXTENSIONS: &[&str] = &["cc", "cpp", "cxx", "C", "c++", "cp", "CPP"];
const HEADER_EXTENSIONS: &[&str] = &["h", "hh", "hpp", "hxx", "H", "h++", "tcc"];

/// Parses `args` (the compiler's arguments, without the compiler itself).
pub fn parse(compiler: &str, args: &[OsString]) -> Result<CcInvocation, Refusal> {
    let kind = compiler_kind(compiler).ok_or_else(|| Refusal::NotACompiler(compiler.to_owned()))?;
    let strs: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().ok_or(Refusal::NonUtf8Argument))
        .collect::<Result<_, _>>()?;

    let mut compile_only = false;
    let mut output: Option<&str> = None;
    let mut current_language: Option<Language> = None;
    let mut inputs: Vec<(&str, Option<Language>)> = Vec::new();
    let mut dep_kind: Option<DepKind> = None;
    let mut dep_path: Option<&str> = None;
    let mut dep_targets = Vec::new();
    let mut dep_phony = false;
    let mut modeled = Vec::new();
    let mut diagnostic_flags = Vec::new();
    let mut forced_includes = Vec::new();
    let mut arch_seen = false;
    // Indices of arguments the preprocessor run leaves out.
    let mut not_for_preprocessor = vec![false; strs.len()];

    let mut i = 0;
    while i < strs.len() {
        let arg = strs[i];
        if let Some(file) = arg.strip_prefix('@') {
            return Err(Refusal::ResponseFile(file.to_owned()));
        }
        if arg == "-" {
            return Err(Refusal::SourceFromStdin);
        }
        if !arg.starts_with('-') {
            inputs.push((arg, current_language));
            i += 1;
            continue;
        }
        let m = match flags::lookup(arg, strs.get(i + 1).copied()) {
            Lookup::Found(m) => m,
            Lookup::MissingValue(_) => return Err(Refusal::MissingArgument(arg.to_owned())),
            Lookup::Unknown => return Err(Refusal::UnknownFlag(arg.to_owned())),
        };
        let name = m.row.pattern.text();
        let value = m.value.unwrap_or("");
        let mut skip_in_preprocessor = false;
        match m.row.category {
            Category::Refused(reason) => {
                return Err(Refusal::RefusedFlag {
                    reason,
                    flag: arg.to_owned(),
                })
            }
            Category::Structural => match name {
                "-c" => {
                    compile_only = true;
                    skip_in_preprocessor = true;
                }
                "-o" => {
                    if value == "-" {
                        return Err(Refusal::OutputToStdout);
                    }
                    if output.replace(value).is_some() {
                        return Err(Refusal::MultipleOutputs);
                    }
                    skip_in_preprocessor = true;
                }
                "-x" => {
                    current_language = match value {
                        "c" => Some(Language::C),
                        "c++" => Some(Language::Cpp),
                        "none" => None,
                        "c-header" | "c++-header" => {
                            return Err(Refusal::PrecompiledHeader(format!("-x {value}")))
                        }
                        other => return Err(Refusal::Language(format!("-x {other}"))),
                    }
                }
                "-E" | "-M" | "-MM" => return Err(Refusal::PreprocessOnly(arg.to_owned())),
                "-S" => return Err(Refusal::AssembleOnly),
                "-arch" => {
                    if std::mem::replace(&mut arch_seen, true) {
                        return Err(Refusal::MultipleArch);
                    }
                    modeled.push(ModeledFlag {
                        flag: name,
                        value: Some(value.to_owned()),
                    });
                }
                // A Structural row the parser does not know is a bug in the table: refuse.
                _ => return Err(Refusal::UnknownFlag(arg.to_owned())),
            },
            Category::Modeled => modeled.push(ModeledFlag {
                flag: name,
                value: m.value.map(str::to_owned),
            }),
            Category::Preprocessor => {
                if name == "-include" {
                    forced_includes.push(PathBuf::from(value));
                }
            }
            Category::NoEffect => match name {
                "-MD" => {
                    dep_kind = Some(DepKind::Md);
                    skip_in_preprocessor = true;
                }
                "-MMD" => {
                    dep_kind = Some(DepKind::Mmd);
                    skip_in_preprocessor = true;
                }
                "-MF" => {
                    dep_path = Some(value);
                    skip_in_preprocessor = true;
                }
                "-MT" => {
                    dep_targets.push(DepTarget::Plain(value.to_owned()));
                    skip_in_preprocessor = true;
                }
                "-MQ" => {
                    dep_targets.push(DepTarget::Quoted(value.to_owned()));
                    skip_in_preprocessor = true;
                }
                "-MP" => {
                    dep_phony = true;
                    skip_in_preprocessor = true;
                }
                "-pipe" => {}
                _ => {
                    // `-w` would hide the -Wdate-time probe; warnings do not change -E output.
                    skip_in_preprocessor = name == "-w";
                    diagnostic_flags.extend(strs[i..i + m.consumed].iter().map(|a| a.to_string()));
                }
            },
        }
        if skip_in_preprocessor {
            not_for_preprocessor[i..i + m.consumed].fill(true);
        }
        i += m.consumed;
    }

    if !compile_only {
        let has_source = inputs
            .iter()
            .any(|(p, l)| l.is_some() || source_language(p, kind).is_ok());
        return Err(if has_source {
            Refusal::NoCompileFlag
        } else {
            Refusal::LinkStep
        });
    }
    let (source, explicit_language) = match inputs.as_slice() {
        [] => return Err(Refusal::NoSource),
        [one] => *one,
        _ => return Err(Refusal::MultipleSources),
    };
    let language = match explicit_language {
        Some(l) => l,
        None => source_language(source, kind)?,
    };
    let source = PathBuf::from(source);
    let explicit_output = output.is_some();
    let output = match output {
        Some(o) => PathBuf::from(o),
        None => default_object(&source),
    };
    let dep_file = dep_kind.map(|kind| DepFile {
        kind,
        path: dep_path.map_or_else(|| output.with_extension("d"), PathBuf::from),
        targets: dep_targets.clone(),
        phony_headers: dep_phony,
    });
    let debug_info = debug_info_on(&modeled);

    let mut preprocess_args: Vec<OsString> = vec!["-E".into()];
    preprocess_args.extend(
        args.iter()
            .zip(&not_for_preprocessor)
            .filter(|(_, skip)| !**skip)
            .map(|(a, _)| a.clone()),
    );
    preprocess_args.push("-Wdate-time".into());
    // GCC keeps the report silent in system headers (`-isystem`, `#pragma GCC system_header`)
    // unless asked; asking shows other warnings of theirs too, so none may fail the run (the
    // text of `-E` does not depend on warnings).
    preprocess_args.push("-Wsystem-headers".into());
    preprocess_args.push("-Wno-error".into());
    preprocess_args.push("-Wno-error=date-time".into());
    // GCC loads a `.gch` found before the header in any include directory, but `-E` alone
    // never looks for one: with this flag the output says where one would be used (and the
    // lookups the input recorder sees include the `.gch` candidates). Without a `.gch` the
    // output is unchanged; clang accepts the flag and does nothing with it.
    preprocess_args.push("-fpch-preprocess".into());

    Ok(CcInvocation {
        compiler: compiler.to_owned(),
        kind,
        language,
        source,
        output,
        explicit_output,
        dep_file,
        dep_targets,
        dep_phony,
        modeled,
        diagnostic_flags,
        forced_includes,
        debug_info,
        preprocess_args,
        compile_args: args.to_vec(),
    })
}

/// The language of a source by its extension (the driver's language decides for `.c`).
fn source_language(path: &str, kind: CompilerKind) -> Result<Language, Refusal> {
    let ext = Path::new(path)
        .extension()
        .and_then(OsStr::to_str)
        .unwrap_or("");
    if C_EXTENSIONS.contains(&ext) {
        // g++/clang++ compile a .c file as C++.
        Ok(kind.language)
    } else if CPP_EXTENSIONS.contains(&ext) {
        Ok(Language::Cpp)
    } else if HEADER_EXTENSIONS.contains(&ext) {
        Err(Refusal::PrecompiledHeader(path.to_owned()))
    } else {
        Err(Refusal::Language(path.to_owned()))
    }
}

/// `dir/x.c` → `x.o` (in the cwd), as the compiler does without `-o`.
fn default_object(source: &Path) -> PathBuf {
    let stem = source.file_stem().unwrap_or(source.as_os_str());
    let mut name = stem.to_os_string();
    name.push(".o");
    PathBuf::from(name)
}

fn debug_info_on(modeled: &[ModeledFlag]) -> bool {
    let mut on = false;
    for f in modeled {
        match f.flag {
            "-g0" | "-ggdb0" => on = false,
            "-gz"
            | "-gz="
            | "-gno-record-gcc-switches"
            | "-gcolumn-info"
            | "-gno-column-info"
            | "-gstrict-dwarf"
            | "-gno-strict-dwarf" => {}
            g if g.starts_with("-g") => on = true,
            _ => {}
        }
    }
    on
}

/// Environment variables that change a compile in ways the key does not hold, with why.
/// Include-path variables (`CPATH`, `C_INCLUDE_PATH`, …) are fine: their effect is in the
/// preprocessed source.
pub const REFUSED_ENV: &[(&str, &str)] = &[
    (
        "DEPENDENCIES_OUTPUT",
        "writes a dependency file kache does not track",
    ),
    (
        "SUNPRO_DEPENDENCIES",
        "writes a dependency file kache does not track",
    ),
    (
        "CCC_OVERRIDE_OPTIONS",
        "clang rewrites its own command line",
    ),
    (
        "GCC_EXEC_PREFIX",
        "takes compiler programs from another place",
    ),
    (
        "COMPILER_PATH",
        "takes compiler programs from another place",
    ),
    ("GCC_COMPARE_DEBUG", "runs a second compile and compares"),
];

/// Refuses when one of [`REFUSED_ENV`] is set (`is_set` asks the caller's environment).
pub fn refuse_env(is_set: impl Fn(&str) -> bool) -> Result<(), Refusal> {
    match REFUSED_ENV.iter().find(|(v, _)| is_set(v)) {
        Some((v, _)) => Err(Refusal::Environment(v)),
        None => Ok(()),
    }
}

impl CcInvocation {
    /// Paths whose existence means a precompiled header may be used instead of the header the
    /// preprocessor read (GCC and clang pick up `X.gch`/`X.pch` next to `-include X`, and GCC
    /// also next to any included header). The caller refuses (`cc:pch`) when one exists.
    /// `headers` are the files the preprocessed output names ([`super::key::included_files`]),
    /// relative ones resolved against `cwd`. GCC also looks for `X.gch` in include directories
    /// searched before the one where `X` was found; that case is not probed.
    pub fn pch_probe_paths(&self, cwd: &Path, headers: &[String]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let named = self
            .forced_includes
            .iter()
            .cloned()
            .chain(headers.iter().map(PathBuf::from));
        for h in named {
            let h = if h.is_absolute() { h } else { cwd.join(h) };
            for ext in [".gch", ".pch"] {
                let mut p = h.clone().into_os_string();
                p.push(ext);
                out.push(PathBuf::from(p));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn ok(args: &[&str]) -> CcInvocation {
        parse("gcc", &os(args)).unwrap_or_else(|r| panic!("{args:?} refused: {r}"))
    }

    fn reason(compiler: &str, args: &[&str]) -> &'static str {
        match parse(compiler, &os(args)) {
            Ok(_) => panic!("{args:?} accepted"),
            Err(r) => r.reason(),
        }
    }

    #[test]
    fn typical_cc_crate_compile_is_accepted() {
        let inv = ok(&[
            "-O3",
            "-ffunction-sections",
            "-fdata-sections",
            "-fPIC",
            "-gdwarf-4",
            "-fno-omit-frame-pointer",
            "-m64",
            "-I",
            "/w/include",
            "-Wall",
            "-Wextra",
            "-DFOO=1",
            "-o",
            "/w/target/out/x.o",
            "-c",
            "/w/src/x.c",
        ]);
        assert_eq!(inv.source, PathBuf::from("/w/src/x.c"));
        assert_eq!(inv.output, PathBuf::from("/w/target/out/x.o"));
        assert_eq!(inv.language, Language::C);
        assert!(inv.debug_info);
        let flags: Vec<_> = inv.modeled.iter().map(|m| m.flag).collect();
        assert_eq!(
            flags,
            [
                "-O3",
                "-ffunction-sections",
                "-fdata-sections",
                "-fPIC",
                "-gdwarf-4",
                "-fno-omit-frame-pointer",
                "-m64"
            ]
        );
        assert_eq!(inv.preprocess_args[0], "-E");
        assert!(!inv
            .preprocess_args
            .iter()
            .any(|a| a == "-c" || a == "-o" || a == "/w/target/out/x.o"));
        assert!(inv.preprocess_args.iter().any(|a| a == "/w/include"));
        // The preprocessor run marks where GCC would load a precompiled header.
        assert!(inv.preprocess_args.iter().any(|a| a == "-fpch-preprocess"));
        assert!(!inv.compile_args.iter().any(|a| a == "-fpch-preprocess"));
        assert_eq!(inv.compile_args.len(), 16);
    }

    #[test]
    fn default_output_is_stem_o_in_cwd() {
        let inv = ok(&["-c", "src/dir/foo.cpp"]);
        assert_eq!(inv.output, PathBuf::from("foo.o"));
        assert_eq!(inv.language, Language::Cpp);
        assert!(!inv.explicit_output);
    }

    #[test]
    fn dep_file_settings_are_read_and_kept_out_of_the_preprocessor_run() {
        let inv = ok(&[
            "-c", "x.c", "-o", "obj/x.o", "-MD", "-MP", "-MT", "t1", "-MQ", "t 2",
        ]);
        let dep = inv.dep_file.clone().unwrap();
        assert_eq!(dep.kind, DepKind::Md);
        assert_eq!(dep.path, PathBuf::from("obj/x.d"));
        assert_eq!(
            dep.targets,
            vec![
                DepTarget::Plain("t1".into()),
                DepTarget::Quoted("t 2".into())
            ]
        );
        assert!(dep.phony_headers);
        for gone in ["-MD", "-MP", "-MT", "t1", "-MQ", "t 2", "obj/x.o"] {
            assert!(!inv.preprocess_args.iter().any(|a| a == gone), "{gone}");
        }
        let inv = ok(&["-c", "x.c", "-MMD", "-MFdeps/x.dep"]);
        let dep = inv.dep_file.unwrap();
        assert_eq!(
            (dep.kind, dep.path),
            (DepKind::Mmd, PathBuf::from("deps/x.dep"))
        );
        assert_eq!(
            ok(&["-c", "x.c", "-MD"]).dep_file.unwrap().path,
            PathBuf::from("x.d")
        );
        assert!(ok(&["-c", "x.c"]).dep_file.is_none());
    }

    #[test]
    fn compiler_probes_pass_through_without_a_flag_to_classify() {
        for probe in [
            &["--version"][..],
            &["-v"],
            &["-dumpmachine"],
            &["-print-file-name=libc.so"],
            &["-c", "x.c", "-v"],
        ] {
            let r = parse("cc", &os(probe)).unwrap_err();
            assert_eq!(r.reason(), "cc:probe", "{probe:?}");
            assert_eq!(r.flag(), None, "{probe:?}");
        }
    }

    #[test]
    fn diagnostic_flags_are_kept_in_order_for_the_key() {
        let inv = ok(&["-c", "x.c", "-Wall", "-pipe", "-Werror", "-w", "-MD"]);
        assert_eq!(inv.diagnostic_flags, ["-Wall", "-Werror", "-w"]);
    }

    #[test]
    fn polarity_changes_the_modeled_set() {
        let a = ok(&["-c", "x.c", "-fPIC"]).modeled;
        let b = ok(&["-c", "x.c", "-fno-PIC"]).modeled;
        assert_ne!(a, b);
    }

    #[test]
    fn language_follows_x_extension_and_driver() {
        assert_eq!(ok(&["-x", "c++", "-c", "x.inc"]).language, Language::Cpp);
        assert_eq!(ok(&["-xc", "-c", "x.weird"]).language, Language::C);
        assert_eq!(
            parse("g++", &os(&["-c", "x.c"])).unwrap().language,
            Language::Cpp
        );
        assert_eq!(
            parse("clang", &os(&["-c", "x.C"])).unwrap().language,
            Language::Cpp
        );
    }

    #[test]
    fn wp_preprocessor_defines_are_accepted() {
        let inv = ok(&["-c", "x.c", "-Wp,-DX=1", "-Wp,-I/inc"]);
        assert!(inv.preprocess_args.iter().any(|a| a == "-Wp,-DX=1"));
        assert!(inv.modeled.is_empty());
    }

    #[test]
    fn structural_refusals_carry_their_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["x.o", "y.o", "-o", "app"], "cc:link-step"),
            (&["x.c", "-o", "app"], "cc:no-c"),
            (&["-c"], "cc:no-source"),
            (&["-E", "x.c"], "cc:preprocess-only"),
            (&["-c", "-E", "x.c"], "cc:preprocess-only"),
            (&["-M", "x.c"], "cc:preprocess-only"),
            (&["-MM", "-c", "x.c"], "cc:preprocess-only"),
            (&["-S", "x.c"], "cc:assemble-only"),
            (&["-c", "-S", "x.c"], "cc:assemble-only"),
            (&["-c", "x.c", "y.c"], "cc:multiple-sources"),
            (&["-c", "x.c", "y.o"], "cc:multiple-sources"),
            (&["-c", "x.c", "-o", "-"], "cc:output-stdout"),
            (
                &["-c", "x.c", "-o", "a.o", "-o", "b.o"],
                "cc:multiple-outputs",
            ),
            (&["-c", "-"], "cc:stdin"),
            (&["-c", "@args.rsp"], "cc:response-file"),
            (&["-c", "x.s"], "cc:language"),
            (&["-c", "x.S"], "cc:language"),
            (&["-c", "x.m"], "cc:language"),
            (&["-c", "x.mm"], "cc:language"),
            (&["-c", "x.i"], "cc:language"),
            (&["-x", "assembler-with-cpp", "-c", "x.c"], "cc:language"),
            (&["-x", "objective-c", "-c", "x.c"], "cc:language"),
            (&["-x", "c-header", "-c", "x.h"], "cc:pch"),
            (&["-c", "x.h"], "cc:pch"),
            (&["-c", "x.c", "-include-pch", "p.pch"], "cc:pch"),
            (&["-c", "x.c", "-fmodules"], "cc:modules"),
            (&["-c", "x.c", "--coverage"], "cc:coverage"),
            (&["-c", "x.c", "-gsplit-dwarf"], "cc:split-dwarf"),
            (
                &["-c", "x.c", "-arch", "x86_64", "-arch", "arm64"],
                "cc:multiple-arch",
            ),
            (&["-c", "x.c", "-fplugin=p.so"], "cc:plugin"),
            (&["-c", "x.c", "-Wl,-rpath,/x"], "cc:tool-passthrough"),
            (&["-c", "x.c", "-Wa,--noexecstack"], "cc:tool-passthrough"),
            (&["-c", "x.c", "-Wp,-MD,x.d"], "cc:tool-passthrough"),
            (&["-c", "x.c", "-flto"], "cc:unknown-flag"),
            (&["-c", "x.c", "-o"], "cc:missing-argument"),
        ];
        for (args, want) in cases {
            assert_eq!(reason("gcc", args), *want, "{args:?}");
        }
        assert_eq!(reason("rustc", &["-c", "x.c"]), "cc:not-a-compiler");
    }

    #[test]
    fn unknown_flag_refusal_names_the_flag_without_its_value() {
        let r = parse("cc", &os(&["-c", "x.c", "-fsave-optimization-record=yaml"])).unwrap_err();
        assert_eq!(r.reason(), "cc:unknown-flag");
        assert_eq!(r.flag(), Some("-fsave-optimization-record"));
        assert_eq!(
            r.to_string(),
            "cc:unknown-flag (-fsave-optimization-record)"
        );
    }

    #[test]
    fn single_arch_is_modeled() {
        let inv = parse("clang", &os(&["-arch", "arm64", "-c", "x.c"])).unwrap();
        assert_eq!(
            inv.modeled,
            vec![ModeledFlag {
                flag: "-arch",
                value: Some("arm64".into())
            }]
        );
    }

    #[test]
    fn refused_environment_is_named() {
        let r = refuse_env(|v| v == "DEPENDENCIES_OUTPUT").unwrap_err();
        assert_eq!(
            (r.reason(), r.flag()),
            ("cc:environment", Some("DEPENDENCIES_OUTPUT"))
        );
        assert!(refuse_env(|v| v == "CPATH").is_ok());
    }

    #[test]
    fn pch_probes_cover_forced_includes_and_headers() {
        let inv = ok(&["-c", "x.c", "-include", "pre.h"]);
        let probes = inv.pch_probe_paths(Path::new("/w"), &["/usr/include/stdio.h".into()]);
        assert!(probes.contains(&PathBuf::from("/w/pre.h.gch")));
        assert!(probes.contains(&PathBuf::from("/w/pre.h.pch")));
        assert!(probes.contains(&PathBuf::from("/usr/include/stdio.h.gch")));
    }

    /// A small deterministic generator (xorshift), so the fuzz test needs no dependency and
    /// replays identically.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    const REAL_FLAGS: &[&str] = &[
        "-c",
        "-o",
        "out.o",
        "-O2",
        "-O3",
        "-Os",
        "-Ofast",
        "-g",
        "-g0",
        "-gdwarf-4",
        "-fPIC",
        "-fno-PIC",
        "-std=c11",
        "-std=c++17",
        "-march=x86-64-v2",
        "-m64",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-unused",
        "-w",
        "-DX=1",
        "-D",
        "Y",
        "-UZ",
        "-I",
        "inc",
        "-Iinc2",
        "-isystem",
        "/sys",
        "-include",
        "pre.h",
        "-MD",
        "-MMD",
        "-MF",
        "x.d",
        "-MT",
        "t",
        "-MQ",
        "-MP",
        "-pipe",
        "-x",
        "c",
        "c++",
        "x.c",
        "y.cpp",
        "z.s",
        "-E",
        "-S",
        "-M",
        "-",
        "@rsp",
        "-Wp,-DA=1",
        "-Wp,-MD,f",
        "-Wl,-O1",
        "-Wa,-g",
        "-fdiagnostics-color=always",
        "-ffunction-sections",
        "-arch",
        "arm64",
        "-target",
        "--target=aarch64-linux-gnu",
        "-ffile-prefix-map=/a=.",
        "-pedantic",
        "",
    ];
    const TAKES_VALUE: &[&str] = &[
        "-o", "-D", "-I", "-isystem", "-include", "-MF", "-MT", "-MQ", "-x", "-arch", "-target",
    ];
    /// Flags that have no row in the table.
    const UNCLASSIFIED: &[&str] = &[
        "-flto",
        "-fsyntax-only",
        "-fno-fast-math-x",
        "-ofoo",
        "-O9",
        "-L/lib",
        "-lm",
        "-fopenacc",
        "-finstrument-functions",
        "-mllvm",
        "-Xarch_x86_64",
        "-gfoo",
        "-fasm",
        "--param",
        "-ffixed-x18",
        "-fzero-call-used-regs=all",
        "-dM",
        "-H",
        "-P",
        "-C",
        "-fdirectives-only",
        "-frecord-gcc-switchesX",
        "-fPICx",
        "-fpic=1",
    ];

    #[test]
    fn unclassified_flags_have_no_row() {
        for f in UNCLASSIFIED {
            assert!(flags::category_of(f, Some("v")).is_none(), "{f} has a row");
        }
    }

    #[test]
    fn fuzz_parse_never_panics_and_never_accepts_an_unclassified_flag() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for case in 0..20_000 {
            let len = (rng.next() % 12) as usize;
            let mut args: Vec<&str> = (0..len).map(|_| rng.pick(REAL_FLAGS)).collect();
            // Half the cases are shaped like a valid compile so acceptance is exercised too.
            if case % 2 == 0 {
                args.extend(["-c", "x.c"]);
            }
            let poisoned = case % 3 == 0;
            if poisoned {
                let mut at = (rng.next() % (args.len() as u64 + 1)) as usize;
                // After a flag taking a separate value the word is that value, not a flag.
                if at > 0 && TAKES_VALUE.contains(&args[at - 1]) {
                    at = 0;
                }
                args.insert(at, rng.pick(UNCLASSIFIED));
            }
            let result = parse("gcc", &os(&args));
            if poisoned {
                assert!(result.is_err(), "accepted an unclassified flag: {args:?}");
            }
            if result.is_ok() {
                accepted += 1;
            }
        }
        assert!(
            accepted > 100,
            "the generator should produce valid compiles too ({accepted})"
        );
    }
}
