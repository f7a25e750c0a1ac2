//! Keeping the producing worktree's paths out of objects and out of keys.
//!
//! Owns the choice between a path-independent key (the real compile gets
//! `-ffile-prefix-map=<base>=.`, so the object names paths below the worktree root relative to
//! it) and a path-local key (the absolute base is keyed). Maps a *root* (the worktree), never a
//! source's own directory, so `__FILE__` keeps its structure below the root (flattening it
//! once broke a static assertion on `__FILE__`).
//!
//! The same `<base>` is normalized to a placeholder in the key with the compiler's own matching
//! rule (a plain string prefix, as GCC does), so a key can only be shared when the compiler
//! rewrites the paths in the object the same way.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::args::CcInvocation;
use super::compiler::CompilerVersion;

use crate::paths::BASE_TOKEN;

const PREFIX_MAP_FLAGS: &[&str] = &[
    "-ffile-prefix-map=",
    "-fdebug-prefix-map=",
    "-fmacro-prefix-map=",
];

/// How paths are handled for one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPlan {
    /// Arguments to append to *both* the preprocessor run and the real compile, so that
    /// `__FILE__` in the keyed text is what the object will hold.
    pub extra_args: Vec<OsString>,
    /// `extra_args` as the key records them (the base replaced by the placeholder).
    pub extra_args_for_key: Vec<String>,
    /// True when the key holds no absolute path of the worktree: two worktrees compiling the
    /// same sources share it.
    pub path_independent: bool,
    /// Location facts the key must hold, labelled: `base` (absolute, only when path-local) and
    /// `cwd` (normalized, only with debug info, where it becomes DW_AT_comp_dir).
    pub key_fields: Vec<(&'static str, String)>,
    /// The base as a string, without trailing separator; empty when there is none usable.
    base: String,
}

impl PathPlan {
    /// Replaces a leading `<base>` (string prefix, like the compiler's prefix map) with
    /// [`BASE_TOKEN`]. Other paths are returned unchanged.
    pub fn normalize(&self, path: &str) -> String {
        match path.strip_prefix(self.base.as_str()) {
            Some(rest) if !self.base.is_empty() => format!("{BASE_TOKEN}{rest}"),
            _ => path.to_owned(),
        }
    }
}

/// Decides the path handling for `inv` compiled in `cwd` inside the worktree rooted at `base`
/// (both absolute). `version` is the compiler's parsed banner (`None` when unknown: then no
/// prefix map is assumed to exist and the key is path-local).
///
/// - Supported compiler, no conflicting user map: add `-ffile-prefix-map=<base>=.`,
///   path-independent.
/// - A user `-f*-prefix-map` whose old path overlaps `base`: theirs win, nothing is added, the key
///   is path-local (their flags are keyed literally too).
/// - No `-ffile-prefix-map` support (GCC < 8, clang < 10), or an unusable base (relative, `/`,
///   not UTF-8): nothing added, path-local.
pub fn plan(
    inv: &CcInvocation,
    base: &Path,
    cwd: &Path,
    version: Option<CompilerVersion>,
) -> PathPlan {
    let base_str = usable_base(base);
    let supported = version.is_some_and(|v| v.supports_file_prefix_map());
    let conflict = user_prefix_map_olds(inv)
        .iter()
        .any(|old| overlaps(&absolutize(cwd, Path::new(old)), base));
    let mut plan = PathPlan {
        extra_args: Vec::new(),
        extra_args_for_key: Vec::new(),
        path_independent: false,
        key_fields: Vec::new(),
        base: base_str.clone().unwrap_or_default(),
    };
    match base_str {
        Some(b) if supported && !conflict => {
            plan.extra_args
                .push(format!("-ffile-prefix-map={b}=.").into());
            plan.extra_args_for_key
                .push(format!("-ffile-prefix-map={BASE_TOKEN}=."));
            plan.path_independent = true;
        }
        _ => plan
            .key_fields
            .push(("base", base.to_string_lossy().into_owned())),
    }
    if inv.debug_info {
        let cwd = plan.normalize(&cwd.to_string_lossy());
        plan.key_fields.push(("cwd", cwd));
    }
    plan
}

/// Compiler diagnostics name the real paths (prefix maps do not apply to them): before storing
/// a compile's stderr for replay, replace `<base>/` with the placeholder, and expand it for
/// the consuming worktree on a hit. `None` when the text already holds the placeholder or the
/// base is unusable (store no diagnostics-bearing entry then, or store them verbatim knowing
/// they name the producer's paths).
pub fn diagnostics_to_placeholders(stderr: &[u8], base: &Path) -> Option<Vec<u8>> {
    if contains(stderr, BASE_TOKEN.as_bytes()) {
        return None;
    }
    let from = format!("{}/", usable_base(base)?);
    Some(replace_all(
        stderr,
        from.as_bytes(),
        format!("{BASE_TOKEN}/").as_bytes(),
    ))
}

