//! Understanding C/C++ compiler calls: which ones kache may cache, and under which key.
//!
//! kache caches one shape only: a single-source `-c` compile of C or C++ to an object, whose
//! every flag has a row in the table of [`flags`] (an allow-list: anything unknown is a
//! passthrough). Pure functions: nothing here runs a compiler, reads the environment or
//! touches the store. The caller (the wrapper glue) does, in this order:
//!
//! 1. [`compiler_kind`] on the first argument; [`args::refuse_env`]; [`parse`] the rest.
//! 2. [`paths::plan`] with the worktree root, the cwd and the compiler's
//!    [`compiler::parse_version_banner`] (memoized per compiler binary, never per file).
//! 3. Set `SOURCE_DATE_EPOCH` from [`key::source_date_epoch`] for both runs below.
//! 4. Run the preprocessor: `compiler preprocess_args + plan.extra_args`, stdout captured.
//!    A failure is a passthrough. Refuse `cc:pch` if any of
//!    [`CcInvocation::pch_probe_paths`] exists (headers from [`key::included_files`]).
//! 5. [`key::time_macro_policy`] with [`key::preprocessor_reported_time_macros`] (its stderr).
//! 6. [`key::cache_key`]. On a miss, run `compiler compile_args + plan.extra_args`; store the
//!    object and, if any, the dep file through [`depfile::to_placeholders`]; on a hit expand it
//!    with [`depfile::from_placeholders`].

pub mod args;
pub mod compiler;
pub mod depfile;
pub mod flags;
pub mod key;
pub mod paths;

pub use args::{parse, CcInvocation, DepFile, DepKind, DepTarget, ModeledFlag, Refusal};
pub use compiler::{compiler_kind, CompilerKind, CompilerVersion, Family, Language};
pub use key::{cache_key, preprocessed_for_key, uses_time_macros, KeyInput};
pub use paths::{plan as path_plan, PathPlan};
