//! Scheduling tests with a small in-process kernel: order, states, cancellation, names, paging.

use std::time::Duration;

use serde_json::json;
use tilegate_api::{Output, SessionKind, SessionState, StatementState};

use super::*;

/// Echoes the code back; `spin` runs until cancelled; `boom` panics.
struct EchoKernel;

impl Kernel for EchoKernel {
    fn execute(&self, job: &Job, ctx: &RunContext) -> Result<Data, Failure> {
        match job.code.as_str() {
            "spin" => {
                while !ctx.is_cancelled() {
                    ctx.set_progress(0.5);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(Failure::new("Cancelled", "cancelled"))
            }
            "boom" => panic!("kernel bug"),
            "fail" => Err(Failure::new("Oops", "it failed")),
            code => Ok(Data::from([("text/plain".into(), json!(format!("{}:{code}", job.language)))])),
        }
    }
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Arc::new(EchoKernel))
}

fn stmt(code: &str) -> CreateStatement {
    CreateStatement { code: code.into(), kind: None }
}

async fn wait_final(engine: &Engine, session: &str, id: u64) -> Statement {
    for _ in 0..2000 {
        let s = engine.statement(session, &id.to_string()).unwrap();
        if s.state.is_final() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("statement {id} never finished");
}

#[tokio::test]
async fn statements_run_in_order_and_session_returns_to_idle() {
    let engine = engine();
    let s = engine.create_session(CreateSession::default()).unwrap();
    assert_eq!((s.state, s.kind), (SessionState::Idle, SessionKind::Shared));
    let key = s.id.to_string();
    let ids: Vec<u64> = (0..5).map(|i| engine.submit(&key, stmt(&format!("{i}"))).unwrap().id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    for id in ids {
        let done = wait_final(&engine, &key, id).await;
        assert_eq!(done.state, StatementState::Available);
        assert_eq!(done.output.unwrap().text(), Some(format!("rust:{id}").as_str()));
        assert!(done.started > 0 && done.completed >= done.started);
    }
    assert_eq!(engine.session_state(&key).unwrap().state, SessionState::Idle);
}

#[tokio::test]
async fn failures_and_kernel_panics_become_error_outputs() {
    let engine = engine();
    let key = engine.create_session(CreateSession::default()).unwrap().id.to_string();
    engine.submit(&key, stmt("fail")).unwrap();
    engine.submit(&key, stmt("boom")).unwrap();
    engine.submit(&key, stmt("after")).unwrap();
    let fail = wait_final(&engine, &key, 0).await;
    assert!(matches!(fail.output, Some(Output::Error { ref ename, .. }) if ename == "Oops"));
    let boom = wait_final(&engine, &key, 1).await;
    assert!(matches!(boom.output, Some(Output::Error { ref ename, .. }) if ename == "InternalError"));
    assert_eq!(wait_final(&engine, &key, 2).await.state, StatementState::Available);
    assert_eq!(engine.session_state(&key).unwrap().state, SessionState::Idle);
}

#[tokio::test]
async fn cancel_running_and_waiting() {
    let engine = engine();
    let key = engine.create_session(CreateSession::default()).unwrap().id.to_string();
    engine.submit(&key, stmt("spin")).unwrap();
    engine.submit(&key, stmt("queued")).unwrap();
    while engine.statement(&key, "0").unwrap().state != StatementState::Running {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(engine.session_state(&key).unwrap().state, SessionState::Busy);
    engine.cancel(&key, "1").unwrap();
    assert_eq!(engine.statement(&key, "1").unwrap().state, StatementState::Cancelled);
    engine.cancel(&key, "0").unwrap();
    let s = wait_final(&engine, &key, 0).await;
    assert_eq!((s.state, s.output), (StatementState::Cancelled, None));
    assert_eq!(engine.session_state(&key).unwrap().state, SessionState::Idle);
    // Cancelling a finished statement changes nothing.
    engine.cancel(&key, "0").unwrap();
    assert_eq!(engine.statement(&key, "0").unwrap().state, StatementState::Cancelled);
}

#[tokio::test]
async fn names_ids_and_deletion() {
    let engine = engine();
    let named = CreateSession { name: Some("ocean".into()), kind: Some("sql".into()), ..Default::default() };
    let s = engine.create_session(named.clone()).unwrap();
    assert_eq!(engine.session("ocean").unwrap().id, s.id);
    assert!(matches!(engine.create_session(named.clone()), Err(Error::DuplicateName(_))));
    let bad = CreateSession { name: Some("42".into()), ..Default::default() };
    assert!(matches!(engine.create_session(bad), Err(Error::InvalidRequest(_))));
    // SQL sessions default to sql statements.
    engine.submit("ocean", stmt("x")).unwrap();
    assert_eq!(wait_final(&engine, "ocean", 0).await.output.unwrap().text(), Some("sql:x"));
    engine.delete_session("ocean").unwrap();
    assert!(matches!(engine.session("ocean"), Err(Error::SessionNotFound(_))));
    assert!(matches!(engine.submit(&s.id.to_string(), stmt("x")), Err(Error::SessionNotFound(_))));
    // The name is free again; the id is not reused.
    assert!(engine.create_session(named).unwrap().id > s.id);
}

#[tokio::test]
async fn listing_pages() {
    let engine = engine();
    for _ in 0..5 {
        engine.create_session(CreateSession::default()).unwrap();
    }
    let page = engine.list_sessions(1, 2);
    assert_eq!((page.from, page.total), (1, 5));
    assert_eq!(page.sessions.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
    for i in 0..4 {
        engine.submit("0", stmt(&i.to_string())).unwrap();
    }
    let desc = engine.statements("0", Page { from: 0, size: Some(2), descending: true }).unwrap();
    assert_eq!(desc.total_statements, 4);
    assert_eq!(desc.statements.iter().map(|s| s.id).collect::<Vec<_>>(), vec![3, 2]);
}

#[tokio::test]
async fn log_paging_uses_absolute_line_numbers() {
    let engine = Engine::new(EngineConfig { log_lines: 10, ..Default::default() }, Arc::new(EchoKernel));
    engine.create_session(CreateSession::default()).unwrap();
    for i in 0..20 {
        engine.submit("0", stmt(&i.to_string())).unwrap();
    }
    wait_final(&engine, "0", 19).await;
    let all = engine.session_log("0", Some(0), Some(-1)).unwrap();
    assert_eq!(all.total, 21);
    assert_eq!(all.log.len(), 10, "only the last 10 lines are kept");
    assert_eq!(all.from, 11);
    let tail = engine.session_log("0", None, Some(2)).unwrap();
    assert_eq!((tail.from, tail.log.len()), (19, 2));
}

#[tokio::test]
async fn session_limit() {
    let engine = Engine::new(EngineConfig { max_sessions: 2, ..Default::default() }, Arc::new(EchoKernel));
    engine.create_session(CreateSession::default()).unwrap();
    engine.create_session(CreateSession::default()).unwrap();
    assert!(matches!(engine.create_session(CreateSession::default()), Err(Error::TooManySessions(2))));
    engine.delete_session("0").unwrap();
    engine.create_session(CreateSession::default()).unwrap();
}

#[tokio::test]
async fn conf_kind_must_be_a_language() {
    let engine = engine();
    let conf = |v: serde_json::Value| CreateSession {
        kind: Some("spark".into()),
        conf: Some([(CONF_KIND.to_owned(), v)].into()),
        ..Default::default()
    };
    let s = engine.create_session(conf(json!("wasm"))).unwrap();
    assert_eq!((s.kind, s.default_language), (SessionKind::Spark, Language::Wasm));
    assert!(matches!(engine.create_session(conf(json!("cobol"))), Err(Error::InvalidRequest(_))));
    assert!(matches!(engine.create_session(conf(json!(3))), Err(Error::InvalidRequest(_))));
}

/// Lets a statement run until the test says stop (`hold`), so a session stays busy.
struct HoldKernel(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl Kernel for HoldKernel {
    fn execute(&self, job: &Job, _ctx: &RunContext) -> Result<Data, Failure> {
        if job.code == "hold" {
            let _ = self.0.lock().unwrap().recv();
        }
        Ok(Data::new())
    }
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_expire_leave_a_dead_record_then_go() {
    let engine = engine();
    let s = engine.create_session(CreateSession { idle_timeout: Some("10m".into()), ..Default::default() }).unwrap();
    let key = s.id.to_string();
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    assert_eq!(engine.session(&key).unwrap().state, SessionState::Idle);
    // Activity (a statement) restarts the idle clock.
    let st = engine.submit(&key, stmt("x")).unwrap();
    wait_final(&engine, &key, st.id).await;
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    assert_eq!(engine.session(&key).unwrap().state, SessionState::Idle);
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    let dead = engine.session(&key).unwrap();
    assert_eq!(dead.state, SessionState::Dead);
    assert!(dead.log.last().unwrap().contains("expired: it was idle for 10m"), "{:?}", dead.log);
    assert!(matches!(engine.submit(&key, stmt("y")), Err(Error::SessionNotActive { .. })));
    // Kept for the retention period (10 minutes by default), then forgotten.
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    assert!(matches!(engine.session(&key), Err(Error::SessionNotFound(_))));
}

#[tokio::test(start_paused = true)]
async fn a_busy_session_is_never_reaped() {
    let (release, hold) = std::sync::mpsc::channel();
    let engine = Engine::new(
        EngineConfig { idle_timeout: Some(Duration::from_secs(60)), ..Default::default() },
        Arc::new(HoldKernel(std::sync::Mutex::new(hold))),
    );
    let s = engine.create_session(CreateSession { ttl: Some("2m".into()), ..Default::default() }).unwrap();
    let key = s.id.to_string();
    let st = engine.submit(&key, stmt("hold")).unwrap();
    // Far past both the idle timeout and the ttl while the statement runs. (The clock does not
    // advance by itself while a blocking task runs: move it, then let the reaper look.)
    tokio::time::advance(Duration::from_secs(3600)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(engine.session(&key).unwrap().state, SessionState::Busy);
    release.send(()).unwrap();
    wait_final(&engine, &key, st.id).await;
    // Idle now, past its ttl: it expires at the next look.
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let dead = engine.session(&key).unwrap();
    assert_eq!(dead.state, SessionState::Dead);
    assert!(dead.log.last().unwrap().contains("ttl of 2m"), "{:?}", dead.log);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_session_and_silence_expires_it() {
    let engine = Engine::new(EngineConfig { idle_timeout: None, ..Default::default() }, Arc::new(EchoKernel));
    let s =
        engine.create_session(CreateSession { heartbeat_timeout_in_second: Some(60), ..Default::default() }).unwrap();
    let key = s.id.to_string();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert_eq!(engine.session(&key).unwrap().state, SessionState::Idle, "a GET is a heartbeat");
    }
    let _ = engine.list_sessions(0, 100); // listing is not a heartbeat
    tokio::time::sleep(Duration::from_secs(70)).await;
    let dead = engine.session(&key).unwrap();
    assert_eq!(dead.state, SessionState::Dead);
    assert!(dead.log.last().unwrap().contains("heartbeatTimeoutInSecond"), "{:?}", dead.log);
}

#[tokio::test]
async fn bad_lifetimes_are_refused() {
    let engine = engine();
    for request in [
        CreateSession { ttl: Some("forever".into()), ..Default::default() },
        CreateSession { idle_timeout: Some("10".into()), ..Default::default() },
        CreateSession { heartbeat_timeout_in_second: Some(-1), ..Default::default() },
    ] {
        assert!(matches!(engine.create_session(request), Err(Error::InvalidRequest(_))));
    }
}
