//! Installing the preload library: once, read-only, under its hash; and a clear
//! "unavailable" where LD_PRELOAD could not name it.
#![cfg(target_os = "linux")]

mod support;

use kache_recorder::{Recorder, Unavailable};
use std::os::unix::fs::PermissionsExt;

#[test]
fn the_library_is_written_once_read_only_under_its_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recorder");
    let first = Recorder::new(&dir).expect("available on Linux with glibc");
    let lib = first.library().to_path_buf();
    assert_eq!(lib.parent().unwrap(), dir);
    let name = lib.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(".so") && name.len() == 64 + 3, "{name}");
    let bytes = std::fs::read(&lib).unwrap();
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), &name[..64]);
    let meta = std::fs::metadata(&lib).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o555);
    let mtime = meta.modified().unwrap();

    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = Recorder::new(&dir).unwrap();
    assert_eq!(second.library(), lib);
    assert_eq!(
        std::fs::metadata(&lib).unwrap().modified().unwrap(),
        mtime,
        "not rewritten"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_directory_ld_preload_cannot_name_is_reported_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["with space", "with:colon"] {
        let err = Recorder::new(&tmp.path().join(bad)).unwrap_err();
        assert!(matches!(err, Unavailable::UnusablePath(_)), "{err:?}");
        assert!(err.to_string().contains("LD_PRELOAD cannot name"), "{err}");
    }
}

#[test]
fn a_session_log_is_removed_when_the_session_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = support::recorder(tmp.path());
    let session = rec.session().unwrap();
    let log = session.log_path().to_path_buf();
    assert!(log.exists());
    drop(session);
    assert!(!log.exists());
}
