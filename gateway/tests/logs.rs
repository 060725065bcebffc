//! Logs: every request carries an `x-request-id` (the caller's, or a new one, returned either
//! way), and every log line of a request names it and the session; statement lines name the
//! session and statement.

mod support;

use support::{Process, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_name_the_request_and_the_session() {
    let dir = temp_dir("logs");
    let log = dir.join("stderr.log");
    let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, "demo_dataset = false\n", Some(&log));
    let http = reqwest::Client::new();
    let url = &gateway.url;

    let created = http.post(format!("{url}/sessions")).header("x-request-id", "req-create").body("{}").send().await;
    let created = created.unwrap();
    assert_eq!(created.headers()["x-request-id"], "req-create");
    let session: serde_json::Value = created.json().await.unwrap();
    let id = session["id"].as_u64().unwrap();
    let wat = r#"(module (func (export "main") (result i32) i32.const 42))"#;
    let body = serde_json::json!({"kind": "wasm", "code": wat});
    let submitted = http
        .post(format!("{url}/sessions/{id}/statements"))
        .header("x-request-id", "req-submit")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 201);
    let anonymous = http.get(format!("{url}/sessions/{id}")).send().await.unwrap();
    let generated = anonymous.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid_like(&generated), "a request without an id gets one: {generated}");
    for _ in 0..500 {
        let st: serde_json::Value =
            http.get(format!("{url}/sessions/{id}/statements/0")).send().await.unwrap().json().await.unwrap();
        if st["state"] == "available" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    gateway.kill_9();

    let text = std::fs::read_to_string(&log).unwrap();
    let line = |needle: &str| -> String {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
            .to_owned()
    };
    let created = line("session created");
    assert!(created.contains("req-create"), "{created}");
    let submitted = line("statement submitted");
    for field in ["req-submit", &format!("session={id}"), "statement=0", "language=wasm"] {
        assert!(submitted.contains(field), "{field} missing: {submitted}");
    }
    let finished = line("statement finished");
    for field in [&format!("session={id}"), "statement=0", "outcome=\"ok\""] {
        assert!(finished.contains(field), "{field} missing: {finished}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}
