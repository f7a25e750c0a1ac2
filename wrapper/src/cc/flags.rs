//! The C/C++ flag table: what kache knows about each compiler option, as data.
//!
//! One row per flag pattern: how the pattern matches, which category the flag falls in, and a
//! one-line reason a reviewer can check. Anything without a row is refused (an allow-list: a
//! deny-list once cached `-Ofast` and `-pg`). Adding a flag is one row here plus one test.
//!
//! Matching picks the row with the *longest* pattern text that matches, so specific rows
//! (`-Wp,-D`, `-include-pch`, `-march=native`, `-gsplit-dwarf`) win over general ones (`-W`,
//! `-include`, `-march=`, `-g`) whatever their order in the table.
//!
//! This module never decides anything structural (how many sources, which output): that is
//! `args.rs`, which interprets the `Structural` rows and the dependency-file rows by name.

/// How a row's text matches an argument (and, for some, the argument after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// The argument is exactly this text: `-fPIC`.
    Exact(&'static str),
    /// The argument starts with this text; the rest is its value: `-std=c11`, `-Wall`.
    Joined(&'static str),
    /// Like `Joined`, but the value must hold no comma. For `-Wp,`, which splits its argument
    /// at commas into several preprocessor options (`-Wp,-DX,-MD,f` is three options).
    JoinedNoComma(&'static str),
    /// The value is joined (`-DX`) or the next argument (`-D X`).
    JoinedOrSeparate(&'static str),
    /// Exactly this text, and the next argument is its value: `-o out.o`, `-target x`.
    Separate(&'static str),
}

impl Pattern {
    /// The literal text of the pattern (the flag name as written on a command line).
    pub fn text(self) -> &'static str {
        match self {
            Pattern::Exact(t)
            | Pattern::Joined(t)
            | Pattern::JoinedNoComma(t)
            | Pattern::JoinedOrSeparate(t)
            | Pattern::Separate(t) => t,
        }
    }
}

/// What a flag does to the cached object, and so what kache does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Changes code generation: recorded literally (in order) in the key.
    Modeled,
    /// Changes only what the preprocessor produces; the preprocessed source is in the key.
    Preprocessor,
    /// Cannot change the bytes of the object of a successful compile.
    NoEffect,
    /// Interpreted by the argument parser itself (mode, output, language, arch).
    Structural,
    /// Never cached; the string is the refusal reason counted in reports (`cc:…`).
    Refused(&'static str),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct FlagRow {
    pub pattern: Pattern,
    pub category: Category,
    pub reason: &'static str,
}

const fn row(pattern: Pattern, category: Category, reason: &'static str) -> FlagRow {
    FlagRow {
        pattern,
        category,
        reason,
    }
}

use Category::{Modeled as M, NoEffect as N, Preprocessor as P, Refused as R, Structural as S};
use Pattern::{
    Exact as Ex, Joined as Jo, JoinedNoComma as JoNc, JoinedOrSeparate as JoS, Separate as Sep,
};

/// The table. Keep rows grouped by category; order does not affect matching.
#[rustfmt::skip]
pub static FLAGS: &[FlagRow] = &[
    // ---- Structural: the parser reads these --------------------------------------------------
    row(Ex("-c"), S, "compile to an object without linking: the only mode kache caches"),
    row(Sep("-o"), S, "output path; `-o -` (stdout) is refused by the parser"),
    row(JoS("-x"), S, "input language; only c and c++ are cached"),
    row(Ex("-E"), S, "preprocess only: no object"),
    row(Ex("-S"), S, "compile to assembly: no object"),
    row(Ex("-M"), S, "dependency list only (implies -E): no object"),
    row(Ex("-MM"), S, "dependency list only (implies -E): no object"),
    row(Sep("-arch"), S, "Apple target architecture; one is modeled, several make a fat object and are refused"),

    // ---- Modeled: code generation, in the key ------------------------------------------------
    row(Ex("-O"), M, "optimization level"),
    row(Ex("-O0"), M, "optimization level"),
    row(Ex("-O1"), M, "optimization level"),
    row(Ex("-O2"), M, "optimization level"),
    row(Ex("-O3"), M, "optimization level"),
    row(Ex("-Os"), M, "optimization level"),
    row(Ex("-Oz"), M, "optimization level"),
    row(Ex("-Og"), M, "optimization level"),
    row(Ex("-Ofast"), M, "optimization level incl. -ffast-math: deterministic codegen, so keyed, not refused"),
    row(Ex("-g"), M, "debug info level"),
    row(Ex("-g0"), M, "debug info level"),
    row(Ex("-g1"), M, "debug info level"),
    row(Ex("-g2"), M, "debug info level"),
    row(Ex("-g3"), M, "debug info level (macros)"),
    row(Ex("-ggdb"), M, "debug info level"),
    row(Ex("-ggdb0"), M, "debug info level"),
    row(Ex("-ggdb1"), M, "debug info level"),
    row(Ex("-ggdb2"), M, "debug info level"),
    row(Ex("-ggdb3"), M, "debug info level"),
    row(Ex("-gdwarf"), M, "DWARF version"),
    row(Ex("-gdwarf-2"), M, "DWARF version"),
    row(Ex("-gdwarf-3"), M, "DWARF version"),
    row(Ex("-gdwarf-4"), M, "DWARF version"),
    row(Ex("-gdwarf-5"), M, "DWARF version"),
    row(Ex("-gline-tables-only"), M, "debug info level (clang)"),
    row(Ex("-gline-directives-only"), M, "debug info level (clang)"),
    row(Ex("-gcolumn-info"), M, "debug info detail"),
    row(Ex("-gno-column-info"), M, "debug info detail"),
    row(Ex("-gstrict-dwarf"), M, "debug info detail"),
    row(Ex("-gno-strict-dwarf"), M, "debug info detail"),
    row(Ex("-gz"), M, "compressed debug sections"),
    row(Jo("-gz="), M, "compressed debug sections"),
    row(Ex("-gno-record-gcc-switches"), M, "keeps codegen switches out of DW_AT_producer"),
    row(Ex("-fPIC"), M, "position-independent code"),
    row(Ex("-fpic"), M, "position-independent code (small GOT)"),
    row(Ex("-fPIE"), M, "position-independent executable code"),
    row(Ex("-fpie"), M, "position-independent executable code (small GOT)"),
    row(Ex("-fno-PIC"), M, "position-dependent code"),
    row(Ex("-fno-pic"), M, "position-dependent code"),
    row(Ex("-fno-PIE"), M, "position-dependent code"),
    row(Ex("-fno-pie"), M, "position-dependent code"),
    row(Jo("-std="), M, "language standard"),
    row(Jo("--std="), M, "language standard"),
    row(Ex("-ansi"), M, "language standard"),
    row(Jo("-march="), M, "target architecture"),
    row(Jo("-mtune="), M, "instruction scheduling"),
    row(Jo("-mcpu="), M, "target CPU"),
    row(Ex("-m64"), M, "64-bit ABI"),
    row(Ex("-m32"), M, "32-bit ABI"),
    row(Ex("-mx32"), M, "x32 ABI"),
    row(Jo("-mcmodel="), M, "code model"),
    row(Jo("-mfpu="), M, "ARM floating-point unit"),
    row(Jo("-mfloat-abi="), M, "ARM float ABI"),
    row(Jo("-mabi="), M, "ABI"),
    row(Ex("-mthumb"), M, "ARM instruction set"),
    row(Ex("-marm"), M, "ARM instruction set"),
    row(Ex("-mno-red-zone"), M, "stack red zone"),
    row(Ex("-mstackrealign"), M, "stack alignment"),
    row(Ex("-msse"), M, "ISA extension"),
    row(Ex("-msse2"), M, "ISA extension"),
    row(Ex("-msse3"), M, "ISA extension"),
    row(Ex("-mssse3"), M, "ISA extension"),
    row(Ex("-msse4.1"), M, "ISA extension"),
    row(Ex("-msse4.2"), M, "ISA extension"),
    row(Ex("-mavx"), M, "ISA extension"),
    row(Ex("-mavx2"), M, "ISA extension"),
    row(Ex("-mfma"), M, "ISA extension"),
    row(Ex("-mbmi"), M, "ISA extension"),
    row(Ex("-mbmi2"), M, "ISA extension"),
    row(Ex("-mpclmul"), M, "ISA extension"),
    row(Ex("-maes"), M, "ISA extension"),
    row(Ex("-mpopcnt"), M, "ISA extension"),
    row(Jo("-mmacosx-version-min="), M, "deployment target (recorded in the object)"),
    row(Jo("-mios-version-min="), M, "deployment target (recorded in the object)"),
    row(Sep("-target"), M, "target triple (clang)"),
    row(Jo("--target="), M, "target triple (clang)"),
    row(JoS("-isysroot"), M, "Apple SDK: its version is recorded in the object, so not preprocessor-only"),
    row(Jo("-stdlib="), M, "C++ standard library (clang)"),
    row(Ex("-pthread"), M, "threading model"),
    row(Ex("-fopenmp"), M, "OpenMP code generation"),
    row(Ex("-ffunction-sections"), M, "one section per function"),
    row(Ex("-fno-function-sections"), M, "one section per function"),
    row(Ex("-fdata-sections"), M, "one section per data item"),
    row(Ex("-fno-data-sections"), M, "one section per data item"),
    row(Ex("-fomit-frame-pointer"), M, "frame pointer"),
    row(Ex("-fno-omit-frame-pointer"), M, "frame pointer"),
    row(Ex("-momit-leaf-frame-pointer"), M, "leaf frame pointer (cc crate adds the -mno form)"),
    row(Ex("-mno-omit-leaf-frame-pointer"), M, "leaf frame pointer (cc crate adds the -mno form)"),
    row(Jo("-fvisibility="), M, "default symbol visibility"),
    row(Ex("-fvisibility-inlines-hidden"), M, "symbol visibility"),
    row(Ex("-fstack-protector"), M, "stack protector"),
    row(Ex("-fstack-protector-strong"), M, "stack protector"),
    row(Ex("-fstack-protector-all"), M, "stack protector"),
    row(Ex("-fstack-protector-explicit"), M, "stack protector"),
    row(Ex("-fno-stack-protector"), M, "stack protector"),
    row(Ex("-fstack-clash-protection"), M, "stack clash protection"),
    row(Ex("-fno-stack-clash-protection"), M, "stack clash protection"),
    row(Ex("-fcf-protection"), M, "control-flow protection"),
    row(Jo("-fcf-protection="), M, "control-flow protection"),
    row(Ex("-fexceptions"), M, "exception tables"),
    row(Ex("-fno-exceptions"), M, "exception tables"),
    row(Ex("-frtti"), M, "C++ RTTI"),
    row(Ex("-fno-rtti"), M, "C++ RTTI"),
    row(Ex("-fasynchronous-unwind-tables"), M, "unwind tables"),
    row(Ex("-fno-asynchronous-unwind-tables"), M, "unwind tables"),
    row(Ex("-funwind-tables"), M, "unwind tables"),
    row(Ex("-fno-unwind-tables"), M, "unwind tables"),
    row(Ex("-fstrict-aliasing"), M, "aliasing assumptions"),
    row(Ex("-fno-strict-aliasing"), M, "aliasing assumptions"),
    row(Ex("-fwrapv"), M, "signed overflow semantics"),
    row(Ex("-fno-strict-overflow"), M, "signed overflow semantics"),
    row(Ex("-fno-delete-null-pointer-checks"), M, "null check elimination"),
    row(Ex("-fcommon"), M, "tentative definitions"),
    row(Ex("-fno-common"), M, "tentative definitions"),
    row(Ex("-fsigned-char"), M, "char signedness"),
    row(Ex("-funsigned-char"), M, "char signedness"),
    row(Ex("-fno-builtin"), M, "builtin functions"),
    row(Ex("-ffreestanding"), M, "freestanding environment"),
    row(Ex("-ffast-math"), M, "floating-point semantics"),
    row(Ex("-fno-math-errno"), M, "floating-point semantics"),
    row(Ex("-fno-plt"), M, "PLT use"),
    row(Ex("-fno-semantic-interposition"), M, "interposition assumptions"),
    row(Ex("-fno-threadsafe-statics"), M, "C++ static init guards"),
    row(Ex("-fno-inline"), M, "inlining"),
    row(Ex("-fpermissive"), M, "C++ accepts nonconforming code"),
    row(Ex("-fident"), M, ".ident directive"),
    row(Ex("-fno-ident"), M, ".ident directive"),
    row(Jo("-frandom-seed="), M, "seed for generated symbol names"),
    row(Jo("-fsanitize="), M, "sanitizer instrumentation"),
    row(Jo("-fno-sanitize="), M, "sanitizer instrumentation"),
    row(Jo("-ffile-prefix-map="), M, "path rewriting in the object; user maps are keyed literally (see paths.rs)"),
    row(Jo("-fdebug-prefix-map="), M, "path rewriting in debug info; keyed literally (see paths.rs)"),
    row(Jo("-fmacro-prefix-map="), M, "path rewriting in __FILE__; keyed literally (see paths.rs)"),

    // ---- Preprocessor: the effect is in the preprocessed source ------------------------------
    row(JoS("-D"), P, "macro definition"),
    row(JoS("-U"), P, "macro undefinition"),
    row(JoS("-I"), P, "include directory"),
    row(JoS("-isystem"), P, "system include directory"),
    row(JoS("-iquote"), P, "quote include directory"),
    row(JoS("-idirafter"), P, "late include directory"),
    row(JoS("-include"), P, "forced include (a .gch/.pch next to it is refused by the caller: see pch_probe_paths)"),
    row(JoS("-imacros"), P, "macros from a file"),
    row(Jo("--sysroot="), P, "header root for a -c compile"),
    row(Sep("--sysroot"), P, "header root for a -c compile"),
    row(Ex("-nostdinc"), P, "no standard include directories"),
    row(Ex("-nostdinc++"), P, "no standard C++ include directories"),
    row(Ex("-undef"), P, "no predefined macros"),
    row(JoNc("-Wp,-D"), P, "macro definition through -Wp (one option, no comma)"),
    row(JoNc("-Wp,-U"), P, "macro undefinition through -Wp (one option, no comma)"),
    row(JoNc("-Wp,-I"), P, "include directory through -Wp (one option, no comma)"),

    // ---- NoEffect: cannot change a successful compile's object -------------------------------
    row(Jo("-W"), N, "warning option (the -Wp, -Wa, -Wl look-alikes have their own rows)"),
    row(Ex("-Werror"), N, "turns warnings into errors: may fail the compile, but failures are never cached, so a successful object is unaffected"),
    row(Jo("-Werror="), N, "turns one warning into an error: as -Werror"),
    row(Ex("-w"), N, "silences warnings"),
    row(Ex("-pedantic"), N, "extra diagnostics"),
    row(Ex("-pedantic-errors"), N, "extra diagnostics as errors (failures are not cached)"),
    row(Ex("-Qunused-arguments"), N, "silences unused-argument warnings (clang)"),
    row(Jo("-fdiagnostics-"), N, "diagnostics presentation"),
    row(Jo("-fno-diagnostics-"), N, "diagnostics presentation"),
    row(Ex("-fcolor-diagnostics"), N, "diagnostics colour (clang)"),
    row(Ex("-fno-color-diagnostics"), N, "diagnostics colour (clang)"),
    row(Ex("-fansi-escape-codes"), N, "diagnostics colour (clang)"),
    row(Ex("-fcaret-diagnostics"), N, "diagnostics presentation"),
    row(Ex("-fno-caret-diagnostics"), N, "diagnostics presentation"),
    row(Ex("-fshow-column"), N, "diagnostics presentation"),
    row(Ex("-fno-show-column"), N, "diagnostics presentation"),
    row(Jo("-fmessage-length="), N, "diagnostics line width"),
    row(Jo("-fmax-errors="), N, "error count limit"),
    row(Jo("-ferror-limit="), N, "error count limit (clang)"),
    row(Ex("-pipe"), N, "pipes instead of temporary files between stages"),
    row(Ex("-MD"), N, "also write a dependency file (stored and rewritten; its shape is keyed)"),
    row(Ex("-MMD"), N, "also write a dependency file without system headers (shape keyed)"),
    row(JoS("-MF"), N, "dependency file path"),
    row(JoS("-MT"), N, "dependency target (keyed in the dep-file shape)"),
    row(JoS("-MQ"), N, "quoted dependency target (keyed in the dep-file shape)"),
    row(Ex("-MP"), N, "phony targets for headers (keyed in the dep-file shape)"),

    // ---- Refused, with the reason counted in reports -----------------------------------------
    row(Jo("-Wp,"), R("cc:tool-passthrough"), "other preprocessor options through -Wp (e.g. -Wp,-MD,f writes files we do not track)"),
    row(Jo("-Wa,"), R("cc:tool-passthrough"), "assembler options: not a warning, and the assembler's behaviour is not modeled"),
    row(Jo("-Wl,"), R("cc:tool-passthrough"), "linker options: not a warning; meaningless for -c, refused rather than guessed"),
    row(Sep("-Xclang"), R("cc:tool-passthrough"), "raw clang frontend options are not modeled"),
    row(Sep("-Xpreprocessor"), R("cc:tool-passthrough"), "raw preprocessor options are not modeled"),
    row(Sep("-Xassembler"), R("cc:tool-passthrough"), "raw assembler options are not modeled"),
    row(Sep("-Xlinker"), R("cc:tool-passthrough"), "raw linker options are not modeled"),
    row(Ex("-march=native"), R("cc:native-arch"), "depends on the building machine's CPU, which the key does not hold"),
    row(Ex("-mtune=native"), R("cc:native-arch"), "depends on the building machine's CPU, which the key does not hold"),
    row(Ex("-mcpu=native"), R("cc:native-arch"), "depends on the building machine's CPU, which the key does not hold"),
    row(Ex("-pg"), R("cc:profile"), "gprof instrumentation"),
    row(Jo("-fprofile-"), R("cc:profile"), "profile generation/use reads or writes files outside the key"),
    row(Ex("--coverage"), R("cc:coverage"), "gcov instrumentation writes .gcno next to the object"),
    row(Ex("-ftest-coverage"), R("cc:coverage"), "writes .gcno next to the object"),
    row(Ex("-fprofile-arcs"), R("cc:coverage"), "gcov arc instrumentation"),
    row(Ex("-fcoverage-mapping"), R("cc:coverage"), "clang source-based coverage"),
    row(Ex("-gsplit-dwarf"), R("cc:split-dwarf"), "writes a .dwo beside the object and names it inside"),
    row(Jo("-gsplit-dwarf="), R("cc:split-dwarf"), "writes a .dwo beside the object and names it inside"),
    row(Ex("-gmodules"), R("cc:modules"), "debug info refers to module/PCH files"),
    row(Ex("-gembed-source"), R("cc:unkeyed-input"), "embeds original source text (comments included), which the preprocessed key lacks"),
    row(Ex("-grecord-command-line"), R("cc:records-command-line"), "puts the whole command line (paths, -D, -W) into the object"),
    row(Ex("-grecord-gcc-switches"), R("cc:records-command-line"), "clang: the whole command line into the object"),
    row(Ex("-frecord-gcc-switches"), R("cc:records-command-line"), "puts the whole command line into the object"),
    row(Ex("-frecord-command-line"), R("cc:records-command-line"), "puts the whole command line into the object"),
    row(Jo("-fplugin"), R("cc:plugin"), "a compiler plugin is code outside the compiler identity"),
    row(Jo("-fpass-plugin="), R("cc:plugin"), "an LLVM pass plugin is code outside the compiler identity"),
    row(Ex("-save-temps"), R("cc:save-temps"), "writes intermediate files next to the object"),
    row(Jo("-save-temps="), R("cc:save-temps"), "writes intermediate files"),
    row(Jo("-fmodule"), R("cc:modules"), "C/C++ modules read and write files outside the key"),
    row(Ex("-fcxx-modules"), R("cc:modules"), "C++ modules"),
    row(Sep("-include-pch"), R("cc:pch"), "precompiled header input"),
    row(Ex("-emit-pch"), R("cc:pch"), "precompiled header output"),
    row(Jo("-fpch-"), R("cc:pch"), "precompiled header handling"),
    row(JoS("-B"), R("cc:toolchain-override"), "takes compiler programs from another directory"),
    row(Jo("-specs="), R("cc:toolchain-override"), "a specs file rewrites the driver's behaviour"),
    row(Jo("--specs="), R("cc:toolchain-override"), "a specs file rewrites the driver's behaviour"),
    row(Jo("--gcc-toolchain="), R("cc:toolchain-override"), "another GCC installation"),
    row(Ex("-no-integrated-as"), R("cc:toolchain-override"), "the external assembler is not in the compiler identity"),
    row(Ex("-fno-integrated-as"), R("cc:toolchain-override"), "the external assembler is not in the compiler identity"),
    row(Jo("-fsanitize-blacklist="), R("cc:unkeyed-input"), "reads a file that is not in the key"),
    row(Jo("-fsanitize-ignorelist="), R("cc:unkeyed-input"), "reads a file that is not in the key"),
    row(Ex("-ObjC"), R("cc:language"), "Objective-C (and not an -O level)"),
    row(Ex("-ObjC++"), R("cc:language"), "Objective-C++ (and not an -O level)"),
    row(Ex("--version"), R("cc:probe"), "a query of the compiler, not a compile"),
    row(Ex("-v"), R("cc:probe"), "prints the driver's commands (a probe, or a verbose compile)"),
    row(Ex("-###"), R("cc:probe"), "prints the driver's commands without running them"),
    row(Ex("--help"), R("cc:probe"), "a query of the compiler, not a compile"),
    row(Jo("-dump"), R("cc:probe"), "-dumpversion, -dumpmachine, -dumpspecs: queries"),
    row(Jo("-print-"), R("cc:probe"), "-print-file-name= and friends: queries"),
    row(Jo("--print-"), R("cc:probe"), "queries"),
];

/// A table row matched against an argument (and possibly the one after it).
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub row: &'static FlagRow,
    /// The flag's value, if the pattern takes one (`c11` in `-std=c11`, `X` in `-D X`).
    pub value: Option<&'a str>,
    /// How many arguments the flag used: 1, or 2 for a separate value.
    pub consumed: usize,
}

/// The result of looking an argument up in the table.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    Found(Match<'a>),
    /// A row matched, but its separate value is missing (the flag is the last argument).
    MissingValue(&'static FlagRow),
    /// No row: the flag is refused as unknown.
    Unknown,
}

/// Looks `arg` (with `next`, the argument after it) up in [`FLAGS`]: the longest matching
/// pattern wins; on equal length an exact row wins.
pub fn lookup<'a>(arg: &'a str, next: Option<&'a str>) -> Lookup<'a> {
    let mut best: Option<(&'static FlagRow, usize, bool)> = None;
    for r in FLAGS {
        let text = r.pattern.text();
        let matched = match r.pattern {
            Pattern::Exact(t) | Pattern::Separate(t) => arg == t,
            Pattern::Joined(t) | Pattern::JoinedOrSeparate(t) => arg.starts_with(t),
            Pattern::JoinedNoComma(t) => arg.starts_with(t) && !arg[t.len()..].contains(','),
        };
        if !matched {
            continue;
        }
        let exact = arg == text;
        let better = match best {
            None => true,
            Some((_, len, was_exact)) => {
                text.len() > len || (text.len() == len && exact && !was_exact)
            }
        };
        if better {
            best = Some((r, text.len(), exact));
        }
    }
    let Some((r, len, _)) = best else {
        return Lookup::Unknown;
    };
    let separate = match r.pattern {
        Pattern::Separate(_) => true,
        Pattern::JoinedOrSeparate(_) => arg.len() == len,
        _ => false,
    };
    if separate {
        return match next {
            Some(v) => Lookup::Found(Match {
                row: r,
                value: Some(v),
                consumed: 2,
            }),
            None => Lookup::MissingValue(r),
        };
    }
    let value = match r.pattern {
        Pattern::Exact(_) => None,
        _ => Some(&arg[len..]),
    };
    Lookup::Found(Match {
        row: r,
        value,
        consumed: 1,
    })
}

/// The category an argument falls in (`None`: no row, refused as unknown). For tests and
/// reports; the parser uses [`lookup`].
pub fn category_of(arg: &str, next: Option<&str>) -> Option<Category> {
    match lookup(arg, next) {
        Lookup::Found(m) => Some(m.row.category),
        Lookup::MissingValue(r) => Some(r.category),
        Lookup::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(arg: &str) -> Option<Category> {
        category_of(arg, Some("value"))
    }

    #[test]
    fn codegen_flags_are_modeled() {
        for f in [
            "-O2",
            "-O3",
            "-Ofast",
            "-Os",
            "-g",
            "-g3",
            "-gdwarf-4",
            "-fPIC",
            "-fno-PIC",
            "-std=c11",
            "-march=x86-64-v3",
            "-mtune=generic",
            "-mcpu=cortex-a53",
            "-m64",
            "-m32",
            "-ffunction-sections",
            "-fdata-sections",
            "-fno-omit-frame-pointer",
            "-fvisibility=hidden",
            "-fstack-protector-strong",
            "-fno-exceptions",
            "-fno-rtti",
            "--target=aarch64-linux-gnu",
            "-ffile-prefix-map=/a=.",
            "-frandom-seed=x",
        ] {
            assert_eq!(cat(f), Some(Category::Modeled), "{f}");
        }
        assert_eq!(
            category_of("-target", Some("x86_64-linux-gnu")),
            Some(Category::Modeled)
        );
    }

    #[test]
    fn preprocessor_flags_are_preprocessor() {
        for f in [
            "-DX=1",
            "-D",
            "-UX",
            "-I/inc",
            "-I",
            "-isystem",
            "-isystem/x",
            "-iquote",
            "-idirafter",
            "-include",
            "-includefoo.h",
            "-imacros",
            "--sysroot=/s",
            "--sysroot",
            "-nostdinc",
            "-Wp,-DX=1",
            "-Wp,-UX",
            "-Wp,-I/inc",
        ] {
            assert_eq!(cat(f), Some(Category::Preprocessor), "{f}");
        }
    }

    #[test]
    fn warnings_and_depfile_flags_have_no_effect() {
        for f in [
            "-Wall",
            "-Wextra",
            "-Wno-unused",
            "-Werror",
            "-Werror=format",
            "-W",
            "-w",
            "-pedantic",
            "-fdiagnostics-color=always",
            "-fcolor-diagnostics",
            "-MD",
            "-MMD",
            "-MF",
            "-MT",
            "-MQ",
            "-MP",
            "-pipe",
            "-Qunused-arguments",
        ] {
            assert_eq!(cat(f), Some(Category::NoEffect), "{f}");
        }
    }

    #[test]
    fn tool_passthrough_look_alikes_are_not_warnings() {
        for f in [
            "-Wl,-rpath,/x",
            "-Wa,--noexecstack",
            "-Wp,-MD,dep.d",
            "-Wp,-DX,-MD,f",
            "-Wp,-P",
        ] {
            assert_eq!(
                cat(f),
                Some(Category::Refused("cc:tool-passthrough")),
                "{f}"
            );
        }
    }

    #[test]
    fn dangerous_flags_are_refused_with_their_reason() {
        let cases = [
            ("-pg", "cc:profile"),
            ("-fprofile-generate", "cc:profile"),
            ("-fprofile-use=x.profdata", "cc:profile"),
            ("--coverage", "cc:coverage"),
            ("-ftest-coverage", "cc:coverage"),
            ("-fprofile-arcs", "cc:coverage"),
            ("-gsplit-dwarf", "cc:split-dwarf"),
            ("-fplugin=x.so", "cc:plugin"),
            ("-save-temps", "cc:save-temps"),
            ("-fmodules", "cc:modules"),
            ("-fmodules-ts", "cc:modules"),
            ("-fmodule-file=x", "cc:modules"),
            ("-include-pch", "cc:pch"),
            ("-emit-pch", "cc:pch"),
            ("-B/opt/bin", "cc:toolchain-override"),
            ("-specs=x.specs", "cc:toolchain-override"),
            ("-march=native", "cc:native-arch"),
            ("-Xclang", "cc:tool-passthrough"),
            ("-ObjC", "cc:language"),
        ];
        for (f, reason) in cases {
            assert_eq!(cat(f), Some(Category::Refused(reason)), "{f}");
        }
    }

    #[test]
    fn unknown_flags_have_no_row() {
        for f in [
            "-fsyntax-only",
            "-flto",
            "-ofoo.o",
            "-O9",
            "-fno-fast-math-x",
            "-L/lib",
            "-lm",
        ] {
            assert_eq!(cat(f), None, "{f}");
        }
    }

    #[test]
    fn polarity_is_a_separate_row() {
        let a = lookup("-fPIC", None);
        let b = lookup("-fno-PIC", None);
        match (a, b) {
            (Lookup::Found(a), Lookup::Found(b)) => assert_ne!(a.row.pattern, b.row.pattern),
            _ => panic!("both must have rows"),
        }
    }

    #[test]
    fn separate_values_are_consumed() {
        match lookup("-D", Some("X=1")) {
            Lookup::Found(m) => {
                assert_eq!(m.value, Some("X=1"));
                assert_eq!(m.consumed, 2);
            }
            other => panic!("{other:?}"),
        }
        match lookup("-DX=1", Some("next")) {
            Lookup::Found(m) => {
                assert_eq!(m.value, Some("X=1"));
                assert_eq!(m.consumed, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(lookup("-o", None), Lookup::MissingValue(_)));
    }

    #[test]
    fn every_row_is_unique_and_explained() {
        for (i, a) in FLAGS.iter().enumerate() {
            assert!(!a.reason.is_empty(), "{:?}", a.pattern);
            for b in &FLAGS[i + 1..] {
                assert_ne!(
                    a.pattern.text(),
                    b.pattern.text(),
                    "duplicate row {:?}",
                    a.pattern
                );
            }
        }
    }
}
