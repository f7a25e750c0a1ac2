//! What rustc handed the linker: the command line it prints with
//! `--print link-args=FILE`, read back after a compile and classified into
//! the files and libraries the link read.
//!
//! This is how a linked output (bin, test harness, cdylib, dylib,
//! proc-macro) learns its whole link closure without an input recorder:
//! every rlib of the dependency graph (rustc names each one by path, found
//! through `-L dependency=` by its SVH), every native library however it was
//! named (`-l static=`, `-l` without a kind, `#[link]` in any crate, bundled
//! or not), objects and linker scripts given as link arguments, and the
//! linker program itself. Resolving `-l` in the search directories and
//! hashing files is the caller's job; nothing here touches the filesystem.

/// The linker command line as rustc printed it: `NAME="value"` environment
/// assignments, then the program and every argument, each quoted the way
/// Rust's `Debug` quotes a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLine {
    pub program: String,
    pub args: Vec<String>,
}

/// Parses the text of `--print link-args=FILE`. `None` for anything not of
/// the expected shape (a working directory change, a cleared environment,
/// an escape that does not stand for UTF-8 text): then the link's inputs are
/// not known, and the caller must not cache.
pub fn parse_link_line(text: &str) -> Option<LinkLine> {
    let line = text.trim_end_matches(['\n', '\r']);
    if line.contains('\n') {
        return None;
    }
    let mut rest = line;
    let mut words: Vec<String> = Vec::new();
    let mut in_env = true;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if rest.starts_with('"') {
            let (word, after) = quoted(rest)?;
            words.push(word);
            rest = after;
            in_env = false;
            continue;
        }
        if !in_env {
            return None;
        }
        // Environment: `env -u NAME …` (variables removed) or `NAME="value"`.
        let end = rest.find(' ').unwrap_or(rest.len());
        let bare = &rest[..end];
        if bare == "env" || bare == "-u" {
            rest = &rest[end..];
            continue;
        }
        if let Some(eq) = bare.find("=\"") {
            let name = &bare[..eq];
            if !is_var_name(name) {
                return None;
            }
            let (_, after) = quoted(&rest[eq + 1..])?;
            rest = after;
            continue;
        }
        // The name after `-u`.
        if is_var_name(bare) && words.is_empty() {
            rest = &rest[end..];
            continue;
        }
        return None;
    }
    let mut words = words.into_iter();
    let program = words.next()?;
    Some(LinkLine {
        program,
        args: words.collect(),
    })
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// One `"…"` string at the start of `s` in Rust `Debug` quoting, and what
/// follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    '\\' | '"' | '\'' => out.push(e),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '0' => out.push('\0'),
                    'u' => {
                        if chars.next()?.1 != '{' {
                            return None;
                        }
                        let mut hex = String::new();
                        loop {
                            let (_, h) = chars.next()?;
                            if h == '}' {
                                break;
                            }
                            hex.push(h);
                        }
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    // `\x..`: bytes that are not UTF-8; the path cannot be
                    // named faithfully.
                    _ => return None,
                }
            }
            _ => out.push(c),
        }
    }
    None
}

/// A `-l` library: the linker looks it up in the search directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lib {
    /// `foo` of `-lfoo`, or the exact file name of `-l:name`.
    pub name: String,
    pub verbatim: bool,
    /// Only archives are considered (`-Bstatic` in effect).
    pub static_only: bool,
}

impl Lib {
    /// The file names the linker tries in each directory, in order.
    pub fn candidates(&self) -> Vec<String> {
        if self.verbatim {
            vec![self.name.clone()]
        } else if self.static_only {
            vec![format!("lib{}.a", self.name)]
        } else {
            vec![
                format!("lib{}.so", self.name),
                format!("lib{}.a", self.name),
            ]
        }
    }
}

