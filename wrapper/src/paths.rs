//! One normalization for keys and outputs: a set of (absolute root →
//! stable replacement) rules. The same rules rewrite paths in key fields and
//! become the `--remap-path-prefix` flags of the real compile, so whatever a
//! compiler writes into an output is exactly what the key promised.

/// Placeholder tokens that stand for a worktree's roots inside stored text
/// (dep-info, diagnostics, manifest records) and keys, expanded to the
/// consuming worktree's roots on restore. Defined here once for every
/// language.
pub const WS_TOKEN: &str = "@KACHE_WS@";
pub const TARGET_TOKEN: &str = "@KACHE_TARGET@";
/// The C/C++ worktree root (`-ffile-prefix-map` base).
pub const BASE_TOKEN: &str = "@KACHE_BASE@";

/// True when stored text holds a worktree token (so a current value must be
/// tokenized before it is compared with it).
pub fn has_tokens(text: &str) -> bool {
    [WS_TOKEN, TARGET_TOKEN, BASE_TOKEN]
        .iter()
        .any(|t| text.contains(t))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalizer {
    /// (absolute prefix without trailing slash, replacement), most specific last.
    rules: Vec<(String, String)>,
}

impl Normalizer {
    pub fn new() -> Normalizer {
        Normalizer::default()
    }

    /// Adds a rule; rules added later win when several match (as rustc's
    /// `--remap-path-prefix` does).
    pub fn add(&mut self, root: &str, replacement: &str) {
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            return;
        }
        self.rules.push((root.to_string(), replacement.to_string()));
    }

    pub fn rules(&self) -> &[(String, String)] {
        &self.rules
    }

    /// The matching rule for `path`, if any: prefix must end at a component boundary.
    fn rule_for(&self, path: &str) -> Option<&(String, String)> {
        self.rules.iter().rev().find(|(root, _)| {
            path.strip_prefix(root.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Rewrites an absolute path under a root; other paths come back unchanged.
    pub fn apply(&self, path: &str) -> String {
        match self.rule_for(path) {
            Some((root, rep)) => format!("{rep}{}", &path[root.len()..]),
            None => path.to_string(),
        }
    }

    /// True when `path` lies under one of the roots.
    pub fn covers(&self, path: &str) -> bool {
        self.rule_for(path).is_some()
    }

    /// `--remap-path-prefix` arguments for rustc, in rule order.
    pub fn remap_args(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|(root, rep)| format!("--remap-path-prefix={root}={rep}"))
            .collect()
    }

    /// Replaces every occurrence of each root in `text` by a placeholder
    /// token (for stored dep-info and diagnostics) — longest roots first so a
    /// nested root is not eaten by its parent.
    pub fn to_placeholders(&self, text: &str, tokens: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(&str, &str)> = tokens.to_vec();
        pairs.sort_by_key(|(root, _)| std::cmp::Reverse(root.len()));
        let mut out = text.to_string();
        for (root, token) in pairs {
            if !root.is_empty() {
                out = out.replace(root, token);
            }
        }
        out
    }
}

/// Replaces each root in `text` by its token where the root ends at a path
/// boundary (followed by `/`, the end, or a character no path component
/// would continue with), longest roots first: `/w/a` becomes a token in
/// `-I/w/a/inc` and `PWD=/w/a`, never in `/w/ab`.
pub fn tokenize_bounded(text: &str, roots: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = roots
        .iter()
        .map(|(r, t)| (r.trim_end_matches('/'), *t))
        .filter(|(r, _)| !r.is_empty())
        .collect();
    pairs.sort_by_key(|(root, _)| std::cmp::Reverse(root.len()));
    let continues = |c: char| c.is_alphanumeric() || "._-+~@".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for (root, token) in &pairs {
            if let Some(after) = rest.strip_prefix(root) {
                if !after.chars().next().is_some_and(continues) {
                    out.push_str(token);
                    rest = after;
                    continue 'scan;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Expands placeholder tokens back to this worktree's roots.
pub fn from_placeholders(text: &str, tokens: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (root, token) in tokens {
        out = out.replace(token, root);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_tokens_replace_roots_only_where_they_end() {
        let roots = [("/w/a", BASE_TOKEN)];
        assert_eq!(
            tokenize_bounded("-I/w/a/inc PWD=/w/a x:/w/a:/w/ab /w/a.b", &roots),
            "-I@KACHE_BASE@/inc PWD=@KACHE_BASE@ x:@KACHE_BASE@:/w/ab /w/a.b"
        );
        let nested = [("/w/a", WS_TOKEN), ("/w/a/target", TARGET_TOKEN)];
        assert_eq!(
            tokenize_bounded("/w/a/target/debug /w/a/src", &nested),
            "@KACHE_TARGET@/debug @KACHE_WS@/src"
        );
    }

    #[test]
    fn later_more_specific_rules_win_and_boundaries_hold() {
        let mut n = Normalizer::new();
        n.add("/w/a", ".");
        n.add("/w/a/target", "/kache-target");
        assert_eq!(n.apply("/w/a/src/lib.rs"), "./src/lib.rs");
        assert_eq!(n.apply("/w/a/target/debug/x"), "/kache-target/debug/x");
        assert_eq!(n.apply("/w/ab/src"), "/w/ab/src");
        assert_eq!(n.apply("/w/a"), ".");
        assert_eq!(
            n.remap_args(),
            vec![
                "--remap-path-prefix=/w/a=.".to_string(),
                "--remap-path-prefix=/w/a/target=/kache-target".to_string()
            ]
        );
    }

    #[test]
    fn placeholders_round_trip_nested_roots() {
        let n = Normalizer::new();
        let toks = [("/w/a", "@WS@"), ("/w/a/target", "@TARGET@")];
        let s = "/w/a/target/debug/x.d: /w/a/src/lib.rs";
        let p = n.to_placeholders(s, &toks);
        assert_eq!(p, "@TARGET@/debug/x.d: @WS@/src/lib.rs");
        let back = from_placeholders(&p, &[("/v/b", "@WS@"), ("/v/b/target", "@TARGET@")]);
        assert_eq!(back, "/v/b/target/debug/x.d: /v/b/src/lib.rs");
    }
}
