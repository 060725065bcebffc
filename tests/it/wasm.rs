//! `wasm` statements over HTTP: both entry contracts, language resolution, and every sandbox limit
//! surfacing as a named error output while the gateway and the session stay usable.

use base64::Engine as _;
use serde_json::json;
use tilegate_gateway::Config;
use tilegate_sdk::{CreateSession, Error, Language, Output, SessionState};

use crate::{Gateway, fixture, short_deadline};

/// `main` returning 42, as a binary module.
const ANSWER_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
    0x03, 0x02, 0x01, 0x00, // function 0 has type 0
    0x07, 0x08, 0x01, 0x04, b'm', b'a', b'i', b'n', 0x00, 0x00, // export "main"
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b, // body: i32.const 42
];

async fn error_of(gw: &Gateway, code: &str) -> (String, String, Vec<String>) {
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let err = gw.client.run(s.id, Language::Wasm, code).await.unwrap_err();
    // Whatever failed, the session is idle and still runs statements.
    assert_eq!(gw.client.session(s.id).await.unwrap().state, SessionState::Idle);
    assert_eq!(gw.client.run(s.id, Language::Wasm, fixture!("answer")).await.unwrap().text(), Some("42"));
    match err {
        Error::Statement { ename, evalue, traceback } => (ename, evalue, traceback),
        other => panic!("expected an error output, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wat_and_base64_modules_return_main() {
    let gw = Gateway::start().await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let answer: i64 = gw.client.run_as(s.id, Language::Wasm, fixture!("answer")).await.unwrap();
    assert_eq!(answer, 42);
    let b64 = base64::engine::general_purpose::STANDARD.encode(ANSWER_WASM);
    let out = gw.client.run(s.id, Language::Wasm, &b64).await.unwrap();
    assert_eq!((out.text(), out.json()), (Some("42"), Some(&json!(42))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abi_module_gets_context_and_prints() {
    let gw = Gateway::start().await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    gw.client.run(s.id, Language::Wasm, fixture!("answer")).await.unwrap();
    let out = gw.client.run(s.id, Language::Wasm, fixture!("echo")).await.unwrap();
    assert_eq!(out.json(), Some(&json!({"session": s.id, "statement": 1})));
    let text = out.text().unwrap();
    assert!(text.starts_with("hello from wasm\n"), "{text}");
    assert!(matches!(out, Output::Ok { execution_count: 1, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_comes_from_kind_directive_conf_or_session() {
    let gw = Gateway::start().await;
    // A shared session defaults to rust: WAT text is not Rust, so a compile error output.
    let shared = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let st = gw.client.submit(shared.id, None, fixture!("answer")).await.unwrap();
    let done = gw.client.wait(shared.id, st.id).await.unwrap();
    match done.output.unwrap() {
        Output::Error { ename, .. } => assert_eq!(ename, "CompileError"),
        ok => panic!("expected an error, got {ok:?}"),
    }
    // A first-line directive picks wasm.
    let st = gw.client.submit(shared.id, None, &format!("%wasm\n{}", fixture!("answer"))).await.unwrap();
    assert_eq!(gw.client.wait(shared.id, st.id).await.unwrap().output.unwrap().text(), Some("42"));
    // So does the session conf (how sparkmagic users pick a language, with %%configure).
    let conf = CreateSession {
        kind: Some("pyspark".into()),
        conf: Some([("tilegate.kind".to_owned(), json!("wasm"))].into()),
        ..Default::default()
    };
    let py = gw.client.create_session(&conf).await.unwrap();
    let st = gw.client.submit(py.id, None, fixture!("answer")).await.unwrap();
    assert_eq!(gw.client.wait(py.id, st.id).await.unwrap().output.unwrap().text(), Some("42"));
    // Livy's statement kinds mean "the session default".
    let (status, body) = gw
        .raw(
            reqwest::Method::POST,
            &format!("/sessions/{}/statements", py.id),
            Some(&json!({"code": fixture!("answer"), "kind": "pyspark"}).to_string()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // ... so the WAT runs as the session's wasm (as `rust` it would be a compile error).
    let done = gw.client.wait(py.id, body["id"].as_u64().unwrap()).await.unwrap();
    assert_eq!(done.output.unwrap().text(), Some("42"), "kind pyspark did not run as the session's wasm");
    // An sql session defaults to sql.
    let sql =
        gw.client.create_session(&CreateSession { kind: Some("sql".into()), ..Default::default() }).await.unwrap();
    let st = gw.client.submit(sql.id, None, "SELECT 1 AS one").await.unwrap();
    let out = gw.client.wait(sql.id, st.id).await.unwrap().output.unwrap();
    assert_eq!(out.json().map(|j| &j["data"]), Some(&json!([[1]])), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_violated() {
    let gw = Gateway::start_with(short_deadline(0.3)).await;
    let (ename, evalue, _) = error_of(&gw, fixture!("spin")).await;
    assert_eq!(ename, "Timeout");
    assert!(evalue.contains("0.3") && evalue.contains("statement_timeout_secs"), "{evalue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_obeyed_and_violated() {
    let gw = Gateway::start_with(Config { memory_limit_mib: 8, ..crate::test_config() }).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let pages: i64 = gw.client.run_as(s.id, Language::Wasm, fixture!("grow_4mib")).await.unwrap();
    assert_eq!(pages, 65);
    let (ename, evalue, _) = error_of(&gw, fixture!("memory_bomb")).await;
    assert_eq!(ename, "MemoryLimit");
    assert!(evalue.contains(&(8usize << 20).to_string()) && evalue.contains("memory_limit_mib"), "{evalue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_limit_obeyed_and_violated() {
    let gw = Gateway::start_with(Config { max_wasm_stack_bytes: 64 << 10, ..crate::test_config() }).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let depth: i64 = gw.client.run_as(s.id, Language::Wasm, fixture!("recurse_1000")).await.unwrap();
    assert_eq!(depth, 1000);
    assert_eq!(error_of(&gw, fixture!("recurse_forever")).await.0, "StackOverflow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_limit_obeyed_and_violated() {
    let gw = Gateway::start_with(Config { output_limit_bytes: 2 << 20, ..crate::test_config() }).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let out = gw.client.run(s.id, Language::Wasm, fixture!("print_1mib")).await.unwrap();
    assert_eq!(out.text().unwrap().len(), (1 << 20) + 2, "1 MiB printed, a newline, and the result 1");
    let tight = Gateway::start_with(Config { output_limit_bytes: 512 << 10, ..crate::test_config() }).await;
    let (ename, evalue, _) = error_of(&tight, fixture!("print_1mib")).await;
    assert_eq!(ename, "OutputLimit");
    assert!(evalue.contains(&(512usize << 10).to_string()) && evalue.contains("output_limit_bytes"), "{evalue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_failures_are_named() {
    let gw = Gateway::start().await;
    let (ename, evalue, _) = error_of(&gw, fixture!("panic")).await;
    assert_eq!((ename.as_str(), evalue.as_str()), ("Panic", "index out of bounds: the len is 3 but the index is 7"));
    let (ename, evalue, traceback) = error_of(&gw, fixture!("divide_by_zero")).await;
    assert_eq!(ename, "Trap");
    assert!(evalue.contains("divide by zero"), "{evalue}");
    assert!(!traceback.is_empty());
    assert_eq!(error_of(&gw, fixture!("bad_result")).await.0, "AbiError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modules_are_refused_before_running() {
    let gw = Gateway::start().await;
    let (ename, evalue, _) = error_of(&gw, fixture!("forbidden_import")).await;
    assert_eq!(ename, "ForbiddenImport");
    assert!(evalue.contains("wasi_snapshot_preview1::fd_write"), "{evalue}");
    let (ename, evalue, _) = error_of(&gw, "(module (func (export \"main\") (result i32) i64.const 1))").await;
    assert_eq!(ename, "InvalidModule");
    assert!(evalue.contains("type mismatch"), "{evalue}");
    assert_eq!(error_of(&gw, "(module (func").await.0, "InvalidModule");
    assert_eq!(error_of(&gw, "this is not a module").await.0, "DecodeError");
    assert_eq!(error_of(&gw, "(module)").await.0, "MissingEntry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_block_each_other() {
    let gw = Gateway::start_with(short_deadline(2.0)).await;
    let busy = gw.client.create_session(&CreateSession::default()).await.unwrap();
    gw.client.submit(busy.id, Some(Language::Wasm), fixture!("spin")).await.unwrap();
    crate::wait_state(&gw, busy.id, 0, tilegate_sdk::StatementState::Running).await;
    let other = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let out = gw.client.run(other.id, Language::Wasm, fixture!("answer")).await.unwrap();
    assert_eq!(out.text(), Some("42"));
    let still = gw.client.statement(busy.id, 0).await.unwrap();
    assert_eq!(still.state, tilegate_sdk::StatementState::Running, "the other session finished first");
    gw.client.delete_session(busy.id).await.unwrap();
}
