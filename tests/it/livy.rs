//! The Livy REST contract: status codes, headers, JSON shapes and states real clients rely on.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tilegate_sdk::{CreateSession, Language, SessionKind, SessionState, StatementState};

use crate::{Gateway, fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_is_one_pylivy_accepts() {
    let gw = Gateway::start().await;
    let (status, body) = gw.raw(Method::GET, "/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], "0.8.0-incubating");
    assert_eq!(body["tilegateVersion"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_session_is_201_with_location_and_every_livy_key() {
    let gw = Gateway::start().await;
    let response = gw
        .http
        .post(format!("{}/sessions", gw.url))
        .json(&json!({"kind": "pyspark", "driverMemory": "1g", "numExecutors": 3, "heartbeatTimeoutInSecond": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(location, format!("/sessions/{}", body["id"]));
    for key in ["id", "name", "appId", "owner", "proxyUser", "state", "kind", "appInfo", "log", "ttl"] {
        assert!(body.get(key).is_some(), "session JSON lacks '{key}': {body}");
    }
    assert!(body["id"].is_u64());
    assert_eq!(body["kind"], "pyspark");
    assert_eq!(body["state"], "idle");
    assert_eq!(body["driverMemory"], "1g");
    assert_eq!(body["appId"].as_str().unwrap().len(), 36, "appId is a UUID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_kinds_are_only_livys() {
    let gw = Gateway::start().await;
    for (asked, reported) in [
        ("scala", "spark"),
        ("python", "pyspark"),
        ("r", "sparkr"),
        ("sql", "sql"),
        ("shared", "shared"),
        ("rust", "shared"),
        ("wasm", "shared"),
    ] {
        let (status, body) = gw.raw(Method::POST, "/sessions", Some(&json!({ "kind": asked }).to_string())).await;
        assert_eq!((status, body["kind"].as_str()), (201, Some(reported)), "{asked}");
    }
    let (status, body) = gw.raw(Method::POST, "/sessions", Some(r#"{"kind":"pyspark3"}"#)).await;
    assert_eq!(status, 400);
    assert!(body["msg"].as_str().unwrap().contains("Invalid kind"), "{body}");
    // An empty body creates a shared session, as Livy's default kind.
    let (status, body) = gw.raw(Method::POST, "/sessions", None).await;
    assert_eq!((status, body["kind"].as_str()), (201, Some("shared")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_get_state_log_delete() {
    let gw = Gateway::start().await;
    for _ in 0..3 {
        gw.client.create_session(&CreateSession::default()).await.unwrap();
    }
    let page = gw.client.list_sessions(1, 1).await.unwrap();
    assert_eq!((page.from, page.total, page.sessions.len()), (1, 3, 1));
    assert_eq!(page.sessions[0].id, 1);

    let state = gw.client.session_state(2).await.unwrap();
    assert_eq!((state.id, state.state), (2, SessionState::Idle));
    let log = gw.client.session_log(2, Some(0), None).await.unwrap();
    assert!(log.log[0].contains("session 2 started"), "{log:?}");

    let (status, body) = gw.raw(Method::DELETE, "/sessions/2", None).await;
    assert_eq!((status, body), (200, json!({"msg": "deleted"})));
    let (status, body) = gw.raw(Method::GET, "/sessions/2", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["msg"], "Session '2' not found.");
    let (status, _) = gw.raw(Method::DELETE, "/sessions/2", None).await;
    assert_eq!(status, 404);
    assert_eq!(gw.client.list_sessions(0, 100).await.unwrap().total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_routes_accept_names() {
    let gw = Gateway::start().await;
    let s = gw
        .client
        .create_session(&CreateSession { name: Some("sst-study".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(gw.client.session("sst-study").await.unwrap().id, s.id);
    let out = gw.client.run("sst-study", Language::Wasm, fixture!("answer")).await.unwrap();
    assert_eq!(out.text(), Some("42"));
    let (status, body) = gw.raw(Method::POST, "/sessions", Some(r#"{"name":"sst-study"}"#)).await;
    assert_eq!(status, 400);
    assert!(body["msg"].as_str().unwrap().contains("Duplicate"), "{body}");
    gw.client.delete_session("sst-study").await.unwrap();
    assert!(gw.client.session("sst-study").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_shapes_and_listing() {
    let gw = Gateway::start().await;
    let s = gw.client.create_session(&CreateSession { kind: Some("wasm".into()), ..Default::default() }).await.unwrap();
    let response = gw
        .http
        .post(format!("{}/sessions/{}/statements", gw.url, s.id))
        .json(&json!({"code": fixture!("answer")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], format!("/sessions/{}/statements/0", s.id).as_str());
    let submitted: serde_json::Value = response.json().await.unwrap();
    assert_eq!(submitted["id"], 0);
    assert!(submitted["progress"].is_number(), "progress is never null: {submitted}");
    assert!(submitted.get("output").is_some());

    let done = gw.client.wait(s.id, 0).await.unwrap();
    let (status, body) = gw.raw(Method::GET, &format!("/sessions/{}/statements/0", s.id), None).await;
    assert_eq!(status, 200);
    for key in ["id", "code", "state", "output", "progress", "started", "completed"] {
        assert!(body.get(key).is_some(), "statement JSON lacks '{key}': {body}");
    }
    assert_eq!(body["state"], "available");
    assert_eq!(body["progress"], 1.0);
    assert_eq!(
        body["output"],
        json!({"status": "ok", "execution_count": 0, "data": {"text/plain": "42", "application/json": 42}})
    );
    assert!(done.completed >= done.started && done.started > 0);

    gw.client.run(s.id, Language::Wasm, fixture!("answer")).await.unwrap();
    let (status, list) = gw.raw(Method::GET, &format!("/sessions/{}/statements?order=desc&size=1", s.id), None).await;
    assert_eq!(status, 200);
    assert_eq!(list["total_statements"], 2);
    assert_eq!(list["statements"][0]["id"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_in_order_and_the_session_is_busy_meanwhile() {
    let gw = Gateway::start_with(crate::short_deadline(0.5)).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let slow = gw.client.submit(s.id, Some(Language::Wasm), fixture!("spin")).await.unwrap();
    let quick = gw.client.submit(s.id, Some(Language::Wasm), fixture!("answer")).await.unwrap();
    assert_eq!((slow.id, quick.id), (0, 1));
    assert_eq!(gw.client.session(s.id).await.unwrap().state, SessionState::Busy);
    let second = gw.client.wait(s.id, 1).await.unwrap();
    let first = gw.client.statement(s.id, 0).await.unwrap();
    assert_eq!(first.state, StatementState::Available);
    assert!(second.started >= first.completed, "statement 1 started before statement 0 finished");
    assert_eq!(gw.client.session(s.id).await.unwrap().state, SessionState::Idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_statement_leaves_session_idle_not_error() {
    let gw = Gateway::start().await;
    let s =
        gw.client.create_session(&CreateSession { kind: Some("spark".into()), ..Default::default() }).await.unwrap();
    let err = gw.client.run(s.id, Language::Wasm, fixture!("divide_by_zero")).await.unwrap_err();
    assert!(matches!(err, tilegate_sdk::Error::Statement { ref ename, .. } if ename == "Trap"), "{err}");
    let session = gw.client.session(s.id).await.unwrap();
    assert_eq!((session.state, session.kind), (SessionState::Idle, SessionKind::Spark));
    assert!(session.log.iter().any(|l| l.contains("failed")), "{:?}", session.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_is_prompt_and_keeps_output_null() {
    let gw = Gateway::start().await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    gw.client.submit(s.id, Some(Language::Wasm), fixture!("spin")).await.unwrap();
    gw.client.submit(s.id, Some(Language::Wasm), fixture!("answer")).await.unwrap();
    crate::wait_state(&gw, s.id, 0, StatementState::Running).await;
    let (status, body) = gw.raw(Method::POST, &format!("/sessions/{}/statements/0/cancel", s.id), None).await;
    assert_eq!((status, body), (200, json!({"msg": "canceled"})));
    let cancelled = gw.client.wait(s.id, 0).await.unwrap();
    assert_eq!((cancelled.state, cancelled.output), (StatementState::Cancelled, None));
    // The next statement runs, and the session is usable afterwards.
    assert_eq!(gw.client.wait(s.id, 1).await.unwrap().output.unwrap().text(), Some("42"));
    assert_eq!(gw.client.session(s.id).await.unwrap().state, SessionState::Idle);
}

/// `?wait=` long-polls a statement: the answer comes when the statement becomes final (here,
/// cancelled by another request while the poll waits), or with its current state once the wait runs
/// out; a wait that is not 0 to 60 seconds is a 400 that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_the_statement_finishes() {
    let gw = Gateway::start().await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    gw.client.submit(s.id, Some(Language::Wasm), fixture!("spin")).await.unwrap();
    crate::wait_state(&gw, s.id, 0, StatementState::Running).await;
    let (status, body) = gw.raw(Method::GET, &format!("/sessions/{}/statements/0?wait=0.2", s.id), None).await;
    assert_eq!((status, &body["state"]), (200, &json!("running")), "{body}");

    let client = gw.client.clone();
    let clock = std::time::Instant::now();
    let poll = tokio::spawn(async move { client.statement_when_final(s.id, 0, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll answered while the statement was still running");
    gw.client.cancel(s.id, 0).await.unwrap();
    let done = poll.await.unwrap().unwrap();
    assert_eq!((done.state, done.output), (StatementState::Cancelled, None));
    // Woken by the change, not by the end of its 30 s.
    assert!(clock.elapsed() < Duration::from_secs(20), "the poll took {:?}", clock.elapsed());
    // A final statement is answered at once, whatever the wait.
    let again = gw.client.statement_when_final(s.id, 0, Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.state, StatementState::Cancelled);

    for wait in ["-1", "61", "NaN", "soon"] {
        let (status, body) = gw.raw(Method::GET, &format!("/sessions/{}/statements/0?wait={wait}", s.id), None).await;
        assert_eq!(status, 400, "wait={wait}: {body}");
        assert!(body["msg"].as_str().unwrap().contains("wait"), "wait={wait}: {body}");
    }
    let (status, _) = gw.raw(Method::GET, "/sessions/999/statements/0?wait=1", None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_check_is_off_by_default_and_enforced_when_on() {
    let gw = Gateway::start_with(tilegate_gateway::Config { csrf_protection: true, ..crate::test_config() }).await;
    let (status, body) = gw.raw(Method::POST, "/sessions", Some("{}")).await;
    assert_eq!(status, 400);
    assert!(body["msg"].as_str().unwrap().contains("CSRF"), "{body}");
    let ok =
        gw.http.post(format!("{}/sessions", gw.url)).header("X-Requested-By", "me").body("{}").send().await.unwrap();
    assert_eq!(ok.status(), 201);
    let (status, _) = gw.raw(Method::GET, "/sessions", None).await;
    assert_eq!(status, 200, "GET needs no header");
    // Every route that changes state needs it, whatever it is.
    for (method, path) in [(Method::DELETE, "/sessions/0"), (Method::POST, "/batches"), (Method::POST, "/datasets")] {
        let (status, body) = gw.raw(method.clone(), path, Some("{}")).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(body["msg"].as_str().unwrap().contains("CSRF"), "{method} {path}: {body}");
    }
    // Routing first: an unknown route is 404 and a wrong method 405, header or not.
    assert_eq!(gw.raw(Method::POST, "/nowhere", Some("{}")).await.0, 404);
    assert_eq!(gw.raw(Method::TRACE, "/health", None).await.0, 405);
    assert_eq!(gw.raw(Method::DELETE, "/version", None).await.0, 405);

    let open = Gateway::start().await;
    assert_eq!(open.raw(Method::POST, "/sessions", Some("{}")).await.0, 201);
}
