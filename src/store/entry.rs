//! The on-disk form of a cache entry: what one compile produced.
//!
//! Layout (binary-safe, self-checking):
//! ```text
//! KACHE-ENTRY 1\n
//! <header length in decimal>\n
//! <header JSON: outputs, exit status, stream lengths, meta>
//! <stdout bytes><stderr bytes>
//! <blake3 of everything above, 32 raw bytes>
//! ```
//! The trailing hash makes a truncated or bit-flipped entry detectable; an
//! entry that fails it is treated as absent (a miss with a reason).

use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"KACHE-ENTRY 1\n";

/// One file a compile produced. `name` is a logical name the wrapper
/// understands (relative, `/`-separated, placeholders allowed); the store
/// never interprets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub name: String,
    pub blob: String,
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Entry {
    pub outputs: Vec<OutputFile>,
    pub exit_status: i32,
    #[serde(skip)]
    pub stdout: Vec<u8>,
    #[serde(skip)]
    pub stderr: Vec<u8>,
    /// Free-form facts for reports and `why-miss` (crate name, key groups…).
    #[serde(default)]
    pub meta: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    entry: Entry,
    stdout_len: usize,
    stderr_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    BadMagic,
    Truncated,
    Checksum,
    Header(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadMagic => write!(f, "not a kache entry"),
            DecodeError::Truncated => write!(f, "entry is truncated"),
            DecodeError::Checksum => write!(f, "entry checksum mismatch"),
            DecodeError::Header(e) => write!(f, "entry header unreadable: {e}"),
        }
    }
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            entry: self.clone(),
            stdout_len: self.stdout.len(),
            stderr_len: self.stderr.len(),
        };
        let json = serde_json::to_vec(&header).expect("entry header serializes");
        let mut out = Vec::with_capacity(json.len() + self.stdout.len() + self.stderr.len() + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(json.len().to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.stdout);
        out.extend_from_slice(&self.stderr);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        if !bytes.starts_with(MAGIC) {
            return Err(DecodeError::BadMagic);
        }
        if bytes.len() < MAGIC.len() + 32 {
            return Err(DecodeError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(DecodeError::Checksum);
        }
        let rest = &body[MAGIC.len()..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(DecodeError::Truncated)?;
        let len: usize = std::str::from_utf8(&rest[..nl])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(DecodeError::Truncated)?;
        let rest = &rest[nl + 1..];
        if rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let header: Header =
            serde_json::from_slice(&rest[..len]).map_err(|e| DecodeError::Header(e.to_string()))?;
        let streams = &rest[len..];
        if streams.len() != header.stdout_len + header.stderr_len {
            return Err(DecodeError::Truncated);
        }
        let mut entry = header.entry;
        entry.stdout = streams[..header.stdout_len].to_vec();
        entry.stderr = streams[header.stdout_len..].to_vec();
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            outputs: vec![OutputFile {
                name: "deps/libx.rlib".into(),
                blob: "ab".repeat(32),
                size: 3,
                mode: 0o644,
            }],
            exit_status: 0,
            stdout: b"out\n".to_vec(),
            stderr: vec![0xff, 0, b'w'],
            meta: serde_json::json!({"crate": "x"}),
        }
    }

    #[test]
    fn entry_round_trips_binary_streams() {
        let e = sample();
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn any_single_byte_flip_or_truncation_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Entry::decode(&b).is_err(), "flip at {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(
                Entry::decode(&bytes[..n]).is_err(),
                "truncation to {n} accepted"
            );
        }
    }
}
