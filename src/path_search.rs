//! Finding programs: the one PATH search of kache (compilers, rustc, the
//! linker, the fallback wrapper, doctor's checks).
//!
//! Never returns kache itself where a compiler is wanted: a shim named `cc`
//! on PATH must not find itself, nor a shim of another kache install.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The first file named `name` on PATH (or `name` itself when it has a
/// slash and is a file).
pub fn which(name: &str) -> Option<PathBuf> {
    which_where(OsStr::new(name), |_| true)
}

/// Like [`which`], skipping candidates `accept` refuses.
pub fn which_where(name: &OsStr, accept: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    if name.to_string_lossy().contains('/') {
        let p = PathBuf::from(name);
        return (p.is_file() && accept(&p)).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .find(|p| accept(p))
}

/// Finds the real compiler for `name`: a path as given, or the first match
/// on PATH that is not a kache binary. A path that leads to kache (the
/// launcher form given a shim) is searched by its file name instead.
pub fn real_compiler(name: &OsStr) -> Option<PathBuf> {
    let not_kache = |p: &Path| !p.canonicalize().is_ok_and(|c| is_kache_binary(&c));
    if name.to_string_lossy().contains('/') {
        let p = PathBuf::from(name);
        if !p.is_file() {
            return None;
        }
        if not_kache(&p) {
            return Some(p);
        }
        return real_compiler(p.file_name()?);
    }
    which_where(name, not_kache)
}

/// True when `canonical` (a resolved path) is this kache binary or another
/// one (any file named `kache`): running it as the compiler would loop.
pub fn is_kache_binary(canonical: &Path) -> bool {
    let stem = canonical.file_stem().map(|s| s.to_string_lossy());
    if stem.as_deref() == Some("kache") {
        return true;
    }
    std::env::current_exe()
        .ok()
        .and_then(|m| m.canonicalize().ok())
        .is_some_and(|me| me == canonical)
}