/// The inverse of [`diagnostics_to_placeholders`] for the worktree rooted at `base`.
pub fn diagnostics_from_placeholders(stored: &[u8], base: &Path) -> Option<Vec<u8>> {
    let to = format!("{}/", usable_base(base)?);
    Some(replace_all(
        stored,
        format!("{BASE_TOKEN}/").as_bytes(),
        to.as_bytes(),
    ))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn usable_base(base: &Path) -> Option<String> {
    let s = base.to_str()?;
    let trimmed = s.trim_end_matches('/');
    (base.is_absolute() && !trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The old-path halves of the user's own prefix maps.
fn user_prefix_map_olds(inv: &CcInvocation) -> Vec<String> {
    inv.modeled
        .iter()
        .filter(|m| PREFIX_MAP_FLAGS.contains(&m.flag))
        .filter_map(|m| m.value.as_deref())
        .map(|v| v.split_once('=').map_or(v, |(old, _)| old).to_owned())
        .collect()
}

fn absolutize(cwd: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// One path is a string prefix of the other (the compiler matches prefixes as strings, so
/// `/w` overlaps `/wx` too).
fn overlaps(a: &Path, b: &Path) -> bool {
    let (a, b) = (a.to_string_lossy(), b.to_string_lossy());
    let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cc::args::parse;
    use crate::cc::compiler::{CompilerVersion, Family};

    const GCC12: Option<CompilerVersion> = Some(CompilerVersion {
        family: Family::Gcc,
        apple: false,
        major: 12,
    });
    const GCC7: Option<CompilerVersion> = Some(CompilerVersion {
        family: Family::Gcc,
        apple: false,
        major: 7,
    });

    fn inv(args: &[&str]) -> CcInvocation {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse("gcc", &args).unwrap()
    }

    #[test]
    fn supported_compiler_maps_the_worktree_root() {
        let p = plan(
            &inv(&["-c", "src/x.c", "-g"]),
            Path::new("/w/a/"),
            Path::new("/w/a/sub"),
            GCC12,
        );
        assert_eq!(
            p.extra_args,
            vec![OsString::from("-ffile-prefix-map=/w/a=.")]
        );
        assert!(p.path_independent);
        assert_eq!(p.key_fields, vec![("cwd", "@KACHE_BASE@/sub".to_owned())]);
        let q = plan(
            &inv(&["-c", "src/x.c", "-g"]),
            Path::new("/w/b"),
            Path::new("/w/b/sub"),
            GCC12,
        );
        assert_eq!(p.key_fields, q.key_fields);
    }

    #[test]
    fn old_compiler_with_debug_info_is_path_local() {
        let p = plan(
            &inv(&["-c", "x.c", "-g"]),
            Path::new("/w/a"),
            Path::new("/w/a"),
            GCC7,
        );
        assert!(p.extra_args.is_empty());
        assert!(!p.path_independent);
        assert!(p.key_fields.contains(&("base", "/w/a".to_owned())));
        assert!(p.key_fields.iter().any(|(l, _)| *l == "cwd"));
        assert!(
            !plan(
                &inv(&["-c", "x.c"]),
                Path::new("/w/a"),
                Path::new("/w/a"),
                None
            )
            .path_independent
        );
    }

    #[test]
    fn conflicting_user_prefix_map_wins_and_makes_the_key_path_local() {
        let i = inv(&["-c", "x.c", "-ffile-prefix-map=/w/a/src=src"]);
        let p = plan(&i, Path::new("/w/a"), Path::new("/w/a"), GCC12);
        assert!(p.extra_args.is_empty() && !p.path_independent);
        let i = inv(&["-c", "x.c", "-fdebug-prefix-map=/opt/sdk=/sdk"]);
        let p = plan(&i, Path::new("/w/a"), Path::new("/w/a"), GCC12);
        assert!(p.path_independent && p.extra_args.len() == 1);
    }

    #[test]
    fn diagnostics_move_between_worktrees() {
        let err = b"/w/a/src/x.c:3:5: warning: unused variable 'y' [-Wunused-variable]\n";
        let stored = diagnostics_to_placeholders(err, Path::new("/w/a")).unwrap();
        assert_eq!(
            diagnostics_from_placeholders(&stored, Path::new("/home/u/b")).unwrap(),
            b"/home/u/b/src/x.c:3:5: warning: unused variable 'y' [-Wunused-variable]\n".to_vec()
        );
        assert_eq!(
            diagnostics_to_placeholders(&stored, Path::new("/w/a")),
            None
        );
    }

    #[test]
    fn normalize_mirrors_the_compilers_string_prefix() {
        let p = plan(
            &inv(&["-c", "x.c"]),
            Path::new("/w/a"),
            Path::new("/w/a"),
            GCC12,
        );
        assert_eq!(p.normalize("/w/a/inc/x.h"), "@KACHE_BASE@/inc/x.h");
        assert_eq!(p.normalize("/w/ab/x.h"), "@KACHE_BASE@b/x.h");
        assert_eq!(p.normalize("/usr/include/stdio.h"), "/usr/include/stdio.h");
        assert_eq!(p.normalize("rel/x.h"), "rel/x.h");
    }
}
