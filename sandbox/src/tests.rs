//! Every limit has an `_obeyed` and a `_violated` test; plus the ABI, imports and cancellation.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../fixtures/", $name, ".wat"))
    };
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig::default()).unwrap()
}

fn run_with(sandbox: &Sandbox, wat: &str, limits: Limits) -> Result<RunOutput, Error> {
    let program = sandbox.compile(wat.as_bytes())?;
    sandbox.run(&program, br#"{"session":1,"statement":2}"#, &limits, &Arc::new(AtomicBool::new(false)))
}

fn run(wat: &str, limits: Limits) -> Result<RunOutput, Error> {
    run_with(&sandbox(), wat, limits)
}

#[test]
fn main_returns_a_number() {
    assert_eq!(run(fixture!("answer"), Limits::default()).unwrap().result, json!(42));
}

#[test]
fn abi_echoes_input_and_captures_print() {
    let out = run(fixture!("echo"), Limits::default()).unwrap();
    assert_eq!(out.result, json!({"session": 1, "statement": 2}));
    assert_eq!(out.printed, "hello from wasm\n");
}

#[test]
fn abi_result_must_be_json() {
    let err = run(fixture!("bad_result"), Limits::default()).unwrap_err();
    assert!(matches!(err, Error::Abi(ref m) if m.contains("invalid JSON")), "{err}");
}

#[test]
fn deadline_obeyed() {
    let limits = Limits { deadline: Duration::from_secs(5), ..Limits::default() };
    assert_eq!(run(fixture!("recurse_1000"), limits).unwrap().result, json!(1000));
}

#[test]
fn deadline_violated() {
    let limits = Limits { deadline: Duration::from_millis(100), ..Limits::default() };
    let err = run(fixture!("spin"), limits).unwrap_err();
    assert!(matches!(err, Error::Timeout(d) if d == Duration::from_millis(100)), "{err}");
}

#[test]
fn deadline_violated_in_start_function() {
    let limits = Limits { deadline: Duration::from_millis(100), ..Limits::default() };
    assert!(matches!(run(fixture!("start_spin"), limits).unwrap_err(), Error::Timeout(_)));
}

#[test]
fn memory_limit_obeyed() {
    let limits = Limits { memory_bytes: 8 << 20, ..Limits::default() };
    assert_eq!(run(fixture!("grow_4mib"), limits).unwrap().result, json!(65));
}

#[test]
fn memory_limit_violated() {
    let limits = Limits { memory_bytes: 8 << 20, ..Limits::default() };
    let err = run(fixture!("memory_bomb"), limits).unwrap_err();
    assert!(matches!(err, Error::MemoryLimit { limit } if limit == 8 << 20), "{err}");
    // A limit below the module's initial memory refuses it at instantiation.
    let tiny = Limits { memory_bytes: 1 << 10, ..Limits::default() };
    assert!(matches!(run(fixture!("grow_4mib"), tiny).unwrap_err(), Error::MemoryLimit { .. }));
}

#[test]
fn stack_limit_obeyed() {
    assert_eq!(run(fixture!("recurse_1000"), Limits::default()).unwrap().result, json!(1000));
}

#[test]
fn stack_limit_violated() {
    let small = Sandbox::new(SandboxConfig { max_wasm_stack: 64 << 10, ..SandboxConfig::default() }).unwrap();
    let err = run_with(&small, fixture!("recurse_forever"), Limits::default()).unwrap_err();
    assert!(matches!(err, Error::StackOverflow { limit } if limit == 64 << 10), "{err}");
}

#[test]
fn output_limit_obeyed() {
    let out = run(fixture!("print_1mib"), Limits { output_bytes: 2 << 20, ..Limits::default() }).unwrap();
    assert_eq!(out.printed.len(), 1 << 20);
}

#[test]
fn output_limit_violated_by_printing() {
    let err = run(fixture!("print_1mib"), Limits { output_bytes: 512 << 10, ..Limits::default() }).unwrap_err();
    assert!(matches!(err, Error::OutputLimit { limit, .. } if limit == 512 << 10), "{err}");
}

#[test]
fn output_limit_violated_by_result() {
    // echo returns its 27-byte input; it prints 16 bytes first, which fit.
    let err = run(fixture!("echo"), Limits { output_bytes: 20, ..Limits::default() }).unwrap_err();
    assert!(matches!(err, Error::OutputLimit { size: 27, limit: 20 }), "{err}");
}

#[test]
fn cancel_stops_a_running_call_promptly() {
    let sandbox = Arc::new(sandbox());
    let program = sandbox.compile(fixture!("spin").as_bytes()).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let runner = {
        let (sandbox, flag) = (sandbox.clone(), flag.clone());
        std::thread::spawn(move || sandbox.run(&program, b"", &Limits::default(), &flag))
    };
    std::thread::sleep(Duration::from_millis(50));
    let cancelled_at = Instant::now();
    flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let result = runner.join().unwrap();
    assert!(matches!(result, Err(Error::Cancelled)));
    // Promptly means within a few ticks; generous so a loaded CI machine does not flake.
    assert!(cancelled_at.elapsed() < Duration::from_secs(2));
}

#[test]
fn panics_report_the_guest_message() {
    let err = run(fixture!("panic"), Limits::default()).unwrap_err();
    assert!(
        matches!(err, Error::Panic { ref message, .. } if message == "index out of bounds: the len is 3 but the index is 7"),
        "{err}"
    );
}

#[test]
fn traps_are_named_with_a_backtrace() {
    let err = run(fixture!("divide_by_zero"), Limits::default()).unwrap_err();
    assert!(matches!(err, Error::Trap { ref message, .. } if message.contains("divide by zero")), "{err}");
    assert!(!err.backtrace().is_empty());
}

#[test]
fn forbidden_imports_are_refused_before_running() {
    let err = sandbox().compile(fixture!("forbidden_import").as_bytes()).unwrap_err();
    assert!(matches!(err, Error::ForbiddenImport { ref module, .. } if module == "wasi_snapshot_preview1"), "{err}");
}

#[test]
fn invalid_modules_are_refused() {
    let err = sandbox().compile(b"(module (func (export \"main\") (result i32) i64.const 1))").unwrap_err();
    assert!(matches!(err, Error::InvalidModule(_)), "{err}");
    let err = sandbox().compile(b"(module (func").unwrap_err();
    assert!(matches!(err, Error::InvalidModule(_)), "{err}");
    let err = sandbox().compile(b"(module (func (export \"main\") (param i32)))").unwrap_err();
    assert!(matches!(err, Error::MissingEntry(_)), "{err}");
}

#[test]
fn modules_are_cached_by_content() {
    let sandbox = sandbox();
    let a = sandbox.compile(fixture!("answer").as_bytes()).unwrap();
    let b = sandbox.compile(fixture!("answer").as_bytes()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(sandbox.cached_modules(), 1);
    let small = Sandbox::new(SandboxConfig { module_cache_entries: 1, ..SandboxConfig::default() }).unwrap();
    small.compile(fixture!("answer").as_bytes()).unwrap();
    small.compile(fixture!("spin").as_bytes()).unwrap();
    assert_eq!(small.cached_modules(), 1);
}

#[test]
fn decode_source_accepts_wat_and_base64() {
    assert!(decode_source(";; comment\n(module)").unwrap().starts_with(b";; comment"));
    let wasm = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0];
    assert_eq!(decode_source("AGFzbQEAAAA=").unwrap(), wasm);
    assert!(matches!(decode_source("not base64!"), Err(Error::Decode(_))));
    assert!(matches!(decode_source("aGVsbG8="), Err(Error::Decode(_))), "base64 of 'hello' is no module");
}
