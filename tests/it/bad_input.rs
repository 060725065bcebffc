//! Hostile and malformed requests: each gets a 4xx with a JSON `msg`, and the gateway stays up.

use reqwest::Method;
use serde_json::json;
use tilegate_gateway::Config;

use crate::{Gateway, fixture};

async fn assert_refused(gw: &Gateway, method: Method, path: &str, body: Option<&str>, status: u16, needle: &str) {
    let (got, json) = gw.raw(method.clone(), path, body).await;
    assert_eq!(got, status, "{method} {path} {body:?} → {json}");
    let msg = json["msg"].as_str().unwrap_or_else(|| panic!("no msg in {json}"));
    assert!(msg.contains(needle), "{method} {path}: '{msg}' lacks '{needle}'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies() {
    let gw = Gateway::start().await;
    let post = Method::POST;
    assert_refused(&gw, post.clone(), "/sessions", Some("{not json"), 400, "Invalid JSON").await;
    assert_refused(&gw, post.clone(), "/sessions", Some(r#"{"kind": 3}"#), 400, "invalid type").await;
    assert_refused(&gw, post.clone(), "/sessions", Some(r#"{"bogus": true}"#), 400, "unknown field").await;
    assert_refused(&gw, post.clone(), "/sessions", Some("[1,2]"), 400, "Invalid JSON").await;
    // serde would fill the struct from an array by position (found by schemathesis).
    assert_refused(&gw, post.clone(), "/sessions", Some(r#"[null, "by-array"]"#), 400, "must be a JSON object").await;
    assert_refused(&gw, post.clone(), "/batches", Some(r#"[null, "SELECT 3", null]"#), 400, "JSON object").await;
    assert_refused(&gw, post.clone(), "/sessions", Some("7"), 400, "JSON object").await;
    assert_refused(&gw, post.clone(), "/sessions", Some(r#"{"name": "7"}"#), 400, "must not be a number").await;
    let bad_conf = r#"{"conf": {"tilegate.kind": "cobol"}}"#;
    assert_refused(&gw, post.clone(), "/sessions", Some(bad_conf), 400, "tilegate.kind").await;
    let s = gw.client.create_session(&Default::default()).await.unwrap();
    let path = format!("/sessions/{}/statements", s.id);
    assert_refused(&gw, post.clone(), &path, Some("{}"), 400, "missing field `code`").await;
    assert_refused(&gw, post.clone(), &path, Some(r#"{"code": 1}"#), 400, "invalid type").await;
    assert_refused(&gw, post.clone(), &path, Some(r#"{"code": "", "extra": 1}"#), 400, "unknown field").await;
    assert_refused(&gw, post.clone(), &path, Some(r#"{"code": "1", "kind": "cobol"}"#), 400, "Invalid statement kind")
        .await;
    assert_refused(&gw, post.clone(), &path, Some(r#"["1", "rust"]"#), 400, "JSON object").await;
    // Nothing was queued by the refused requests.
    assert_eq!(gw.client.statements(s.id).await.unwrap().total_statements, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_body_is_413() {
    let gw = Gateway::start_with(Config { max_body_bytes: 64 << 10, ..crate::test_config() }).await;
    let s = gw.client.create_session(&Default::default()).await.unwrap();
    let huge = json!({ "code": "x".repeat(128 << 10) }).to_string();
    let path = format!("/sessions/{}/statements", s.id);
    assert_refused(&gw, Method::POST, &path, Some(&huge), 413, "too large").await;
    assert_eq!(gw.client.run(s.id, tilegate_sdk::Language::Wasm, fixture!("answer")).await.unwrap().text(), Some("42"));
}

/// Code has a bound of its own, below the body's (a statement's code is kept for the session's
/// life): statements and inline batches over `max_code_bytes` get 413 naming it, and queue nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_over_max_code_bytes_is_413() {
    let gw = Gateway::start_with(Config { max_code_bytes: 1000, ..crate::test_config() }).await;
    let s = gw.client.create_session(&Default::default()).await.unwrap();
    let path = format!("/sessions/{}/statements", s.id);
    let long = json!({ "code": format!("{}1", " ".repeat(1000)), "kind": "sql" }).to_string();
    assert_refused(&gw, Method::POST, &path, Some(&long), 413, "max_code_bytes").await;
    let batch = json!({ "code": format!("{}1", " ".repeat(1000)), "kind": "sql" }).to_string();
    assert_refused(&gw, Method::POST, "/batches", Some(&batch), 413, "max_code_bytes").await;
    assert_eq!(gw.client.statements(s.id).await.unwrap().total_statements, 0);
    let fits = json!({ "code": format!("SELECT {}1", " ".repeat(900)), "kind": "sql" }).to_string();
    assert_eq!(gw.raw(Method::POST, &path, Some(&fits)).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_routes() {
    let gw = Gateway::start().await;
    assert_refused(&gw, Method::GET, "/sessions/99", None, 404, "Session '99' not found").await;
    assert_refused(&gw, Method::GET, "/sessions/nope/statements", None, 404, "not found").await;
    assert_refused(&gw, Method::POST, "/sessions/99/statements", Some(r#"{"code":"1"}"#), 404, "not found").await;
    let s = gw.client.create_session(&Default::default()).await.unwrap();
    let base = format!("/sessions/{}/statements", s.id);
    assert_refused(&gw, Method::GET, &format!("{base}/0"), None, 404, "Statement '0' not found").await;
    assert_refused(&gw, Method::GET, &format!("{base}/abc"), None, 404, "not found").await;
    assert_refused(&gw, Method::POST, &format!("{base}/-1/cancel"), None, 404, "not found").await;
    assert_refused(&gw, Method::GET, "/nowhere", None, 404, "No such route").await;
    assert_refused(&gw, Method::PUT, "/sessions", None, 405, "Method not allowed").await;
    assert_refused(&gw, Method::GET, "/sessions?from=abc", None, 400, "Invalid query").await;
    assert_refused(&gw, Method::GET, &format!("{base}?order=sideways"), None, 400, "Invalid order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_to_a_deleted_session_are_404() {
    let gw = Gateway::start().await;
    let s = gw.client.create_session(&Default::default()).await.unwrap();
    gw.client.delete_session(s.id).await.unwrap();
    let path = format!("/sessions/{}/statements", s.id);
    assert_refused(&gw, Method::POST, &path, Some(r#"{"code":"1"}"#), 404, "not found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_is_429() {
    let gw = Gateway::start_with(Config { max_sessions: 2, ..crate::test_config() }).await;
    gw.client.create_session(&Default::default()).await.unwrap();
    gw.client.create_session(&Default::default()).await.unwrap();
    assert_refused(&gw, Method::POST, "/sessions", Some("{}"), 429, "too many sessions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_lifetimes_are_400() {
    let gw = crate::Gateway::start().await;
    for body in [r#"{"ttl": "forever"}"#, r#"{"idleTimeout": "10"}"#, r#"{"heartbeatTimeoutInSecond": -5}"#] {
        let (status, json) = gw.raw(reqwest::Method::POST, "/sessions", Some(body)).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert!(json["msg"].is_string(), "{json}");
    }
    let (status, json) =
        gw.raw(reqwest::Method::POST, "/sessions", Some(r#"{"ttl": "2h", "idleTimeout": "10m"}"#)).await;
    assert_eq!(status, 201, "{json}");
    assert_eq!((json["ttl"].as_str(), json["idleTimeout"].as_str()), (Some("2h"), Some("10m")));
}
