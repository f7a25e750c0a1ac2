//! The cache key of a C/C++ compile, and the time-macro policy.
//!
//! Owns what goes into the key: compiler identity, language, modeled flags (in order), the
//! dep-file shape, the path plan's location facts, `SOURCE_DATE_EPOCH` when time macros are
//! used, and the preprocessed source. Every field is labelled and length-prefixed, so no
//! value can pass for a field boundary.
//!
//! Line markers (`# 12 "/w/a/inc/x.h" 2`) are stripped from the keyed text, and keyed apart
//! with their file names normalized ([`PathPlan::normalize`]) and their position in the text.
//! Dropping them entirely would be wrong: line numbers and file names reach the object through
//! debug info, `__builtin_FILE`/`__builtin_LINE` (`std::source_location`) and the STT_FILE
//! symbol, and reach the replayed warnings. Normalizing keeps worktree paths out of the key.

use std::ffi::OsStr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::args::{CcInvocation, DepKind, DepTarget, Refusal};
use super::compiler::CompilerVersion;
use super::paths::PathPlan;

/// Bumped when the key's layout or meaning changes.
const KEY_VERSION: &str = "kache-cc-key-v1";

/// A blake3 hasher over labelled, length-prefixed fields: no value can be mistaken for a
/// delimiter or run into its neighbour.
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub fn new(domain: &str) -> Self {
        let mut h = KeyHasher(blake3::Hasher::new());
        h.field("domain", domain.as_bytes());
        h
    }

    pub fn field(&mut self, label: &str, value: &[u8]) {
        self.0.update(&(label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
    }

    pub fn finish_hex(self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// A line marker of preprocessed output: `# 12 "file" 1 3` or `#line 12 "file"`. Returns the
/// quoted file name (still escaped) and the parts around it.
fn parse_marker(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let rest = line.strip_prefix(b"#")?;
    let rest = rest.strip_prefix(b"line").unwrap_or(rest);
    let trimmed = trim_start(rest);
    if trimmed.len() == rest.len() && line.starts_with(b"#line") {
        return None; // `#lineX`
    }
    if !trimmed.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let open = trimmed.iter().position(|&b| b == b'"');
    let Some(open) = open else {
        return Some((trimmed, b"", b"")); // `# 12` without a file
    };
    let name_start = open + 1;
    let mut i = name_start;
    while i < trimmed.len() {
        match trimmed[i] {
            b'\\' => i += 2,
            b'"' => return Some((&trimmed[..open], &trimmed[name_start..i], &trimmed[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &s[n..]
}

fn lines(pre: &[u8]) -> impl Iterator<Item = &[u8]> {
    pre.split_inclusive(|&b| b == b'\n')
}

fn is_marker(line: &[u8]) -> bool {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    parse_marker(body).is_some()
}

/// The preprocessed text without line markers: what the compiler compiles, with no file name
/// in it (beyond what macros such as `__FILE__` expanded to).
pub fn preprocessed_for_key(pre: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pre.len());
    for line in lines(pre).filter(|l| !is_marker(l)) {
        out.extend_from_slice(line);
    }
    out
}

/// The line markers, each with the index of the text line it precedes and its file name
/// normalized by `plan`: the part of the line information that may differ between worktrees
/// is made equal, the rest (line numbers, relative names, system headers) is kept.
pub fn line_markers_for_key(pre: &[u8], plan: &PathPlan) -> Vec<u8> {
    let mut out = Vec::new();
    let mut text_lines = 0usize;
    for line in lines(pre) {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        match parse_marker(body) {
            Some((before, name, after)) => {
                let name = plan.normalize(&String::from_utf8_lossy(name));
                out.extend_from_slice(format!("{text_lines}:").as_bytes());
                out.extend_from_slice(before);
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.push(b'"');
                out.extend_from_slice(after);
                out.push(b'\n');
            }
            None => text_lines += 1,
        }
    }
    out
}

/// True when the preprocessed source holds an assembler `.incbin` or
/// `.include` directive (in inline or top-level `asm`): the assembler then
/// reads a file that neither the preprocessor nor the dep file names. A text
/// search, so it also fires on the words inside an ordinary string; that
/// costs a passthrough, never a wrong object.
pub fn uses_assembler_include(pre: &[u8]) -> bool {
    [&b".incbin"[..], b".include"].iter().any(|d| {
        memchr::memmem::find_iter(pre, d).any(|at| {
            // A directive is followed by its operand: a space, a tab, a
            // quote, or an escaped quote inside a C string.
            matches!(pre.get(at + d.len()), Some(b' ' | b'\t' | b'"' | b'\\'))
        })
    })
}

/// The files the preprocessed output names (the source and every header read), unescaped,
/// in first-seen order; pseudo-files (`<built-in>`) and GCC's working-directory marker
/// (`"/cwd//"`) are left out.
pub fn included_files(pre: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines(pre) {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let Some((_, name, _)) = parse_marker(body) else {
            continue;
        };
        let name = unescape(name);
        if name.is_empty() || name.starts_with('<') || name.ends_with("//") || out.contains(&name) {
            continue;
        }
        out.push(name);
    }
    out
}

fn unescape(name: &[u8]) -> String {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'\\' && i + 1 < name.len() {
            i += 1;
        }
        out.push(name[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `source_bytes` mention `__DATE__`, `__TIME__` or `__TIMESTAMP__`. A cheap textual
/// check (it also fires inside comments). The preprocessor's own report
/// ([`preprocessor_reported_time_macros`]) also sees a macro spelled by token pasting, but GCC
/// keeps it silent inside system headers (`-isystem`, `#pragma GCC system_header`) and a
/// `#pragma GCC diagnostic` can silence it anywhere: direct mode asks both.
pub fn uses_time_macros(source_bytes: &[u8]) -> bool {
    [&b"__DATE__"[..], b"__TIME__", b"__TIMESTAMP__"]
        .iter()
        .any(|m| memchr::memmem::find(source_bytes, m).is_some())
}

/// True when `source_bytes` may silence the preprocessor's `-Wdate-time` report: a
/// `#pragma clang diagnostic` / `#pragma GCC diagnostic` (or `_Pragma`) naming `date-time`, or
/// clang's `-Weverything`. Then only [`uses_time_macros`] would see a time macro, and not one
/// made by token pasting. A cheap textual check, like that one.
pub fn may_silence_time_macro_report(source_bytes: &[u8]) -> bool {
    [&b"date-time"[..], b"Weverything"]
        .iter()
        .any(|m| memchr::memmem::find(source_bytes, m).is_some())
}

/// True when the preprocessor run marked where it would load a precompiled header instead of
/// a header (`-fpch-preprocess`, see `CcInvocation::preprocess_args`): GCC's own choice, in
/// whichever include directory it found the `.gch`, and only when the `.gch` is valid for
/// this compile.
pub fn preprocessed_uses_pch(pre: &[u8]) -> bool {
    lines(pre).any(|l| l.starts_with(b"#pragma GCC pch_preprocess"))
}

/// True when the preprocessor run's diagnostics carry a `-Wdate-time` warning (the run adds
/// `-Wdate-time -Wno-error=date-time` and drops `-w`, see `CcInvocation::preprocess_args`).
/// Covers every header, not only the source. GCC and clang both tag it `[-Wdate-time]`.
pub fn preprocessor_reported_time_macros(stderr: &[u8]) -> bool {
    let tag = b"-Wdate-time]";
    stderr.windows(tag.len()).any(|w| w == tag)
}

/// The `SOURCE_DATE_EPOCH` to set, identically, on the preprocessor run and the real compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDateEpoch {
    pub value: String,
    /// The caller's environment already had it (the user pinned the date).
    pub from_env: bool,
}

/// Policy (a key probe and a real compile that expand `__DATE__` differently would store
/// wall-clock objects under a time-independent key): keep the caller's `SOURCE_DATE_EPOCH` if set; otherwise use `now` (whole
/// seconds), so the two runs expand `__DATE__`/`__TIME__` the same even if detection misses a
/// use. Set the result on both runs.
pub fn source_date_epoch(env_value: Option<&OsStr>, now: SystemTime) -> SourceDateEpoch {
    match env_value.and_then(OsStr::to_str) {
        Some(v) => SourceDateEpoch {
            value: v.to_owned(),
            from_env: true,
        },
        None => SourceDateEpoch {
            value: now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
            from_env: false,
        },
    }
}

/// Whether a translation unit that may use time macros can be cached, and what the key must
/// then hold. `Ok(None)`: no time macros, nothing to key. `Ok(Some(v))`: key `v`. `Err`:
/// pass through, because either the date is not pinned by the user (a key per second is
/// worthless) or the compiler ignores `SOURCE_DATE_EPOCH` (GCC < 7, clang < 16: the two runs
/// could expand different times).
pub fn time_macro_policy(
    uses_time_macros: bool,
    sde: &SourceDateEpoch,
    version: Option<CompilerVersion>,
) -> Result<Option<String>, Refusal> {
    if !uses_time_macros {
        return Ok(None);
    }
    let honoured = version.is_some_and(|v| v.honours_source_date_epoch());
    if sde.from_env && honoured {
        Ok(Some(sde.value.clone()))
    } else {
        Err(Refusal::TimeMacros)
    }
}

/// Everything the key of one compile is made of.
pub struct KeyInput<'a> {
    /// Compiler identity: version banner and binary content hash, as the caller memoizes them.
    pub compiler_identity: &'a [u8],
    pub invocation: &'a CcInvocation,
    pub paths: &'a PathPlan,
    /// The raw output of the preprocessor run (markers included; they are handled here).
    pub preprocessed: &'a [u8],
    /// From [`time_macro_policy`].
    pub source_date_epoch: Option<&'a str>,
}

/// The result key (blake3, hex).
pub fn cache_key(input: &KeyInput<'_>) -> String {
    let inv = input.invocation;
    let plan = input.paths;
    let mut h = KeyHasher::new(KEY_VERSION);
    h.field("compiler", input.compiler_identity);
    h.field("language", inv.language.as_str().as_bytes());

    h.field("modeled.count", &(inv.modeled.len() as u64).to_le_bytes());
    for m in &inv.modeled {
        h.field("flag", m.flag.as_bytes());
        match &m.value {
            Some(v) => h.field("value", v.as_bytes()),
            None => h.field("no-value", b""),
        }
    }

    h.field(
        "diagnostics.count",
        &(inv.diagnostic_flags.len() as u64).to_le_bytes(),
    );
    for d in &inv.diagnostic_flags {
        h.field("diagnostic", d.as_bytes());
    }

    let dep_kind: &[u8] = match inv.dep_file.as_ref().map(|d| d.kind) {
        None => b"none",
        Some(DepKind::Md) => b"MD",
        Some(DepKind::Mmd) => b"MMD",
    };
    h.field("dep.kind", dep_kind);
    h.field("dep.phony", &[u8::from(inv.dep_phony)]);
    h.field(
        "dep.targets.count",
        &(inv.dep_targets.len() as u64).to_le_bytes(),
    );
    for t in &inv.dep_targets {
        match t {
            DepTarget::Plain(t) => h.field("dep.MT", plan.normalize(t).as_bytes()),
            DepTarget::Quoted(t) => h.field("dep.MQ", plan.normalize(t).as_bytes()),
        }
    }
    if inv.dep_file.is_some() && inv.dep_targets.is_empty() {
        // The compiler names the output as written on the command line.
        h.field(
            "dep.default-target",
            plan.normalize(&inv.output.to_string_lossy()).as_bytes(),
        );
    }

    h.field("paths.independent", &[u8::from(plan.path_independent)]);
    h.field(
        "paths.extra.count",
        &(plan.extra_args_for_key.len() as u64).to_le_bytes(),
    );
    for a in &plan.extra_args_for_key {
        h.field("paths.extra", a.as_bytes());
    }
    for (label, value) in &plan.key_fields {
        h.field(label, value.as_bytes());
    }
    if let Some(v) = input.source_date_epoch {
        h.field("source-date-epoch", v.as_bytes());
    }
    h.field(
        "line-markers",
        &line_markers_for_key(input.preprocessed, plan),
    );
    h.field("preprocessed", &preprocessed_for_key(input.preprocessed));
    h.finish_hex()
}

/// What a C/C++ direct key is made of: everything a compile depends on
/// except the files it reads and the variables it reads, which the
/// manifest records under this key (observed by the input recorder).
pub struct DirectInput<'a> {
    /// Compiler identity: version banner and binary content hash.
    pub compiler_identity: &'a [u8],
    /// The arguments as given, the worktree root replaced by its token.
    pub args: &'a [String],
    /// The working directory, in the same token form.
    pub cwd: &'a str,
    /// The source file's content hash.
    pub source: &'a str,
    /// The path plan (its extra arguments and location facts, absolute when
    /// the key is path-local).
    pub paths: &'a PathPlan,
}

/// The direct key of a C/C++ compile (blake3, hex).
pub fn direct_key(i: &DirectInput<'_>) -> String {
    let mut h = KeyHasher::new("kache-cc-direct-v1");
    h.field("compiler", i.compiler_identity);
    h.field("args.count", &(i.args.len() as u64).to_le_bytes());
    for a in i.args {
        h.field("arg", a.as_bytes());
    }
    h.field("cwd", i.cwd.as_bytes());
    h.field("source", i.source.as_bytes());
    h.field("paths.independent", &[u8::from(i.paths.path_independent)]);
    for a in &i.paths.extra_args_for_key {
        h.field("paths.extra", a.as_bytes());
    }
    for (label, value) in &i.paths.key_fields {
        h.field(label, value.as_bytes());
    }
    h.finish_hex()
}

/// The result key of a compile known by its direct key and what it was
/// observed to read (files by token path and content, variables by value,
/// paths absent), for a source the preprocessed text does not describe
/// whole (an assembler `.incbin` reads a file the preprocessor never sees).
pub fn observed_result_key(
    direct: &str,
    files: &[(String, String, u64)],
    env: &[(String, Option<String>)],
    absent: &[String],
) -> String {
    let mut h = KeyHasher::new("kache-cc-observed-result-v1");
    h.field("direct", direct.as_bytes());
    for (p, hash, _) in files {
        h.field("file", p.as_bytes());
        h.field("content", hash.as_bytes());
    }
    for (n, v) in env {
        h.field("var", n.as_bytes());
        match v {
            Some(v) => h.field("value", v.as_bytes()),
            None => h.field("unset", b""),
        }
    }
    for p in absent {
        h.field("absent", p.as_bytes());
    }
    h.finish_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembler_includes_are_found_in_any_spelling() {
        for src in [
            &b"__asm__(\".section .rodata\\n.incbin \\\"data.bin\\\"\\n\");"[..],
            b"asm(\".incbin\\t\\\"x\\\"\");",
            b"  .include \"macros.s\"\n",
        ] {
            assert!(
                uses_assembler_include(src),
                "{}",
                String::from_utf8_lossy(src)
            );
        }
        for src in [
            &b"int incbin = 1; s.incbinary = 2;"[..],
            b"#include <stdio.h>",
        ] {
            assert!(
                !uses_assembler_include(src),
                "{}",
                String::from_utf8_lossy(src)
            );
        }
    }
    use crate::cc::args::parse;
    use crate::cc::compiler::Family;
    use crate::cc::paths::plan;
    use std::ffi::OsString;
    use std::path::Path;

    const GCC12: Option<CompilerVersion> = Some(CompilerVersion {
        family: Family::Gcc,
        apple: false,
        major: 12,
    });

    fn pre(base: &str, body: &str) -> Vec<u8> {
        format!(
            "# 0 \"{base}/src/x.c\"\n# 0 \"<built-in>\"\n# 1 \"{base}/src/x.c\"\n# 1 \"{base}/inc/x.h\" 1\nint h(void);\n# 2 \"{base}/src/x.c\" 2\n{body}\n"
        )
        .into_bytes()
    }

    fn key_with(args: &[&str], base: &str, preprocessed: &[u8], identity: &[u8]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let inv = parse("gcc", &args).unwrap();
        let p = plan(&inv, Path::new(base), Path::new(base), GCC12);
        cache_key(&KeyInput {
            compiler_identity: identity,
            invocation: &inv,
            paths: &p,
            preprocessed,
            source_date_epoch: None,
        })
    }

    fn key(args: &[&str]) -> String {
        key_with(
            args,
            "/w/a",
            &pre("/w/a", "int f(void){return 1;}"),
            b"gcc 12.2.0 #abc",
        )
    }

    const BASE: &[&str] = &["-c", "src/x.c", "-O2", "-fPIC", "-o", "x.o"];

    fn with(extra: &[&str]) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = BASE.to_vec();
        for e in extra {
            v.push(Box::leak(e.to_string().into_boxed_str()));
        }
        v
    }

    #[test]
    fn codegen_flags_change_the_key() {
        let k = key(BASE);
        assert_ne!(k, key(&["-c", "src/x.c", "-O3", "-fPIC", "-o", "x.o"]));
        assert_ne!(k, key(&["-c", "src/x.c", "-O2", "-fno-PIC", "-o", "x.o"]));
        assert_ne!(k, key(&["-c", "src/x.c", "-O2", "-o", "x.o"]));
        assert_ne!(k, key(&with(&["-march=x86-64-v3"])));
        assert_ne!(
            key(&with(&["-march=x86-64-v2"])),
            key(&with(&["-march=x86-64-v3"]))
        );
        assert_ne!(
            key(&with(&["-O0"])),
            key(&with(&["-O3"])),
            "order matters: last -O wins"
        );
    }

    #[test]
    fn no_effect_flags_do_not_change_the_key() {
        let k = key(BASE);
        assert_eq!(k, key(&with(&["-pipe"])));
        assert_eq!(
            k,
            key(&with(&["-DX=1", "-I/w/a/inc"])),
            "preprocessor flags act via the text"
        );
        assert_eq!(
            k,
            key(&["-c", "src/x.c", "-O2", "-fPIC", "-o", "elsewhere/x.o"])
        );
    }

    #[test]
    fn diagnostic_flags_change_the_key_so_hits_replay_the_right_warnings() {
        // A hit must not replay warnings and exit 0 where the real compile
        // (with -Werror) would fail, nor hide warnings a new -W flag would show.
        let k = key(BASE);
        let wall = key(&with(&["-Wall"]));
        let werror = key(&with(&["-Wall", "-Werror"]));
        assert_ne!(k, wall);
        assert_ne!(wall, werror);
        assert_ne!(k, key(&with(&["-w"])));
        assert_ne!(
            key(&with(&["-Wall", "-Wextra"])),
            key(&with(&["-Wextra", "-Wall"]))
        );
    }

    #[test]
    fn preprocessed_text_and_compiler_identity_change_the_key() {
        let k = key(BASE);
        assert_ne!(
            k,
            key_with(
                BASE,
                "/w/a",
                &pre("/w/a", "int f(void){return 2;}"),
                b"gcc 12.2.0 #abc"
            )
        );
        assert_ne!(
            k,
            key_with(
                BASE,
                "/w/a",
                &pre("/w/a", "int f(void){return 1;}"),
                b"gcc 13.1.0 #def"
            )
        );
    }

    #[test]
    fn worktree_paths_in_markers_do_not_change_the_key() {
        let a = key_with(BASE, "/w/a", &pre("/w/a", "int f;"), b"id");
        let b = key_with(BASE, "/w/other", &pre("/w/other", "int f;"), b"id");
        assert_eq!(a, b);
    }

    #[test]
    fn line_numbers_and_header_names_change_the_key() {
        let p1 = b"# 1 \"x.c\"\nint a;\nint b;\n".to_vec();
        let p2 = b"# 1 \"x.c\"\nint a;\n# 9 \"x.c\"\nint b;\n".to_vec();
        let p3 = b"# 1 \"y.c\"\nint a;\nint b;\n".to_vec();
        let k1 = key_with(BASE, "/w/a", &p1, b"id");
        assert_ne!(k1, key_with(BASE, "/w/a", &p2, b"id"));
        assert_ne!(k1, key_with(BASE, "/w/a", &p3, b"id"));
        assert_eq!(preprocessed_for_key(&p1), preprocessed_for_key(&p2));
    }

    #[test]
    fn dep_file_shape_changes_the_key() {
        let k = key(BASE);
        let md = key(&with(&["-MD"]));
        assert_ne!(k, md);
        assert_ne!(md, key(&with(&["-MMD"])));
        assert_ne!(md, key(&with(&["-MD", "-MP"])));
        assert_ne!(md, key(&with(&["-MD", "-MT", "other.o"])));
        assert_ne!(
            key(&with(&["-MD", "-MT", "t"])),
            key(&with(&["-MD", "-MQ", "t"]))
        );
        assert_eq!(
            md,
            key(&with(&["-MD", "-MF", "somewhere.d"])),
            "the -MF path is not in the file"
        );
    }

    #[test]
    fn strips_both_marker_forms_and_keeps_pragmas() {
        let p =
            b"# 1 \"a.c\"\n#line 7 \"a.c\"\n#pragma once\n#  3 \"b.h\" 2 3 4\nint x;\n#linear\n";
        assert_eq!(
            preprocessed_for_key(p),
            b"#pragma once\nint x;\n#linear\n".to_vec()
        );
    }

    #[test]
    fn included_files_are_unescaped_and_exclude_pseudo_files() {
        let p = b"# 0 \"a b.c\"\n# 0 \"<built-in>\"\n# 1 \"/w//\"\n# 1 \"in\\\\c.h\" 1\n# 3 \"a b.c\" 2\n";
        assert_eq!(
            included_files(p),
            vec!["a b.c".to_owned(), "in\\c.h".to_owned()]
        );
    }

    #[test]
    fn labelled_fields_cannot_run_into_each_other() {
        let mut a = KeyHasher::new("t");
        a.field("x", b"ab");
        a.field("y", b"c");
        let mut b = KeyHasher::new("t");
        b.field("x", b"a");
        b.field("y", b"bc");
        assert_ne!(a.finish_hex(), b.finish_hex());
    }

    #[test]
    fn a_pch_is_seen_only_where_the_preprocessor_marks_one() {
        let used = b"# 1 \"x.c\"\n#pragma GCC pch_preprocess \"pch/h.h.gch\"\nint v = V;\n";
        assert!(preprocessed_uses_pch(used));
        let quoted = b"const char *s = \"#pragma GCC pch_preprocess\";\n";
        assert!(!preprocessed_uses_pch(quoted));
    }

    #[test]
    fn time_macros_are_detected_and_keyed_only_when_pinned_and_honoured() {
        assert!(uses_time_macros(b"const char *d = __DATE__;"));
        assert!(uses_time_macros(b"static const char *ts = __TIMESTAMP__;"));
        assert!(uses_time_macros(b"-DBUILT=__TIME__"));
        assert!(!uses_time_macros(b"int date;"));
        assert!(may_silence_time_macro_report(
            b"#pragma clang diagnostic ignored \"-Wdate-time\""
        ));
        assert!(may_silence_time_macro_report(
            b"_Pragma(\"clang diagnostic ignored \\\"-Weverything\\\"\")"
        ));
        assert!(!may_silence_time_macro_report(
            b"#pragma GCC diagnostic ignored \"-Wall\""
        ));
        assert!(preprocessor_reported_time_macros(
            b"x.c:1:18: warning: macro \"__DATE__\" might prevent reproducible builds [-Wdate-time]\n"
        ));
        let pinned = source_date_epoch(Some(OsStr::new("1700000000")), SystemTime::now());
        assert!(pinned.from_env);
        let now = source_date_epoch(None, UNIX_EPOCH + std::time::Duration::from_secs(42));
        assert_eq!(
            now,
            SourceDateEpoch {
                value: "42".into(),
                from_env: false
            }
        );
        assert_eq!(time_macro_policy(false, &now, None), Ok(None));
        assert_eq!(
            time_macro_policy(true, &pinned, GCC12),
            Ok(Some("1700000000".into()))
        );
        assert_eq!(
            time_macro_policy(true, &now, GCC12),
            Err(Refusal::TimeMacros)
        );
        let clang14 = Some(CompilerVersion {
            family: Family::Clang,
            apple: false,
            major: 14,
        });
        assert_eq!(
            time_macro_policy(true, &pinned, clang14),
            Err(Refusal::TimeMacros)
        );
    }

    #[test]
    fn source_date_epoch_changes_the_key() {
        let args: Vec<OsString> = BASE.iter().map(OsString::from).collect();
        let inv = parse("gcc", &args).unwrap();
        let p = plan(&inv, Path::new("/w/a"), Path::new("/w/a"), GCC12);
        let pre = pre("/w/a", "const char *d = \"Nov 14 2023\";");
        let k = |sde| {
            cache_key(&KeyInput {
                compiler_identity: b"id",
                invocation: &inv,
                paths: &p,
                preprocessed: &pre,
                source_date_epoch: sde,
            })
        };
        assert_ne!(k(Some("1")), k(Some("2")));
        assert_ne!(k(None), k(Some("1")));
    }
}
