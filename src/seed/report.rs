//! One seeding's report: what it placed and skipped, as counters, as an
//! event-log record and as the answer to its caller. Apart from the outcome
//! types it reports, so the seed records and state can use those without a
//! loop through the report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::outcome::{ms_since, Method, Skip};
use super::record::UnitRef;
use super::state::PendingUnit;
use crate::events::{Event, SeedEvent};
use crate::stats::{Breakdown, Counter, Lang, Tally};

/// What one seeding did: counted, logged, and told to its caller.
#[derive(Debug, Default)]
pub struct Report {
    pub units: u64,
    pub files: u64,
    pub bytes: u64,
    pub skipped: BTreeMap<Skip, u64>,
    pub profiles: Vec<String>,
    pub method: Method,
    /// Variables whose values differed from a donor build's (build-script runs skipped).
    pub env_differs: BTreeSet<String>,
    pub pending: BTreeMap<String, Vec<PendingUnit>>,
    /// Milliseconds per phase (`harvest`, `set`, `check`, `place`), for the event log.
    pub phases: BTreeMap<&'static str, u64>,
    /// Profile → units placed, with the stamp of their fingerprint files as placed
    /// (recorded as harvested, so a later harvest of this target skips them).
    pub placed: BTreeMap<String, Vec<(String, UnitRef)>>,
}

impl Report {
    pub fn skip(&mut self, why: Skip, n: u64) {
        if n > 0 {
            *self.skipped.entry(why).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: Report) {
        self.units += other.units;
        self.files += other.files;
        self.bytes += other.bytes;
        for (r, n) in other.skipped {
            self.skip(r, n);
        }
        self.profiles.extend(other.profiles);
        self.method = other.method;
        self.env_differs.extend(other.env_differs);
        self.pending.extend(other.pending);
        self.placed.extend(other.placed);
        for (k, v) in other.phases {
            *self.phases.entry(k).or_default() += v;
        }
    }

    pub fn phase(&mut self, name: &'static str, since: Instant) {
        *self.phases.entry(name).or_default() += ms_since(since);
    }

    /// Whether there is anything to count or log.
    pub fn is_empty(&self) -> bool {
        self.units == 0 && self.skipped.is_empty()
    }

    /// The counters this seeding adds.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        t.add_store(Counter::SeedUnits, self.units);
        t.add_store(Counter::SeedFiles, self.files);
        t.add_store(Counter::SeedBytes, self.bytes);
        for (why, n) in &self.skipped {
            t.add_label_n(None, Breakdown::SeedSkipped, why.label(), *n);
        }
        t
    }

    /// The event-log record of this seeding (the caller sets its time and build).
    pub fn event(&self, ms: u64) -> Event {
        Event {
            lang: Lang::Rust.as_str().into(),
            outcome: "seed".into(),
            ms,
            bytes: self.bytes,
            seed: Some(SeedEvent {
                units: self.units,
                files: self.files,
                method: self.method.label().into(),
                profiles: self.profiles.clone(),
                skipped: self
                    .skipped
                    .iter()
                    .map(|(why, n)| (why.label().to_string(), *n))
                    .collect(),
                env_differs: self.env_differs.iter().cloned().collect(),
                phases_ms: self
                    .phases
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            }),
            ..Event::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters and the event of one seeding name the same reasons and amounts.
    #[test]
    fn counters_and_event_of_a_seeding_agree() {
        let mut r = Report {
            units: 3,
            files: 10,
            bytes: 4096,
            method: Method::Mount,
            ..Report::default()
        };
        r.skip(Skip::EnvDiffers, 2);
        r.skip(Skip::DependencyNotSeeded, 0);
        let t = r.tally();
        let got: BTreeMap<&str, u64> = t.updates().iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            got,
            BTreeMap::from([
                ("seed.units", 3),
                ("seed.files", 10),
                ("seed.bytes", 4096),
                ("seed.skipped.env-differs", 2),
            ])
        );
        let e = r.event(12);
        let s = e.seed.as_ref().unwrap();
        assert_eq!((e.outcome.as_str(), e.bytes, e.ms), ("seed", 4096, 12));
        assert_eq!((s.units, s.method.as_str()), (3, "mount"));
        assert_eq!(s.skipped, BTreeMap::from([("env-differs".to_string(), 2)]));
    }
}
