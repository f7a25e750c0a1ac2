//! Runs a command under the input recorder and prints what it read.
//!
//! `cargo run -p kache-recorder --example record -- [--raw] [--drop DIR]... -- COMMAND [ARGS…]`
//! A debugging and measuring aid: it prints the observed inputs (or why the recording is
//! incomplete), the number of records and processes, and the time parsing took.

use kache_recorder::{Filter, Recorder};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mut filter = Filter::pseudo_filesystems();
    let mut raw = false;
    for a in args.by_ref() {
        match a.to_str() {
            Some("--") => break,
            Some("--raw") => raw = true,
            Some("--drop") => {}
            _ => filter = filter.drop_under(a),
        }
    }
    let Some(program) = args.next() else {
        eprintln!("usage: record [--raw] [--drop DIR]... -- COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let dir = std::env::temp_dir().join("kache-recorder-example");
    let recorder = match Recorder::new(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let session = match recorder.session() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot create a log: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    session.apply(&mut cmd);
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot run the command: {e}");
            return ExitCode::from(2);
        }
    };
    if raw {
        let bytes = std::fs::read(session.log_path()).unwrap_or_default();
        for line in bytes.split(|&b| b == b'\n') {
            let shown: Vec<u8> = line
                .iter()
                .map(|&b| if b == 0 { b'|' } else { b })
                .collect();
            println!("{}", String::from_utf8_lossy(&shown));
        }
    }
    let log_size = std::fs::metadata(session.log_path())
        .map(|m| m.len())
        .unwrap_or(0);
    let start = Instant::now();
    let result = session.finish(&filter);
    let took = start.elapsed();
    let inputs = match &result {
        Ok(i) => i,
        Err(inc) => {
            println!("INCOMPLETE:");
            for r in &inc.reasons {
                println!("  {r}");
            }
            &inc.observed
        }
    };
    for p in &inputs.files_read {
        println!("read     {}", p.display());
    }
    for p in &inputs.paths_present {
        println!("present  {}", p.display());
    }
    for p in &inputs.paths_absent {
        println!("absent   {}", p.display());
    }
    for p in &inputs.dirs_listed {
        println!("listed   {}", p.display());
    }
    for (p, t) in &inputs.links {
        println!("link     {} -> {}", p.display(), t.display());
    }
    for (k, v) in &inputs.env {
        println!("env      {}={:?}", k.to_string_lossy(), v);
    }
    for p in &inputs.programs {
        println!("program  {}", p.display());
    }
    println!(
        "summary: {} records, {} processes, {} bytes of log, parsed in {:?}; {} read, {} present, {} absent, {} listed, {} env",
        inputs.records,
        inputs.processes,
        log_size,
        took,
        inputs.files_read.len(),
        inputs.paths_present.len(),
        inputs.paths_absent.len(),
        inputs.dirs_listed.len(),
        inputs.env.len()
    );
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
