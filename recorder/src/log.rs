//! The log format written by csrc/recorder.c, and its reader.
//!
//! A log is a sequence of records, each written with one `writev(2)` on a file opened with
//! `O_APPEND`, so records of concurrent threads and processes never interleave inside a record.
//! A record is
//!
//! ```text
//! <L>:<kind><pid>{\0<field>}*\n
//! ```
//!
//! where `L` (decimal) counts every byte after the colon, `kind` is one letter and `pid` the
//! writing process. Fields are C strings, so they never hold a NUL byte. Paths come as two
//! fields, a base and the path as the process passed it: the base is empty when the path is
//! absolute, the directory a relative path was resolved against (cwd or `*at` descriptor) at
//! that moment, or `?` when it could not be read.
//!
//! | kind | fields | meaning |
//! |------|--------|---------|
//! | `S` | exe, cwd, ppid | a process loaded the recorder |
//! | `I` | one `NAME=value` per variable | the root process's whole environment |
//! | `R` | base, path, type | opened for reading (found); loaded libraries too |
//! | `W` | base, path | opened for writing, created or truncated |
//! | `F` | base, path, type | looked up and found (stat, access, O_PATH) |
//! | `A` | base, path | looked up and absent (ENOENT, ENOTDIR) |
//! | `E` | base, path, errno | looked up, failed otherwise (EACCES, ELOOP…) |
//! | `L` | base, path | a directory listing was read |
//! | `K` | base, path, target | readlink |
//! | `Q` | base, path, resolved | realpath |
//! | `V` | name, `=` or `-`, value | getenv (`-`: unset) |
//! | `X` | base, path, class, preload | exec about to happen (see below) |
//! | `x` | base, path, errno | exec or spawn failed |
//! | `P` | child pid, base, path, class, preload | posix_spawn started a child |
//! | `H` | shell, class, preload | system()/popen() starts a shell |
//! | `D` | name | dlopen of a bare name (searched by the loader) |
//! | `N` | base, from, base, to | rename |
//! | `U` | base, path | unlink |
//! | `M` | base, path | mkdir, mkdtemp |
//! | `C` | base, path | link or symlink created |
//! | `Z` | | a hook was reached inside the recorder (a signal handler): a call went unrecorded |
//!
//! Exec classes: `d` dynamic (will load the recorder), `s` static, `u` set-ID or file
//! capabilities, `f` foreign (other ELF class, machine or loader), `g` Go, `n` not found, `?`
//! unknown. Preload states: `k` kept, `p` put back by the recorder, `z` stripped by the program,
//! `o` another recorder's log, `r` removed by the recorder (the child could not load it).

/// One record: its kind letter, writer and fields.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub kind: u8,
    pub pid: u32,
    pub fields: Vec<&'a [u8]>,
}

impl<'a> Record<'a> {
    pub fn field(&self, i: usize) -> &'a [u8] {
        self.fields.get(i).copied().unwrap_or(b"")
    }
}

/// Every well-formed record, and the offset of the first malformed one (a torn or truncated
/// write) if any; reading stops there.
pub(crate) fn records(log: &[u8]) -> (Vec<Record<'_>>, Option<usize>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < log.len() {
        match one(log, pos) {
            Some((rec, next)) => {
                out.push(rec);
                pos = next;
            }
            None => return (out, Some(pos)),
        }
    }
    (out, None)
}

fn one(log: &[u8], start: usize) -> Option<(Record<'_>, usize)> {
    let colon = start + log[start..].iter().position(|&b| b == b':')?;
    let digits = &log[start..colon];
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let body_start = colon + 1;
    let end = body_start.checked_add(len)?;
    if len < 2 || end > log.len() || log[end - 1] != b'\n' {
        return None;
    }
    let mut parts = log[body_start..end - 1].split(|&b| b == 0);
    let head = parts.next()?;
    let (&kind, pid) = head.split_first()?;
    if !kind.is_ascii_alphabetic() || pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pid = std::str::from_utf8(pid).ok()?.parse().ok()?;
    Some((
        Record {
            kind,
            pid,
            fields: parts.collect(),
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: char, pid: u32, fields: &[&str]) -> Vec<u8> {
        let mut body = format!("{kind}{pid}").into_bytes();
        for f in fields {
            body.push(0);
            body.extend_from_slice(f.as_bytes());
        }
        body.push(b'\n');
        let mut out = format!("{}:", body.len()).into_bytes();
        out.extend(body);
        out
    }

    #[test]
    fn reads_fields_including_empty_ones_and_newlines_inside_paths() {
        let mut log = rec('R', 7, &["", "/a\nb", "f"]);
        log.extend(rec('V', 8, &["X", "-"]));
        let (recs, bad) = records(&log);
        assert_eq!(bad, None);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].kind, b'R');
        assert_eq!(recs[0].pid, 7);
        assert_eq!(recs[0].fields, vec![&b""[..], b"/a\nb", b"f"]);
        assert_eq!(recs[1].fields, vec![&b"X"[..], b"-"]);
    }

    #[test]
    fn a_truncated_record_is_reported_where_it_starts() {
        let mut log = rec('R', 7, &["", "/a", "f"]);
        let first = log.len();
        let second = rec('R', 7, &["", "/b", "f"]);
        log.extend_from_slice(&second[..second.len() - 3]);
        let (recs, bad) = records(&log);
        assert_eq!(recs.len(), 1);
        assert_eq!(bad, Some(first));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for log in [
            &b"xx"[..],
            b"5:",
            b"99999999999999999:R",
            b":R1\n",
            b"4:11\0\n",
        ] {
            let (_, bad) = records(log);
            assert_eq!(bad, Some(0), "{:?}", String::from_utf8_lossy(log));
        }
    }
}
