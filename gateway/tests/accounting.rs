//! Compute accounting against the real binary: what a statement says it cost is checked against
//! what the kernel says the gateway process (and the compilers it started) spent meanwhile, and
//! its tiles against the chunk grid of the store; per-user quotas answer 429 naming the quota and
//! hold across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{Process, temp_dir};

/// CPU seconds the process and its reaped children used (`/proc/<pid>/stat`: utime, stime,
/// cutime, cstime; clock ticks of 1/100 s).
fn process_cpu(gateway: &Process) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", gateway.child.id())).unwrap();
    // Fields after the command, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    // utime is field 14 of the whole line, the 12th after the command (index 11).
    fields[11..15].iter().map(|f| f.parse::<f64>().unwrap()).sum::<f64>() / 100.0
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<&'static str>,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn session(&self) -> u64 {
        let (status, body) = self.call(reqwest::Method::POST, "/sessions", Some(json!({}))).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_u64().unwrap()
    }

    async fn submit(&self, session: u64, kind: &str, code: &str) -> (u16, Value) {
        let body = json!({"kind": kind, "code": code});
        self.call(reqwest::Method::POST, &format!("/sessions/{session}/statements"), Some(body)).await
    }

    /// Runs a statement to its end (long polls, so the gateway does little else meanwhile).
    async fn run(&self, session: u64, kind: &str, code: &str) -> Value {
        let (status, st) = self.submit(session, kind, code).await;
        assert_eq!(status, 201, "{st}");
        let path = format!("/sessions/{session}/statements/{}?wait=60", st["id"]);
        loop {
            let (_, st) = self.call(reqwest::Method::GET, &path, None).await;
            if st["state"] == "available" {
                assert_eq!(st["output"]["status"], "ok", "{code}: {}", st["output"]);
                return st;
            }
        }
    }
}

/// Tiles per time step of the demo store, from its own metadata: the chunk grid over lat x lon.
fn tiles_per_step(data_dir: &Path) -> u64 {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("datasets/sst.zarr/sst/zarr.json")).unwrap())
            .unwrap();
    let shape: Vec<u64> = serde_json::from_value(meta["shape"].clone()).unwrap();
    let chunks: Vec<u64> = serde_json::from_value(meta["chunk_grid"]["configuration"]["chunk_shape"].clone()).unwrap();
    assert_eq!(chunks[0], 1, "one time step per chunk");
    shape[1].div_ceil(chunks[1]) * shape[2].div_ceil(chunks[2])
}

/// Each kind of statement is charged the CPU the gateway spent on it, within what the process
/// (and its children) spent meanwhile, and reads the tiles its selection covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_charged_what_the_process_spent_on_them() {
    let dir = temp_dir("accounting-cpu");
    let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, "statement_timeout_secs = 120\n", None);
    let client = Client { http: reqwest::Client::new(), url: gateway.url.clone(), token: None };
    // The prelude is built in the background at start: wait for it before measuring.
    while client.call(reqwest::Method::GET, "/ready", None).await.0 != 200 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let session = client.session().await;
    let per_step = tiles_per_step(&dir);
    let salt = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    // A cold compile (rustc in its jail), then a job over 30 days of the globe.
    let job = format!(
        "let _salt = {salt}u128;\n\
         let rows = dataset(\"sst\").time(\"2008-09-01\", \"2008-09-30\")\n\
             .map(|tile| tile.stats_by_time()).reduce_by_key(Stats::merge);\n\
         rows"
    );
    let cases = [
        ("rust", job.clone(), Some(30 * per_step)),
        // The same module from the cache: the job alone.
        ("rust", job, Some(30 * per_step)),
        // Many partitions of a DataFusion plan, polled by tasks DataFusion spawns.
        (
            "sql",
            "SELECT lat, AVG(sst) AS m, STDDEV(sst) AS s FROM sst \
             WHERE time <= '2008-10-10' GROUP BY lat ORDER BY lat"
                .to_owned(),
            Some(40 * per_step),
        ),
        // Guest code on the statement's own thread, after Cranelift in a child process.
        (
            "wasm",
            format!(
                "(module (func (export \"main\") (result i64) (local i64)
                   (loop $l (local.set 0 (i64.add (local.get 0) (i64.const 1)))
                            (br_if $l (i64.lt_u (local.get 0) (i64.const 1200000000))))
                   (i64.add (local.get 0) (i64.const {})) ))",
                salt % 1000
            ),
            Some(0),
        ),
    ];
    let mut wrong = Vec::new();
    for (kind, code, tiles) in cases {
        let before = process_cpu(&gateway);
        let done = client.run(session, kind, &code).await;
        let spent = process_cpu(&gateway) - before;
        let usage = &done["usage"];
        let charged = usage["cpu_seconds"].as_f64().unwrap_or(-1.0);
        println!("{kind}: charged {charged:.3} s of {spent:.3} s the process spent; {usage}");
        // The process also answered two requests and kept its clocks: a little more than charged.
        if charged > spent + 0.05 || charged < 0.8 * spent - 0.05 {
            wrong.push(format!("{kind}: charged {charged:.3} s of the {spent:.3} s spent on it"));
        }
        if let Some(tiles) = tiles
            && usage["tiles_read"] != tiles
        {
            wrong.push(format!("{kind}: {} tiles read, the selection covers {tiles}", usage["tiles_read"]));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The statement keeps its cost in listings, after a restart too.
    let (_, list) = client.call(reqwest::Method::GET, &format!("/sessions/{session}/statements"), None).await;
    let first = list["statements"][0]["usage"].clone();
    assert!(first["cpu_seconds"].as_f64().unwrap() > 0.0, "{first}");
    gateway.kill_9();
    let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, "", None);
    let client = Client { http: reqwest::Client::new(), url: gateway.url.clone(), token: None };
    let (_, list) = client.call(reqwest::Method::GET, &format!("/sessions/{session}/statements"), None).await;
    assert_eq!(list["statements"][0]["usage"], first);
    let (_, usage) = client.call(reqwest::Method::GET, "/usage", None).await;
    assert_eq!(usage["user"], "anonymous");
    assert_eq!(usage["statements"], 4, "{usage}");
}

