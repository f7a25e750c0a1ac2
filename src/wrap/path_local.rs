//! Path-locality by observation: after a compile, do its outputs still hold
//! a worktree's absolute path?
//!
//! The key leaves the worktree root and the target dir out (normalized,
//! with matching `--remap-path-prefix` rules) so that two worktrees share
//! entries. That is only right when nothing in the outputs names either
//! root. Remapping covers debug info, panic locations and `file!()`; it
//! does not cover a path that reaches the code as a value: `env!` of
//! `CARGO_MANIFEST_DIR` or `OUT_DIR` (however the macro is spelled or
//! wrapped), a proc-macro reading one, a build script writing one into
//! generated code. Instead of guessing from the source text, the outputs are
//! searched for the roots' bytes once the compile is done; a result that
//! still holds one is path-local: its record names the roots it holds and
//! only matches where those are the same, and it is never uploaded.
//!
//! Cost: every output is read once more on a miss (from the page cache,
//! just written), searched with `memchr::memmem`.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use memchr::memmem::Finder;

/// How much of a file is searched at a time.
const CHUNK: usize = 1 << 20;

/// A byte string to look for, and the index of the root it stands for.
pub type Needle = (usize, Vec<u8>);

/// The byte strings to look for: each root as given and, when it differs,
/// as the filesystem resolves it (a tool that canonicalizes a path writes
/// that spelling). Roots are searched for separately even when one lies
/// inside another: a path below both names both.
pub fn needles(roots: &[(String, String)]) -> Vec<Needle> {
    let mut all: Vec<Needle> = Vec::new();
    for (i, (_, root)) in roots.iter().enumerate() {
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            continue;
        }
        all.push((i, root.as_bytes().to_vec()));
        if let Ok(c) = std::fs::canonicalize(root) {
            let c = c.to_string_lossy().into_owned();
            if c != root {
                all.push((i, c.into_bytes()));
            }
        }
    }
    all
}

/// Marks in `found` (one flag per root) the roots whose needles `bytes`
/// holds.
pub fn search(bytes: &[u8], needles: &[Needle], found: &mut [bool]) {
    for (i, n) in needles {
        if !found[*i] && memchr::memmem::find(bytes, n).is_some() {
            found[*i] = true;
        }
    }
}

/// Like [`search`] over the file at `path`, read in chunks that overlap by
/// the longest needle so a match across a boundary is found. Stops early
/// once every root is found.
pub fn search_file(path: &Path, needles: &[Needle], found: &mut [bool]) -> io::Result<()> {
    let Some(longest) = needles.iter().map(|(_, n)| n.len()).max() else {
        return Ok(());
    };
    let finders: Vec<(usize, Finder)> = needles.iter().map(|(i, n)| (*i, Finder::new(n))).collect();
    let mut f = File::open(path)?;
    let keep = longest.saturating_sub(1);
    let mut buf = vec![0u8; CHUNK + keep];
    // Bytes at the front of `buf` carried over from the previous chunk.
    let mut carried = 0;
    loop {
        let n = read_full(&mut f, &mut buf[carried..])?;
        let filled = carried + n;
        for (i, fd) in &finders {
            if !found[*i] && fd.find(&buf[..filled]).is_some() {
                found[*i] = true;
            }
        }
        if n == 0 || found.iter().all(|f| *f) {
            return Ok(());
        }
        carried = keep.min(filled);
        buf.copy_within(filled - carried..filled, 0);
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match f.read(&mut buf[total..]) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(list: &[&str]) -> Vec<(String, String)> {
        list.iter()
            .map(|r| ("r".to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn a_path_below_two_roots_names_both_and_a_path_below_one_names_one() {
        let r = roots(&["/nonexistent/w/a", "/nonexistent/w/a/target/"]);
        let n = needles(&r);
        let mut found = vec![false; 2];
        search(b"x /nonexistent/w/a/target/debug/x", &n, &mut found);
        assert_eq!(found, vec![true, true]);
        let mut found = vec![false; 2];
        search(b"x /nonexistent/w/a/src/lib.rs", &n, &mut found);
        assert_eq!(found, vec![true, false]);
    }

    #[test]
    fn a_root_is_found_anywhere_in_a_file_even_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let n = needles(&roots(&["/nonexistent/worktree"]));
        let p = dir.path().join("out");
        let found_in = |p: &Path| {
            let mut found = vec![false];
            search_file(p, &n, &mut found).unwrap();
            found[0]
        };
        for at in [0, CHUNK - 5, CHUNK, 3 * CHUNK - 1] {
            let mut bytes = vec![0u8; 3 * CHUNK + 100];
            bytes[at..at + 21].copy_from_slice(b"/nonexistent/worktree");
            std::fs::write(&p, &bytes).unwrap();
            assert!(found_in(&p), "at {at}");
        }
        std::fs::write(&p, vec![b'/'; 2 * CHUNK]).unwrap();
        assert!(!found_in(&p));
    }

    #[test]
    fn a_symlinked_root_is_also_looked_for_as_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        kache_platform::symlink_file(&real, &link).unwrap();
        let n = needles(&roots(&[link.to_str().unwrap()]));
        let real = real.canonicalize().unwrap();
        let mut found = vec![false];
        search(real.to_str().unwrap().as_bytes(), &n, &mut found);
        assert!(found[0]);
    }
}
