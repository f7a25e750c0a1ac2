//! Which directories are a compile's roots: where its worktree and its
//! target directory are, so paths below them can be made worktree-independent
//! in keys and stored text. The one place these are decided, for both
//! wrappers and for `kache mount`.

use std::path::{Path, PathBuf};

/// The worktree root of `dir`: the nearest ancestor holding `.git` (a git
/// worktree or checkout), else the nearest holding `Cargo.lock` (a cargo
/// workspace outside git), else `dir` itself.
pub fn root(dir: &Path) -> PathBuf {
    for marker in [".git", "Cargo.lock"] {
        if let Some(d) = dir.ancestors().find(|d| d.join(marker).exists()) {
            return d.to_path_buf();
        }
    }
    dir.to_path_buf()
}

/// The roots of a rustc call run in `cwd` writing to `out_dir`: the
/// worktree root is `cwd` (cargo runs rustc at the package's workspace),
/// unless `cwd` is inside CARGO_HOME (a registry or git dependency: not a
/// worktree, and remapping it would change the paths its panics print);
/// the target dir is the nearest ancestor of `out_dir` cargo marked (with
/// CACHEDIR.TAG, or `.rustc_info.json` for a target dir it did not create
/// itself: made beforehand, or a mount point).
pub fn cargo_roots(cwd: &Path, out_dir: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let in_cargo_home = cargo_home.is_some_and(|h| cwd.starts_with(h));
    let ws = (!in_cargo_home && cwd.parent().is_some()).then(|| cwd.to_path_buf());
    let target = out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file() || d.join(".rustc_info.json").is_file())
        .map(Path::to_path_buf);
    (ws, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_beats_cargo_lock_and_the_dir_is_the_last_resort() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("repo/ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        assert_eq!(root(&ws.join("sub")), ws.join("sub"));
        std::fs::write(ws.join("Cargo.lock"), "").unwrap();
        assert_eq!(root(&ws.join("sub")), ws);
        std::fs::create_dir(t.path().join("repo/.git")).unwrap();
        assert_eq!(root(&ws.join("sub")), t.path().join("repo"));
    }
}
