//! Shared fixture: a temp blob store, a temp state dir and a real FUSE mount over a temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kache_fs::{BlobSource, MountHandle, MountOptions, Placement};

/// Blobs at `<root>/ab/abcdef…`, like kache's store.
pub struct TestBlobs {
    pub root: PathBuf,
}

impl BlobSource for TestBlobs {
    fn blob_path(&self, hash: &str) -> Option<PathBuf> {
        let path = self.root.join(hash.get(..2)?).join(hash);
        path.exists().then_some(path)
    }

    fn blob_root(&self) -> Option<PathBuf> {
        Some(self.root.clone())
    }
}

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub blobs: PathBuf,
    pub state: PathBuf,
    pub mnt: PathBuf,
    pub handle: Option<MountHandle>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blobs = tmp.path().join("blobs");
        let state = tmp.path().join("state");
        let mnt = tmp.path().join("target");
        for d in [&blobs, &state, &mnt] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let mut f = Fixture {
            tmp,
            blobs,
            state,
            mnt,
            handle: None,
        };
        f.mount();
        f
    }

    pub fn mount(&mut self) {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: these tests need the FUSE kernel module"
        );
        let opts = MountOptions::new(&self.mnt, &self.state);
        let handle = kache_fs::mount(opts, self.source()).unwrap_or_else(|e| {
            panic!(
                "mounting FUSE at {} failed (need /dev/fuse and root or fusermount3): {e}",
                self.mnt.display()
            )
        });
        self.handle = Some(handle);
    }

    pub fn unmount(&mut self) {
        if let Some(h) = self.handle.take() {
            if let Err(e) = h.unmount() {
                // A process another test thread is starting holds copies of this process's
                // descriptors (some in this mount) from its fork until its exec: busy for a
                // moment. Anything else, or busy for long, is a failure.
                assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "unmount: {e}");
                let done = (0..100).any(|_| {
                    std::thread::sleep(Duration::from_millis(20));
                    kache_fs::unmount(&self.mnt, false).is_ok()
                });
                assert!(done, "unmount: {} still busy after 2 s", self.mnt.display());
            }
        }
    }

    pub fn source(&self) -> Arc<dyn BlobSource> {
        Arc::new(TestBlobs {
            root: self.blobs.clone(),
        })
    }

    /// Store `content` as a blob (mode 0444), return its hash.
    pub fn blob(&self, content: &[u8]) -> String {
        let hash = blake3::hash(content).to_hex().to_string();
        let dir = self.blobs.join(&hash[..2]);
        std::fs::create_dir_all(&dir).expect("blob dir");
        let path = dir.join(&hash);
        if !path.exists() {
            std::fs::write(&path, content).expect("write blob");
            let mut perm = std::fs::metadata(&path).expect("stat blob").permissions();
            perm.set_readonly(true);
            std::fs::set_permissions(&path, perm).expect("chmod blob");
        }
        hash
    }

    pub fn blob_bytes(&self, hash: &str) -> Vec<u8> {
        std::fs::read(self.blobs.join(&hash[..2]).join(hash)).expect("read blob")
    }

    /// Put `content` in the store and place it at `rel` in the mount.
    pub fn place(&self, rel: &str, content: &[u8]) -> String {
        let hash = self.blob(content);
        kache_fs::place(
            &self.mnt,
            &[Placement {
                path: rel.into(),
                hash: hash.clone(),
                size: content.len() as u64,
                mode: 0o644,
            }],
        )
        .expect("place");
        hash
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.unmount();
    }
}
