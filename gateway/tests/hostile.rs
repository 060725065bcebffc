//! Hostile statements against the real binary (so an abort or an OOM kill is a failed test, not a
//! lost test run): each one ends as a statement with an error output (or a bounded result), and
//! the gateway stays alive and serves everyone else while and after it runs: `/health` answers
//! within a second and a trivial statement in another session within five.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Process, temp_dir};

/// A gateway, a session for the payloads and a bystander session.
struct Target {
    gateway: Process,
    http: reqwest::Client,
    session: u64,
    bystander: u64,
}

impl Target {
    async fn start(name: &str, config: &str) -> Self {
        let dir = temp_dir(&format!("hostile-{name}"));
        let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, config, None);
        let http = reqwest::Client::new();
        let session = Self::new_session(&http, &gateway.url).await;
        let bystander = Self::new_session(&http, &gateway.url).await;
        Self { gateway, http, session, bystander }
    }

    async fn new_session(http: &reqwest::Client, url: &str) -> u64 {
        let s: Value =
            http.post(format!("{url}/sessions")).json(&json!({})).send().await.unwrap().json().await.unwrap();
        s["id"].as_u64().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url)
    }

    async fn submit(&self, session: u64, kind: &str, code: &str) -> u64 {
        let response = self
            .http
            .post(self.url(&format!("/sessions/{session}/statements")))
            .json(&json!({"kind": kind, "code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
    }

    async fn statement(&self, session: u64, id: u64, wait: u64) -> Value {
        let url = self.url(&format!("/sessions/{session}/statements/{id}?wait={wait}"));
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// `/health` within 1 s and a trivial statement of the bystander within 5 s.
    async fn others_are_served(&self, during: &str) {
        let clock = Instant::now();
        let health = self.http.get(self.url("/health")).timeout(Duration::from_secs(1)).send().await;
        assert!(health.is_ok_and(|r| r.status() == 200), "/health did not answer within 1 s {during}");
        let clock = Instant::now().max(clock);
        let id =
            self.submit(self.bystander, "wasm", r#"(module (func (export "main") (result i32) i32.const 42))"#).await;
        let done = self.statement(self.bystander, id, 5).await;
        assert_eq!(
            done["output"]["data"]["text/plain"],
            "42",
            "the bystander waited {:?} {during}: {done}",
            clock.elapsed()
        );
    }

    /// Runs `code` in the payload session, checking the others are served while and after it
    /// runs; returns the finished statement.
    async fn survive(&self, kind: &str, code: &str) -> Value {
        let short: String = code.chars().take(60).collect();
        let id = self.submit(self.session, kind, code).await;
        let clock = Instant::now();
        let done = loop {
            let st = self.statement(self.session, id, 1).await;
            if matches!(st["state"].as_str(), Some("available" | "cancelled")) {
                break st;
            }
            self.others_are_served(&format!("while `{short}` runs")).await;
            assert!(clock.elapsed() < Duration::from_secs(300), "`{short}` still runs after 5 minutes: {st}");
        };
        self.others_are_served(&format!("after `{short}`")).await;
        done
    }
}

fn ename(statement: &Value) -> &str {
    statement["output"]["ename"].as_str().unwrap_or("")
}

/// Queries deep enough to overflow a worker's stack while DataFusion plans them. Each is either
/// answered or refused; none aborts the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_queries_never_abort_the_gateway() {
    let target = Target::start("deep-sql", "demo_dataset = false\n").await;
    let terms = |n: usize, term: &str, joint: &str| vec![term; n].join(joint);
    let payloads = [
        format!("SELECT {}", terms(1000, "1", "+")),
        format!("SELECT {}", terms(10_000, "1", "+")),
        format!("SELECT 1 WHERE {}", terms(1000, "1=1", " AND ")),
        format!("SELECT 1 WHERE {}", terms(5000, "1=1", " OR ")),
        terms(1000, "SELECT 1", " UNION ALL "),
        format!("SELECT {}1{}", "(".repeat(1000), ")".repeat(1000)),
        format!("SELECT {}1{}", "abs(".repeat(1000), ")".repeat(1000)),
        format!("SELECT CASE {} ELSE 0 END", terms(2000, "WHEN 1=0 THEN 1", " ")),
        format!("SELECT * FROM {}(SELECT 1 AS x){}", "(SELECT * FROM ".repeat(500), " t)".repeat(500)),
    ];
    for payload in &payloads {
        let done = target.survive("sql", payload).await;
        let status = done["output"]["status"].as_str().unwrap_or("");
        assert!(
            status == "ok" || ename(&done) == "SqlError",
            "{}: {} {}",
            &payload[..40],
            done["state"],
            done["output"].to_string().chars().take(500).collect::<String>()
        );
    }
    // Up to the depth limit a chain is answered; past it refused before planning.
    let sum = target.survive("sql", &format!("SELECT {} AS n", terms(900, "1", "+"))).await;
    assert_eq!(sum["output"]["data"]["application/json"]["data"][0][0], 900, "{sum}");
    let deep = target.survive("sql", &format!("SELECT {} AS n", terms(20_000, "1", "+"))).await;
    assert!(deep["output"]["evalue"].as_str().unwrap_or("").contains("deep"), "{}", deep["output"]);
}

/// A query that would run for ever ends at the statement deadline; cancel stops one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_queries_end_at_the_deadline_or_on_cancel() {
    let target = Target::start("endless-sql", "demo_dataset = false\nstatement_timeout_secs = 3\n").await;
    let endless = [
        "SELECT COUNT(*) FROM range(9000000000000000000)",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r",
    ];
    for query in endless {
        let done = target.survive("sql", query).await;
        assert_eq!(ename(&done), "Timeout", "{query}: {done}");
    }
    let id = target.submit(target.session, "sql", "SELECT SUM(value) FROM range(9000000000000000000)").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = target.url(&format!("/sessions/{}/statements/{id}/cancel", target.session));
    assert_eq!(target.http.post(cancel).send().await.unwrap().status(), 200);
    let done = target.statement(target.session, id, 2).await;
    assert_eq!(done["state"], "cancelled", "cancel took more than 2 s: {done}");
    target.others_are_served("after a cancel").await;
}

/// A query's output is bounded like a snippet's, its operators by a memory pool, and its rows by
/// what is held: past those it is an error or a truncated result, never a gateway out of memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_queries_are_bounded_in_output_and_memory() {
    let config = "demo_dataset = false\nsql_memory_limit_mib = 64\noutput_limit_bytes = 1048576\n";
    let target = Target::start("large-sql", config).await;
    let big = target.survive("sql", "SELECT repeat('x', 20000000) AS s").await;
    assert_eq!(ename(&big), "OutputLimit", "{big}");
    assert!(big["output"]["evalue"].as_str().unwrap().contains("output_limit_bytes"), "{big}");

    let sorted = target.survive("sql", "SELECT value FROM range(50000000) ORDER BY value DESC").await;
    assert_eq!(ename(&sorted), "SqlError", "{sorted}");
    assert!(sorted["output"]["evalue"].as_str().unwrap().contains("Resources exhausted"), "{sorted}");

    // 80 million rows of two columns (1.3 GB as Arrow): counted and the first rows shown, but
    // held only up to the result bound (256 MiB), so the gateway's peak grows by less than that
    // plus its working set.
    let before = target.gateway.peak_rss_kib();
    let many = target.survive("sql", "SELECT value, value * 2 AS twice FROM range(80000000)").await;
    let json = &many["output"]["data"]["application/json"];
    assert_eq!(json["totalRows"], 80_000_000, "{}", many["output"]["data"]["text/plain"]);
    assert_eq!(json["data"].as_array().unwrap().len(), 1000);
    let grown_mib = target.gateway.peak_rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 500, "the gateway's peak grew by {grown_mib} MiB for a result it only counts");
}

