//! Livy batches as Apache Airflow's Livy provider drives them: `POST /batches`, poll
//! `/batches/{id}/state` until final, read `/batches/{id}/log`, `DELETE` to kill.

use std::time::Duration;

use serde_json::{Value, json};

use crate::jobs::gateway_with_sst;
use crate::{Gateway, test_config};

async fn submit(gw: &Gateway, body: Value) -> u64 {
    let (status, batch) = gw.raw(reqwest::Method::POST, "/batches", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{batch}");
    assert_eq!(batch["state"], "running", "{batch}");
    batch["id"].as_u64().unwrap()
}

/// Polls the state until it is final; returns it and the whole log.
async fn finished(gw: &Gateway, id: u64) -> (String, Vec<String>) {
    for _ in 0..600 {
        let (_, state) = gw.raw(reqwest::Method::GET, &format!("/batches/{id}/state"), None).await;
        let state = state["state"].as_str().unwrap().to_owned();
        if state != "running" && state != "starting" {
            let (_, log) = gw.raw(reqwest::Method::GET, &format!("/batches/{id}/log?size=1000"), None).await;
            let lines = log["log"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect();
            return (state, lines);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("batch {id} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_files_and_inline_code_to_a_final_state() {
    let config = test_config();
    let jobs = config.data_dir.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("series.rs"), include_str!("../../examples/snippets/time_series.rs")).unwrap();
    std::fs::write(jobs.join("count.sql"), "SELECT COUNT(*) AS days FROM sst_tiles WHERE y = 1 AND x = 0").unwrap();
    let gw = gateway_with_sst(None, config).await;

    let id = submit(&gw, json!({"file": "series.rs", "name": "nexus time series", "conf": {"spark.x": "1"}})).await;
    let (state, log) = finished(&gw, id).await;
    assert_eq!(state, "success", "{log:?}");
    assert!(log.iter().any(|l| l.contains("\"iso_time\":\"2008-09-01T00:00:00+0000\"")), "{log:?}");
    assert!(log.last().unwrap().contains("succeeded"), "{log:?}");
    let (_, batch) = gw.raw(reqwest::Method::GET, &format!("/batches/{id}"), None).await;
    assert_eq!((batch["name"].as_str(), batch["state"].as_str()), (Some("nexus time series"), Some("success")));

    let id = submit(&gw, json!({"file": "count.sql"})).await;
    let (state, log) = finished(&gw, id).await;
    assert_eq!(state, "success", "{log:?}");
    assert!(log.iter().any(|l| l.contains("| 365  |")), "{log:?}");

    let id = submit(&gw, json!({"code": "6 * 7", "kind": "rust"})).await;
    let (state, log) = finished(&gw, id).await;
    assert_eq!(state, "success");
    assert_eq!(log[..2], [format!("batch {id} started: rust"), "42".to_owned()], "{log:?}");
    assert!(log[2].contains("succeeded"), "{log:?}");

    let id = submit(&gw, json!({"code": "panic!(\"bad input file\")"})).await;
    let (state, log) = finished(&gw, id).await;
    assert_eq!(state, "dead");
    assert!(log.iter().any(|l| l.starts_with("Panic: ") && l.contains("bad input file")), "{log:?}");

    let (_, list) = gw.raw(reqwest::Method::GET, "/batches", None).await;
    assert_eq!(list["total"], 4, "{list}");
    assert_eq!(list["sessions"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_batch_is_killed_and_bad_requests_are_400() {
    let gw = Gateway::start().await;
    let id = submit(&gw, json!({"code": "let mut i = 0u64;\nloop { i = std::hint::black_box(i + 1); }"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished = |gw: &Gateway| {
        let (http, url) = (gw.http.clone(), format!("{}/usage", gw.url));
        async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap()["statements"].as_u64().unwrap() }
    };
    let before = finished(&gw).await;
    let (status, body) = gw.raw(reqwest::Method::DELETE, &format!("/batches/{id}"), None).await;
    assert_eq!((status, body), (200, json!({"msg": "deleted"})));
    let (status, body) = gw.raw(reqwest::Method::GET, &format!("/batches/{id}"), None).await;
    assert_eq!(status, 404, "{body}");
    // Its work stops too: the endless loop ends (and is charged) within seconds, not at the deadline.
    let clock = std::time::Instant::now();
    while finished(&gw).await == before {
        assert!(clock.elapsed() < Duration::from_secs(5), "the killed batch still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for body in [
        json!({}),
        json!({"file": "a.rs", "code": "1"}),
        json!({"file": "../../etc/passwd"}),
        json!({"file": "/etc/passwd"}),
        json!({"file": "missing.rs"}),
        json!({"code": "1", "kind": "python"}),
        json!({"code": "1", "bogus": true}),
    ] {
        let (status, answer) = gw.raw(reqwest::Method::POST, "/batches", Some(&body.to_string())).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(answer["msg"].is_string(), "{answer}");
    }
    let (status, _) = gw.raw(reqwest::Method::GET, "/batches/77/log", None).await;
    assert_eq!(status, 404);
}

/// Apache Airflow's Livy provider from PyPI, unmodified: its `LivyHook` (what `LivyOperator` runs)
/// submits a snippet file of the jobs directory, polls the state to a terminal one, reads the log
/// with the NEXUS result, and deletes a running batch, as the operator's `on_kill` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_livy_hook_runs_and_kills_batches() {
    let config = test_config();
    let jobs = config.data_dir.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("series.rs"), include_str!("../../examples/snippets/time_series.rs")).unwrap();
    std::fs::write(jobs.join("spin.wat"), crate::fixture!("spin")).unwrap();
    let gw = gateway_with_sst(None, config).await;
    let script = r#"
import os, sys, tempfile, time
os.environ["AIRFLOW_CONN_LIVY_DEFAULT"] = sys.argv[1]
os.environ["AIRFLOW_HOME"] = os.path.join(tempfile.gettempdir(), "tilegate-airflow-home")
from airflow.providers.apache.livy.hooks.livy import LivyHook, BatchState
hook = LivyHook(livy_conn_id="livy_default")
batch = hook.post_batch(file="series.rs", name="sst time series")
while (state := hook.get_batch_state(batch)) not in hook.TERMINAL_STATES:
    time.sleep(0.2)
print(state.value)
log = hook.get_batch_logs(batch, 0, 100)["log"]
print(any('"cnt":238' in line for line in log))
spin = hook.post_batch(file="spin.wat")
print(hook.get_batch_state(spin).value)
print(hook.delete_batch(spin)["msg"])
"#;
    let stdout = crate::run_script(crate::airflow_python(), script, &[&gw.url]).await;
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.contains("[info")).collect();
    assert_eq!(lines, ["success", "True", "running", "deleted"], "{stdout}");
}