/// What a link read, as far as its command line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInputs {
    /// Arguments that may name a file read by the link (objects, archives,
    /// rlibs, shared libraries, linker scripts, version scripts…), in order.
    /// Some are rustc's temporaries or the link's own outputs; the caller
    /// tells them apart.
    pub paths: Vec<String>,
    /// `-l` libraries, in order.
    pub libs: Vec<Lib>,
    /// `-L` directories, in order (all apply to every `-l`).
    pub search_dirs: Vec<String>,
    /// `-B` directories: where the compiler driver finds the programs it
    /// runs (the linker among them).
    pub program_dirs: Vec<String>,
    /// `-fuse-ld=` values: which linker the driver runs.
    pub use_ld: Vec<String>,
    /// `-o`: the output.
    pub output: Option<String>,
}

/// Why a link line's inputs cannot be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRefusal {
    /// `@file`: more arguments in a file.
    ResponseFile,
    /// A valued option without its value.
    MissingValue(String),
}

/// Linker options (after `-Wl,`/`-Xlinker`) whose value is a file the link
/// reads.
const LINKER_FILE_OPTS: &[&str] = &[
    "-T",
    "--script",
    "--version-script",
    "--dynamic-list",
    "--retain-symbols-file",
    "--just-symbols",
    "-R",
    "--default-script",
    "-dT",
];

/// Linker options whose value is not a file read (skipped with the value).
const LINKER_VALUED_OPTS: &[&str] = &[
    "-rpath",
    "-rpath-link",
    "-soname",
    "-h",
    "-z",
    "-e",
    "--entry",
    "-m",
    "-u",
    "--undefined",
    "--hash-style",
    "--build-id",
    "-O",
    "--sort-section",
    "--defsym",
];

/// Classifies the arguments of a link line.
pub fn link_inputs(line: &LinkLine) -> Result<LinkInputs, LinkRefusal> {
    let mut li = LinkInputs::default();
    let mut static_only = false;
    let mut args = line.args.iter();
    while let Some(a) = args.next() {
        let mut value_of = |opt: &str| -> Result<String, LinkRefusal> {
            args.next()
                .cloned()
                .ok_or_else(|| LinkRefusal::MissingValue(opt.to_string()))
        };
        if a.starts_with('@') {
            return Err(LinkRefusal::ResponseFile);
        }
        if let Some(rest) = a.strip_prefix("-Wl,") {
            let pieces: Vec<String> = rest.split(',').map(String::from).collect();
            linker_pieces(&pieces, &mut li, &mut static_only)?;
            continue;
        }
        match a.as_str() {
            "-o" => li.output = Some(value_of("-o")?),
            "-L" => li.search_dirs.push(value_of("-L")?),
            "-l" => {
                let v = value_of("-l")?;
                li.libs.push(lib(&v, static_only));
            }
            "-B" => li.program_dirs.push(value_of("-B")?),
            "-T" => li.paths.push(value_of("-T")?),
            "-Xlinker" => {
                let v = value_of("-Xlinker")?;
                linker_pieces(&[v], &mut li, &mut static_only)?;
            }
            "-static" => static_only = true,
            _ => {
                if let Some(d) = a.strip_prefix("-L") {
                    li.search_dirs.push(d.to_string());
                } else if let Some(n) = a.strip_prefix("-l") {
                    li.libs.push(lib(n, static_only));
                } else if let Some(d) = a.strip_prefix("-B") {
                    li.program_dirs.push(d.to_string());
                } else if let Some(l) = a.strip_prefix("-fuse-ld=") {
                    li.use_ld.push(l.to_string());
                } else if let Some(t) = a.strip_prefix("-T") {
                    li.paths.push(t.to_string());
                } else if let Some((_, v)) = a.split_once('=').filter(|_| a.starts_with('-')) {
                    // `-specs=file` and the like: a value that names a path
                    // may be a file read; the caller keys it if it is one.
                    if v.contains('/') {
                        li.paths.push(v.to_string());
                    }
                } else if !a.starts_with('-') {
                    li.paths.push(a.clone());
                }
            }
        }
    }
    Ok(li)
}

fn lib(v: &str, static_only: bool) -> Lib {
    match v.strip_prefix(':') {
        Some(file) => Lib {
            name: file.to_string(),
            verbatim: true,
            static_only,
        },
        None => Lib {
            name: v.to_string(),
            verbatim: false,
            static_only,
        },
    }
}

