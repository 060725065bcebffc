//! Scheduling tests with a small in-process kernel: order, states, cancellation, names, paging.

use std::time::Duration;

use serde_json::json;
use tilegate_api::{Output, SessionKind, SessionState, StatementState};

use super::*;

/// Echoes the code back; `spin` runs until cancelled; `boom` panics.
struct EchoKernel;

impl Kernel for EchoKernel {
    fn open(&self, _: Opening, _: &mut dyn Iterator<Item = Restored>) -> Arc<dyn KernelSession> {
        Arc::new(EchoKernel)
    }
}

impl KernelSession for EchoKernel {
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

/// Statement `id`, once final (the engine's long poll: woken by the statement's change).
async fn wait_final(engine: &Engine, session: &str, id: u64) -> Statement {
    let s = engine.statement_when_final(session, &id.to_string(), Duration::from_secs(10)).await.unwrap();
    assert!(s.state.is_final(), "statement {id} never finished");
    s.parsed().unwrap()
}

/// Statement `id` once it is `state`, woken by the session's changes (no polling).
async fn wait_state(engine: &Engine, session: &str, id: u64, state: StatementState) {
    let cell = engine.find(session).unwrap();
    loop {
        let mut changed = std::pin::pin!(cell.changed.notified());
        changed.as_mut().enable();
        if engine.statement(session, &id.to_string()).unwrap().state == state {
            return;
        }
        tokio::time::timeout(Duration::from_secs(10), changed).await.expect("the statement did not change in 10 s");
    }
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
    wait_state(&engine, &key, 0, StatementState::Running).await;
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
#[derive(Clone)]
struct HoldKernel(Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>);

impl Kernel for HoldKernel {
    fn open(&self, _: Opening, _: &mut dyn Iterator<Item = Restored>) -> Arc<dyn KernelSession> {
        Arc::new(self.clone())
    }
}

impl KernelSession for HoldKernel {
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
        Arc::new(HoldKernel(Arc::new(std::sync::Mutex::new(hold)))),
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

/// Echoes like [`EchoKernel`] and records the history each session was opened with.
#[derive(Default)]
struct RecordingKernel(std::sync::Mutex<Vec<(u64, Vec<String>)>>);

impl Kernel for RecordingKernel {
    fn open(&self, session: Opening, history: &mut dyn Iterator<Item = Restored>) -> Arc<dyn KernelSession> {
        let codes = history.map(|(job, _)| job.code).collect();
        self.0.lock().unwrap().push((session.id, codes));
        Arc::new(EchoKernel)
    }
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tilegate-sessions-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("state.sqlite")
}

fn open_engine(path: &std::path::Path, kernel: Arc<dyn Kernel>) -> Engine {
    let store = Arc::new(Store::open(path).unwrap());
    Engine::open(EngineConfig::default(), kernel, Arc::default(), store).unwrap()
}

#[tokio::test]
async fn a_restarted_engine_has_every_session_statement_and_output_and_never_reuses_ids() {
    let path = temp_db("restore");
    let first = open_engine(&path, Arc::new(EchoKernel));
    let a = first.create_session(CreateSession { name: Some("alpha".into()), ..Default::default() }).unwrap();
    for code in ["one", "fail", "two"] {
        let st = first.submit("alpha", stmt(code)).unwrap();
        wait_final(&first, "alpha", st.id).await;
    }
    let b = first.create_session(CreateSession::default()).unwrap();
    let spinning = first.submit(&b.id.to_string(), stmt("spin")).unwrap();
    let queued = first.submit(&b.id.to_string(), stmt("after")).unwrap();
    let c = first.create_session(CreateSession::default()).unwrap();
    first.delete_session(&c.id.to_string()).unwrap();
    wait_state(&first, &b.id.to_string(), 0, StatementState::Running).await;
    let before = serde_json::to_value(first.statements("alpha", Page::default()).unwrap()).unwrap();
    let log_before = first.session_log("alpha", Some(0), Some(-1)).unwrap();

    // A second engine on the same file while the first still runs: what a restart after
    // `kill -9` finds (nothing was shut down).
    let kernel = Arc::new(RecordingKernel::default());
    let second = open_engine(&path, kernel.clone());
    assert_eq!(second.list_sessions(0, 100).total, 2, "the deleted session stays deleted");
    let restored = second.session("alpha").unwrap();
    assert_eq!((restored.id, restored.state, restored.app_id.clone()), (a.id, SessionState::Idle, a.app_id));
    assert_eq!(serde_json::to_value(second.statements("alpha", Page::default()).unwrap()).unwrap(), before);
    let log_after = second.session_log("alpha", Some(0), Some(-1)).unwrap();
    assert_eq!(log_after.log[..log_before.log.len()], log_before.log[..]);
    assert!(log_after.log.last().unwrap().starts_with("gateway restarted"), "{:?}", log_after.log);

    let key = b.id.to_string();
    for id in [spinning.id, queued.id] {
        let st = second.statement(&key, &id.to_string()).unwrap().parsed().unwrap();
        assert_eq!(st.state, StatementState::Available);
        match st.output.unwrap() {
            Output::Error { ename, evalue, .. } => {
                assert_eq!(ename, "GatewayRestarted");
                assert!(evalue.contains(if id == spinning.id { "running" } else { "waiting" }), "{evalue}");
            }
            other => panic!("statement {id}: {other:?}"),
        }
    }
    // The kernel heard each live session's successful statements, in order.
    let heard = kernel.0.lock().unwrap().clone();
    assert_eq!(heard, vec![(a.id, vec!["one".to_owned(), "two".to_owned()]), (b.id, vec![])]);

    // The restored sessions take statements; new ids follow every id ever given.
    let st = second.submit("alpha", stmt("three")).unwrap();
    assert_eq!(st.id, 3);
    assert_eq!(wait_final(&second, "alpha", 3).await.output.unwrap().text(), Some("rust:three"));
    let d = second.create_session(CreateSession::default()).unwrap();
    assert_eq!(d.id, c.id + 1, "id {} of the deleted session is not reused", c.id);
    assert!(matches!(
        second.create_session(CreateSession { name: Some("alpha".into()), ..Default::default() }),
        Err(Error::DuplicateName(_))
    ));

    // And a third start sees what the second did.
    first.shut_down(); // ends the spinning statement, unrecorded: the store is closed
    second.shut_down();
    let third = open_engine(&path, Arc::new(EchoKernel));
    let st = third.statement("alpha", "3").unwrap().parsed().unwrap();
    assert_eq!(st.output.unwrap().text(), Some("rust:three"));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A final statement's large code and output are not held in memory: they are read back from
/// the store when asked for, before and after a restart (and the kernel still hears the code).
#[tokio::test]
async fn large_codes_and_outputs_are_left_to_the_store_and_read_back() {
    let path = temp_db("left");
    let first = open_engine(&path, Arc::new(EchoKernel));
    let s = first.create_session(CreateSession { name: Some("big".into()), ..Default::default() }).unwrap();
    let code = "x".repeat(100_000);
    let st = first.submit("big", stmt(&code)).unwrap();
    let small = first.submit("big", stmt("small")).unwrap();
    wait_final(&first, "big", small.id).await;
    let held = |engine: &Engine, id: usize| {
        let cell = engine.cell("big").unwrap();
        let data = cell.lock();
        let r = &data.statements[id];
        (r.code.len(), r.job.code.len(), r.output.is_some(), r.left)
    };
    assert_eq!(held(&first, 0), (0, 0, false, store::Left { code: true, output: true }));
    assert_eq!(held(&first, 1).3, store::Left::default());
    let expected = format!("rust:{code}");
    let check = |engine: &Engine| {
        let one = engine.statement("big", "0").unwrap().parsed().unwrap();
        assert_eq!((one.code.len(), one.output.unwrap().text()), (code.len(), Some(expected.as_str())));
        let list = engine.statements("big", Page::default()).unwrap();
        let listed = list.statements[0].parsed().unwrap();
        assert_eq!(listed.code, code);
        assert_eq!(list.statements[1].parsed().unwrap().output.unwrap().text(), Some("rust:small"));
    };
    check(&first);
    let polled = first.statement_when_final("big", "0", Duration::from_secs(1)).await.unwrap();
    assert_eq!(polled.parsed().unwrap().output.unwrap().text(), Some(expected.as_str()));

    let kernel = Arc::new(RecordingKernel::default());
    let second = open_engine(&path, kernel.clone());
    assert_eq!(held(&second, 0), (0, 0, false, store::Left { code: true, output: true }));
    check(&second);
    assert_eq!(kernel.0.lock().unwrap()[0], (s.id, vec![code.clone(), "small".to_owned()]));
    first.shut_down();
    second.shut_down();
    let _ = st;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test(start_paused = true)]
async fn expired_sessions_stay_dead_across_a_restart_then_go() {
    let path = temp_db("dead");
    let first = open_engine(&path, Arc::new(EchoKernel));
    let s = first.create_session(CreateSession { idle_timeout: Some("1m".into()), ..Default::default() }).unwrap();
    tokio::time::sleep(Duration::from_secs(62)).await;
    assert_eq!(first.session(&s.id.to_string()).unwrap().state, SessionState::Dead);
    let second = open_engine(&path, Arc::new(EchoKernel));
    let dead = second.session(&s.id.to_string()).unwrap();
    assert_eq!(dead.state, SessionState::Dead);
    assert!(dead.log.iter().any(|l| l.contains("idle for 1m")), "{:?}", dead.log);
    assert!(matches!(second.submit(&s.id.to_string(), stmt("x")), Err(Error::SessionNotActive { .. })));
    tokio::time::sleep(Duration::from_secs(601)).await;
    assert!(second.session(&s.id.to_string()).is_err(), "forgotten after the retention period");
    let third = open_engine(&path, Arc::new(EchoKernel));
    assert_eq!(third.list_sessions(0, 10).total, 0);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Batch `id` once it is no longer `running`, woken by its statement's changes (no polling).
async fn batch_final(engine: &Engine, id: u64) -> tilegate_api::Batch {
    let cell = engine.batch_cell(&id.to_string()).unwrap();
    loop {
        let mut changed = std::pin::pin!(cell.changed.notified());
        changed.as_mut().enable();
        let batch = engine.batch(&id.to_string()).unwrap();
        if batch.state != SessionState::Running {
            return batch;
        }
        tokio::time::timeout(Duration::from_secs(10), changed).await.expect("the batch did not change in 10 s");
    }
}

fn batch_request(name: &str) -> tilegate_api::CreateBatch {
    serde_json::from_value(json!({"name": name, "code": "unused"})).unwrap()
}

#[tokio::test]
async fn batches_are_one_shot_sessions_numbered_and_listed_apart() {
    let engine = engine();
    let session = engine.create_session(CreateSession::default()).unwrap();
    let ok = engine.create_batch(batch_request("ok"), (Language::Rust, "x".into()), Some("ann".into())).unwrap();
    let failed = engine.create_batch(batch_request("failed"), (Language::Wasm, "fail".into()), None).unwrap();
    // Numbered apart from sessions, from 0, as Livy numbers them.
    assert_eq!((ok.id, failed.id), (0, 1));
    assert_eq!((ok.state, ok.name.as_deref(), ok.owner.as_deref()), (SessionState::Running, Some("ok"), Some("ann")));

    let ok = batch_final(&engine, 0).await;
    assert_eq!(ok.state, SessionState::Success);
    let log = engine.batch_log("0", Some(0), Some(-1)).unwrap().log;
    assert_eq!(log[..2], ["batch 0 started: rust".to_owned(), "rust:x".to_owned()], "{log:?}");
    assert!(log[2].starts_with("batch 0 succeeded in "), "{log:?}");
    assert_eq!(log.len(), 3, "{log:?}");

    let failed = batch_final(&engine, 1).await;
    assert_eq!(failed.state, SessionState::Dead);
    assert_eq!(failed.log[1], "Oops: it failed", "{:?}", failed.log);

    // Batches are neither sessions nor addressed as sessions; sessions are not batches.
    let sessions = engine.list_sessions(0, 100);
    assert_eq!(sessions.sessions.iter().map(|s| s.id).collect::<Vec<_>>(), vec![session.id]);
    let internal = engine.batch_cell("0").unwrap().id;
    assert!(matches!(engine.session(&internal.to_string()), Err(Error::SessionNotFound(_))));
    let next = engine.create_session(CreateSession::default()).unwrap();
    assert!(engine.session(&next.id.to_string()).is_ok());
    assert_eq!(engine.list_batches_where(0, 100, |_| true).total, 2);

    // A running batch counts as running, and deleting it kills it.
    let spin = engine.create_batch(batch_request("spin"), (Language::Rust, "spin".into()), Some("bob".into())).unwrap();
    assert_eq!(engine.running_batches(Some("bob")), (1, 1));
    assert_eq!(engine.running_batches(Some("ann")), (1, 0));
    let cell = engine.batch_cell(&spin.id.to_string()).unwrap();
    loop {
        let mut changed = std::pin::pin!(cell.changed.notified());
        changed.as_mut().enable();
        if cell.lock().statements[0].state == StatementState::Running {
            break;
        }
        tokio::time::timeout(Duration::from_secs(10), changed).await.expect("the batch never ran");
    }
    engine.delete_batch(&spin.id.to_string()).unwrap();
    assert!(matches!(engine.batch(&spin.id.to_string()), Err(Error::BatchNotFound(_))));
    assert_eq!(engine.running_batches(None), (0, 0));
    let statement = cell.lock().statements[0].ctx.clone();
    assert!(statement.is_cancelled(), "deleting a running batch cancels its run");
}

#[tokio::test]
async fn batches_recorded_before_batches_were_sessions_come_back_with_their_ids() {
    let path = temp_db("old-batches");
    let first = open_engine(&path, Arc::new(EchoKernel));
    let session = first.create_session(CreateSession::default()).unwrap();
    drop(first);
    // Rows as the gateway wrote them when a batch was a row of its own.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let old = |state: &str, log: &[&str]| {
        json!({"owner": "ann", "request": {"code": "x", "name": "nightly"}, "app_id": "batch-x", "state": state, "log": log})
            .to_string()
    };
    conn.execute("INSERT INTO batches (id, row) VALUES (3, ?1)", [old("success", &["batch 3 started: rust", "42"])])
        .unwrap();
    conn.execute("INSERT INTO batches (id, row) VALUES (4, ?1)", [old("running", &["batch 4 started: rust"])]).unwrap();
    conn.execute("INSERT INTO meta (key, value) VALUES ('next_batch', 5)", []).unwrap();
    drop(conn);

    let second = open_engine(&path, Arc::new(EchoKernel));
    let done = second.batch("3").unwrap();
    assert_eq!(
        (done.state, done.name.as_deref(), done.owner.as_deref()),
        (SessionState::Success, Some("nightly"), Some("ann"))
    );
    assert_eq!(second.batch_log("3", Some(0), Some(-1)).unwrap().log, ["batch 3 started: rust", "42"]);
    let running = second.batch("4").unwrap();
    assert_eq!(running.state, SessionState::Dead, "a batch running at the restart is dead");
    assert!(running.log.last().unwrap().contains("restarted"), "{:?}", running.log);
    // Neither became a session; new ids reuse none.
    assert_eq!(second.list_sessions(0, 100).sessions.iter().map(|s| s.id).collect::<Vec<_>>(), vec![session.id]);
    let fresh = second.create_batch(batch_request("fresh"), (Language::Rust, "y".into()), None).unwrap();
    assert_eq!(fresh.id, 5);
    let newer = second.create_session(CreateSession::default()).unwrap();
    assert!(newer.id > session.id);
    drop(second);
    // Moved once: the old table is empty, and a third start sees the same.
    let left: i64 =
        rusqlite::Connection::open(&path).unwrap().query_row("SELECT count(*) FROM batches", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0);
    let third = open_engine(&path, Arc::new(EchoKernel));
    assert_eq!(third.list_batches_where(0, 100, |_| true).total, 3);
    assert_eq!(third.batch("4").unwrap().state, SessionState::Dead);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
