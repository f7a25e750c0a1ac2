//! `kache report` and `kache why-miss`: reading the event log.
//!
//! Every wrapper call appends one JSON line to `$KACHE_DIR/events.jsonl`
//! (see `crate::events`): time, language, outcome, reason, unit,
//! milliseconds, bytes, and for Rust the digest of each key group. The report
//! aggregates a window of it (plus the cumulative counters of `stats`); the
//! miss explainer compares one unit's records. Lines that do not parse are
//! skipped: the log is append-only and a torn line must not hide the rest.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::env::Context;
use crate::events::{self, Event};
use crate::stats;

/// Version of the `--json` shapes of `report` and `why-miss`.
pub const SCHEMA_VERSION: u32 = 1;

/// The seedings of a window of the event log, summed (`seeding` in `kache report --json`).
#[derive(Debug, Default, serde::Serialize)]
struct SeedingSummary {
    seedings: u64,
    units: u64,
    bytes: u64,
    ms: u64,
    skipped: BTreeMap<String, u64>,
    env_differs: std::collections::BTreeSet<String>,
}

/// Per-build summaries (newest last) of the events that carry a build id.
pub fn builds(events: &[Event], keep: usize) -> Vec<Value> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, (u64, u64, u64, u64, u64, u64)> = BTreeMap::new();
    let mut seeded: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for e in events {
        let Some(b) = &e.build else { continue };
        let s = by.entry(b.clone()).or_insert_with(|| {
            order.push(b.clone());
            (e.t, e.t, 0, 0, 0, 0)
        });
        s.1 = s.1.max(e.t);
        if let Some(seed) = &e.seed {
            let x = seeded.entry(b.clone()).or_default();
            x.0 += seed.units;
            x.1 += e.bytes;
        }
        match e.outcome.as_str() {
            "hit" => s.2 += 1,
            "miss" => {
                s.3 += 1;
                s.5 += e.ms;
            }
            "passthrough" => s.4 += 1,
            _ => {}
        }
    }
    let skip = order.len().saturating_sub(keep);
    order
        .iter()
        .skip(skip)
        .map(|b| {
            let (first, last, hits, misses, pass, miss_ms) = by[b];
            let (seeded_units, seeded_bytes) = seeded.get(b).copied().unwrap_or_default();
            json!({"build": b, "first_t": first, "last_t": last, "hits": hits,
                   "misses": misses, "passthroughs": pass, "miss_ms": miss_ms,
                   "seeded_units": seeded_units, "seeded_bytes": seeded_bytes})
        })
        .collect()
}

/// `90s`, `15m`, `2h`, `7d`, `1w`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        "w" | "week" | "weeks" => 7 * 86400,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The report as a JSON value (the text form is rendered from it).
pub fn build_report(store: &crate::store::Store, since: Option<Duration>) -> Value {
    let cutoff = since.map(|d| now_secs().saturating_sub(d.as_secs()));
    let events: Vec<Event> = events::read(store.root())
        .into_iter()
        .filter(|e| cutoff.is_none_or(|c| e.t >= c))
        .collect();

    let mut langs: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut miss_reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut not_stored: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut fallbacks: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut misses: Vec<&Event> = Vec::new();
    for e in &events {
        if e.seed.is_some() {
            continue; // seedings are summed apart, below
        }
        if let Some(why) = &e.direct_fallback {
            *fallbacks
                .entry(e.lang.clone())
                .or_default()
                .entry(why.clone())
                .or_default() += 1;
        }
        let l = langs.entry(e.lang.clone()).or_default();
        *l.entry(match e.outcome.as_str() {
            "hit" => "hits",
            "miss" => "misses",
            "passthrough" => "passthroughs",
            _ => "other",
        })
        .or_default() += 1;
        match e.outcome.as_str() {
            "hit" => *l.entry("hit_bytes").or_default() += e.bytes,
            "miss" => {
                *l.entry("miss_ms").or_default() += e.ms;
                *miss_reasons
                    .entry(e.lang.clone())
                    .or_default()
                    .entry(e.reason.clone().unwrap_or_else(|| "unknown".into()))
                    .or_default() += 1;
                if let Some(why) = &e.not_stored {
                    *not_stored
                        .entry(e.lang.clone())
                        .or_default()
                        .entry(why.clone())
                        .or_default() += 1;
                }
                misses.push(e);
            }
            "passthrough" => {
                *reasons
                    .entry(e.lang.clone())
                    .or_default()
                    .entry(e.reason.clone().unwrap_or_else(|| "unknown".into()))
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    let mut seeding = SeedingSummary::default();
    for e in &events {
        let Some(seed) = &e.seed else { continue };
        seeding.seedings += 1;
        seeding.units += seed.units;
        seeding.bytes += e.bytes;
        seeding.ms += e.ms;
        for (r, n) in &seed.skipped {
            *seeding.skipped.entry(r.clone()).or_default() += n;
        }
        seeding.env_differs.extend(seed.env_differs.iter().cloned());
    }
    misses.sort_by_key(|e| std::cmp::Reverse(e.ms));
    let top: Vec<Value> = misses
        .iter()
        .take(10)
        .map(|e| {
            json!({"lang": e.lang, "unit": e.unit, "ms": e.ms, "reason": e.reason,
                        "not_stored": e.not_stored, "t": e.t})
        })
        .collect();

    // Cumulative counters (not windowed): flags that caused C/C++
    // passthroughs, and how restores placed their bytes.
    let counters = stats::read(store).unwrap_or_default();
    let section = |prefix: &str| -> BTreeMap<String, u64> {
        counters
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), *v)))
            .collect()
    };
    json!({
        "schema_version": SCHEMA_VERSION,
        "window": {
            "since_s": since.map(|d| d.as_secs()),
            "events": events.len(),
            "first_t": events.first().map(|e| e.t),
            "last_t": events.last().map(|e| e.t),
        },
        "languages": langs,
        "builds": builds(&events, 10),
        "seeding": seeding,
        "top_misses": top,
        "miss_reasons": miss_reasons,
        "not_stored": not_stored,
        "direct_fallbacks": fallbacks,
        "passthrough_reasons": reasons,
        "passthrough_flags": section("cc.passthrough_flags."),
        "restore": section("restore."),
    })
}

pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut i = 0;
    while x >= 1024.0 && i < U.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", U[i])
    }
}

/// `kache report`.
pub fn run_report(
    ctx: &Context,
    json: bool,
    since: Option<String>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let since = match since {
        Some(s) => Some(
            parse_duration(&s)
                .ok_or_else(|| format!("--since {s:?} is not a duration (e.g. 30m, 2h, 1d)"))?,
        ),
        None => None,
    };
    let store = ctx.open_store()?;
    let r = build_report(&store, since);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let w = &r["window"];
    println!(
        "kache report: {} events{}",
        w["events"],
        since.map_or(
            String::from(" (whole log; --since narrows it)"),
            |d| format!(" in the last {}s", d.as_secs())
        )
    );
    if let Some(langs) = r["languages"].as_object() {
        for (lang, v) in langs {
            println!(
                "{lang:<5} hits {:>6}  misses {:>6}  passthroughs {:>6}  compile time of misses {:.1}s  restored {}",
                v["hits"].as_u64().unwrap_or(0),
                v["misses"].as_u64().unwrap_or(0),
                v["passthroughs"].as_u64().unwrap_or(0),
                v["miss_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                human_bytes(v["hit_bytes"].as_u64().unwrap_or(0)),
            );
        }
    }
    if let Some(bs) = r["builds"].as_array().filter(|b| !b.is_empty()) {
        println!("\nrecent builds (by cargo process)");
        for b in bs {
            let seeded = match b["seeded_units"].as_u64().unwrap_or(0) {
                0 => String::new(),
                n => format!(
                    "  seeded {n} units ({})",
                    human_bytes(b["seeded_bytes"].as_u64().unwrap_or(0))
                ),
            };
            println!(
                "  {:<22} hits {:>5}  misses {:>5}  passthroughs {:>4}  {:>4}s wall  {:.1}s compiling misses{seeded}",
                b["build"].as_str().unwrap_or("?"),
                b["hits"].as_u64().unwrap_or(0),
                b["misses"].as_u64().unwrap_or(0),
                b["passthroughs"].as_u64().unwrap_or(0),
                b["last_t"].as_u64().unwrap_or(0).saturating_sub(b["first_t"].as_u64().unwrap_or(0)),
                b["miss_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            );
        }
    }
    let sd = &r["seeding"];
    if sd["seedings"].as_u64().unwrap_or(0) > 0 {
        println!(
            "\nseeding: {} new target dirs, {} units ({}) placed in {} ms",
            sd["seedings"],
            sd["units"],
            human_bytes(sd["bytes"].as_u64().unwrap_or(0)),
            sd["ms"]
        );
        for (reason, n) in sd["skipped"].as_object().into_iter().flatten() {
            println!("  skipped {n:>5}  {reason}");
        }
        if let Some(v) = sd["env_differs"].as_array().filter(|v| !v.is_empty()) {
            let names: Vec<&str> = v.iter().filter_map(|n| n.as_str()).collect();
            println!(
                "  build-script runs not seeded: environment differs in {}",
                names.join(", ")
            );
        }
    }
    if let Some(top) = r["top_misses"].as_array().filter(|t| !t.is_empty()) {
        println!("\ntop misses by time");
        for m in top {
            let not_stored = m["not_stored"]
                .as_str()
                .map_or(String::new(), |w| format!(" (not stored: {w})"));
            println!(
                "  {:>8} ms  {:<4} {:<30} {}{not_stored}",
                m["ms"].as_u64().unwrap_or(0),
                m["lang"].as_str().unwrap_or(""),
                m["unit"].as_str().unwrap_or("?"),
                m["reason"].as_str().unwrap_or("")
            );
        }
    }
    for (title, key) in [
        ("miss reasons", "miss_reasons"),
        ("misses compiled but not stored", "not_stored"),
        (
            "direct lookups that fell back (C/C++: to the preprocessor), by reason",
            "direct_fallbacks",
        ),
        ("passthrough reasons", "passthrough_reasons"),
    ] {
        if let Some(m) = r[key].as_object().filter(|m| !m.is_empty()) {
            println!("\n{title}");
            for (lang, rs) in m {
                for (reason, n) in rs.as_object().into_iter().flatten() {
                    println!("  {lang:<4} {n:>6}  {reason}");
                }
            }
        }
    }
    if let Some(m) = r["passthrough_flags"].as_object().filter(|m| !m.is_empty()) {
        println!("\nC/C++ flags that caused passthroughs (all time; classify them to cache these)");
        let mut flags: Vec<_> = m.iter().collect();
        flags.sort_by_key(|f| std::cmp::Reverse(f.1.as_u64()));
        for (flag, n) in flags {
            println!("  {n:>6}  {flag}");
        }
    }
    if let Some(m) = r["restore"].as_object().filter(|m| !m.is_empty()) {
        println!("\nrestores (all time)");
        for (k, n) in m {
            let n = n.as_u64().unwrap_or(0);
            if k.ends_with("bytes") || k.ends_with("bytes_saved") {
                println!("  {k:<20} {}", human_bytes(n));
            } else {
                println!("  {k:<20} {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A group's name as a user reads it (`direct.externs` → `externs`;
/// `result.env` → `env read by the code`).
pub fn group_label(g: &str) -> String {
    match g {
        "result.env" => "env (read by the code: env!/option_env!)".into(),
        "result.sources" => "sources".into(),
        "direct.env" => "env (CARGO_*/RUSTFLAGS and other keyed variables)".into(),
        other => other.rsplit('.').next().unwrap_or(other).to_string(),
    }
}

/// The explanation of a crate's latest miss.
pub fn explain_miss(events: &[Event], unit: &str) -> Value {
    let recs: Vec<(usize, &Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.lang == "rust"
                && e.unit.as_deref() == Some(unit)
                && matches!(e.outcome.as_str(), "hit" | "miss")
                && e.groups.is_some()
        })
        .collect();
    let Some(&(miss_i, miss)) = recs.iter().rev().find(|(_, e)| e.outcome == "miss") else {
        let mut known: Vec<&str> = events
            .iter()
            .filter(|e| e.lang == "rust" && e.outcome == "miss")
            .filter_map(|e| e.unit.as_deref())
            .collect();
        known.sort();
        known.dedup();
        return json!({
            "schema_version": SCHEMA_VERSION, "crate": unit, "found": false,
            "explanation": format!(
                "no miss of `{unit}` in the event log (crates that missed: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ),
        });
    };
    let groups = miss.groups.clone().unwrap_or_default();
    let earlier: Vec<&Event> = recs
        .iter()
        .filter(|(i, _)| *i < miss_i)
        .map(|(_, e)| *e)
        .collect();
    if earlier.is_empty() {
        return json!({
            "schema_version": SCHEMA_VERSION, "crate": unit, "found": true,
            "miss": miss, "previous": null, "changed": [],
            "explanation": format!("`{unit}` had never been compiled with this store before: a first build"),
        });
    }
    // Compare with the earlier record of the same unit that is closest in
    // its direct key (a crate name can stand for several units: lib, bin,
    // test, check vs build); the latest among equals.
    let diff =
        |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, prefix: &str| -> Vec<String> {
            let mut names: Vec<&String> = a
                .keys()
                .chain(b.keys())
                .filter(|k| k.starts_with(prefix))
                .collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .cloned()
                .collect()
        };
    let prev = earlier
        .iter()
        .rev()
        .min_by_key(|e| {
            diff(
                &groups,
                e.groups.as_ref().unwrap_or(&BTreeMap::new()),
                "direct.",
            )
            .len()
        })
        .copied()
        .unwrap_or(earlier[earlier.len() - 1]);
    let prev_groups = prev.groups.clone().unwrap_or_default();
    let mut changed = diff(&groups, &prev_groups, "direct.");
    let mut compared_result_with = None;
    if changed.is_empty() {
        // Same direct key: what the compile read changed. Result groups are
        // only recorded by compiles, so compare with the latest earlier miss
        // of the same direct key.
        let same_direct = earlier.iter().rev().find(|e| {
            e.outcome == "miss"
                && e.groups.as_ref().is_some_and(|g| {
                    diff(&groups, g, "direct.").is_empty()
                        && g.keys().any(|k| k.starts_with("result."))
                })
        });
        if let Some(p) = same_direct {
            changed = diff(
                &groups,
                p.groups.as_ref().unwrap_or(&BTreeMap::new()),
                "result.",
            );
            compared_result_with = Some((*p).clone());
        }
    }
    let labels: Vec<String> = changed.iter().map(|g| group_label(g)).collect();
    let explanation = if !labels.is_empty() {
        format!("`{unit}` missed because its {} changed", labels.join(", "))
    } else if miss.reason.as_deref() == Some("inputs-changed") {
        format!("`{unit}` missed because a file or variable its last compile read changed (no earlier compile to compare with)")
    } else {
        format!(
            "`{unit}` missed ({}); no key group differs from the earlier record: the entry was evicted, corrupt or never stored",
            miss.reason.as_deref().unwrap_or("no reason recorded")
        )
    };
    json!({
        "schema_version": SCHEMA_VERSION,
        "crate": unit,
        "found": true,
        "miss": miss,
        "previous": prev,
        "previous_compile": compared_result_with,
        "changed": changed,
        "explanation": explanation,
    })
}

/// `kache why-miss CRATE`.
pub fn run_why_miss(
    ctx: &Context,
    unit: &str,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let store = ctx.open_store()?;
    let events = events::read(store.root());
    // Cargo names crates with dashes; rustc (and so the log) with underscores.
    let unit = unit.replace('-', "_");
    let v = explain_miss(&events, &unit);
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", v["explanation"].as_str().unwrap_or(""));
        if let Some(ch) = v["changed"].as_array().filter(|c| !c.is_empty()) {
            for g in ch {
                let g = g.as_str().unwrap_or("");
                println!(
                    "  changed: {:<40} {} -> {}",
                    g,
                    short(&v["previous_compile"]["groups"][g])
                        .or_else(|| short(&v["previous"]["groups"][g]))
                        .unwrap_or("-".into()),
                    short(&v["miss"]["groups"][g]).unwrap_or("-".into())
                );
            }
        }
        if let Some(r) = v["miss"]["reason"].as_str() {
            println!("  miss reason: {r}");
        }
    }
    Ok(if v["found"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn short(v: &Value) -> Option<String> {
    v.as_str().map(|s| s.chars().take(12).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(outcome: &str, groups: &[(&str, &str)]) -> Event {
        Event {
            lang: "rust".into(),
            outcome: outcome.into(),
            unit: Some("core".into()),
            reason: Some("no-manifest".into()),
            groups: Some(
                groups
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn why_miss_names_the_direct_group_that_changed() {
        let events = vec![
            ev(
                "miss",
                &[
                    ("direct.args", "a"),
                    ("direct.externs", "e1"),
                    ("result.sources", "s"),
                ],
            ),
            ev("hit", &[("direct.args", "a"), ("direct.externs", "e1")]),
            ev(
                "miss",
                &[
                    ("direct.args", "a"),
                    ("direct.externs", "e2"),
                    ("result.sources", "s"),
                ],
            ),
        ];
        let v = explain_miss(&events, "core");
        assert_eq!(v["changed"], json!(["direct.externs"]));
    }

    #[test]
    fn why_miss_compares_sources_with_the_last_compile() {
        let events = vec![
            ev("miss", &[("direct.args", "a"), ("result.sources", "s1")]),
            ev("hit", &[("direct.args", "a")]),
            ev("miss", &[("direct.args", "a"), ("result.sources", "s2")]),
        ];
        let v = explain_miss(&events, "core");
        assert_eq!(v["changed"], json!(["result.sources"]));
        assert!(v["explanation"].as_str().unwrap().contains("sources"));
    }
}

#[cfg(test)]
mod build_tests {
    use super::*;

    #[test]
    fn events_group_by_build_in_order() {
        let ev = |b: &str, outcome: &str, t: u64| Event {
            t,
            outcome: outcome.into(),
            ms: 10,
            build: Some(b.into()),
            ..Default::default()
        };
        let events = vec![
            ev("1-5", "miss", 100),
            ev("1-5", "miss", 104),
            ev("2-9", "hit", 200),
            ev("2-9", "hit", 201),
        ];
        let b = builds(&events, 10);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["misses"], 2);
        assert_eq!(b[0]["last_t"], 104);
        assert_eq!(b[1]["hits"], 2);
        assert_eq!(builds(&events, 1).len(), 1);
    }
}
