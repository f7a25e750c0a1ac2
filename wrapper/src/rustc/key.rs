//! The cache keys of a rustc compile, as pure functions of the facts handed
//! to them (the caller probes tools, hashes files and reads the environment).
//!
//! - The **direct key** is known before compiling: compiler and linker
//!   identity, arguments in key form (worktree paths normalized), extern and
//!   native-library contents, and the variables that change output without
//!   appearing in dep-info. A manifest under it lists the inputs recent
//!   compiles read.
//! - The **result key** names the outputs: the direct key plus the inputs a
//!   compile read, by (path, content) and (variable, value).
//!
//! Every field is labelled and length-prefixed ([`KeyBuilder`]), and grouped
//! so `kache why-miss` can name the group that changed.

use std::collections::BTreeMap;

use super::{KeyArg, RustcInvocation};
use crate::key::KeyBuilder;
use crate::paths::{from_placeholders, Normalizer, TARGET_TOKEN, WS_TOKEN};

/// What the worktree root and target dir become inside outputs and keys.
pub const WS_REMAP: &str = ".";
pub const TARGET_REMAP: &str = "/kache/target";

/// Marks a declared variable that is unset (no value can contain a NUL).
const UNSET: &str = "\0unset";

/// Variables whose values are worktree paths: normalized in the direct key.
/// Whether an output still holds such a path is found by looking at the
/// output after the compile (a path-local result), not assumed.
pub const PATH_VARS: [&str; 2] = ["CARGO_MANIFEST_DIR", "OUT_DIR"];

/// Variables that can change rustc's output without appearing in dep-info
/// (rustc's own, and cargo's package facts that proc-macros read).
/// `RUSTFLAGS` and `CARGO_ENCODED_RUSTFLAGS` are not among them: rustc never
/// reads either, and cargo has already turned them into arguments (keyed as
/// arguments), so an empty value and an unset one compile alike.
pub fn keyed_env(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_CFG_")
        || matches!(
            name,
            "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "RUSTC_BOOTSTRAP"
                | "SOURCE_DATE_EPOCH"
                | "CARGO_MANIFEST_DIR"
                | "OUT_DIR"
        )
}

/// The variables of `vars` (the process environment) that enter the direct
/// key: [`keyed_env`] ones and `declared` ones. `Err` names a keyed variable
/// whose value is not UTF-8 (it cannot be keyed faithfully).
pub fn keyed_vars(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    declared: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for (n, v) in vars {
        let Some(n) = n.to_str() else { continue };
        if keyed_env(n) || declared.iter().any(|d| d == n) {
            let v = v.into_string().map_err(|_| n.to_string())?;
            env.push((n.to_string(), v));
        }
    }
    Ok(env)
}

/// The roots of one compile (worktree, target dir) and the normalization
/// built from them: the same rules key paths, become rustc's
/// `--remap-path-prefix` flags, and tokenize stored text.
#[derive(Debug, Clone)]
pub struct Roots {
    pub ws: Option<String>,
    pub target: Option<String>,
    pub norm: Normalizer,
}

impl Roots {
    /// `ws` is `None` when the compile does not run at a worktree root (a
    /// registry crate); `target` when no cargo target dir holds the outputs.
    pub fn new(ws: Option<String>, target: Option<String>) -> Roots {
        let mut norm = Normalizer::new();
        if let Some(ws) = &ws {
            norm.add(ws, WS_REMAP);
        }
        if let Some(t) = &target {
            norm.add(t, TARGET_REMAP);
        }
        Roots { ws, target, norm }
    }

    fn tokens(&self) -> Vec<(&str, &str)> {
        let mut t = Vec::new();
        if let Some(ws) = &self.ws {
            t.push((ws.as_str(), WS_TOKEN));
        }
        if let Some(tg) = &self.target {
            t.push((tg.as_str(), TARGET_TOKEN));
        }
        t
    }

    /// Absolute path text → token form (for stored records and files).
    pub fn tokenize(&self, text: &str) -> String {
        self.norm.to_placeholders(text, &self.tokens())
    }

