//! Run with: `cargo run -p tilegate-examples --example sql_query` (with a gateway running on its
//! demo dataset; `TILEGATE_URL` overrides the default `http://127.0.0.1:8998`).
//!
//! The NEXUS time series as one SQL query, read back as typed rows, with the statement's progress.

use serde::Deserialize;
use tilegate_sdk::{Client, CreateSession};

/// One day of the time series; fields are the query's column names.
#[derive(Debug, Deserialize)]
struct Day {
    time: String,
    cnt: u64,
    mean: f64,
    std: f64,
}

const QUERY: &str = "SELECT time, COUNT(sst) AS cnt, SUM(sst * cos(radians(lat))) / SUM(cos(radians(lat))) AS mean,
       STDDEV_POP(sst) AS std
FROM sst
WHERE lat BETWEEN 45 AND 60 AND lon BETWEEN -150 AND -120 AND time BETWEEN '2008-09-01' AND '2008-09-16'
GROUP BY time ORDER BY time";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TILEGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8998".into());
    let client = Client::new(&url)?;
    let session = client.create_session(&CreateSession { kind: Some("sql".into()), ..Default::default() }).await?;
    let days: Vec<Day> = client.sql(session.id, QUERY).await?;
    println!("{} days", days.len());
    for day in days.iter().take(3) {
        println!("{}  cnt {}  mean {:.3}  std {:.3}", day.time, day.cnt, day.mean, day.std);
    }
    client.delete_session(session.id).await?;
    Ok(())
}
