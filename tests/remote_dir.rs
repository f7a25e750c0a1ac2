//! The remote cache through a shared directory (`file:///…`, what an NFS or
//! SMB mount looks like to kache): the same sharing as through S3, with
//! nothing but plain objects left in the directory.

mod common;
mod remote_support;

use common::*;
use remote_support::*;

fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn shared_directory_machine_b_restores_every_unit_from_machine_a() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("nfs/kache");
    let remote = Remote::Dir(shared.clone());
    let (store_a, store_b) = (tmp.path().join("store-a"), tmp.path().join("store-b"));
    let a = fixture_at(&tmp.path().join("alice/src/proj"));
    let b = fixture_at(&tmp.path().join("bob/wt"));
    let units = machine_a_builds_and_uploads(&a, &store_a, &remote);

    // Only whole objects under the versioned layout; no staging leftovers.
    let files = all_files(&shared);
    assert!(!files.is_empty());
    for f in &files {
        let rel = f
            .strip_prefix(&shared)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            rel.starts_with("v1/blobs/")
                || rel.starts_with("v1/entries/")
                || rel.starts_with("v1/manifests/"),
            "unexpected file in the shared directory: {rel}"
        );
    }

    run_ok(cargo_remote(&b, &store_b, &remote, &[]));
    let s = stats(&store_b);
    assert_eq!(counter(&s, "rust", "misses"), 0, "{s}");
    assert_eq!(counter(&s, "rust", "remote_hits"), units, "{s}");
    assert_eq!(counter(&s, "cc", "misses"), 0, "{s}");
    assert_same_outputs(&a, &b);
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));
}

#[test]
fn unreachable_shared_directory_costs_a_miss_not_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    // A path that cannot be created (a file stands where a directory should).
    std::fs::write(tmp.path().join("not-a-dir"), b"x").unwrap();
    let remote = Remote::Dir(tmp.path().join("not-a-dir/kache"));
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    run_ok(cargo_remote(&a, &store, &remote, &[]));
    let drain = kache(&store, &remote, &["remote", "drain"])
        .output()
        .unwrap();
    assert!(
        !drain.status.success(),
        "uploading into a file cannot succeed"
    );
    let s = stats(&store);
    assert!(counter(&s, "rust", "misses") >= 10, "{s}");
    assert!(run_app(&a, "debug").contains("csys: 5"));
}
