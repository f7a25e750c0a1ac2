//! Cache keys built from labelled, length-prefixed fields: two different
//! inputs can never serialize to the same byte string, whatever the values
//! contain (a delimiter inside a value cannot fake a field boundary). Fields are gathered into named groups so a miss can
//! be explained by the group that changed (`kache why-miss`).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct KeyBuilder {
    groups: BTreeMap<&'static str, blake3::Hasher>,
    current: &'static str,
}

impl KeyBuilder {
    pub fn new(domain: &'static str) -> KeyBuilder {
        let mut k = KeyBuilder::default();
        k.group("domain");
        k.field("domain", domain.as_bytes());
        k
    }

    /// Subsequent fields belong to `name`.
    pub fn group(&mut self, name: &'static str) -> &mut Self {
        self.current = name;
        self.groups.entry(name).or_default();
        self
    }

    /// Adds `label` = `value` to the current group.
    pub fn field(&mut self, label: &str, value: &[u8]) -> &mut Self {
        let h = self.groups.entry(self.current).or_default();
        h.update(&(label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
        self
    }

    pub fn str(&mut self, label: &str, value: &str) -> &mut Self {
        self.field(label, value.as_bytes())
    }

    /// Per-group digests (for why-miss) and the final key over all of them.
    pub fn finish(&self) -> (String, BTreeMap<String, String>) {
        let mut all = blake3::Hasher::new();
        let mut groups = BTreeMap::new();
        for (name, h) in &self.groups {
            let d = h.finalize();
            all.update(&(name.len() as u64).to_le_bytes());
            all.update(name.as_bytes());
            all.update(d.as_bytes());
            groups.insert(name.to_string(), d.to_hex().to_string());
        }
        (all.finalize().to_hex().to_string(), groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_like_values_never_collide() {
        let mut a = KeyBuilder::new("t");
        a.str("x", "a=b").str("y", "c");
        let mut b = KeyBuilder::new("t");
        b.str("x", "a").str("y", "b=c");
        assert_ne!(a.finish().0, b.finish().0);
        let mut c = KeyBuilder::new("t");
        c.str("x", "a\nb");
        let mut d = KeyBuilder::new("t");
        d.str("x", "a").str("", "b");
        assert_ne!(c.finish().0, d.finish().0);
    }

    #[test]
    fn groups_report_which_part_changed() {
        let mut a = KeyBuilder::new("t");
        a.group("args").str("o", "1").group("env").str("V", "1");
        let mut b = KeyBuilder::new("t");
        b.group("args").str("o", "1").group("env").str("V", "2");
        let (ka, ga) = a.finish();
        let (kb, gb) = b.finish();
        assert_ne!(ka, kb);
        assert_eq!(ga["args"], gb["args"]);
        assert_ne!(ga["env"], gb["env"]);
    }
}
