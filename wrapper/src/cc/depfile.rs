//! Make-style dependency files (`-MD`/`-MMD` output): reading them, and moving them between
//! worktrees.
//!
//! Owns the placeholder rewrite: paths under the producing worktree's root are stored as
//! [`BASE_TOKEN`] and expanded to the consuming worktree's root on restore, so a
//! restored dep file never names the producing worktree.
//! The rewrite works token by token on the original text, so everything else (line
//! continuations, escapes, relative paths, system headers) comes back byte for byte.
//! Never decides whether a hit may be served: the caller checks that every named path exists
//! ([`named_paths`]).

use std::path::Path;

use crate::paths::BASE_TOKEN;

/// One `targets: prerequisites` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub targets: Vec<String>,
    pub prerequisites: Vec<String>,
}

/// Parses a dependency file: line continuations (`\` newline), escaped spaces (`\ `), `\#`,
/// `$$`, several targets per rule, `-MP` phony rules (no prerequisites). Lines without a
/// target separator are ignored.
pub fn parse(text: &str) -> Vec<Rule> {
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut rules = Vec::new();
    for line in joined.lines() {
        let tokens = tokenize(line);
        let Some(sep) = tokens.iter().position(|(_, ends_rule)| *ends_rule) else {
            continue;
        };
        let targets: Vec<String> = tokens[..=sep]
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| !t.is_empty())
            .collect();
        let prerequisites = tokens[sep + 1..].iter().map(|(t, _)| t.clone()).collect();
        rules.push(Rule {
            targets,
            prerequisites,
        });
    }
    rules
}

/// Splits a logical line into unescaped tokens; the flag marks the token that ended with the
/// rule's `:` (the colon itself removed).
fn tokenize(line: &str) -> Vec<(String, bool)> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let flush = |cur: &mut String, ends: bool, tokens: &mut Vec<(String, bool)>| {
        if !cur.is_empty() || ends {
            tokens.push((std::mem::take(cur), ends));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some(' ' | '#' | '\t')) => {
                cur.push(chars.next().unwrap_or(' '));
            }
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                cur.push('$');
            }
            ':' if matches!(chars.peek(), None | Some(' ' | '\t')) => {
                flush(&mut cur, true, &mut tokens)
            }
            ' ' | '\t' => flush(&mut cur, false, &mut tokens),
            _ => cur.push(c),
        }
    }
    flush(&mut cur, false, &mut tokens);
    tokens
}

