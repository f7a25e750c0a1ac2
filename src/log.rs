//! kache's own messages on stderr, in one place: every line starts with
//! `kache:`, warnings say so, and diagnostics appear only when asked for
//! (`KACHE_LOG` set). In wrapper mode nothing here is ever on stdout, which
//! belongs to the compiler.

/// A diagnostic for someone investigating (`KACHE_LOG=…`); silent otherwise,
/// so a build's output is the compiler's alone.
pub fn debug(msg: &str) {
    if std::env::var_os("KACHE_LOG").is_some() {
        eprintln!("kache: {msg}");
    }
}

/// Something the user should know even when nothing failed.
pub fn warn(msg: &str) {
    eprintln!("kache: warning: {msg}");
}

/// A failure kache cannot hide (the compiler could not be run at all).
pub fn error(msg: &str) {
    eprintln!("kache: {msg}");
}
