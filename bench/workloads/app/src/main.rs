//! The benchmark application: counts words of a text through regex, SQLite,
//! zstd, tokio and rayon, and prints a deterministic JSON report, so two
//! builds can be compared by running them.
use clap::Parser;
use itertools::Itertools;
use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest;

#[derive(Parser)]
struct Args {
    /// Text to analyse.
    #[arg(default_value = "the quick brown fox jumps over the lazy dog the end")]
    text: String,
}

#[derive(Serialize)]
struct Report {
    words: Vec<model::WordCount>,
    compressed_bytes: usize,
    sqlite: String,
    sha256: String,
    b64: String,
    id: uuid::Uuid,
    squares: u64,
    epoch: String,
    settings: toml::Value,
    joined: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let args = Args::parse();
    let text = args.text.clone();
    let words = tokio::task::spawn_blocking(move || model::count_words(&text)).await??;
    let (words, compressed_bytes, sqlite) = store::roundtrip(&words)?;
    let digest = sha2::Sha256::digest(args.text.as_bytes());
    let squares: u64 = (1..=1000u64).into_par_iter().map(|x| x * x).sum();
    let epoch = chrono::DateTime::from_timestamp(0, 0).map(|d| d.to_rfc3339()).unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move { tx.send(squares).await.ok() });
    let got = rx.recv().await.unwrap_or(0);
    tracing::info!(got, "received");
    let report = Report {
        joined: words.iter().map(|w| w.word.as_str()).take(3).join(","),
        words,
        compressed_bytes,
        sqlite,
        sha256: hex::encode(digest),
        b64: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, args.text.as_bytes()),
        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, b"kache.bench"),
        squares: got,
        epoch,
        settings: toml::from_str("mode = \"bench\"\nlevel = 3")?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