/// Every path a dependency file names (targets and prerequisites), unescaped, without
/// repeats.
pub fn named_paths(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for rule in parse(text) {
        for p in rule.targets.into_iter().chain(rule.prerequisites) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// How a path is written in a dependency file.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\ "),
            '#' => out.push_str("\\#"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn root_string(base: &Path) -> Option<String> {
    let s = base.to_str()?.trim_end_matches('/');
    (base.is_absolute() && !s.is_empty()).then(|| s.to_owned())
}

/// Replaces `from` with `to` where `from` starts a token and is followed by `/` or the end of
/// the token (a whole path component: `/w/a` does not match `/w/ab`).
fn replace_at_token_starts(text: &str, from: &str, to: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut token_start = true;
    while i < bytes.len() {
        if token_start && text[i..].starts_with(from) {
            let after = bytes.get(i + from.len()).copied();
            let ends_component = match after {
                None | Some(b'/' | b' ' | b'\t' | b'\n' | b'\r') => true,
                Some(b':') => true,
                Some(b'\\') => !matches!(bytes.get(i + from.len() + 1), Some(b' ' | b'#')),
                _ => false,
            };
            if ends_component {
                out.push_str(to);
                i += from.len();
                token_start = false;
                continue;
            }
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        if c == '\\' && matches!(bytes.get(i + 1), Some(b' ' | b'#' | b'\t')) {
            out.push('\\');
            out.push(bytes[i + 1] as char);
            i += 2;
            token_start = false;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
        token_start = matches!(c, ' ' | '\t' | '\n' | '\r');
    }
    out
}

/// The text to store: paths under `base` (the producing worktree root) start with
/// [`BASE_TOKEN`]. `None` when the file cannot be stored faithfully (it already contains
/// the placeholder, or `base` is not an absolute UTF-8 path other than `/`): do not cache it.
pub fn to_placeholders(text: &str, base: &Path) -> Option<String> {
    if text.contains(BASE_TOKEN) {
        return None;
    }
    let root = root_string(base)?;
    Some(replace_at_token_starts(text, &escape(&root), BASE_TOKEN))
}

/// The stored text expanded for the consuming worktree rooted at `base`. `None` when `base`
/// is unusable.
pub fn from_placeholders(stored: &str, base: &Path) -> Option<String> {
    let root = root_string(base)?;
    Some(replace_at_token_starts(stored, BASE_TOKEN, &escape(&root)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCED: &str = "/w/my\\ tree/obj/x.o: /w/my\\ tree/src/x.c \\\n /w/my\\ tree/inc/a\\ b.h /usr/include/stdio.h \\\n  rel/inc.h /w/my\\ treex/y.h\n/w/my\\ tree/inc/a\\ b.h:\n";

    #[test]
    fn parses_continuations_escapes_and_phony_rules() {
        let rules = parse(PRODUCED);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].targets, vec!["/w/my tree/obj/x.o"]);
        assert_eq!(
            rules[0].prerequisites,
            vec![
                "/w/my tree/src/x.c",
                "/w/my tree/inc/a b.h",
                "/usr/include/stdio.h",
                "rel/inc.h",
                "/w/my treex/y.h"
            ]
        );
        assert_eq!(
            rules[1],
            Rule {
                targets: vec!["/w/my tree/inc/a b.h".into()],
                prerequisites: vec![]
            }
        );
    }

    #[test]
    fn parses_multiple_targets_and_dollars() {
        let rules = parse("a.o b.o: x$$y.c c\\#d.h\n");
        assert_eq!(rules[0].targets, vec!["a.o", "b.o"]);
        assert_eq!(rules[0].prerequisites, vec!["x$y.c", "c#d.h"]);
    }

    #[test]
    fn round_trip_between_worktrees_with_spaces_and_continuations() {
        let stored = to_placeholders(PRODUCED, Path::new("/w/my tree/")).unwrap();
        assert!(!stored.contains("/w/my\\ tree/"), "{stored}");
        assert!(
            stored.contains("/w/my\\ treex/y.h"),
            "a sibling directory is not the base"
        );
        assert!(stored.contains("/usr/include/stdio.h") && stored.contains(" rel/inc.h"));
        assert_eq!(
            from_placeholders(&stored, Path::new("/w/my tree")).unwrap(),
            PRODUCED
        );

        let other = from_placeholders(&stored, Path::new("/home/u/wt 2")).unwrap();
        let rules = parse(&other);
        assert_eq!(rules[0].targets, vec!["/home/u/wt 2/obj/x.o"]);
        assert_eq!(rules[0].prerequisites[1], "/home/u/wt 2/inc/a b.h");
        assert_eq!(rules[0].prerequisites[3], "rel/inc.h");
        assert_eq!(rules[1].targets, vec!["/home/u/wt 2/inc/a b.h"]);
        assert!(other.contains("\\\n"), "continuations are kept");
    }

    #[test]
    fn refuses_what_it_cannot_store_faithfully() {
        assert_eq!(
            to_placeholders("x.o: @KACHE_BASE@/a.h\n", Path::new("/w")),
            None
        );
        assert_eq!(to_placeholders("x.o: a.h\n", Path::new("/")), None);
        assert_eq!(to_placeholders("x.o: a.h\n", Path::new("rel")), None);
    }

    #[test]
    fn named_paths_lists_each_path_once() {
        assert_eq!(
            named_paths("x.o: a.h b.h\na.h:\n"),
            vec!["x.o", "a.h", "b.h"]
        );
    }
}
