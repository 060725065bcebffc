//! Integration tests: each starts the real gateway on `127.0.0.1:0` and drives it over HTTP,
//! through the SDK or, for malformed input, raw requests.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod algorithms;
mod auth;
mod bad_input;
mod batches;
mod clients;
mod datasets;
mod jobs;
mod livy;
mod notebook;
mod openapi;
mod ops;
mod python_sdk;
mod rust;
mod sql;
mod sql_index;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tilegate_gateway::{AppState, Config, serve};
use tilegate_sdk::Client;
use tokio::sync::oneshot;

/// A WAT fixture from `sandbox/fixtures`.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../sandbox/fixtures/", $name, ".wat"))
    };
}
pub(crate) use fixture;

/// A running gateway; shuts down when dropped.
pub struct Gateway {
    /// The SDK client.
    pub client: Client,
    /// A plain HTTP client, for requests the SDK would never send.
    pub http: reqwest::Client,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The data directory.
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    owns_data_dir: bool,
}

impl Gateway {
    /// Starts a gateway with test settings ([`test_config`]) on an ephemeral loopback port.
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    /// Starts a gateway with `config` on an ephemeral loopback port. A data directory made by
    /// [`test_config`] is removed when the gateway is dropped.
    pub async fn start_with(config: Config) -> Self {
        let data_dir = config.data_dir.clone();
        let owns_data_dir =
            data_dir.starts_with(std::env::temp_dir()) && data_dir.to_string_lossy().contains("tilegate-it-");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = AppState::new(config).expect("gateway state");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, state, async move {
            let _ = rx.await;
        }));
        Self {
            client: Client::new(&url).expect("client"),
            http: reqwest::Client::new(),
            url,
            data_dir,
            shutdown: Some(tx),
            owns_data_dir,
        }
    }

    /// A raw request; returns the status and the JSON body (every body must be JSON).
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"));
        (status, json)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Default settings with a fresh, empty data directory and no demo dataset. Compiled snippets
/// and the prelude rlib are shared by all test gateways (keyed by content, so never stale).
pub fn test_config() -> Config {
    let compile_cache_dir = Some(std::env::temp_dir().join("tilegate-it-compile-cache"));
    Config { data_dir: fresh_dir(), demo_dataset: false, compile_cache_dir, ..Config::default() }
}

/// A new empty directory under the system temp dir, removed when a gateway using it is dropped.
pub fn fresh_dir() -> PathBuf {
    new_dir("tilegate-it")
}

/// A new empty directory that outlives gateways (for restart tests); the test removes it.
pub fn lasting_dir() -> PathBuf {
    new_dir("tilegate-lasting")
}

fn new_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Python with the packages of `tests/requirements.txt`, in a venv under the Cargo target
/// directory: made on first use, remade when the requirements change.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv("tilegate-pyenv", "requirements.txt", false))
}

/// Python with sparkmagic (`tests/requirements-sparkmagic.txt`, every package pinned and installed
/// without dependency resolution), in a venv of its own: sparkmagic needs pandas < 3.
pub fn sparkmagic_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv("tilegate-sparkmagic-env", "requirements-sparkmagic.txt", true))
}

/// Python with Apache Airflow and its Livy provider (`tests/requirements-airflow.txt`, pinned,
/// installed without dependency resolution), in a venv of its own: Airflow pins much of the world.
pub fn airflow_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv("tilegate-airflow-env", "requirements-airflow.txt", true))
}

/// The python of venv `name` under the target dir with `tests/<requirements>` installed, remade
/// when the file changes.
fn venv(name: &str, requirements: &str, no_deps: bool) -> PathBuf {
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join(requirements);
    let wanted = std::fs::read_to_string(&requirements).expect("requirements file");
    // The test binary lives in <target>/debug/deps.
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).expect("target dir");
    let venv = target.join(name);
    let bin = venv.join("bin").join("python");
    let marker = venv.join("requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let ok = Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv).status().is_ok_and(|s| s.success());
        assert!(ok, "python3 -m venv failed: Python 3 with venv is needed for the dataset tests");
        let mut pip = Command::new(&bin);
        pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]);
        if no_deps {
            pip.arg("--no-deps");
        }
        let ok = pip.arg("-r").arg(&requirements).status().is_ok_and(|s| s.success());
        assert!(ok, "pip install -r {} failed", requirements.display());
        std::fs::write(&marker, wanted).expect("venv marker");
    }
    bin
}

/// Runs `python -c script args...` (off the async runtime, in the temp dir) and returns its
/// stdout; panics with stdout and stderr when it fails.
pub async fn run_script(python: &Path, script: &'static str, args: &[&str]) -> String {
    let python = python.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg("-c").arg(script).args(args).current_dir(std::env::temp_dir()).output()
    })
    .await
    .expect("script task")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Runs a script of `tests/tools` with [`python`]; returns its stdout, panics with its stderr.
pub fn run_tool(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools").join(script);
    let out = Command::new(python()).arg(&path).args(args).output().expect("run python");
    assert!(out.status.success(), "{script} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Settings with a short statement deadline, for tests that hit it.
pub fn short_deadline(secs: f64) -> Config {
    Config { statement_timeout_secs: secs, ..test_config() }
}

/// Polls until the statement leaves `waiting`/`running`, or panics after 30 s.
pub async fn wait_state(gw: &Gateway, session: u64, statement: u64, want: tilegate_sdk::StatementState) {
    for _ in 0..3000 {
        if gw.client.statement(session, statement).await.expect("statement").state == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("statement {statement} never became {want:?}");
}
