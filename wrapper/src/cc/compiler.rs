//! Recognising a C/C++ compiler by its name, and reading what its version banner tells us.
//!
//! Owns the decision "is this first argument a C/C++ compiler?". Never runs the compiler: the
//! caller runs `--version` once per compiler binary (memoized per compiler, never per flag set:
//! a per-flag-set memo can carry per-file facts into other files' keys) and hands the banner in.

use std::path::Path;

/// The compiler family, as far as the name tells. `cc`/`c++` may be either: the caller
/// resolves them from the version banner ([`parse_version_banner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Gcc,
    Clang,
    /// `cc`, `c++`: a system compiler of unknown family.
    UnknownCc,
}

/// A source language kache caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    C,
    Cpp,
}

impl Language {
    /// The name used for `-x` and in the key.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cpp => "c++",
        }
    }
}

/// What a compiler's name says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompilerKind {
    pub family: Family,
    /// The driver's language: a C++ driver (`g++`) compiles `.c` files as C++.
    pub language: Language,
}

/// Recognises `cc`, `c++`, `gcc`, `g++`, `clang`, `clang++`, given as a bare name or a path,
/// optionally versioned (`gcc-13`, `clang++-17`, `gcc-13.2`), target-prefixed
/// (`aarch64-linux-gnu-gcc`, `x86_64-linux-gnu-g++-12`) or with a Windows `.exe`.
/// Returns `None` for everything else, including look-alikes such as `gcc-ar`, `ccache`,
/// `sccache`, `clang-cl` (MSVC-style arguments), `clang-format`, `rustc`.
pub fn compiler_kind(name_or_path: &str) -> Option<CompilerKind> {
    let file = name_or_path
        .rsplit(['/', '\\'])
        .next()
        .filter(|f| !f.is_empty())?;
    let file = file
        .strip_suffix(".exe")
        .or_else(|| file.strip_suffix(".EXE"))
        .unwrap_or(file);
    let stem = strip_version_suffix(file);
    const NAMES: [(&str, Family, Language); 6] = [
        ("clang++", Family::Clang, Language::Cpp),
        ("clang", Family::Clang, Language::C),
        ("g++", Family::Gcc, Language::Cpp),
        ("gcc", Family::Gcc, Language::C),
        ("c++", Family::UnknownCc, Language::Cpp),
        ("cc", Family::UnknownCc, Language::C),
    ];
    for (name, family, language) in NAMES {
        if stem == name {
            return Some(CompilerKind { family, language });
        }
        if let Some(prefix) = stem.strip_suffix(name).and_then(|p| p.strip_suffix('-')) {
            // A target prefix: `aarch64-linux-gnu`, `x86_64-w64-mingw32`, `musl`.
            let looks_like_target = !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && !prefix.ends_with('-');
            if looks_like_target {
                return Some(CompilerKind { family, language });
            }
        }
    }
    None
}

/// `gcc-13` → `gcc`, `clang++-17.0` → `clang++`; a name without a numeric suffix is unchanged.
fn strip_version_suffix(name: &str) -> &str {
    if let Some((head, tail)) = name.rsplit_once('-') {
        let numeric = !tail.is_empty()
            && tail.chars().all(|c| c.is_ascii_digit() || c == '.')
            && tail.starts_with(|c: char| c.is_ascii_digit());
        if numeric && !head.is_empty() {
            return head;
        }
    }
    name
}

/// Family and version read from the first lines of `<compiler> --version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompilerVersion {
    pub family: Family,
    /// Apple's clang numbers its releases differently from LLVM.
    pub apple: bool,
    pub major: u32,
}

/// Reads `gcc (Debian 12.2.0-14) 12.2.0`, `cc (GCC) 13.1.1 …`, `Debian clang version 14.0.6`,
/// `Apple clang version 15.0.0 (…)`, `clang version 17.0.1`. `None` when unrecognised.
pub fn parse_version_banner(banner: &str) -> Option<CompilerVersion> {
    let first = banner.lines().find(|l| !l.trim().is_empty())?;
    if let Some(pos) = first.find("clang version ") {
        let major = leading_number(&first[pos + "clang version ".len()..])?;
        return Some(CompilerVersion {
            family: Family::Clang,
            apple: first.contains("Apple"),
            major,
        });
    }
    let first_word = first.split_whitespace().next().unwrap_or("");
    let gcc_like = first.contains("(GCC)")
        || compiler_kind(first_word).is_some_and(|k| k.family != Family::Clang);
    if !gcc_like || banner.contains("clang") {
        return None;
    }
    let last = first.split_whitespace().last()?;
    Some(CompilerVersion {
        family: Family::Gcc,
        apple: false,
        major: leading_number(last)?,
    })
}

