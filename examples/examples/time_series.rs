//! Run with: `cargo run -p tilegate-examples --example time_series` (with a gateway running on
//! its demo dataset; `TILEGATE_URL` overrides the default `http://127.0.0.1:8998`).
//!
//! Sends the NEXUS time series (`examples/snippets/time_series.rs`) as a `rust` statement (the
//! gateway compiles it to wasm and runs the map and reduce over the tiles in parallel), then prints
//! the first days of its answer, which has NEXUS's shape.

use tilegate_sdk::{Client, CreateSession, Language};

const TIME_SERIES: &str = include_str!("../snippets/time_series.rs");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TILEGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8998".into());
    let client = Client::new(&url)?;
    let session = client.create_session(&CreateSession::default()).await?;
    let output = client.run(session.id, Language::Rust, TIME_SERIES).await?;
    let days = output.json().and_then(|answer| answer["data"].as_array()).ok_or("the answer has no `data` list")?;
    println!("{} days; the first three:", days.len());
    for day in days.iter().take(3) {
        println!("{}", day[0]);
    }
    client.delete_session(session.id).await?;
    Ok(())
}