    /// Token form → this worktree's paths.
    pub fn expand(&self, text: &str) -> String {
        from_placeholders(text, &self.tokens())
    }

    /// A rustc dep-info file in token form. rustc escapes a space as `\\ `
    /// in a rule's prerequisites and in the empty rule it adds for each,
    /// but writes the outputs its rules are for, and the values of
    /// `# env-dep:` lines, as they are; each part is matched against the
    /// roots in its own spelling.
    pub fn tokenize_dep_info(&self, text: &str) -> String {
        self.map_dep_info(text, |part, tokens| self.norm.to_placeholders(part, tokens))
    }

    /// A dep-info file in token form → this worktree's (the inverse of
    /// [`Roots::tokenize_dep_info`]).
    pub fn expand_dep_info(&self, text: &str) -> String {
        self.map_dep_info(text, from_placeholders)
    }

    fn map_dep_info(&self, text: &str, f: impl Fn(&str, &[(&str, &str)]) -> String) -> String {
        let raw = self.tokens();
        let escaped: Vec<(String, &str)> = raw
            .iter()
            .map(|(root, t)| (escape_dep_path(root), *t))
            .collect();
        let escaped: Vec<(&str, &str)> = escaped.iter().map(|(r, t)| (r.as_str(), *t)).collect();
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            if line.starts_with('#') {
                out.push_str(&f(line, &raw));
                continue;
            }
            // An output's rule names it raw, then its prerequisites escaped;
            // the empty rule rustc adds for each prerequisite names it
            // escaped.
            let split = match super::find_rule_colon(line) {
                Some(c) if !line[c + 1..].trim().is_empty() => c,
                _ => 0,
            };
            out.push_str(&f(&line[..split], &raw));
            out.push_str(&f(&line[split..], &escaped));
        }
        out
    }

    /// Key form of a path: its remapped spelling.
    pub fn key_path(&self, p: &str) -> String {
        self.norm.apply(p)
    }
}

/// The facts a direct key is made of, gathered by the caller.
pub struct DirectInput<'a> {
    pub invocation: &'a RustcInvocation,
    pub roots: &'a Roots,
    /// `rustc -vV`.
    pub rustc_identity: &'a str,
    /// Linker banner and host libc, for linked outputs.
    pub linker_identity: Option<&'a str>,
    /// The directory the compile runs in, when it is not a worktree root
    /// (registry crates: outputs embed this machine-local path).
    pub cwd: Option<&'a str>,
    /// Content hash of the `--target` spec file, when one is given.
    pub target_spec: Option<&'a str>,
    /// Content hash per `--extern` with a path, in argument order.
    pub extern_contents: &'a [Option<String>],
    /// (`libNAME.a`, content hash) per static native library, in order.
    pub static_libs: &'a [(String, String)],
    /// What `-C target-cpu=native` means on this machine (the CPU and its
    /// features, as rustc reports them), when the compile asks for it.
    pub native_cpu: Option<&'a str>,
    /// The process environment (filtered here).
    pub env: &'a [(String, String)],
    /// Extra variables declared as inputs (`rust.env`).
    pub declared_env: &'a [String],
}

