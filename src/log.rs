//! kache's own messages, in one place.
//!
//! Two kinds, kept apart:
//! - **User-facing** warnings and errors ([`warn`], [`error`]): always on
//!   stderr, one line each starting with `kache:`, whatever the log
//!   settings. They also go to the log file when one is set, so a bug report
//!   has them in order with the diagnostics around them.
//! - **Diagnostics**: `tracing` events (`tracing::debug!` and friends)
//!   anywhere in kache, shown only when asked for:
//!   - `KACHE_LOG` (config `log.level`): an `EnvFilter` directive list, e.g.
//!     `debug` or `kache::wrap=trace,kache::remote=debug`. Any value that is
//!     not such a list (`1`, `yes`) means `debug`, as it always has.
//!   - `KACHE_LOG_FILE` (config `log.file`): append the diagnostics to that
//!     file instead of stderr (at `debug` unless `KACHE_LOG` says
//!     otherwise). A file that cannot be opened is one warning and no log,
//!     never a failed build.
//!
//! Targets are module paths: `kache::wrap` (every call's outcome and its
//! key groups), `kache::wrap::pipeline` (lookups, placement and restore
//! decisions), `kache::remote` (remote lookups and uploads). Seeding, when
//! it lands, logs its decisions under `kache::seed`.
//!
//! With neither setting nothing is installed: every event is then one
//! relaxed atomic load that finds tracing's global level off, so a hit pays
//! nothing for the diagnostics it does not print. Must never: write to
//! stdout (in wrapper mode it belongs to the compiler), or fail a build.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, Origin, Value};

/// True once diagnostics go to a file: user-facing lines then go there too.
static TO_FILE: AtomicBool = AtomicBool::new(false);

/// Installs the diagnostics subscriber, if `level` (`KACHE_LOG`) or `file`
/// (`KACHE_LOG_FILE`) asks for one; `None` means unset. Call once, early;
/// a second call changes nothing.
pub fn init(level: Option<&str>, file: Option<&Path>) {
    if level.is_none() && file.is_none() {
        return;
    }
    let filter = filter_of(level.unwrap_or("debug"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .event_format(Line);
    let installed = match file {
        None => builder.with_writer(std::io::stderr).try_init(),
        Some(path) => {
            let opened = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path);
            match opened {
                Ok(f) => {
                    TO_FILE.store(true, Ordering::Relaxed);
                    builder.with_writer(f).try_init()
                }
                Err(e) => {
                    warn(&format!(
                        "cannot open log file {}: {e}; not logging",
                        path.display()
                    ));
                    return;
                }
            }
        }
    };
    // Only fails when a subscriber is already set (a second call).
    let _ = installed;
}

/// Initializes from the configuration (`log.level`, `log.file`; their
/// variables override files as for every key). An empty `KACHE_LOG` is
/// still a request for diagnostics; an empty value from a file is not.
pub fn init_from_config(config: &Config) {
    let set = |name: &str| match config.values.get(name) {
        Some((Value::Str(s), Origin::Env(_))) if name == "log.level" => Some(s.as_str()),
        Some((Value::Str(s), Origin::Env(_) | Origin::File(_))) if !s.is_empty() => {
            Some(s.as_str())
        }
        _ => None,
    };
    init(set("log.level"), set("log.file").map(Path::new));
}

/// Initializes from the process environment alone (before, or without, a
/// configuration): `KACHE_LOG` and `KACHE_LOG_FILE`.
pub fn init_from_env() {
    let level = std::env::var("KACHE_LOG").ok();
    let file = std::env::var_os("KACHE_LOG_FILE").filter(|f| !f.is_empty());
    init(level.as_deref(), file.as_deref().map(Path::new));
}

/// The filter `KACHE_LOG=value` means. `KACHE_LOG` was a switch before it
/// took filters (any value, even empty, showed the diagnostics), so a value
/// that is not plainly a filter keeps meaning "debug": a bare word must be
/// a level name or one of kache's targets, and the whole must parse.
fn filter_of(value: &str) -> EnvFilter {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let debug = || EnvFilter::new("debug");
    let value = value.trim();
    let plainly_a_filter = !value.is_empty()
        && value.split(',').map(str::trim).all(|d| {
            d.contains('=')
                || d.contains('[')
                || LEVELS.contains(&d.to_ascii_lowercase().as_str())
                || d.starts_with("kache")
        });
    if !plainly_a_filter {
        return debug();
    }
    EnvFilter::builder()
        .parse(value)
        .unwrap_or_else(|_| debug())
}

/// One line per event: `TIME kache[PID] LEVEL target: message fields`. The
/// process id tells apart the many wrapper processes of one build writing
/// to one file.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut w)?;
        let meta = event.metadata();
        write!(
            w,
            " kache[{}] {} {}: ",
            std::process::id(),
            meta.level(),
            meta.target()
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Something the user should know even when nothing failed.
pub fn warn(msg: &str) {
    eprintln!("kache: warning: {msg}");
    if TO_FILE.load(Ordering::Relaxed) {
        tracing::warn!("{msg}");
    }
}

/// A failure kache cannot hide (the compiler could not be run at all).
pub fn error(msg: &str) {
    eprintln!("kache: {msg}");
    if TO_FILE.load(Ordering::Relaxed) {
        tracing::error!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::filter_of;

    #[test]
    fn values_that_are_not_plainly_a_filter_mean_debug() {
        for old in [
            "1",
            "0",
            "yes",
            "true",
            "",
            "  ",
            "on",
            "kache::wrap=nonsense",
        ] {
            assert_eq!(filter_of(old).to_string(), "debug", "KACHE_LOG={old:?}");
        }
    }

    #[test]
    fn levels_and_target_directives_are_filters() {
        assert_eq!(filter_of("info").to_string(), "info");
        assert_eq!(filter_of("TRACE").to_string(), "trace");
        assert_eq!(
            filter_of("kache::wrap=trace").to_string(),
            "kache::wrap=trace"
        );
        let two = filter_of("warn,kache::remote=debug").to_string();
        assert!(
            two.contains("kache::remote=debug") && two.contains("warn"),
            "{two}"
        );
        assert_eq!(filter_of("kache::store").to_string(), "kache::store=trace");
    }
}
