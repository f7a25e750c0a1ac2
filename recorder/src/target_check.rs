//! Which build targets can have the recorder. Shared by build.rs (which decides whether to
//! compile the preload library) and this crate's unit tests; it reads cargo's
//! `CARGO_CFG_TARGET_OS`/`CARGO_CFG_TARGET_ENV` values, never `cfg!`, which in a build
//! script describes the host.

/// Why a target cannot have the recorder, or `None` when it can.
pub fn unsupported(os: &str, env: &str) -> Option<String> {
    if os == "linux" && env == "gnu" {
        None
    } else {
        let env = if env.is_empty() { "none" } else { env };
        Some(format!(
            "the input recorder needs Linux with glibc (LD_PRELOAD); this build targets os {os}, C library {env}"
        ))
    }
}