/// Options handed to the linker itself (`-Wl,a,b` / `-Xlinker a`).
fn linker_pieces(
    pieces: &[String],
    li: &mut LinkInputs,
    static_only: &mut bool,
) -> Result<(), LinkRefusal> {
    let mut it = pieces.iter();
    while let Some(p) = it.next() {
        let p = p.as_str();
        if p.starts_with('@') {
            return Err(LinkRefusal::ResponseFile);
        }
        match p {
            "-Bstatic" | "-static" | "-dn" | "-non_shared" => *static_only = true,
            "-Bdynamic" | "-dy" | "-call_shared" => *static_only = false,
            "-L" | "--library-path" => {
                if let Some(d) = it.next() {
                    li.search_dirs.push(d.clone());
                }
            }
            "-l" | "--library" => {
                if let Some(n) = it.next() {
                    li.libs.push(lib(n, *static_only));
                }
            }
            "-o" | "--output" => li.output = it.next().cloned(),
            _ if LINKER_FILE_OPTS.contains(&p) => {
                let v = it
                    .next()
                    .ok_or_else(|| LinkRefusal::MissingValue(p.into()))?;
                li.paths.push(v.clone());
            }
            // Written files (`-Map`, `--out-implib`) count as paths too: the
            // caller sees they were made during the compile and refuses.
            "-Map" | "--out-implib" => li.paths.extend(it.next().cloned()),
            _ if LINKER_VALUED_OPTS.contains(&p) => {
                it.next();
            }
            _ => {
                if let Some(d) = p
                    .strip_prefix("--library-path=")
                    .or_else(|| p.strip_prefix("-L"))
                {
                    li.search_dirs.push(d.to_string());
                } else if let Some(n) = p
                    .strip_prefix("--library=")
                    .or_else(|| p.strip_prefix("-l"))
                {
                    li.libs.push(lib(n, *static_only));
                } else if let Some(v) = LINKER_FILE_OPTS.iter().find_map(|o| {
                    p.strip_prefix(o)
                        .map(|r| r.strip_prefix('=').unwrap_or(r))
                        .filter(|r| !r.is_empty())
                }) {
                    li.paths.push(v.to_string());
                } else if let Some((_, v)) = p.split_once('=').filter(|_| p.starts_with('-')) {
                    if v.contains('/') {
                        li.paths.push(v.to_string());
                    }
                } else if !p.starts_with('-') {
                    li.paths.push(p.to_string());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abridged from rustc 1.95's `--print link-args` of a cargo bin.
    const PRINTED: &str = r#"LC_ALL="C" PATH="/r/bin:/usr/bin" VSLANG="1033" "cc" "-m64" "/w/target/debug/deps/rustcR2ugQd/symbols.o" "/w/target/debug/deps/app-14.a1.rcgu.o" "-Wl,--as-needed" "-Wl,-Bstatic" "/w/target/debug/deps/libmid-15.rlib" "/r/lib/rustlib/x86_64-unknown-linux-gnu/lib/libstd-d1.rlib" "-lfoo" "-Wl,-Bdynamic" "-lz" "-lc" "-L" "/w/target/debug/deps/rustcR2ugQd/raw-dylibs" "-B/r/lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld" "-fuse-ld=lld" "-Wl,--eh-frame-hdr" "-Wl,-z,noexecstack" "-L" "/w/target/debug/build/sys-5e/out" "-o" "/w/target/debug/deps/app-14" "-Wl,--gc-sections" "-pie" "-Wl,-z,relro,-z,now" "-nodefaultlibs" "/w/target/debug/build/app-1/out/extra.o" "-Wl,-T,/w/link.ld" "-Wl,--version-script=/w/v.map""#;

    #[test]
    fn printed_link_line_parses_into_program_and_arguments() {
        let l = parse_link_line(&format!("{PRINTED}\n")).unwrap();
        assert_eq!(l.program, "cc");
        assert_eq!(l.args[0], "-m64");
        assert_eq!(l.args.last().unwrap(), "-Wl,--version-script=/w/v.map");
    }

    #[test]
    fn every_file_library_and_directory_of_the_link_is_named() {
        let li = link_inputs(&parse_link_line(PRINTED).unwrap()).unwrap();
        assert_eq!(
            li.paths,
            vec![
                "/w/target/debug/deps/rustcR2ugQd/symbols.o",
                "/w/target/debug/deps/app-14.a1.rcgu.o",
                "/w/target/debug/deps/libmid-15.rlib",
                "/r/lib/rustlib/x86_64-unknown-linux-gnu/lib/libstd-d1.rlib",
                "/w/target/debug/build/app-1/out/extra.o",
                "/w/link.ld",
                "/w/v.map",
            ]
        );
        let libs: Vec<(&str, bool)> = li
            .libs
            .iter()
            .map(|l| (l.name.as_str(), l.static_only))
            .collect();
        assert_eq!(libs, vec![("foo", true), ("z", false), ("c", false)]);
        assert_eq!(
            li.search_dirs,
            vec![
                "/w/target/debug/deps/rustcR2ugQd/raw-dylibs",
                "/w/target/debug/build/sys-5e/out"
            ]
        );
        assert_eq!(
            li.program_dirs,
            vec!["/r/lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld"]
        );
        assert_eq!(li.use_ld, vec!["lld"]);
        assert_eq!(li.output.as_deref(), Some("/w/target/debug/deps/app-14"));
    }

    #[test]
    fn library_candidates_follow_the_linker_mode() {
        let dynamic = lib("foo", false);
        assert_eq!(dynamic.candidates(), vec!["libfoo.so", "libfoo.a"]);
        assert_eq!(lib("foo", true).candidates(), vec!["libfoo.a"]);
        assert_eq!(lib(":foo.o", false).candidates(), vec!["foo.o"]);
    }

    #[test]
    fn quoting_escapes_are_decoded_and_unknown_shapes_refused() {
        let l = parse_link_line(r#""cc" "/w/a \"b\"\\c" "\u{e9}""#).unwrap();
        assert_eq!(l.args, vec!["/w/a \"b\"\\c", "é"]);
        // Bytes that are not UTF-8, a working directory, a cleared
        // environment, a bare word among the arguments: not understood.
        for bad in [
            r#""cc" "/w/\xff""#,
            r#"cd "/w" && "cc" "-o" "x""#,
            r#"env -i "cc""#,
            r#""cc" -o "x""#,
            r#""cc" "unterminated"#,
            "",
        ] {
            assert_eq!(parse_link_line(bad), None, "{bad}");
        }
        let removed = parse_link_line(r#"env -u FOO LC_ALL="C" "cc" "-o" "x""#).unwrap();
        assert_eq!(removed.program, "cc");
    }

    #[test]
    fn response_files_are_refused() {
        let l = parse_link_line(r#""cc" "@/tmp/args""#).unwrap();
        assert_eq!(link_inputs(&l), Err(LinkRefusal::ResponseFile));
        let l = parse_link_line(r#""cc" "-Wl,@/tmp/args""#).unwrap();
        assert_eq!(link_inputs(&l), Err(LinkRefusal::ResponseFile));
    }

    #[test]
    fn linker_options_with_values_are_read_as_the_linker_reads_them() {
        let l = parse_link_line(
            r#""cc" "-Wl,-rpath,/opt/lib" "-Wl,-Map=/w/out.map" "-Xlinker" "-L/x" "-Wl,-l,bar" "-Wl,--script=/w/s.ld" "-specs=/w/my.specs""#,
        )
        .unwrap();
        let li = link_inputs(&l).unwrap();
        // The map file is written, not read: the caller sees it was made
        // during the compile and refuses to store.
        assert_eq!(li.paths, vec!["/w/out.map", "/w/s.ld", "/w/my.specs"]);
        assert_eq!(li.search_dirs, vec!["/x"]);
        assert_eq!(li.libs[0].name, "bar");
    }
}
