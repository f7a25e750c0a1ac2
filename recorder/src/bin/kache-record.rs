//! `kache-record`: runs a command under the input recorder and prints what it read.
//!
//! ```text
//! kache-record [--raw] [--drop DIR]... -- COMMAND [ARGS...]
//! ```
//!
//! A debugging and measuring aid for the recorder. It prints one line per observed input
//! (`read`, `present`, `absent`, `listed`, `link`, `env`, `program`), one `lost` line per
//! reason the recording is incomplete, and a summary with the number of records and processes
//! and how long parsing took. `--raw` also prints the log itself.
//!
//! With `KACHE_RECORD_OUT=DIR` set it acts as a `RUSTC_WRAPPER` instead: every argument is the
//! command, and the report of each compile goes to `DIR/<pid>.txt`. With `KACHE_RECORD_OFF=1`
//! as well, it only runs the command (to measure the recorder against the same wrapper).
//! `KACHE_RECORD_KEEP=DIR` keeps a copy of each raw log as `DIR/<pid>.log`.

use kache_recorder::{Filter, ObservedInputs, Recorder};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let wrapper_out = std::env::var_os("KACHE_RECORD_OUT").map(PathBuf::from);
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut filter = Filter::pseudo_filesystems();
    let mut raw = false;
    if wrapper_out.is_none() {
        let Some(sep) = args.iter().position(|a| a == "--") else {
            eprintln!("usage: kache-record [--raw] [--drop DIR]... -- COMMAND [ARGS...]");
            return ExitCode::from(2);
        };
        let mut opts = args[..sep].iter();
        while let Some(o) = opts.next() {
            match o.to_str() {
                Some("--raw") => raw = true,
                Some("--drop") => match opts.next() {
                    Some(d) => filter = filter.drop_under(d),
                    None => {
                        eprintln!("--drop needs a directory");
                        return ExitCode::from(2);
                    }
                },
                _ => {
                    eprintln!("unknown option {}", o.to_string_lossy());
                    return ExitCode::from(2);
                }
            }
        }
        args.drain(..=sep);
    }
    if args.is_empty() {
        eprintln!("no command given");
        return ExitCode::from(2);
    }
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    if wrapper_out.is_some() && std::env::var_os("KACHE_RECORD_OFF").is_some() {
        return exit_of(cmd.status());
    }

    let dir = std::env::var_os("KACHE_RECORD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kache-record"));
    let recorder = match Recorder::new(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kache-record: {e}");
            return ExitCode::from(2);
        }
    };
    let session = match recorder.session() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kache-record: cannot create a log: {e}");
            return ExitCode::from(2);
        }
    };
    session.apply(&mut cmd);
    let status = cmd.status();

    let mut report = String::new();
    if raw {
        let bytes = std::fs::read(session.log_path()).unwrap_or_default();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let shown: Vec<u8> = line
                .iter()
                .map(|&b| if b == 0 { b'|' } else { b })
                .collect();
            let _ = writeln!(report, "raw\t{}", String::from_utf8_lossy(&shown));
        }
    }
    if let Some(keep) = std::env::var_os("KACHE_RECORD_KEEP") {
        let _ = std::fs::copy(
            session.log_path(),
            PathBuf::from(keep).join(format!("{}.log", std::process::id())),
        );
    }
    let log_bytes = std::fs::metadata(session.log_path())
        .map(|m| m.len())
        .unwrap_or(0);
    let start = Instant::now();
    let result = session.finish(&filter);
    let took = start.elapsed();
    let inputs = match &result {
        Ok(i) => i,
        Err(inc) => {
            for r in &inc.reasons {
                let _ = writeln!(report, "lost\t{r}");
            }
            &*inc.observed
        }
    };
    describe(&mut report, inputs);
    let _ = writeln!(
        report,
        "summary\t{} records\t{} processes\t{} log bytes\t{} us parse",
        inputs.records,
        inputs.processes,
        log_bytes,
        took.as_micros()
    );
    match wrapper_out {
        Some(out) => {
            let file = out.join(format!("{}.txt", std::process::id()));
            if let Err(e) = std::fs::write(&file, report) {
                eprintln!("kache-record: cannot write {}: {e}", file.display());
            }
        }
        None => print!("{report}"),
    }
    exit_of(status)
}

fn describe(out: &mut String, i: &ObservedInputs) {
    let lines = [
        ("read", &i.files_read),
        ("present", &i.paths_present),
        ("absent", &i.paths_absent),
        ("listed", &i.dirs_listed),
        ("program", &i.programs),
    ];
    for (tag, set) in lines {
        for p in set {
            let _ = writeln!(out, "{tag}\t{}", p.display());
        }
    }
    for (p, t) in &i.links {
        let _ = writeln!(out, "link\t{}\t{}", p.display(), t.display());
    }
    for (k, v) in &i.env {
        match v {
            Some(v) => {
                let _ = writeln!(out, "env\t{}\t{}", k.to_string_lossy(), v.to_string_lossy());
            }
            None => {
                let _ = writeln!(out, "env\t{}", k.to_string_lossy());
            }
        }
    }
}

fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> ExitCode {
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("kache-record: cannot run the command: {e}");
            ExitCode::from(2)
        }
    }
}
