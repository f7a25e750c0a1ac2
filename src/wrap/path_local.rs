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
//! still holds one is path-local: its record names the roots and only
//! matches where they are the same, and it is never uploaded.
//!
//! Cost: every output is read once more on a miss (from the page cache,
//! just written), searched with `memchr::memmem`.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use memchr::memmem::Finder;

/// How much of a file is searched at a time.
const CHUNK: usize = 1 << 20;

/// The byte strings to look for: each root as given and, when it differs,
/// as the filesystem resolves it (a tool that canonicalizes a path writes
/// that spelling). A needle that contains another is dropped: finding the
/// shorter one is enough.
pub fn needles(roots: &[(String, String)]) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = Vec::new();
    for (_, root) in roots {
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            continue;
        }
        all.push(root.as_bytes().to_vec());
        if let Ok(c) = std::fs::canonicalize(root) {
            let c = c.to_string_lossy().into_owned();
            if c != root {
                all.push(c.into_bytes());
            }
        }
    }
    all.sort_by_key(Vec::len);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for n in all {
        if !kept.iter().any(|k| memchr::memmem::find(&n, k).is_some()) {
            kept.push(n);
        }
    }
    kept
}

/// True when `bytes` holds one of `needles`.
pub fn holds_any(bytes: &[u8], needles: &[Vec<u8>]) -> bool {
    needles
        .iter()
        .any(|n| memchr::memmem::find(bytes, n).is_some())
}

/// True when the file at `path` holds one of `needles`, read in chunks that
/// overlap by the longest needle so a match across a boundary is found.
pub fn file_holds_any(path: &Path, needles: &[Vec<u8>]) -> io::Result<bool> {
    let Some(longest) = needles.iter().map(Vec::len).max() else {
        return Ok(false);
    };
    let finders: Vec<Finder> = needles.iter().map(Finder::new).collect();
    let mut f = File::open(path)?;
    let keep = longest.saturating_sub(1);
    let mut buf = vec![0u8; CHUNK + keep];
    // Bytes at the front of `buf` carried over from the previous chunk.
    let mut carried = 0;
    loop {
        let n = read_full(&mut f, &mut buf[carried..])?;
        let filled = carried + n;
        if finders.iter().any(|fd| fd.find(&buf[..filled]).is_some()) {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
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
    fn a_root_inside_another_is_found_through_the_outer_one() {
        let n = needles(&roots(&["/nonexistent/w/a/target", "/nonexistent/w/a/"]));
        assert_eq!(n, vec![b"/nonexistent/w/a".to_vec()]);
    }

    #[test]
    fn a_root_is_found_anywhere_in_a_file_even_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let n = needles(&roots(&["/nonexistent/worktree"]));
        let p = dir.path().join("out");
        for at in [0, CHUNK - 5, CHUNK, 3 * CHUNK - 1] {
            let mut bytes = vec![0u8; 3 * CHUNK + 100];
            bytes[at..at + 21].copy_from_slice(b"/nonexistent/worktree");
            std::fs::write(&p, &bytes).unwrap();
            assert!(file_holds_any(&p, &n).unwrap(), "at {at}");
        }
        std::fs::write(&p, vec![b'/'; 2 * CHUNK]).unwrap();
        assert!(!file_holds_any(&p, &n).unwrap());
        assert!(holds_any(b"x /nonexistent/worktree/src", &n));
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
        assert!(holds_any(real.to_str().unwrap().as_bytes(), &n));
    }
}