const ANN: &str = "ann-secret-token";
const BOB: &str = "bob-secret-token";
const ROOT: &str = "root-secret-token";

fn quota_config() -> String {
    let user = |name: &str, token: &str, extra: &str| {
        format!("[[users]]\nname = \"{name}\"\ntoken_sha256 = [\"{}\"]\n{extra}", tilegate_gateway::hash_token(token))
    };
    format!(
        "demo_dataset = false\nstatement_timeout_secs = 60\ncpu_seconds_per_day_per_user = 1\n\
         max_waiting_compiles_per_user = 1\n{}{}{}",
        user("ann", ANN, ""),
        user("bob", BOB, "cpu_seconds_per_day = 1000\n"),
        user("root", ROOT, "admin = true\n"),
    )
}

/// Burns about a second of CPU or more in the guest.
const BURN: &str = "(module (func (export \"main\") (result i64) (local i64)
   (loop $l (local.set 0 (i64.add (local.get 0) (i64.const 1)))
            (br_if $l (i64.lt_u (local.get 0) (i64.const 3000000000))))
   (local.get 0)))";

/// A user past their CPU seconds of the day gets 429 naming the quota, also after a restart;
/// others are not affected; too many `rust` statements waiting to compile get 429 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_answer_429_naming_the_quota() {
    let dir = temp_dir("accounting-quota");
    let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, &quota_config(), None);
    let http = reqwest::Client::new();
    let as_user = |token| Client { http: http.clone(), url: gateway.url.clone(), token: Some(token) };
    let (ann, bob, root) = (as_user(ANN), as_user(BOB), as_user(ROOT));

    // Waiting compiles: bob's first `rust` statement waits for its compile, the second is refused;
    // other languages are not.
    let b = bob.session().await;
    assert_eq!(bob.submit(b, "rust", "1 + 1").await.0, 201);
    let (status, body) = bob.submit(b, "rust", "2 + 2").await;
    assert_eq!(status, 429, "{body}");
    assert!(body["msg"].as_str().unwrap().contains("max_waiting_compiles_per_user"), "{body}");
    assert_eq!(bob.submit(b, "sql", "SELECT 1").await.0, 201);

    // CPU seconds per day.
    let s = ann.session().await;
    let done = ann.run(s, "wasm", BURN).await;
    let charged = done["usage"]["cpu_seconds"].as_f64().unwrap();
    assert!(charged >= 1.0, "the burn took only {charged} s: make it longer");
    let (status, body) = ann.submit(s, "sql", "SELECT 1").await;
    assert_eq!(status, 429, "{body}");
    assert!(body["msg"].as_str().unwrap().contains("cpu_seconds_per_day_per_user"), "{body}");
    let (_, usage) = ann.call(reqwest::Method::GET, "/usage", None).await;
    assert_eq!(usage["user"], "ann");
    assert_eq!(usage["cpu_seconds_per_day"], 1);
    assert!(usage["cpu_seconds"].as_f64().unwrap() >= charged, "{usage}");
    // Bob's own quota is larger, and his account his own (his three statements).
    bob.run(b, "wasm", BURN).await;
    let (_, usage) = bob.call(reqwest::Method::GET, "/usage", None).await;
    assert_eq!(usage["cpu_seconds_per_day"], 1000, "{usage}");
    assert_eq!(usage["statements"], 3, "{usage}");

    // Per-user counters: an admin sees everyone's, a user their own.
    let metrics = |client: &Client| {
        let client = Client { http: client.http.clone(), url: client.url.clone(), token: client.token };
        async move { client.call(reqwest::Method::GET, "/metrics", None).await.1.as_str().unwrap().to_owned() }
    };
    let all = metrics(&root).await;
    for user in ["ann", "bob"] {
        let line = format!("tilegate_user_cpu_seconds_total{{user=\"{user}\"}} ");
        let value: f64 = all.lines().find_map(|l| l.strip_prefix(line.as_str())).unwrap().parse().unwrap();
        assert!(value >= 1.0, "{user}: {value}");
    }
    let own = metrics(&bob).await;
    assert!(own.contains("user=\"bob\"") && !own.contains("user=\"ann\""), "{own}");

    // The day's account is kept: after a restart ann is still over her quota.
    gateway.kill_9();
    let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, &quota_config(), None);
    let ann = Client { http: http.clone(), url: gateway.url.clone(), token: Some(ANN) };
    let (status, body) = ann.submit(s, "sql", "SELECT 1").await;
    assert_eq!(status, 429, "after a restart: {body}");
}
