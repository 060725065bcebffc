//! `rust` statements: snippets compiled on the server by the real rustc, run in the sandbox;
//! notebook-cell behaviour, the NEXUS time series against numpy, errors with the user's lines,
//! and the hostile corpus (refused at compile time or contained at run time).

use serde_json::{Value, json};
use tilegate_gateway::Config;
use tilegate_sdk::{CreateSession, Error, Language, Output, SessionState};

use crate::jobs::{SEED_BOX, STATS, assert_rows_match, gateway_with_sst, reference};
use crate::{Gateway, test_config};

/// The issue's time series, as a user types it.
const TIME_SERIES: &str = r#"dataset("sst").bbox(-150.0, 45.0, -120.0, 60.0).time("2008-09-01", "2008-09-16")
    .map(|tile| tile.stats_by_time())
    .reduce_by_key(Stats::merge)"#;

async fn rust(gw: &Gateway, session: u64, code: &str) -> Result<Output, Error> {
    gw.client.run(session, Language::Rust, code).await
}

async fn ok(gw: &Gateway, session: u64, code: &str) -> Output {
    rust(gw, session, code).await.unwrap_or_else(|e| panic!("{code}\nfailed: {e}"))
}

/// The error output of a statement that must fail; the session stays usable.
async fn failure(gw: &Gateway, session: u64, code: &str) -> (String, String, Vec<String>) {
    let err = rust(gw, session, code).await.expect_err(code);
    assert_eq!(gw.client.session(session).await.unwrap().state, SessionState::Idle);
    match err {
        Error::Statement { ename, evalue, traceback } => (ename, evalue, traceback),
        other => panic!("{code}: expected an error output, got {other}"),
    }
}

