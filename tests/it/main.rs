//! Integration tests: each starts the real gateway on `127.0.0.1:0` and drives it over HTTP,
//! through the SDK or, for malformed input, raw requests.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod bad_input;
mod livy;
mod wasm;

use std::time::Duration;

use tilegate_gateway::{AppState, Config, serve};
use tilegate_sdk::Client;
use tokio::sync::oneshot;

/// A WAT fixture from `sandbox/fixtures`.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../sandbox/fixtures/", $name, ".wat"))
    };
}
pub(crate) use fixture;

/// A running gateway; shuts down when dropped.
pub struct Gateway {
    /// The SDK client.
    pub client: Client,
    /// A plain HTTP client, for requests the SDK would never send.
    pub http: reqwest::Client,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Gateway {
    /// Starts a gateway with default settings on an ephemeral loopback port.
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    /// Starts a gateway with `config` (its `bind` is replaced by an ephemeral loopback port).
    pub async fn start_with(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = AppState::new(config).expect("gateway state");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, state, async move {
            let _ = rx.await;
        }));
        Self { client: Client::new(&url).expect("client"), http: reqwest::Client::new(), url, shutdown: Some(tx) }
    }

    /// A raw request; returns the status and the JSON body (every body must be JSON).
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"));
        (status, json)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Settings with a short statement deadline, for tests that hit it.
pub fn short_deadline(secs: f64) -> Config {
    Config { statement_timeout_secs: secs, ..Config::default() }
}

/// Polls until the statement leaves `waiting`/`running`, or panics after 30 s.
pub async fn wait_state(gw: &Gateway, session: u64, statement: u64, want: tilegate_sdk::StatementState) {
    for _ in 0..3000 {
        if gw.client.statement(session, statement).await.expect("statement").state == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("statement {statement} never became {want:?}");
}
