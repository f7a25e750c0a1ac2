//! The inputs of one compile as a manifest record holds them, whoever
//! found them (the input recorder, dep-info, strict inference): shared by
//! the pipeline that stores and matches them and by the ways of finding
//! them, so none of those has to import the pipeline.

use crate::store::manifest::FoundBy;
use crate::store::Record;

/// What a compile read: the inputs a manifest record holds. Paths and
/// values are in token form (see [`Language::tokenize`]); relative paths
/// are relative to the call's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// (path, blake3, size) of every file read.
    pub files: Vec<(String, String, u64)>,
    /// (name, value or `None` when unset) of every variable read.
    pub env: Vec<(String, Option<String>)>,
    /// Paths looked up and not found (a file there would have been used).
    pub absent: Vec<String>,
    /// The roots (name, absolute path) the outputs still hold, when they do.
    pub local: Vec<(String, String)>,
    /// Paths looked up and found without being read.
    pub present: Vec<String>,
    /// (directory, digest of its listing) of every listing read.
    pub listed: Vec<(String, String)>,
    /// (path, what it resolved to) of every path that resolved elsewhere.
    pub links: Vec<(String, String)>,
    /// How these inputs were found.
    pub found_by: FoundBy,
}

impl Observed {
    /// The manifest record of these inputs, leading to `result`.
    pub(crate) fn record(self, result: &str) -> Record {
        Record {
            files: self.files,
            env: self.env,
            absent: self.absent,
            local: self.local,
            present: self.present,
            listed: self.listed,
            links: self.links,
            found_by: self.found_by,
            result: result.to_string(),
        }
    }
}