/// Idle and half-sent connections: a thousand of them do not keep `/health` or anyone else out,
/// and one that never finishes its request head is closed after the header deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_do_not_lock_others_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = Target::start("idle-connections", "demo_dataset = false\n").await;
    let address = target.gateway.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for i in 0..1100 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        if i % 2 == 0 {
            socket.write_all(b"GET /sessions HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        }
        idle.push(socket);
    }
    target.others_are_served("with 1,100 idle or half-sent connections open").await;
    // The half-sent ones are closed once the header deadline passes.
    let mut half_sent = idle.swap_remove(0);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), half_sent.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a half-sent request stayed open: {read:?}");
    target.others_are_served("after the header deadline").await;
}

/// Large results inside the output limit: eight 8 MB `[0,0,...]` results once cost about 310 MiB
/// resident each (held as parsed JSON trees, copied by every listing) and killed the gateway, and
/// again at every restart while it restored them. Held as text they cost about their size, a
/// listing does not copy them, and a restart restores them within the same memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_cost_their_size_and_survive_a_restart() {
    let dir = temp_dir("hostile-large-results");
    let start = || Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, "demo_dataset = false\n", None);
    let gateway = start();
    let http = reqwest::Client::new();
    let url = |gateway: &Process, path: &str| format!("{}{path}", gateway.url);
    let session: Value =
        http.post(url(&gateway, "/sessions")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let id = session["id"].as_u64().unwrap();
    // Compile once (a cache hit afterwards), then measure from there.
    let code = "vec![0u8; 4_000_000]";
    let statements = url(&gateway, &format!("/sessions/{id}/statements"));
    let run = |n: u64| {
        let (http, statements) = (http.clone(), statements.clone());
        async move {
            let body = json!({"kind": "rust", "code": code});
            let st: Value = http.post(&statements).json(&body).send().await.unwrap().json().await.unwrap();
            assert_eq!(st["id"], n);
            let done: Value = http.get(format!("{statements}/{n}?wait=60")).send().await.unwrap().json().await.unwrap();
            assert_eq!(done["output"]["status"], "ok", "{}", &done.to_string()[..300.min(done.to_string().len())]);
        }
    };
    run(0).await;
    let before = gateway.rss_kib();
    for n in 1..=8 {
        run(n).await;
    }
    // Ten listings at once, each of every output. Read as text: parsed into trees here, ten
    // listings of eight 4-million-element arrays would take this test process some 20 GB.
    let listings: Vec<_> = (0..10)
        .map(|_| {
            let request = http.get(&statements).send();
            tokio::spawn(async move { request.await.unwrap().text().await.unwrap() })
        })
        .collect();
    for listing in listings {
        let listing = listing.await.unwrap();
        assert!(listing.starts_with("{\"total_statements\":9,"), "{}", &listing[..100.min(listing.len())]);
        assert!(listing.len() > 8 * 8_000_000, "a listing of {} bytes lacks outputs", listing.len());
    }
    let grown = gateway.rss_kib().saturating_sub(before) / 1024;
    eprintln!("eight 8 MB results and ten listings: +{grown} MiB resident");
    assert!(grown < 600, "eight 8 MB results grew the gateway by {grown} MiB");

    // kill -9 and start again on the same data directory: everything is back, within memory.
    gateway.kill_9();
    let gateway = start();
    let restored = gateway.rss_kib() / 1024;
    eprintln!("restarted with them: {restored} MiB resident");
    let last: Value =
        http.get(url(&gateway, &format!("/sessions/{id}/statements/8"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(last["output"]["data"]["application/json"].as_array().map(Vec::len), Some(4_000_000));
    assert!(restored < 800, "the restarted gateway holds {restored} MiB");
}

/// A large durable state (24 sessions with an 8 MB result each) comes back after a restart within
/// a bounded memory: outputs over 64 KiB stay in the state database until asked for, and the
/// results kept as session values share `session_values_memory_mib`. Every output is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_durable_state_restarts_within_bounded_memory() {
    let dir = temp_dir("hostile-large-state");
    let config = "demo_dataset = false\nsession_values_memory_mib = 64\n";
    let start = || Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, config, None);
    let gateway = start();
    let fresh = gateway.rss_kib() / 1024;
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..24 {
        let s: Value =
            http.post(format!("{}/sessions", gateway.url)).json(&json!({})).send().await.unwrap().json().await.unwrap();
        let statements = format!("{}/sessions/{}/statements", gateway.url, s["id"]);
        let body = json!({"kind": "rust", "code": "vec![0u8; 4_000_000]"});
        let st: Value = http.post(&statements).json(&body).send().await.unwrap().json().await.unwrap();
        let done = http.get(format!("{statements}/{}?wait=60", st["id"])).send().await.unwrap().text().await.unwrap();
        assert!(done.contains("\"status\":\"ok\""), "{}", &done[..200.min(done.len())]);
        sessions.push(s["id"].as_u64().unwrap());
    }
    let running = gateway.rss_kib() / 1024;
    gateway.kill_9();
    let gateway = start();
    let restored = gateway.rss_kib() / 1024;
    eprintln!("fresh {fresh} MiB; with 24 results of 8 MB {running} MiB; restarted with them {restored} MiB");
    assert!(
        restored < fresh + 150,
        "restarted with 192 MB of results the gateway holds {restored} MiB (fresh: {fresh} MiB)"
    );
    for id in &sessions {
        let url = format!("{}/sessions/{id}/statements/0", gateway.url);
        let st = http.get(url).send().await.unwrap().text().await.unwrap();
        assert!(st.len() > 8_000_000 && st.contains("\"status\":\"ok\""), "{}", &st[..200.min(st.len())]);
    }
}

/// A module that is small to send and very costly to compile: `depth` nested loops, each with a
/// back edge, around a body that updates `locals` i64 locals, so every local is live at every
/// loop header (the issue's 91 KB case took Cranelift 114 s and +450 MB).
fn costly_to_compile(locals: usize, depth: usize) -> String {
    let mut wat = format!("(module (func (export \"main\") (result i32) (local{})\n", " i64".repeat(locals));
    wat += &"(loop\n".repeat(depth);
    for i in 0..locals {
        wat += &format!("(local.set {i} (i64.add (local.get {i}) (i64.const {i})))\n");
    }
    wat += &"(br_if 0 (i64.eqz (local.get 0))))\n".repeat(depth);
    wat + "i32.const 0))"
}

/// The children of `pid` (its threads' children).
fn children(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect()).unwrap_or(Vec::new());
    tasks
        .iter()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Cranelift's compile of a module is bounded like its run: it happens in a child process that
/// the statement deadline and cancel kill, so it neither holds the gateway's threads nor its
/// memory, and the gateway serves everyone meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_modules_stop_compiling_at_the_deadline_or_on_cancel() {
    let target = Target::start("costly-module", "demo_dataset = false\nstatement_timeout_secs = 3\n").await;
    let module = costly_to_compile(10_000, 100);
    let before = target.gateway.peak_rss_kib();
    let clock = Instant::now();
    let done = target.survive("wasm", &module).await;
    eprintln!("a costly module stopped after {:?}: {}", clock.elapsed(), done["output"]["evalue"]);
    assert_eq!(ename(&done), "CompileLimit", "{}", done["output"]);
    assert!(done["output"]["evalue"].as_str().unwrap().contains("statement_timeout_secs"), "{}", done["output"]);
    let grown_mib = target.gateway.peak_rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "the gateway's peak grew by {grown_mib} MiB while a module compiled elsewhere");

    // Cancel stops a compile at once, and the compiler process is gone with it.
    let id = target.submit(target.session, "wasm", &module).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!children(target.gateway.child.id()).is_empty(), "no compiler process while a module compiles");
    let cancel = target.url(&format!("/sessions/{}/statements/{id}/cancel", target.session));
    assert_eq!(target.http.post(cancel).send().await.unwrap().status(), 200);
    let done = target.statement(target.session, id, 2).await;
    assert_eq!(done["state"], "cancelled", "cancel took more than 2 s: {done}");
    let clock = Instant::now();
    while !children(target.gateway.child.id()).is_empty() {
        assert!(clock.elapsed() < Duration::from_secs(2), "the compiler outlived its cancelled statement");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    target.others_are_served("after a cancelled compile").await;

    // A module that does not validate is still an `InvalidModule` with wasmtime's reason.
    let invalid = target.survive("wasm", r#"(module (func (export "main") (result i32) i64.const 1))"#).await;
    assert_eq!(ename(&invalid), "InvalidModule", "{}", invalid["output"]);
    assert!(invalid["output"]["evalue"].as_str().unwrap().contains("type mismatch"), "{}", invalid["output"]);

    // With a long deadline, the compiler's memory limit stops it (256 MiB: Cranelift needs more).
    let config = "demo_dataset = false\nstatement_timeout_secs = 60\ncompile_memory_mib = 256\n";
    let target = Target::start("costly-module-memory", config).await;
    let done = target.survive("wasm", &module).await;
    assert_eq!(ename(&done), "CompileLimit", "{}", done["output"]);
    assert!(done["output"]["evalue"].as_str().unwrap().contains("more than 256 MiB"), "{}", done["output"]);
}

/// A job whose groups hold too much (each tile of the demo dataset its own key with a 400 KB
/// value: 1.2 GB of reduce state) ends as `MemoryLimit` at the job's memory pool, instead of
/// growing the gateway by gigabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_with_too_much_reduce_state_end_at_the_memory_limit() {
    let target = Target::start("fat-job", "job_memory_limit_mib = 128\n").await;
    let fat = r#"
fn fat(tile: &Tile) -> Vec<((u32, (u32, u32)), String)> {
    vec![((tile.index[0], (tile.index[1], tile.index[2])), "x".repeat(400_000))]
}
fn join(a: String, b: String) -> String { a + &b }
dataset("sst").map(fat).reduce_by_key(join).json().len()
"#;
    let before = target.gateway.peak_rss_kib();
    let done = target.survive("rust", fat).await;
    let grown_mib = target.gateway.peak_rss_kib().saturating_sub(before) / 1024;
    eprintln!("a job with 1.2 GB of reduce state: {} (peak +{grown_mib} MiB)", done["output"]["evalue"]);
    assert_eq!(ename(&done), "MemoryLimit", "{}", done["output"]);
    assert!(done["output"]["evalue"].as_str().unwrap().contains("job_memory_limit_mib"), "{}", done["output"]);
    assert!(grown_mib < 600, "the gateway's peak grew by {grown_mib} MiB for a job bounded at 128 MiB");

    // Within the pool the same job shape works: 40 bytes a key.
    let small = fat.replace("400_000", "40");
    let done = target.survive("rust", &small).await;
    assert_eq!(done["output"]["status"], "ok", "{}", done["output"]);
}

