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
//! Cost: none of its own on a miss: the store's one read of each output
//! (to hash and copy it) feeds a [`Searcher`] (`memchr::memmem`).

use memchr::memmem::Finder;

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

/// Looks for the roots in a stream of chunks (the bytes of a file as the
/// store reads them): each chunk as it comes, and each seam between two, so
/// a root split across chunks is found too. One stream at a time:
/// [`Searcher::end`] before the next.
pub struct Searcher<'n> {
    finders: Vec<(usize, Finder<'n>)>,
    /// The longest needle's length minus one: how far a match can reach
    /// across a seam on either side.
    keep: usize,
    /// The last `keep` bytes of the stream so far.
    tail: Vec<u8>,
    found: Vec<bool>,
}

impl<'n> Searcher<'n> {
    /// A searcher for `needles` of `roots` roots.
    pub fn new(needles: &'n [Needle], roots: usize) -> Searcher<'n> {
        let longest = needles.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
        Searcher {
            finders: needles.iter().map(|(i, n)| (*i, Finder::new(n))).collect(),
            keep: longest.saturating_sub(1),
            tail: Vec::new(),
            found: vec![false; roots],
        }
    }

    /// True once every root is found (nothing left to look for).
    pub fn done(&self) -> bool {
        self.found.iter().all(|f| *f)
    }

    /// The next bytes of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.finders.is_empty() || self.done() {
            return;
        }
        self.find_in(chunk);
        let head = chunk.len().min(self.keep);
        let mut seam = std::mem::take(&mut self.tail);
        seam.extend_from_slice(&chunk[..head]);
        if seam.len() > head {
            self.find_in(&seam);
        }
        self.tail = match chunk.len() >= self.keep {
            true => chunk[chunk.len() - self.keep..].to_vec(),
            // The whole chunk is in the seam: keep its end.
            false => seam[seam.len().saturating_sub(self.keep)..].to_vec(),
        };
    }

    /// Ends a stream: the next chunk starts a new one.
    pub fn end(&mut self) {
        self.tail.clear();
    }

    /// One flag per root: found or not.
    pub fn found(&self) -> &[bool] {
        &self.found
    }

    fn find_in(&mut self, bytes: &[u8]) {
        for (i, f) in &self.finders {
            if !self.found[*i] && f.find(bytes).is_some() {
                self.found[*i] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(list: &[&str]) -> Vec<(String, String)> {
        list.iter()
            .map(|r| ("r".to_string(), r.to_string()))
            .collect()
    }

    /// The flags after feeding `bytes` in chunks of `size`.
    fn found_in(needles: &[Needle], roots: usize, bytes: &[u8], size: usize) -> Vec<bool> {
        let mut s = Searcher::new(needles, roots);
        for chunk in bytes.chunks(size) {
            s.feed(chunk);
        }
        s.end();
        s.found().to_vec()
    }

    #[test]
    fn a_path_below_two_roots_names_both_and_a_path_below_one_names_one() {
        let r = roots(&["/nonexistent/w/a", "/nonexistent/w/a/target/"]);
        let n = needles(&r);
        let below_both = b"x /nonexistent/w/a/target/debug/x";
        assert_eq!(found_in(&n, 2, below_both, 1 << 20), vec![true, true]);
        let below_one = b"x /nonexistent/w/a/src/lib.rs";
        assert_eq!(found_in(&n, 2, below_one, 1 << 20), vec![true, false]);
    }

    #[test]
    fn a_root_is_found_anywhere_in_a_stream_even_across_chunks() {
        let root = b"/nonexistent/worktree";
        let n = needles(&roots(&["/nonexistent/worktree"]));
        // Chunks longer than the root, about as long, and far shorter (a
        // match then spans several seams).
        for size in [4096usize, 22, 21, 20, 7, 1] {
            for at in [
                0,
                1,
                size.saturating_sub(5),
                size,
                3 * size + 1,
                20_000 - 21,
            ] {
                let mut bytes = vec![0u8; 20_000];
                bytes[at..at + root.len()].copy_from_slice(root);
                assert_eq!(
                    found_in(&n, 1, &bytes, size),
                    vec![true],
                    "at {at}, chunks of {size}"
                );
            }
        }
        // Never across two streams, nor from a near miss.
        let mut s = Searcher::new(&n, 1);
        s.feed(b"xx/nonexistent/work");
        s.end();
        s.feed(b"tree");
        s.feed(b"/nonexistent/worktre");
        s.end();
        assert_eq!(s.found(), &[false]);
        assert_eq!(found_in(&n, 1, &[b'/'; 5000], 64), vec![false]);
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
        assert_eq!(
            found_in(&n, 1, real.to_str().unwrap().as_bytes(), 1 << 20),
            vec![true]
        );
    }
}
