//! Path normalization that understands both Unix and Windows spellings.
//!
//! Keys and placeholders compare paths as strings, so every path goes through
//! one normalizer first: separators become `/`, `.` and `..` are resolved
//! lexically (never above the root), drive letters are upper-cased, the
//! verbatim prefixes `\\?\C:\` and `\\?\UNC\server\share` are reduced to their
//! plain forms, and the text is put in Unicode NFC (macOS hands out NFD names).
//! This is pure string work, so it is tested on Windows shapes on any host.

use unicode_normalization::UnicodeNormalization;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// `/a/b`
    UnixAbsolute,
    /// `C:/a/b`
    Drive(char),
    /// `//server/share/a`
    Unc { server: String, share: String },
    /// `a/b` (no root)
    Relative,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub kind: PathKind,
    /// Components below the root, none of them empty, `.` or `..`
    /// (a relative path may start with `..` components).
    pub components: Vec<String>,
}

impl NormalizedPath {
    fn root(&self) -> String {
        match &self.kind {
            PathKind::UnixAbsolute => "/".to_string(),
            PathKind::Drive(d) => format!("{d}:/"),
            PathKind::Unc { server, share } => format!("//{server}/{share}/"),
            PathKind::Relative => String::new(),
        }
    }

    /// The canonical text form: `/a/b`, `C:/a/b`, `//srv/share/a`, `a/b`.
    pub fn as_string(&self) -> String {
        let mut s = self.root();
        s.push_str(&self.components.join("/"));
        if s.is_empty() {
            s.push('.');
        }
        s
    }

    /// `self` relative to `base` when `self` lies at or below it.
    /// Drive letters compare case-insensitively; other components exactly.
    pub fn strip_prefix(&self, base: &NormalizedPath) -> Option<Vec<String>> {
        if self.kind != base.kind || base.components.len() > self.components.len() {
            return None;
        }
        if self.components[..base.components.len()] != base.components[..] {
            return None;
        }
        Some(self.components[base.components.len()..].to_vec())
    }
}

/// Normalizes a path written in Unix or Windows form.
pub fn normalize_path(input: &str) -> NormalizedPath {
    let nfc: String = input.nfc().collect();
    let s = nfc.replace('\\', "/");
    let (kind, rest) = split_root(&s);
    let mut components: Vec<String> = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if components.last().is_some_and(|c| c != "..") {
                    components.pop();
                } else if kind == PathKind::Relative {
                    components.push("..".to_string());
                }
                // `..` at an absolute root stays at the root.
            }
            c => components.push(c.to_string()),
        }
    }
    NormalizedPath { kind, components }
}

fn drive_of(s: &str) -> Option<char> {
    let b = s.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b.len() == 2 || b[2] == b'/')
    {
        Some((b[0] as char).to_ascii_uppercase())
    } else {
        None
    }
}

fn split_root(s: &str) -> (PathKind, &str) {
    // Verbatim and device prefixes: //?/C:/x, //?/UNC/srv/share/x, //./C:/x
    for prefix in ["//?/", "//./", "/??/"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            if let Some(d) = drive_of(rest) {
                return (PathKind::Drive(d), &rest[2..]);
            }
            if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case("UNC/") {
                return unc(&rest[4..]);
            }
            return (PathKind::UnixAbsolute, rest);
        }
    }
    if let Some(rest) = s.strip_prefix("//") {
        if !rest.starts_with('/') {
            return unc(rest);
        }
    }
    if let Some(d) = drive_of(s) {
        return (PathKind::Drive(d), &s[2..]);
    }
    if s.starts_with('/') {
        return (PathKind::UnixAbsolute, s);
    }
    (PathKind::Relative, s)
}

fn unc(rest: &str) -> (PathKind, &str) {
    let mut it = rest.splitn(3, '/');
    let server = it.next().unwrap_or("").to_string();
    let share = it.next().unwrap_or("").to_string();
    let tail = it.next().unwrap_or("");
    (PathKind::Unc { server, share }, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_path(s).as_string()
    }

    #[test]
    fn unix_paths_collapse_dots_and_separators() {
        assert_eq!(n("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(n("/../x"), "/x");
        assert_eq!(n("a/../../b"), "../b");
        assert_eq!(n(""), ".");
    }

    #[test]
    fn drive_letters_are_uppercased_and_backslashes_become_slashes() {
        assert_eq!(n(r"c:\Users\me\src\..\proj"), "C:/Users/me/proj");
        assert_eq!(n("D:/x/y"), "D:/x/y");
        assert_eq!(normalize_path(r"e:\").kind, PathKind::Drive('E'));
    }

    #[test]
    fn verbatim_prefixes_reduce_to_plain_forms() {
        assert_eq!(n(r"\\?\C:\work\target"), "C:/work/target");
        assert_eq!(n(r"\\?\UNC\srv\share\dir\f.rs"), "//srv/share/dir/f.rs");
        assert_eq!(n(r"\\.\C:\x"), "C:/x");
        assert_eq!(n(r"\\?\c:\a\..\b"), "C:/b");
    }

    #[test]
    fn unc_paths_keep_server_and_share_as_root() {
        let p = normalize_path(r"\\build-host\cache\blobs\..\entries");
        assert_eq!(
            p.kind,
            PathKind::Unc {
                server: "build-host".into(),
                share: "cache".into()
            }
        );
        assert_eq!(p.as_string(), "//build-host/cache/entries");
        // `..` never climbs above the share.
        assert_eq!(n(r"\\srv\share\..\..\x"), "//srv/share/x");
    }

    #[test]
    fn unicode_is_put_in_nfc() {
        let nfd = "/tmp/cafe\u{301}/x"; // e + combining acute
        let nfc = "/tmp/caf\u{e9}/x";
        assert_eq!(n(nfd), nfc);
    }

    #[test]
    fn strip_prefix_works_across_spellings() {
        let base = normalize_path(r"\\?\C:\work\wt1");
        let file = normalize_path(r"c:/work/wt1/src/lib.rs");
        assert_eq!(file.strip_prefix(&base).unwrap(), vec!["src", "lib.rs"]);
        let other = normalize_path(r"C:\work\wt10\src");
        assert!(other.strip_prefix(&base).is_none());
        assert!(normalize_path("/a/b")
            .strip_prefix(&normalize_path("C:/a"))
            .is_none());
    }
}
