//! Durability: the real `tilegate` binary is killed with SIGKILL in the middle of a load, started
//! again on the same data directory, and must have every session, statement output and batch it
//! had reported, with the same ids; what was running ends as an error saying the gateway
//! restarted; new ids never reuse old ones; definitions, results and values of earlier `rust`
//! statements still work.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Process, temp_dir};

const ECHO: &str = include_str!("../../sandbox/fixtures/echo.wat");
const SPIN: &str = include_str!("../../sandbox/fixtures/spin.wat");

fn start(dir: &Path) -> Process {
    let config = "demo_dataset = false\nstatement_timeout_secs = 600.0\n";
    Process::start(env!("CARGO_BIN_EXE_tilegate"), dir, config, None)
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let (status, body) = call(http, reqwest::Method::GET, url.clone(), None).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let (status, body) = call(http, reqwest::Method::POST, url.clone(), Some(body)).await;
    assert_eq!(status, 201, "POST {url}: {body}");
    body
}

/// Polls until statement `id` of `session` is `available`.
async fn finished(http: &reqwest::Client, base: &str, session: u64, id: u64) -> Value {
    for _ in 0..3000 {
        let st = get(http, format!("{base}/sessions/{session}/statements/{id}")).await;
        if st["state"] == "available" {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("statement {session}/{id} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_nothing_it_reported() {
    let dir = temp_dir("restart");
    let http = reqwest::Client::new();
    let first = start(&dir);
    let base = first.url.clone();

    // A session whose rust definitions and results must survive.
    let repl = post(&http, format!("{base}/sessions"), json!({"kind": "shared", "name": "repl"})).await;
    let repl_id = repl["id"].as_u64().unwrap();
    let code = "fn double(x: i64) -> i64 { x * 2 }\nsession().set(\"offset\", 1000);\nvec![(1, double(21))]";
    post(&http, format!("{base}/sessions/repl/statements"), json!({"code": code, "kind": "rust"})).await;
    let defined = finished(&http, &base, repl_id, 0).await;
    assert_eq!(defined["output"]["status"], "ok", "{defined}");

    // A session with a statement running and one waiting behind it at the kill.
    let busy = post(&http, format!("{base}/sessions"), json!({"kind": "shared"})).await;
    let busy_id = busy["id"].as_u64().unwrap();
    post(&http, format!("{base}/sessions/{busy_id}/statements"), json!({"code": SPIN, "kind": "wasm"})).await;
    post(&http, format!("{base}/sessions/{busy_id}/statements"), json!({"code": ECHO, "kind": "wasm"})).await;

    // Batches: one finished, one running at the kill.
    let done_batch = post(&http, format!("{base}/batches"), json!({"code": ECHO, "kind": "wasm"})).await;
    let done_batch_id = done_batch["id"].as_u64().unwrap();
    let running_batch = post(&http, format!("{base}/batches"), json!({"code": SPIN, "kind": "wasm"})).await;
    let running_batch_id = running_batch["id"].as_u64().unwrap();
    for _ in 0..500 {
        if get(&http, format!("{base}/batches/{done_batch_id}")).await["state"] == "success" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done_batch = get(&http, format!("{base}/batches/{done_batch_id}/log?size=-1")).await;

    // The load: sessions submitting statements as fast as answers come, until the kill. Every
    // session and statement the gateway answered 201 for is remembered.
    let accepted: Arc<Mutex<BTreeMap<u64, Vec<u64>>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..8 {
        let (http, base, accepted) = (http.clone(), base.clone(), accepted.clone());
        load.push(tokio::spawn(async move {
            let Ok(response) = http.post(format!("{base}/sessions")).json(&json!({"kind": "shared"})).send().await
            else {
                return;
            };
            let Ok(session) = response.json::<Value>().await else { return };
            let id = session["id"].as_u64().unwrap();
            accepted.lock().unwrap().insert(id, Vec::new());
            loop {
                let body = json!({"code": ECHO, "kind": "wasm"});
                let sent = http.post(format!("{base}/sessions/{id}/statements")).json(&body).send().await;
                let Ok(response) = sent else { return };
                let Ok(statement) = response.json::<Value>().await else { return };
                accepted.lock().unwrap().get_mut(&id).unwrap().push(statement["id"].as_u64().unwrap());
            }
        }));
    }
    // Let the load run, and read back what the gateway says before the kill.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sessions_before = get(&http, format!("{base}/sessions?size=1000")).await;
    let mut statements_before = BTreeMap::new();
    for s in sessions_before["sessions"].as_array().unwrap() {
        let id = s["id"].as_u64().unwrap();
        statements_before.insert(id, get(&http, format!("{base}/sessions/{id}/statements")).await);
    }
    let busy_before = get(&http, format!("{base}/sessions/{busy_id}/statements/0")).await;
    assert_eq!(busy_before["state"], "running");

    first.kill_9();
    for task in load {
        let _ = task.await;
    }
    let accepted = accepted.lock().unwrap().clone();
    let total: usize = accepted.values().map(Vec::len).sum();
    assert!(total > 8, "the load ran ({total} statements accepted)");

    let second = start(&dir);
    let base = second.url.clone();

    // Every session, with the same id, name and app id.
    let sessions_after = get(&http, format!("{base}/sessions?size=1000")).await;
    let by_id = |list: &Value| -> BTreeMap<u64, Value> {
        list["sessions"].as_array().unwrap().iter().map(|s| (s["id"].as_u64().unwrap(), s.clone())).collect()
    };
    let (before, after) = (by_id(&sessions_before), by_id(&sessions_after));
    for id in accepted.keys().chain(before.keys()) {
        let a = after.get(id).unwrap_or_else(|| panic!("session {id} lost"));
        if let Some(b) = before.get(id) {
            assert_eq!((&a["name"], &a["appId"], &a["kind"]), (&b["name"], &b["appId"], &b["kind"]));
        }
        assert_eq!(a["state"], "idle", "session {id}: {a}");
    }

    // Every statement reported finished has the same output; every accepted one exists and is
    // finished now (done before the kill, or ended by the restart).
    for (id, list) in &statements_before {
        let now = get(&http, format!("{base}/sessions/{id}/statements")).await;
        for st in list["statements"].as_array().unwrap() {
            let sid = st["id"].as_u64().unwrap() as usize;
            let after = &now["statements"][sid];
            assert_eq!(after["code"], st["code"]);
            if st["state"] == "available" {
                assert_eq!(after["output"], st["output"], "session {id} statement {sid}");
                assert_eq!(after["completed"], st["completed"]);
            }
        }
    }
    let mut interrupted = 0;
    for (id, ids) in &accepted {
        let now = get(&http, format!("{base}/sessions/{id}/statements")).await;
        let list = now["statements"].as_array().unwrap();
        assert!(list.len() >= ids.len(), "session {id}: {} accepted, {} restored", ids.len(), list.len());
        for st in list {
            assert_eq!(st["state"], "available", "{st}");
            if st["output"]["ename"] == "GatewayRestarted" {
                interrupted += 1;
            } else {
                assert_eq!(st["output"]["status"], "ok", "{st}");
            }
        }
    }
    eprintln!("{total} statements accepted under load, {interrupted} ended by the restart");

    // What was running or waiting ends as an error that says why.
    for sid in 0..2 {
        let st = get(&http, format!("{base}/sessions/{busy_id}/statements/{sid}")).await;
        assert_eq!((&st["state"], &st["output"]["status"]), (&json!("available"), &json!("error")), "{st}");
        assert_eq!(st["output"]["ename"], "GatewayRestarted");
        let was = if sid == 0 { "running" } else { "waiting" };
        assert!(st["output"]["evalue"].as_str().unwrap().contains(was), "{st}");
    }

    // Batches: the finished one as it was; the running one dead, its log saying why.
    assert_eq!(get(&http, format!("{base}/batches/{done_batch_id}/log?size=-1")).await, done_batch);
    assert_eq!(get(&http, format!("{base}/batches/{done_batch_id}/state")).await["state"], "success");
    let dead = get(&http, format!("{base}/batches/{running_batch_id}")).await;
    assert_eq!(dead["state"], "dead");
    assert!(dead["log"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("restarted")), "{dead}");

    // New ids follow every id ever given.
    let newest_session = after.keys().max().copied().unwrap();
    let fresh = post(&http, format!("{base}/sessions"), json!({})).await;
    assert_eq!(fresh["id"].as_u64().unwrap(), newest_session + 1);
    let fresh_batch = post(&http, format!("{base}/batches"), json!({"code": ECHO, "kind": "wasm"})).await;
    assert_eq!(fresh_batch["id"].as_u64().unwrap(), running_batch_id + 1);
    let name_taken = call(&http, reqwest::Method::POST, format!("{base}/sessions"), Some(json!({"name": "repl"})));
    assert_eq!(name_taken.await.0, 400, "the restored session keeps its name");

    // The restored REPL: its definitions compile into the next cell, its result is readable.
    let code = "let earlier = session().get(\"result_0\").unwrap();\n\
                let kept = earlier.as_array().unwrap()[0].as_array().unwrap()[1].as_i64().unwrap();\n\
                let offset = session().get(\"offset\").unwrap().as_i64().unwrap();\n\
                vec![(2, double(4)), (3, kept + offset)]";
    let st = post(&http, format!("{base}/sessions/repl/statements"), json!({"code": code, "kind": "rust"})).await;
    assert_eq!(st["id"], 1, "statement ids continue");
    let st = finished(&http, &base, repl_id, 1).await;
    assert_eq!(st["output"]["status"], "ok", "{st}");
    assert_eq!(st["output"]["data"]["application/json"], json!([[2, 8], [3, 1042]]), "{st}");

    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