/// The direct key and its per-group digests.
pub fn direct_key(i: &DirectInput) -> (String, BTreeMap<String, String>) {
    let inv = i.invocation;
    // v2: path-locality by observation and the link closure in the result;
    // entries made under v1 may hold another worktree's paths.
    let mut k = KeyBuilder::new("kache-rust-direct-v2");
    k.group("compiler").str("rustc", i.rustc_identity);
    if let Some(l) = i.linker_identity {
        k.str("linker", l);
    }
    if let Some(cwd) = i.cwd {
        k.str("cwd", cwd);
    }
    k.str("remap", &format!("{WS_REMAP}\0{TARGET_REMAP}"));

    if let Some(cpu) = i.native_cpu {
        k.str("native-cpu", cpu);
    }

    k.group("args");
    for a in &inv.key_args {
        match a {
            KeyArg::Literal(s) => k.str("arg", s),
            KeyArg::Path { prefix, .. } if prefix == "--target-file=" => {
                k.str("target-spec", i.target_spec.unwrap_or_default())
            }
            KeyArg::Path { prefix, path } => {
                k.str("arg", &format!("{prefix}{}", i.roots.key_path(path)))
            }
        };
    }

    k.group("externs");
    for (e, content) in inv.externs.iter().zip(i.extern_contents) {
        k.str("name", &e.name);
        if let Some(h) = content {
            k.str("content", h);
        }
    }

    k.group("native");
    for (file, h) in i.static_libs {
        k.str(file, h);
    }

    // Declared extra inputs: variables a proc-macro reads at expansion
    // time, which no dep-info records.
    k.group("env");
    let mut env: Vec<(&str, String)> = i
        .env
        .iter()
        .filter(|(n, _)| keyed_env(n) || i.declared_env.contains(n))
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    for name in i.declared_env {
        if !i.env.iter().any(|(n, _)| n == name) {
            env.push((name, UNSET.to_string()));
        }
    }
    env.sort();
    for (n, v) in &env {
        let v = if PATH_VARS.contains(n) {
            i.roots.key_path(v)
        } else {
            v.clone()
        };
        k.str(n, &v);
    }
    k.finish()
}

/// What a compile read, as the result key takes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadInputs<'a> {
    /// (path in token form, blake3, size) of every file read.
    pub files: &'a [(String, String, u64)],
    /// (name, value) of every variable read; `None` when it was unset.
    pub env: &'a [(String, Option<String>)],
    /// Paths (token form) that were looked up and not found.
    pub absent: &'a [String],
    /// The roots (name, absolute path) an output still holds: a path-local
    /// result is a different result in every worktree.
    pub local: &'a [(String, String)],
}

/// The result key of a compile with direct key `direct` that read `inputs`,
/// and its per-group digests.
pub fn result_key(direct: &str, inputs: &ReadInputs) -> (String, BTreeMap<String, String>) {
    let mut rk = KeyBuilder::new("kache-rust-result-v1");
    rk.group("direct").str("key", direct);
    rk.group("sources");
    for (p, h, _) in inputs.files {
        rk.str(p, h);
    }
    rk.group("env");
    for (n, v) in inputs.env {
        rk.str(n, v.as_deref().unwrap_or(UNSET));
    }
    if !inputs.absent.is_empty() {
        rk.group("absent");
        for p in inputs.absent {
            rk.str("path", p);
        }
    }
    if !inputs.local.is_empty() {
        rk.group("path-local");
        for (name, root) in inputs.local {
            rk.str(name, root);
        }
    }
    rk.finish()
}