async fn session(gw: &Gateway) -> u64 {
    gw.client.create_session(&CreateSession::default()).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_a_notebook_cell() {
    let gw = Gateway::start().await;
    let s = session(&gw).await;
    let out = ok(&gw, s, "6 * 7").await;
    assert_eq!((out.text(), out.json()), (Some("42"), Some(&json!(42))));
    let out = ok(&gw, s, "fn main() { println!(\"{}\", 6 * 7); }").await;
    assert_eq!(out.text(), Some("42\n"));
    assert_eq!(out.json(), None);
    let out = ok(&gw, s, "let xs = vec![1.5, 2.5];\nprint!(\"n={} \", xs.len());\nxs").await;
    assert_eq!((out.text(), out.json()), (Some("n=2 \n[1.5,2.5]"), Some(&json!([1.5, 2.5]))));
    let out = ok(&gw, s, "\"hello\"").await;
    assert_eq!((out.text(), out.json()), (Some("hello"), Some(&json!("hello"))));
    let out = ok(&gw, s, "let unit = 1;").await;
    assert_eq!(out.text(), Some(""));

    // Items of successful statements stay; a later definition replaces an earlier one.
    ok(&gw, s, "fn kelvin(c: f64) -> f64 { c + 273.15 }\nrecord! { struct Reading { site: String, kelvin: f64 } }")
        .await;
    let out = ok(&gw, s, "Reading { site: \"buoy\".into(), kelvin: kelvin(26.85) }").await;
    assert_eq!(out.json(), Some(&json!({"site": "buoy", "kelvin": 300.0})));
    ok(&gw, s, "fn kelvin(c: f64) -> f64 { (c + 273.15).round() }").await;
    assert_eq!(ok(&gw, s, "kelvin(0.2)").await.json(), Some(&json!(273.0)));
    // Items of a failed statement are forgotten.
    let (ename, _, _) = failure(&gw, s, "fn lost() -> u8 { 1 }\nlet x: u8 = \"no\";").await;
    assert_eq!(ename, "CompileError");
    let (_, evalue, _) = failure(&gw, s, "lost()").await;
    assert!(evalue.contains("lost"), "{evalue}");
    // Another session does not see this one's items.
    let other = session(&gw).await;
    let (_, evalue, _) = failure(&gw, other, "kelvin(1.0)").await;
    assert!(evalue.contains("kelvin"), "{evalue}");

    // Plain REST, with the kind on the statement.
    let body = json!({"code": "(1..=10).sum::<u64>()", "kind": "rust"}).to_string();
    let (status, st) = gw.raw(reqwest::Method::POST, &format!("/sessions/{s}/statements"), Some(&body)).await;
    assert_eq!(status, 201, "{st}");
    let done = gw.client.wait(s, st["id"].as_u64().unwrap()).await.unwrap();
    assert_eq!(done.output.unwrap().json(), Some(&json!(55)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nexus_time_series_in_a_few_lines_matches_numpy() {
    let gw = gateway_with_sst(None, test_config()).await;
    let store = gw.data_dir.join("datasets/sst.zarr");
    let s = session(&gw).await;
    let rows = ok(&gw, s, TIME_SERIES).await.json().cloned().unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 16);
    assert_eq!(rows[0]["time"], 1_220_227_200);
    assert_rows_match(&rows, &reference("timeseries", &store, &SEED_BOX), &STATS);

    // A custom map with a user-defined value type.
    let warm = r#"record! { struct Warm { value: u64, cells: u64 } }
fn warm(tile: &Tile) -> Vec<(Time, Warm)> {
    (0..tile.times.len())
        .map(|t| {
            let day = tile.at_time(t);
            let value = day.iter().filter(|&&v| v > 28.0).count() as u64;
            (Time(tile.times[t]), Warm { value, cells: day.iter().filter(|v| !v.is_nan()).count() as u64 })
        })
        .collect()
}
dataset("sst").bbox(-180.0, -10.0, -90.0, 10.0).time("2008-09-01", "2008-09-08")
    .map(warm)
    .reduce_by_key(|a, b| Warm { value: a.value + b.value, cells: a.cells + b.cells })"#;
    let rows = ok(&gw, s, warm).await.json().cloned().unwrap();
    let args = ["-180", "-10", "-90", "10", "2008-09-01", "2008-09-08", "28"];
    assert_rows_match(&rows, &reference("warm", &store, &args), &["value"]);
    assert!(rows.as_array().unwrap().iter().all(|r| r["cells"].as_u64().unwrap() >= r["value"].as_u64().unwrap()));

    // The same series through the SDK from a second session: the compiled module is reused (a
    // cache hit, no rustc run, as `/metrics` counts compiles) and answers the same.
    let first = rows_of(&gw, s).await;
    let before = compiles(&gw).await;
    let again = session(&gw).await;
    assert_eq!(ok(&gw, again, TIME_SERIES).await.json(), Some(&first));
    let after = compiles(&gw).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "(hits, misses) of the second session's compile");
}

/// Compiles so far as `/metrics` counts them: (cache hits, misses).
async fn compiles(gw: &Gateway) -> (u64, u64) {
    let text = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    let count = |cache: &str| {
        let line = format!("tilegate_compile_seconds_count{{cache=\"{cache}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(line.as_str())).map_or(0, |n| n.parse().unwrap())
    };
    (count("hit"), count("miss"))
}

async fn rows_of(gw: &Gateway, s: u64) -> Value {
    ok(gw, s, TIME_SERIES).await.json().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_point_at_the_users_lines() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = session(&gw).await;
    let (ename, evalue, traceback) = failure(&gw, s, "let a = 1;\nlet b: i32 = \"two\";\na + b").await;
    assert_eq!(ename, "CompileError");
    assert!(evalue.contains("mismatched types"), "{evalue}");
    let text = traceback.concat();
    assert!(text.contains("--> cell:2:14"), "{text}");
    let data_dir = gw.data_dir.display().to_string();
    for server in [data_dir.as_str(), "/tmp", "/root", "/home", ".rustup"] {
        assert!(!text.contains(server), "a server path ({server}) in:\n{text}");
    }

    // A panic in a map names the tile, the dataset and the snippet line.
    let code = "dataset(\"sst\").time(\"2008-09-01\", \"2008-09-04\")\n    .map(|tile| {\n        \
                if tile.index == [2, 0, 1] { panic!(\"cannot handle {:?}\", tile.index) }\n        \
                tile.stats_by_time()\n    })\n    .reduce_by_key(Stats::merge)";
    let (ename, evalue, _) = failure(&gw, s, code).await;
    assert_eq!(ename, "Panic");
    assert!(evalue.contains("tile [2, 0, 1]") && evalue.contains("'sst'"), "{evalue}");
    assert!(evalue.contains("cell:3:") && evalue.contains("cannot handle [2, 0, 1]"), "{evalue}");

    // So does a panic in the reduce (it runs in batched fold calls), and the session goes on.
    let code = "dataset(\"sst\").time(\"2008-09-01\", \"2008-09-04\")\n    .map(|tile| tile.stats_by_time())\n    \
                .reduce_by_key(|a, b| {\n        assert!(a.count + b.count < 50, \"too many cells: {}\", a.count + b.count);\n        \
                a.merge(b)\n    })";
    let (ename, evalue, _) = failure(&gw, s, code).await;
    assert_eq!(ename, "Panic");
    assert!(evalue.contains("cell:4:") && evalue.contains("too many cells"), "{evalue}");
    assert_eq!(ok(&gw, s, "1 + 1").await.json(), Some(&json!(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkmagic_bootstrap_statements_succeed() {
    let gw = Gateway::start().await;
    for kind in ["spark", "pyspark", "sparkr"] {
        let create = CreateSession { kind: Some(kind.into()), ..Default::default() };
        let s = gw.client.create_session(&create).await.unwrap();
        for code in ["spark", "sqlContext"] {
            let st = gw.client.submit(s.id, None, code).await.unwrap();
            let out = gw.client.wait(s.id, st.id).await.unwrap().output.unwrap();
            let text = out.text().unwrap_or_default().to_owned();
            assert!(text.contains(&format!("tilegate session {}", s.id)), "{kind} {code}: {out:?}");
        }
    }
}

/// Snippets that try to reach outside the sandbox or exhaust it: each is refused or contained,
/// no secret shows in any output, and the session keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_corpus_is_refused_or_contained() {
    let gw = Gateway::start_with(Config { statement_timeout_secs: 3.0, memory_limit_mib: 64, ..test_config() }).await;
    let s = session(&gw).await;
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_owned();
    let home = std::env::var("HOME").unwrap_or_default();
    let corpus: &[(&str, &[&str])] = &[
        // Compile time: files, environment, modules, linking, crate attributes.
        ("include_str!(\"/etc/hostname\")", &["CompileError"]),
        ("include_bytes!(\"/etc/passwd\").len()", &["CompileError"]),
        ("option_env!(\"HOME\").unwrap_or(\"\")", &["CompileError"]),
        ("env!(\"PATH\")", &["CompileError"]),
        ("use std::include_str as read;\nread!(\"/etc/hostname\")", &["CompileError"]),
        ("macro_rules! sneak { () => { include!(\"/etc/hostname\") } }\nsneak!()", &["CompileError"]),
        ("mod secrets;", &["CompileError"]),
        ("#[path = \"/etc/passwd\"]\nmod m {}", &["CompileError"]),
        ("extern crate std as s;\n1", &["CompileError"]),
        ("#![recursion_limit = \"100000\"]\n1", &["CompileError"]),
        ("unsafe extern \"C\" { fn open(path: *const u8) -> i32; }\n1", &["CompileError"]),
        ("#[unsafe(no_mangle)]\npub extern \"C\" fn sbx_main() {}", &["CompileError"]),
        // Compile time: loops, recursion and type bombs.
        ("const X: u64 = { let mut i = 0u64; loop { i += 1; } };\nX", &["CompileError"]),
        (
            "#[allow(long_running_const_eval)]\nconst X: u64 = { let mut i = 0u64; loop { i += 1; } };\nX",
            &["CompileError"],
        ),
        ("macro_rules! bomb { ($($t:tt)*) => { bomb!($($t)* $($t)*) } }\nbomb!(x)", &["CompileError", "CompileLimit"]),
        (
            "fn grow<T: std::fmt::Debug>(x: T, n: u32) -> u32 { if n == 0 { 0 } else { grow((x, 1u8), n - 1) } }\ngrow(0u8, 3)",
            &["CompileError"],
        ),
        // Compile time: a gigabyte constant (rustc's memory limit or the output file size stop it).
        ("static BIG: [u8; 1 << 30] = [7; 1 << 30];\nBIG[12345]", &["CompileError", "CompileLimit"]),
        ("struct S<T>(T);\ntype A = S<S<S<S<S<S<S<S<u8>>>>>>>>;\nfn f(x: A) -> A { x }\n1", &[]),
        // Run time: the host's files, environment and network are not there.
        ("std::fs::read_to_string(\"/etc/hostname\").unwrap()", &["Panic"]),
        ("std::env::var(\"HOME\").unwrap_or_default()", &[]),
        ("std::net::TcpStream::connect(\"127.0.0.1:8998\").is_ok()", &[]),
        // Run time: panics, endless loops, memory, stack, output.
        ("panic!(\"boom\")", &["Panic"]),
        ("let mut i = 0u64;\nloop { i = std::hint::black_box(i + 1); }", &["Timeout"]),
        ("let mut v = Vec::new();\nloop { v.push(vec![1u8; 1 << 20]); }", &["MemoryLimit"]),
        (
            "fn deep(n: u64, pad: [u8; 4096]) -> u8 { if n == 0 { pad[0] } else { deep(n - 1, std::hint::black_box(pad)) ^ pad[(n % 4096) as usize] } }\ndeep(1 << 30, [1; 4096])",
            &["StackOverflow", "Trap", "MemoryLimit"],
        ),
        ("loop { print!(\"{}\", \"x\".repeat(1 << 16)); }", &["OutputLimit"]),
        ("\"x\".repeat(10 << 20)", &["OutputLimit"]),
    ];
    for (code, expected) in corpus {
        let result = rust(&gw, s, code).await;
        let shown = match &result {
            Ok(out) => format!("{out:?}"),
            Err(Error::Statement { ename, evalue, traceback }) => {
                assert!(expected.contains(&ename.as_str()), "{code}\n→ {ename}: {evalue}");
                format!("{evalue}{}", traceback.concat())
            }
            Err(other) => panic!("{code}: {other}"),
        };
        if result.is_ok() {
            assert!(expected.is_empty(), "{code} should have failed with one of {expected:?}, got {shown}");
        }
        for secret in [&hostname, &home] {
            assert!(secret.len() < 3 || !shown.contains(secret.as_str()), "{code} leaked {secret}: {shown}");
        }
        assert_eq!(gw.client.session(s).await.unwrap().state, SessionState::Idle, "{code}");
    }
    // What the contained ones returned: nothing of the host. The gateway's own port answers the
    // host, so a snippet with a network would connect.
    let address = gw.url.trim_start_matches("http://").to_owned();
    assert!(std::net::TcpStream::connect(&address).is_ok(), "the host reaches {address}");
    let connect = ok(&gw, s, &format!("std::net::TcpStream::connect({address:?}).is_ok()")).await;
    assert_eq!(connect.json(), Some(&json!(false)), "a snippet reached the network");
    assert_eq!(ok(&gw, s, "std::env::var(\"HOME\").unwrap_or_default()").await.json(), Some(&json!("")));
    assert_eq!(ok(&gw, s, "6 * 7").await.json(), Some(&json!(42)), "the session still works");
}

/// Compile-time reads that the token guard cannot see (a macro builds the attribute or the
/// macro call from its arguments, so the names appear only after expansion) reach rustc; rustc's
/// jail is the boundary: no host file is there, so nothing of it shows, and a file that exists on
/// the host answers exactly as one that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_time_reads_past_the_guard_find_nothing_of_the_host() {
    let gw = Gateway::start_with(test_config()).await;
    let s = session(&gw).await;
    let canary_dir = crate::fresh_dir();
    let canary = canary_dir.join("secret.txt");
    let secret = format!("tilegate-canary-{}", std::process::id());
    std::fs::write(&canary, &secret).unwrap();
    let path_mod = |path: &str| {
        format!("macro_rules! m {{ ($p:ident, $n:ident) => {{ #[$p = {path:?}] mod $n; }} }}\nm!(path, leak);\n1")
    };
    let read_macro = |path: &str| format!("macro_rules! m {{ ($r:ident) => {{ $r!({path:?}) }} }}\nm!(include_str)");
    let mut payloads = Vec::new();
    for path in [canary.to_str().unwrap(), "/etc/passwd", "/proc/self/environ", "/proc/self/stat", "/proc/1/cmdline"] {
        payloads.push(path_mod(path));
        payloads.push(read_macro(path));
    }
    payloads.push("macro_rules! m { ($e:ident) => { $e!(\"CARGO_MANIFEST_DIR\") } }\nm!(env)".to_owned());
    payloads.push("macro_rules! m { ($e:ident) => { $e!(\"PATH\") } }\nm!(option_env).unwrap_or(\"none\")".to_owned());
    let data_dir = gw.data_dir.display().to_string();
    for code in &payloads {
        let (ename, evalue, traceback) = match rust(&gw, s, code).await {
            Ok(out) => ("ok".to_owned(), format!("{out:?}"), Vec::new()),
            Err(Error::Statement { ename, evalue, traceback }) => (ename, evalue, traceback),
            Err(other) => panic!("{code}: {other}"),
        };
        let shown = format!("{evalue}\n{}", traceback.concat());
        for leak in [secret.as_str(), "root:x:0", "PATH=", data_dir.as_str()] {
            assert!(!shown.contains(leak), "{code}\nshowed {leak:?}:\n{shown}");
        }
        assert!(matches!(ename.as_str(), "CompileError" | "ok"), "{code}: {ename}: {shown}");
    }
    // Existence cannot be probed either: a host file and a missing one read the same.
    let answer = |path: &str, shown: String| shown.replace(path, "PATH");
    // Paths of the same length, so the diagnostics' columns match too.
    let host_file = canary.to_str().unwrap();
    let missing = canary.with_file_name("absent.txt");
    let missing = missing.to_str().unwrap();
    let present = answer(host_file, format!("{:?}", rust(&gw, s, &path_mod(host_file)).await));
    let absent = answer(missing, format!("{:?}", rust(&gw, s, &path_mod(missing)).await));
    assert_eq!(present, absent, "a host file's existence shows");
    assert_eq!(ok(&gw, s, "6 * 7").await.json(), Some(&json!(42)), "the session still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_named_values_for_later_statements_and_their_maps() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = session(&gw).await;
    let out = ok(&gw, s, "session().set(\"threshold\", 28.0);\nsession().set(\"note\", \"warm pool\");").await;
    assert_eq!(out.json(), None);
    let out = ok(
        &gw,
        s,
        "let t = session().get(\"threshold\").and_then(|j| j.as_f64());\n(t, session().get(\"nope\").is_none())",
    )
    .await;
    assert_eq!(out.json(), Some(&json!([28.0, true])));
    // A job's rows kept, then read back and indexed.
    ok(&gw, s, &format!("session().set(\"series\", {TIME_SERIES})")).await;
    let out = ok(&gw, s, "let rows = session().get(\"series\").unwrap();\n(rows[0][\"time\"].as_i64(), rows.as_array().map(|r| r.len()))").await;
    assert_eq!(out.json(), Some(&json!([1_220_227_200, 16])));
    // A map reads the session's value (parsed once per worker instance).
    let code = r#"fn warm(tile: &Tile) -> Vec<(Time, u64)> {
    thread_local! { static T: f32 = session().get("threshold").and_then(|j| j.as_f64()).unwrap_or(99.0) as f32; }
    let t = T.with(|t| *t);
    (0..tile.times.len()).map(|i| (Time(tile.times[i]), tile.at_time(i).iter().filter(|&&v| v > t).count() as u64)).collect()
}
dataset("sst").bbox(-180.0, -10.0, -90.0, 10.0).time("2008-09-01", "2008-09-08").map(warm).reduce_by_key(|a, b| a + b)"#;
    let rows = ok(&gw, s, code).await.json().cloned().unwrap();
    let store = gw.data_dir.join("datasets/sst.zarr");
    let args = ["-180", "-10", "-90", "10", "2008-09-01", "2008-09-08", "28"];
    assert_rows_match(&rows, &reference("warm", &store, &args), &["value"]);
    // Only the statement may change its session, not a map.
    let code = "dataset(\"sst\").time(\"2008-09-01\", \"2008-09-01\")\n    \
                .map(|tile| { session().set(\"x\", 1); tile.stats_by_time() })\n    .reduce_by_key(Stats::merge)";
    let (ename, evalue, _) = failure(&gw, s, code).await;
    assert_eq!(ename, "SessionError", "{evalue}");
    assert!(evalue.contains("not inside a map"), "{evalue}");
    // Values belong to their session.
    let other = session(&gw).await;
    assert_eq!(ok(&gw, other, "session().get(\"threshold\").is_none()").await.json(), Some(&json!(true)));
    // A deleted session's values go with it: the memory every session's values share comes back
    // (once its worker has ended, which the gateway does not announce: looked for up to 10 s).
    let held = || async {
        let text = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with("tilegate_session_values_bytes ")).unwrap().to_owned();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    assert!(held().await > 1000, "the series is held");
    gw.client.delete_session(s).await.unwrap();
    gw.client.delete_session(other).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while held().await > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held().await, 0, "deleted sessions still hold values");
}

/// The statistics kernel a job runs (`Stats::of_rows`, `simd128` vectors in wasm) against the
/// plain one-cell-at-a-time `Stats::of`, both in real wasmtime, on every time step of every tile
/// of an xarray store (land NaNs, 45-column rows that leave a remainder after the vector steps,
/// and a bbox that cuts tiles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vectorised_stats_kernel_agrees_with_the_plain_one() {
    let gw = gateway_with_sst(Some("3"), test_config()).await;
    let s = session(&gw).await;
    let check = r#"record! { struct Gap { worst: f64, steps: u64, cells: u64 } }
fn gap(tile: &Tile) -> Vec<(u32, Gap)> {
    let weights = tile.row_weights();
    (0..tile.times.len())
        .map(|t| {
            let (fast, plain) = (tile.stats_at(t, &weights), Stats::of(tile.weighted(t)));
            let rel = |a: f64, b: f64| if a == b { 0.0 } else { (a - b).abs() / b.abs().max(1e-12) };
            let count = if fast.count == plain.count { 0.0 } else { f64::INFINITY };
            let worst = [
                rel(fast.min, plain.min), rel(fast.max, plain.max), rel(fast.sum, plain.sum),
                rel(fast.wsum, plain.wsum), rel(fast.weight, plain.weight), rel(fast.m2, plain.m2), count,
            ]
            .into_iter()
            .fold(0.0, f64::max);
            (0, Gap { worst, steps: 1, cells: plain.count })
        })
        .collect()
}
dataset("sst")BOX.map(gap).reduce_by_key(|a, b| Gap { worst: a.worst.max(b.worst), steps: a.steps + b.steps, cells: a.cells + b.cells })"#;
    for bbox in ["", ".bbox(-151.0, -33.0, 77.0, 61.0)"] {
        let rows = ok(&gw, s, &check.replace("BOX", bbox)).await.json().cloned().unwrap();
        let gap = &rows[0];
        assert!(gap["steps"].as_u64().unwrap() >= 8, "{bbox}: {rows}");
        assert!(gap["cells"].as_u64().unwrap() > 1000, "{bbox}: {rows}");
        assert!(gap["worst"].as_f64().unwrap() <= 1e-9, "{bbox}: the kernels differ: {rows}");
    }
}