/// A large table-shaped value in a session (a million rows, 8 MB of JSON objects) costs a query
/// only when the query names it: `SELECT 1` once parsed every such value into a table (+550 MiB
/// and 1.6 s per query for an 8 MB one). Measured after a restart, so that the peak is not the
/// job's that made the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_pay_only_for_the_session_values_they_name() {
    let dir = temp_dir("hostile-lazy-tables");
    let start = || Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, "", None);
    let http = reqwest::Client::new();
    let run = |url: String, kind: &'static str, code: String| {
        let http = http.clone();
        async move {
            let body = json!({"kind": kind, "code": code});
            let st: Value =
                http.post(format!("{url}/statements")).json(&body).send().await.unwrap().json().await.unwrap();
            let done = format!("{url}/statements/{}?wait=60", st["id"]);
            loop {
                let st = http.get(&done).send().await.unwrap().json::<Value>().await.unwrap();
                if st["state"] == "available" {
                    break st;
                }
            }
        }
    };
    let gateway = start();
    let session: Value =
        http.post(format!("{}/sessions", gateway.url)).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let rows = r#"
record! { struct Row { a: u8 } }
(0..1_000_000).map(|_| Row { a: 0 }).collect::<Vec<_>>()
"#;
    let session_url = |gateway: &Process| format!("{}/sessions/{}", gateway.url, session["id"]);
    let made = run(session_url(&gateway), "rust", rows.into()).await;
    assert_eq!(made["output"]["status"], "ok", "{}", made.to_string().chars().take(400).collect::<String>());
    let size = made["output"]["data"]["application/json"].to_string().len();
    assert!(size > 7_000_000, "the value is only {size} bytes");
    gateway.kill_9();

    let gateway = start();
    // The first queries of a process set up what every query shares: run them in another session.
    let other: Value =
        http.post(format!("{}/sessions", gateway.url)).json(&json!({})).send().await.unwrap().json().await.unwrap();
    for _ in 0..3 {
        let other = format!("{}/sessions/{}", gateway.url, other["id"]);
        run(other, "sql", "SELECT 1 AS one".into()).await;
    }
    let before = gateway.peak_rss_kib();
    for _ in 0..3 {
        let one = run(session_url(&gateway), "sql", "SELECT 1 AS one".into()).await;
        assert_eq!(one["output"]["data"]["application/json"]["data"][0][0], 1, "{}", one["output"]);
    }
    let grown_mib = gateway.peak_rss_kib().saturating_sub(before) / 1024;
    eprintln!("three SELECT 1 beside a {size}-byte table-shaped value: peak +{grown_mib} MiB");
    assert!(grown_mib < 40, "SELECT 1 grew the gateway's peak by {grown_mib} MiB");
    // Named, the value is a table, built from its text at about its size (as a tree of JSON values
    // it once cost some 570 MiB).
    let count = run(session_url(&gateway), "sql", format!("SELECT COUNT(*) AS n FROM result_{}", made["id"])).await;
    let n = count["output"]["data"]["application/json"]["data"][0][0].as_u64().unwrap_or(0);
    assert_eq!(n, 1_000_000, "{}", count["output"]);
    let grown_mib = gateway.peak_rss_kib().saturating_sub(before) / 1024;
    eprintln!("the same value queried as a table: peak +{grown_mib} MiB");
    assert!(grown_mib < 150, "querying an 8 MB value grew the gateway's peak by {grown_mib} MiB");
}
