//! Which directory is "the worktree" of a path: the one definition the
//! wrappers use to make paths relative (C/C++ prefix maps, stored dep files
//! and diagnostics), and that `kache mount` can share.

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
