//! Operations routes: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use serde_json::json;
use tilegate_sdk::{CreateSession, Language};

use crate::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let gw = Gateway::start().await;
    let (status, body) = gw.raw(reqwest::Method::GET, "/health", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // Ready once the guest prelude is built (503 with a JSON reason until then).
    let mut ready = None;
    for _ in 0..600 {
        let (status, body) = gw.raw(reqwest::Method::GET, "/ready", None).await;
        if status == 200 {
            ready = Some(body);
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body["msg"].as_str().unwrap().contains("starting"), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = ready.expect("ready within a minute");
    assert_eq!((ready["status"].as_str(), ready["rust"].as_str()), (Some("ready"), Some("ready")), "{ready}");

    let s = gw.client.create_session(&CreateSession::default()).await.unwrap().id;
    gw.client.run(s, Language::Rust, "6 * 7").await.unwrap();
    gw.client.run(s, Language::Sql, "SELECT 1").await.unwrap();
    gw.client.run(s, Language::Rust, "panic!(\"no\")").await.unwrap_err();

    let response = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
    for expected in [
        "tilegate_sessions{state=\"idle\"} 1\n",
        "tilegate_statement_seconds_count{language=\"rust\",outcome=\"ok\"} 1\n",
        "tilegate_statement_seconds_count{language=\"rust\",outcome=\"error\"} 1\n",
        "tilegate_statement_seconds_count{language=\"sql\",outcome=\"ok\"} 1\n",
        "# TYPE tilegate_compile_seconds histogram\n",
        "tilegate_tiles_read_total 0\n",
        "tilegate_datasets 0\n",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}