fn leading_number(s: &str) -> Option<u32> {
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

impl CompilerVersion {
    /// `-ffile-prefix-map` exists: GCC 8, LLVM clang 10, Apple clang 12.
    pub fn supports_file_prefix_map(&self) -> bool {
        match (self.family, self.apple) {
            (Family::Gcc, _) => self.major >= 8,
            (Family::Clang, false) => self.major >= 10,
            (Family::Clang, true) => self.major >= 12,
            (Family::UnknownCc, _) => false,
        }
    }

    /// `SOURCE_DATE_EPOCH` pins `__DATE__`/`__TIME__`: GCC 7, LLVM clang 16. Apple clang is
    /// treated as not honouring it (unverified), so time-macro users there pass through.
    pub fn honours_source_date_epoch(&self) -> bool {
        match (self.family, self.apple) {
            (Family::Gcc, _) => self.major >= 7,
            (Family::Clang, false) => self.major >= 16,
            _ => false,
        }
    }
}

/// True when `path` names a C/C++ compiler (used by shims and wrapper-mode dispatch).
pub fn is_compiler(path: &Path) -> bool {
    path.to_str().and_then(compiler_kind).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_compilers_by_name_and_path() {
        let cases = [
            ("cc", Family::UnknownCc, Language::C),
            ("c++", Family::UnknownCc, Language::Cpp),
            ("gcc", Family::Gcc, Language::C),
            ("g++", Family::Gcc, Language::Cpp),
            ("clang", Family::Clang, Language::C),
            ("clang++", Family::Clang, Language::Cpp),
            ("/usr/bin/gcc-13", Family::Gcc, Language::C),
            ("clang-16", Family::Clang, Language::C),
            ("clang++-17", Family::Clang, Language::Cpp),
            ("g++-12", Family::Gcc, Language::Cpp),
            ("gcc-13.2", Family::Gcc, Language::C),
            ("aarch64-linux-gnu-gcc", Family::Gcc, Language::C),
            (
                "/usr/bin/x86_64-linux-gnu-g++-12",
                Family::Gcc,
                Language::Cpp,
            ),
            ("x86_64-w64-mingw32-gcc", Family::Gcc, Language::C),
            ("C:\\llvm\\bin\\clang.exe", Family::Clang, Language::C),
            ("arm-none-eabi-cc", Family::UnknownCc, Language::C),
        ];
        for (name, family, language) in cases {
            assert_eq!(
                compiler_kind(name),
                Some(CompilerKind { family, language }),
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_look_alikes() {
        for name in [
            "rustc",
            "cargo",
            "ccache",
            "sccache",
            "kache",
            "gcc-ar",
            "gcc-nm",
            "gcc-ranlib",
            "x86_64-linux-gnu-gcc-ar-12",
            "clang-cl",
            "clang-format",
            "clang-tidy",
            "tcc",
            "icc",
            "distcc",
            "cpp",
            "c++filt",
            "ld",
            "",
            "/usr/bin/",
            "-gcc",
            "clang-",
            "gcc-x",
        ] {
            assert_eq!(compiler_kind(name), None, "{name}");
        }
    }

    #[test]
    fn reads_version_banners() {
        let gcc = parse_version_banner("gcc (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright").unwrap();
        assert_eq!((gcc.family, gcc.major), (Family::Gcc, 12));
        assert!(gcc.supports_file_prefix_map() && gcc.honours_source_date_epoch());
        let cc = parse_version_banner("cc (GCC) 7.3.0\n").unwrap();
        assert_eq!((cc.family, cc.major), (Family::Gcc, 7));
        assert!(!cc.supports_file_prefix_map());
        let clang = parse_version_banner("Debian clang version 14.0.6\nTarget: x86_64").unwrap();
        assert_eq!(
            (clang.family, clang.major, clang.apple),
            (Family::Clang, 14, false)
        );
        assert!(clang.supports_file_prefix_map() && !clang.honours_source_date_epoch());
        let apple = parse_version_banner("Apple clang version 15.0.0 (clang-1500.1)").unwrap();
        assert!(apple.apple && !apple.honours_source_date_epoch());
        assert_eq!(parse_version_banner("rustc 1.80.0"), None);
    }
}
