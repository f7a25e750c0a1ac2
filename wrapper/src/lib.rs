//! kache-wrapper: understands compiler calls and derives what a cache needs
//! from them: whether a call is cacheable (or why not), what it reads, what it
//! writes, and the fields of its key. It never touches the store and, apart
//! from what callers hand it, never reads files: most of it is pure functions
//! over argument lists and file contents.

pub mod cc;
pub mod key;
pub mod paths;
pub mod rustc;
