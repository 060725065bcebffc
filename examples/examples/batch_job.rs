//! Run with: `cargo run -p tilegate-examples --example batch_job` (with a gateway running on its
//! demo dataset; `TILEGATE_URL` overrides the default `http://127.0.0.1:8998`).
//!
//! A batch, as a scheduler (Airflow's Livy provider) runs one: the NEXUS time series snippet sent
//! once, outside any session; poll its state until it ends, then read its log, which ends with
//! the result.

use tilegate_sdk::{Client, CreateBatch, SessionState};

const SNIPPET: &str = include_str!("../snippets/time_series.rs");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TILEGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8998".into());
    let client = Client::new(&url)?;
    let request = CreateBatch {
        code: Some(SNIPPET.to_owned()),
        kind: Some("rust".into()),
        name: Some("sst time series".into()),
        ..Default::default()
    };
    let batch = client.submit_batch(&request).await?;
    println!("batch {} submitted: {}", batch.id, batch.state);
    let done = client.wait_batch(batch.id).await?;
    println!("batch {} ended: {}", done.id, done.state);
    let log = client.batch_log(done.id).await?;
    for line in &log {
        println!("  {line}");
    }
    if done.state != SessionState::Success {
        return Err(format!("batch {} ended {}", done.id, done.state).into());
    }
    Ok(())
}
