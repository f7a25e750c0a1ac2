//! `stats`, `report` and `why-miss` after real cargo builds of the fixture:
//! the numbers match what happened, and an edit is explained by the key
//! group it changed.

mod common;
mod ops_support;

use std::process::Command;

use ops_support::text;

fn kache(store: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(common::kache_bin())
        .args(args)
        .env("KACHE_DIR", store)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout) + &text(&out.stderr),
    )
}

fn json(store: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (code, out) = kache(store, args);
    assert_eq!(code, 0, "{args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn stats_report_and_why_miss_follow_real_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let wt1 = common::fixture_at(&tmp.path().join("wt1"));
    let wt2 = common::fixture_at(&tmp.path().join("wt2"));

    // First build: N misses, no hits.
    common::build(&wt1, &store);
    let s1 = common::stats(&store);
    let n = common::counter(&s1, "rust", "misses");
    assert!(n >= 7, "every workspace unit compiled: {s1}");
    assert_eq!(common::counter(&s1, "rust", "hits"), 0);
    let r1 = json(&store, &["report", "--json"]);
    assert_eq!(r1["schema_version"], 1);
    assert_eq!(r1["languages"]["rust"]["misses"], n);
    assert!(!r1["top_misses"].as_array().unwrap().is_empty());
    let top = &r1["top_misses"][0];
    assert!(
        top["ms"].as_u64().unwrap() > 0 && top["unit"].is_string(),
        "{top}"
    );

    // Second worktree: the same N units hit, no new miss.
    common::build(&wt2, &store);
    let s2 = common::stats(&store);
    assert_eq!(common::counter(&s2, "rust", "hits"), n, "{s2}");
    assert_eq!(common::counter(&s2, "rust", "misses"), n, "{s2}");
    let r2 = json(&store, &["report", "--json", "--since", "1h"]);
    assert_eq!(r2["languages"]["rust"]["hits"], n);
    assert_eq!(r2["languages"]["rust"]["misses"], n);
    assert!(
        r2["restore"]["bytes_saved"].as_u64().unwrap_or(0) > 0,
        "{r2}"
    );
    let (code, report_text) = kache(&store, &["report"]);
    assert_eq!(code, 0);
    assert!(report_text.contains("top misses by time"), "{report_text}");

    // Edit one crate: its miss is explained by its sources; a dependent's
    // by its externs.
    let lib = wt2.join("core/src/lib.rs");
    let mut src = std::fs::read_to_string(&lib).unwrap();
    src.push_str("\npub fn added_by_the_test() -> u32 { 7 }\n");
    std::fs::write(&lib, src).unwrap();
    common::build(&wt2, &store);

    let w = json(&store, &["why-miss", "core", "--json"]);
    assert_eq!(w["schema_version"], 1);
    assert_eq!(w["changed"], serde_json::json!(["result.sources"]), "{w}");
    let (code, said) = kache(&store, &["why-miss", "core"]);
    assert_eq!(code, 0);
    assert!(said.contains("sources"), "{said}");

    let w = json(&store, &["why-miss", "app", "--json"]);
    let changed: Vec<String> = serde_json::from_value(w["changed"].clone()).unwrap();
    assert!(changed.contains(&"direct.externs".to_string()), "{w}");

    let (code, said) = kache(&store, &["why-miss", "no_such_crate"]);
    assert_eq!(code, 1, "{said}");
}

/// `kache stats --json` and `kache report` are two views of one record per
/// call: after builds in which compiles failed (Rust and C), their miss
/// reasons and their not-stored reasons are the same numbers. Before they
/// were derived from one value, stats counted a failed compile under its
/// lookup's reason (`no-manifest`) and report under `compile-failed`.
#[test]
fn stats_and_report_agree_after_failing_compiles() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let wt = common::fixture_at(&tmp.path().join("wt"));
    common::build(&wt, &store);
    // Break one crate: its compile misses (its inputs changed) and fails.
    let lib = wt.join("core/src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{src}\npub fn broken( -> u32 {{ 7 }}\n")).unwrap();
    let failed = common::cargo(&wt, &store, &["build"]).output().unwrap();
    assert!(!failed.status.success(), "the broken crate compiled");

    // A C compile that fails, and one that is stored.
    common::need_tool("gcc");
    let c = wt.join("c");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("bad.c"), "int f( { return 1; }\n").unwrap();
    std::fs::write(c.join("good.c"), "int g(void) { return 2; }\n").unwrap();
    let bad = common::kache_cc(&c, &store, "gcc", &["-c", "bad.c", "-o", "bad.o"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "bad.c compiled");
    common::run_ok(common::kache_cc(
        &c,
        &store,
        "gcc",
        &["-c", "good.c", "-o", "good.o"],
    ));

    let stats = common::stats(&store);
    let report = json(&store, &["report", "--json"]);
    for lang in ["rust", "cc"] {
        let from_stats = |k: &str| stats[lang][k].clone();
        let from_report = |k: &str| report[k][lang].clone();
        assert_eq!(
            from_stats("miss_reasons"),
            from_report("miss_reasons"),
            "{lang} miss reasons: stats {stats} report {report}"
        );
        assert_eq!(
            from_stats("not_stored"),
            from_report("not_stored"),
            "{lang} not-stored reasons: stats {stats} report {report}"
        );
        assert_eq!(stats[lang]["misses"], report["languages"][lang]["misses"]);
        assert_eq!(stats[lang]["not_stored"]["compile-failed"], 1, "{stats}");
    }
    assert!(
        stats["rust"]["miss_reasons"]["inputs-changed"].as_u64() >= Some(1),
        "{stats}"
    );
}

#[test]
fn gc_older_than_removes_entries_unused_for_that_long() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let f = tmp.path().join("payload");
    std::fs::write(&f, vec![7u8; 10_000]).unwrap();
    let key = "cd".repeat(32);
    let (code, out) = kache(&store, &["debug", "put", &key, f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let before = common::stats(&store);
    assert_eq!(before["store"]["entries"], 1);

    let (code, out) = kache(&store, &["gc", "--older-than", "1d"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        common::stats(&store)["store"]["entries"],
        1,
        "a fresh entry stays"
    );

    // Age the entry by two days.
    let entry = walk(&store.join("entries"))[0].clone();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // Its blob too (gc keeps blobs younger than the collection).
    for b in walk(&store.join("blobs")) {
        let f = std::fs::File::open(&b).unwrap();
        f.set_modified(old).unwrap_or(());
    }
    let (code, out) = kache(&store, &["gc", "--older-than", "1d"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 entries unused"), "{out}");
    let after = common::stats(&store);
    assert_eq!(after["store"]["entries"], 0, "{after}");
    assert_eq!(after["store"]["blobs"], 0, "{after}");
    let (code, _) = kache(&store, &["gc", "--older-than", "soon"]);
    assert_ne!(code, 0);
}

#[test]
fn completions_are_printed_for_bash() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = kache(tmp.path(), &["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("why-miss") && out.contains("doctor"),
        "{}",
        &out[..200.min(out.len())]
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out
}
