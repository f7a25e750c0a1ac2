//! Records the benchmark application stores: a word and how often it occurs.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordCount {
    pub word: String,
    pub count: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("empty input")]
    Empty,
}

/// Counts lowercase words in `text`, sorted by count then word.
pub fn count_words(text: &str) -> Result<Vec<WordCount>, ModelError> {
    let re = regex::Regex::new(r"[A-Za-z]+").expect("static regex");
    let mut map = std::collections::BTreeMap::<String, u64>::new();
    for m in re.find_iter(text) {
        *map.entry(m.as_str().to_lowercase()).or_default() += 1;
    }
    if map.is_empty() {
        return Err(ModelError::Empty);
    }
    let mut v: Vec<WordCount> = map.into_iter().map(|(word, count)| WordCount { word, count }).collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.word.cmp(&b.word)));
    Ok(v)
}