/// A path as a make-style dependency file spells it (rustc escapes spaces
/// only).
pub fn escape_dep_path(p: &str) -> String {
    p.replace(' ', "\\ ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::has_tokens;
    use crate::rustc::{parse, Parsed};

    fn inv(extra: &[&str]) -> RustcInvocation {
        let mut a: Vec<String> = [
            "--crate-name",
            "foo",
            "--edition=2021",
            "src/lib.rs",
            "--crate-type",
            "lib",
            "--emit=dep-info,metadata,link",
            "--out-dir",
            "/w/a/target/debug/deps",
            "-C",
            "extra-filename=-abc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        match parse(&a) {
            Parsed::Compile(i) => *i,
            other => panic!("{other:?}"),
        }
    }

    /// The direct key of `inv` under `roots` with `env`, every extern's
    /// content `extern_content`, and `declared` variables.
    fn key_with(
        inv: &RustcInvocation,
        roots: &Roots,
        env: &[(&str, &str)],
        extern_content: &str,
        declared: &[String],
    ) -> String {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let externs = vec![Some(extern_content.to_string()); inv.externs.len()];
        direct_key(&DirectInput {
            invocation: inv,
            roots,
            rustc_identity: "rustc 1.95",
            linker_identity: None,
            cwd: None,
            target_spec: None,
            extern_contents: &externs,
            static_libs: &[],
            native_cpu: None,
            env: &env,
            declared_env: declared,
        })
        .0
    }

    fn key(inv: &RustcInvocation, roots: &Roots, env: &[(&str, &str)]) -> String {
        key_with(inv, roots, env, "e1", &[])
    }

    fn roots(ws: &str) -> Roots {
        Roots::new(Some(ws.into()), Some(format!("{ws}/target")))
    }

    #[test]
    fn two_worktrees_share_a_direct_key() {
        let a = roots("/w/a");
        let b = roots("/w/b");
        let i = inv(&["-L", "native=/w/a/target/debug/build/x/out"]);
        let j = inv(&["-L", "native=/w/b/target/debug/build/x/out"]);
        let env_a = [("CARGO_MANIFEST_DIR", "/w/a"), ("CARGO_PKG_NAME", "foo")];
        let env_b = [("CARGO_MANIFEST_DIR", "/w/b"), ("CARGO_PKG_NAME", "foo")];
        assert_eq!(key(&i, &a, &env_a), key(&j, &b, &env_b));
    }

    #[test]
    fn keyed_facts_change_the_direct_key_and_others_do_not() {
        let r = roots("/w/a");
        let base = key(&inv(&[]), &r, &[("CARGO_PKG_VERSION", "1.0.0")]);
        assert_ne!(base, key(&inv(&[]), &r, &[("CARGO_PKG_VERSION", "1.0.1")]));
        assert_ne!(
            base,
            key(
                &inv(&["-C", "opt-level=3"]),
                &r,
                &[("CARGO_PKG_VERSION", "1.0.0")]
            )
        );
        // Unkeyed variables (the jobserver, the terminal) never matter.
        assert_eq!(
            base,
            key(
                &inv(&[]),
                &r,
                &[("CARGO_PKG_VERSION", "1.0.0"), ("CARGO_MAKEFLAGS", "-j8")]
            )
        );
        // An extern is keyed by content, not by its path.
        let e = inv(&["--extern", "dep=/w/a/target/debug/deps/libdep-1.rlib"]);
        let env = [("CARGO_PKG_VERSION", "1.0.0")];
        let k1 = key(&e, &r, &env);
        assert_ne!(k1, key_with(&e, &r, &env, "e2", &[]));
        assert_eq!(k1, key_with(&e, &roots("/w/b"), &env, "e1", &[]));
    }

    #[test]
    fn a_declared_variable_is_keyed_set_or_unset() {
        let (i, r) = (inv(&[]), roots("/w/a"));
        let declared = ["PM_SECRET".to_string()];
        let unset = key_with(&i, &r, &[], "", &declared);
        let empty = key_with(&i, &r, &[("PM_SECRET", "")], "", &declared);
        let one = key_with(&i, &r, &[("PM_SECRET", "1")], "", &declared);
        assert_ne!(unset, empty);
        assert_ne!(empty, one);
    }

    #[test]
    fn only_keyed_and_declared_variables_are_kept() {
        let os = |a: &str, b: &str| (a.into(), b.into());
        let vars = vec![
            os("CARGO_PKG_NAME", "foo"),
            os("PATH", "/bin"),
            os("PM_SECRET", "x"),
            os("TERM", "xterm"),
        ];
        let kept = keyed_vars(vars, &["PM_SECRET".to_string()]).unwrap();
        assert_eq!(
            kept,
            vec![
                ("CARGO_PKG_NAME".to_string(), "foo".to_string()),
                ("PM_SECRET".to_string(), "x".to_string())
            ]
        );
    }

    fn rk(files: &[(String, String, u64)], env: &[(String, Option<String>)]) -> String {
        let inputs = ReadInputs {
            files,
            env,
            ..ReadInputs::default()
        };
        result_key("d", &inputs).0
    }

    #[test]
    fn result_key_binds_paths_to_contents_and_unset_to_unset() {
        let f = |a: &str, b: &str| {
            vec![
                ("src/a.rs".to_string(), a.to_string(), 1),
                ("src/b.rs".to_string(), b.to_string(), 1),
            ]
        };
        // Swapping two files' contents changes the key.
        assert_ne!(rk(&f("h1", "h2"), &[]), rk(&f("h2", "h1"), &[]));
        let unset = [("V".to_string(), None)];
        let empty = [("V".to_string(), Some(String::new()))];
        assert_ne!(rk(&[], &unset), rk(&[], &empty));
        let files = f("h1", "h2");
        let inputs = ReadInputs {
            files: &files,
            env: &unset,
            ..ReadInputs::default()
        };
        let (_, groups) = result_key("d", &inputs);
        assert!(groups.contains_key("sources") && groups.contains_key("env"));
    }

    #[test]
    fn absent_paths_and_path_local_roots_make_distinct_results() {
        let plain = rk(&[], &[]);
        let absent = ["@KACHE_TARGET@/out/libz.a".to_string()];
        let with_absent = ReadInputs {
            absent: &absent,
            ..ReadInputs::default()
        };
        assert_ne!(plain, result_key("d", &with_absent).0);
        let a = [("ws".to_string(), "/w/a".to_string())];
        let b = [("ws".to_string(), "/w/b".to_string())];
        let local = |l| {
            result_key(
                "d",
                &ReadInputs {
                    local: l,
                    ..ReadInputs::default()
                },
            )
            .0
        };
        assert_ne!(local(&a), local(&b));
        assert_ne!(local(&a), plain);
    }

    #[test]
    fn native_cpu_is_keyed_by_what_it_resolves_to() {
        let (i, r) = (inv(&["-C", "target-cpu=native"]), roots("/w/a"));
        let with = |cpu: Option<&str>| {
            direct_key(&DirectInput {
                invocation: &i,
                roots: &r,
                rustc_identity: "rustc 1.95",
                linker_identity: None,
                cwd: None,
                target_spec: None,
                extern_contents: &[],
                static_libs: &[],
                native_cpu: cpu,
                env: &[],
                declared_env: &[],
            })
            .0
        };
        let znver5 = with(Some("currently znver5\ntarget_feature=\"avx512f\""));
        let nehalem = with(Some("currently nehalem\ntarget_feature=\"sse4.2\""));
        assert_ne!(znver5, nehalem);
        assert_ne!(znver5, with(None));
    }

    #[test]
    fn rustflags_are_not_keyed_as_variables() {
        let (i, r) = (inv(&[]), roots("/w/a"));
        let unset = key(&i, &r, &[]);
        assert_eq!(unset, key(&i, &r, &[("RUSTFLAGS", "")]));
        assert_eq!(unset, key(&i, &r, &[("CARGO_ENCODED_RUSTFLAGS", "")]));
    }

    #[test]
    fn dep_info_with_spaces_in_the_roots_tokenizes_and_expands() {
        let a = roots("/w/work tree a");
        let stored = a.tokenize_dep_info(
            "/w/work tree a/target/debug/deps/x.d: src/lib.rs /w/work\\ tree\\ a/target/out/gen.rs\n\n\
             /w/work\\ tree\\ a/target/out/gen.rs:\n\n\
             # env-dep:OUT_DIR=/w/work tree a/target/out\n",
        );
        assert_eq!(
            stored,
            "@KACHE_TARGET@/debug/deps/x.d: src/lib.rs @KACHE_TARGET@/out/gen.rs\n\n\
             @KACHE_TARGET@/out/gen.rs:\n\n\
             # env-dep:OUT_DIR=@KACHE_TARGET@/out\n"
        );
        let b = roots("/w/work tree b");
        assert_eq!(
            b.expand_dep_info(&stored),
            "/w/work tree b/target/debug/deps/x.d: src/lib.rs /w/work\\ tree\\ b/target/out/gen.rs\n\n\
             /w/work\\ tree\\ b/target/out/gen.rs:\n\n\
             # env-dep:OUT_DIR=/w/work tree b/target/out\n"
        );
    }

    #[test]
    fn roots_tokenize_and_expand_back() {
        let a = roots("/w/a");
        let t = a.tokenize("/w/a/src/lib.rs and /w/a/target/debug/x.d");
        assert_eq!(t, "@KACHE_WS@/src/lib.rs and @KACHE_TARGET@/debug/x.d");
        assert!(has_tokens(&t));
        assert_eq!(
            roots("/w/b").expand(&t),
            "/w/b/src/lib.rs and /w/b/target/debug/x.d"
        );
    }
}
