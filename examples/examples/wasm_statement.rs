//! Run with: `cargo run -p tilegate-examples --example wasm_statement` (with a gateway running;
//! `TILEGATE_URL` overrides the default `http://127.0.0.1:8998`).
//!
//! Opens a session, runs a WAT module whose `main` returns 42, prints the Livy output, and cleans up.

use tilegate_sdk::{Client, CreateSession, Language};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TILEGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8998".into());
    let client = Client::new(&url)?;
    let session = client.create_session(&CreateSession { kind: Some("wasm".into()), ..Default::default() }).await?;
    let output =
        client.run(session.id, Language::Wasm, r#"(module (func (export "main") (result i32) i32.const 42))"#).await?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    client.delete_session(session.id).await?;
    Ok(())
}
