//! What the gateway's process-level tests and benchmarks share: the real `tilegate` binary as a
//! child process, and a load driver (many sessions, each running statements one after another,
//! as notebook users do).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The gateway as a child process; killed when dropped.
pub struct Process {
    pub child: Child,
    pub url: String,
}

impl Process {
    /// Starts `binary` on an ephemeral loopback port with `config` (TOML) in `data_dir`, and
    /// waits for its "listening" line. Its stderr (the logs) goes to `stderr`, or is inherited.
    pub fn start(binary: &str, data_dir: &Path, config: &str, stderr: Option<&Path>) -> Self {
        let cache = std::env::temp_dir().join("tilegate-it-compile-cache");
        let file = data_dir.join("gateway.toml");
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&file, format!("compile_cache_dir = {cache:?}\n{config}")).unwrap();
        let mut command = Command::new(binary);
        command.args(["--bind", "127.0.0.1:0", "--config"]).arg(&file).arg("--data-dir").arg(data_dir);
        Self::spawn(command, stderr)
    }

    /// Starts `command` (a `tilegate` invocation that binds an ephemeral port) and waits for its
    /// "listening" line. Its stderr (the logs) goes to `stderr`, or is inherited at level warn.
    pub fn spawn(mut command: Command, stderr: Option<&Path>) -> Self {
        command.stdout(Stdio::piped());
        match stderr {
            Some(path) => {
                command.stderr(std::fs::File::create(path).unwrap());
            }
            None => {
                command.env("TILEGATE_LOG", "warn");
            }
        }
        let mut child = command.spawn().expect("start tilegate");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect(&line).to_owned();
        Self { child, url }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the process has had, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tilegate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The statements each load session runs, in turn: a WAT module, a Rust cell (compiled once, then
/// a cache hit for every session), and SQL. Each with its `text/plain` answer, if checked.
pub const MIX: [(&str, &str, Option<&str>); 3] = [
    ("wasm", r#"(module (func (export "main") (result i32) i32.const 42))"#, Some("42")),
    ("rust", "6 * 7", Some("42")),
    ("sql", "SELECT 6 * 7 AS answer", None),
];

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Statements that ended `available` with the expected output.
    pub ok: usize,
    /// Everything else: a refused request, a transport error, a wrong or failed output.
    pub errors: Vec<String>,
    /// Submit → `available`, per statement.
    pub round_trips: Vec<Duration>,
    /// `POST .../statements` → 201, per statement.
    pub submits: Vec<Duration>,
    /// Start to end of the run.
    pub wall: Duration,
}

/// `sessions` sessions at once, each creating itself, running `statements` statements of [`MIX`]
/// one after another (submit, poll with backoff until `available`), and deleting itself.
pub async fn load(url: &str, sessions: usize, statements: usize) -> LoadReport {
    let http = reqwest::Client::builder().pool_max_idle_per_host(sessions).build().unwrap();
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let (http, url, report) = (http.clone(), url.to_owned(), report.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = one_session(&http, &url, s, statements, &report).await {
                report.lock().await.errors.push(format!("session {s}: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut report = Arc::try_unwrap(report).unwrap().into_inner();
    report.wall = started.elapsed();
    report
}

async fn one_session(
    http: &reqwest::Client,
    url: &str,
    s: usize,
    statements: usize,
    report: &Mutex<LoadReport>,
) -> Result<(), String> {
    let session = send(http.post(format!("{url}/sessions")).json(&json!({"kind": "shared"}))).await?;
    let id = session["id"].as_u64().ok_or("no session id")?;
    for i in 0..statements {
        let (kind, code, want) = MIX[(s + i) % MIX.len()];
        let clock = Instant::now();
        let body = json!({"kind": kind, "code": code});
        let st = send(http.post(format!("{url}/sessions/{id}/statements")).json(&body)).await?;
        let submitted = clock.elapsed();
        let sid = st["id"].as_u64().ok_or("no statement id")?;
        let mut pause = Duration::from_millis(1);
        let done = loop {
            let st = send(http.get(format!("{url}/sessions/{id}/statements/{sid}"))).await?;
            if st["state"] == "available" {
                break st;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        let round_trip = clock.elapsed();
        let output = &done["output"];
        let good = output["status"] == "ok" && want.is_none_or(|w| output["data"]["text/plain"] == w);
        let mut report = report.lock().await;
        if good {
            report.ok += 1;
            report.submits.push(submitted);
            report.round_trips.push(round_trip);
        } else {
            report.errors.push(format!("session {id} statement {sid} ({kind}): {output}"));
        }
    }
    send(http.delete(format!("{url}/sessions/{id}"))).await?;
    Ok(())
}

/// Sends; a transport error or a status other than 2xx is an error.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status.is_success() { Ok(body) } else { Err(format!("{status}: {body}")) }
}

/// The `q` quantile of `samples`.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
