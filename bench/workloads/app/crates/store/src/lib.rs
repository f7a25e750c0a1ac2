//! Persists word counts in an in-memory SQLite database (bundled C build) and
//! compresses an export with zstd (C build), so both C libraries are exercised.
use model::WordCount;

pub fn roundtrip(words: &[WordCount]) -> anyhow::Result<(Vec<WordCount>, usize, String)> {
    let db = rusqlite::Connection::open_in_memory()?;
    db.execute_batch("CREATE TABLE w (word TEXT PRIMARY KEY, count INTEGER NOT NULL)")?;
    for w in words {
        db.execute("INSERT INTO w VALUES (?1, ?2)", rusqlite::params![w.word, w.count as i64])?;
    }
    let mut st = db.prepare("SELECT word, count FROM w ORDER BY count DESC, word")?;
    let back = st
        .query_map([], |r| Ok(WordCount { word: r.get(0)?, count: r.get::<_, i64>(1)? as u64 }))?
        .collect::<Result<Vec<_>, _>>()?;
    let json = serde_json::to_vec(&back)?;
    let packed = zstd::encode_all(&json[..], 19)?;
    let unpacked = zstd::decode_all(&packed[..])?;
    anyhow::ensure!(unpacked == json, "zstd roundtrip differs");
    let version: String = db.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
    Ok((back, packed.len(), version))
}
