//! Run with: `cargo run -p tilegate-examples --example time_series` (with a gateway running on
//! its demo dataset; `TILEGATE_URL` overrides the default `http://127.0.0.1:8998`).
//!
//! Sends the NEXUS time series as a `rust` statement (the gateway compiles it to wasm and runs the
//! map and reduce over the tiles in parallel), then prints the first days' rows.

use tilegate_sdk::{Client, CreateSession, Language};

const TIME_SERIES: &str = include_str!("../snippets/time_series.rs");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TILEGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8998".into());
    let client = Client::new(&url)?;
    let session = client.create_session(&CreateSession::default()).await?;
    let output = client.run(session.id, Language::Rust, TIME_SERIES).await?;
    let rows = output.json().and_then(|rows| rows.as_array()).ok_or("the statement returned no rows")?;
    println!("{} days; the first three:", rows.len());
    for row in rows.iter().take(3) {
        println!("{row}");
    }
    client.delete_session(session.id).await?;
    Ok(())
}
