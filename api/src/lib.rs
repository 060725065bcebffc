//! Livy wire types: the JSON shapes of the REST API, declared once and shared by the gateway and the SDK.
//!
//! Everything here is plain serde data. Field names follow Apache Livy exactly (`proxyUser`, `appId`,
//! `total_statements`, ...) because existing clients (pylivy, sparkmagic, Airflow) parse them strictly:
//! keys are always present (nulls serialized) and enums only ever take Livy's values.
//!
//! # Layout
//! - [`Session`], [`CreateSession`], [`SessionList`], [`SessionStateInfo`], [`SessionLog`]: sessions.
//! - [`Statement`], [`CreateStatement`], [`StatementList`], [`Output`]: statements and their results.
//! - [`SessionKind`], [`SessionState`], [`StatementState`], [`Language`]: the enums, as Livy spells them.
//! - [`DatasetInfo`], [`DatasetList`], [`TileList`], [`RegisterDataset`]: shared datasets and their tile index.
//! - [`Version`], [`Msg`]: `GET /version` and the `{"msg": ...}` body of confirmations and errors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The Livy version the gateway reports in `GET /version`. pylivy compares version strings
/// lexically against `0.5.0`, so `0.10.x` would read as "legacy"; `0.8.0-incubating` is the last
/// released Livy and is accepted by every client.
pub const LIVY_VERSION: &str = "0.8.0-incubating";

/// The `conf` key that sets a session's default statement language (`rust`, `wasm` or `sql`).
pub const CONF_KIND: &str = "tilegate.kind";

/// A session's kind, as Livy names it. The gateway never reports any other value: pylivy parses
/// every session of a listing into this enum, so one unknown kind would break listing for all users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// Scala Spark; statements default to `rust` here.
    Spark,
    /// Python Spark; statements default to `rust` here.
    Pyspark,
    /// R Spark; statements default to `rust` here.
    Sparkr,
    /// SQL; statements default to `sql`.
    Sql,
    /// No default in Livy (each statement names its kind); here statements default to `rust`.
    Shared,
}

impl SessionKind {
    /// Livy's name for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spark => "spark",
            Self::Pyspark => "pyspark",
            Self::Sparkr => "sparkr",
            Self::Sql => "sql",
            Self::Shared => "shared",
        }
    }
}

impl fmt::Display for SessionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The language a statement is run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// A Rust snippet, compiled to WebAssembly by the gateway.
    Rust,
    /// A WebAssembly module, as WAT text or base64.
    Wasm,
    /// SQL answered by Apache DataFusion.
    Sql,
}

impl Language {
    /// The lowercase name used in `kind` fields, `%` directives and `tilegate.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Wasm => "wasm",
            Self::Sql => "sql",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rust" => Ok(Self::Rust),
            "wasm" => Ok(Self::Wasm),
            "sql" => Ok(Self::Sql),
            other => Err(format!("unknown language '{other}' (expected rust, wasm or sql)")),
        }
    }
}

/// Livy's session states. Only a subset is reached today, but clients validate against all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Created but not started.
    NotStarted,
    /// Starting up.
    Starting,
    /// Being restored after a restart.
    Recovering,
    /// Ready for statements; none is queued or running.
    Idle,
    /// Running (batches).
    Running,
    /// A statement is queued or running.
    Busy,
    /// Being deleted.
    ShuttingDown,
    /// Failed to start, or its interpreter died. A failing statement never causes this.
    Error,
    /// Exited.
    Dead,
    /// Killed by a user.
    Killed,
    /// Finished successfully (batches).
    Success,
}

impl SessionState {
    /// Livy's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Starting => "starting",
            Self::Recovering => "recovering",
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting_down",
            Self::Error => "error",
            Self::Dead => "dead",
            Self::Killed => "killed",
            Self::Success => "success",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Livy's statement states. `error` exists in every client's enum but Livy never sets it:
/// failing code ends `available` with an error output, and so does it here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementState {
    /// Queued behind earlier statements of the session.
    Waiting,
    /// Running now.
    Running,
    /// Finished; `output` holds the result or the error.
    Available,
    /// Never set by the gateway; present for client compatibility.
    Error,
    /// Cancel requested while running; ends `cancelled`.
    Cancelling,
    /// Cancelled; `output` stays null.
    Cancelled,
}

impl StatementState {
    /// Whether the statement will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Available | Self::Error | Self::Cancelled)
    }
}

/// `POST /sessions`. Spark resource fields are accepted (sparkmagic's `%%configure` sends them)
/// and echoed back, but have no effect. Any other key is rejected with 400.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSession {
    /// Session kind (Livy's, or an alias: scala, python, r). Defaults to `shared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Optional unique name; session routes accept it in place of the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// User to run as (honoured for admins once auth exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_user: Option<String>,
    /// Configuration; `tilegate.kind` sets the default statement language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<BTreeMap<String, Value>>,
    /// Heartbeat timeout in seconds (0 = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_in_second: Option<i64>,
    /// Maximum lifetime, e.g. `"2h"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Idle timeout, e.g. `"10m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_memory: Option<String>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_cores: Option<i64>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_memory: Option<String>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_cores: Option<i64>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_executors: Option<i64>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jars: Option<Vec<String>>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub py_files: Option<Vec<String>>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Spark resource field, accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives: Option<Vec<String>>,
}

/// A session, as `GET /sessions/{id}` returns it. All keys are always present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Integer id, never reused.
    pub id: u64,
    /// Optional unique name.
    pub name: Option<String>,
    /// A UUID identifying the session's run.
    pub app_id: Option<String>,
    /// Who created it.
    pub owner: Option<String>,
    /// Who it runs as.
    pub proxy_user: Option<String>,
    /// Livy state.
    pub state: SessionState,
    /// Livy kind (never a tilegate language name).
    pub kind: SessionKind,
    /// Links Livy clients look for (all null here).
    pub app_info: BTreeMap<String, Option<String>>,
    /// The last lines of the session log.
    pub log: Vec<String>,
    /// Maximum lifetime, as requested.
    pub ttl: Option<String>,
    /// Idle timeout, as requested.
    pub idle_timeout: Option<String>,
    /// Echoed configuration.
    pub conf: BTreeMap<String, Value>,
    /// Echoed heartbeat timeout.
    pub heartbeat_timeout_in_second: i64,
    /// Echoed Spark field.
    pub driver_memory: Option<String>,
    /// Echoed Spark field.
    pub driver_cores: Option<i64>,
    /// Echoed Spark field.
    pub executor_memory: Option<String>,
    /// Echoed Spark field.
    pub executor_cores: Option<i64>,
    /// Echoed Spark field.
    pub num_executors: Option<i64>,
    /// Echoed Spark field.
    pub queue: Option<String>,
    /// Echoed Spark field.
    pub jars: Vec<String>,
    /// Echoed Spark field.
    pub py_files: Vec<String>,
    /// Echoed Spark field.
    pub files: Vec<String>,
    /// Echoed Spark field.
    pub archives: Vec<String>,
    /// tilegate extension: the language statements default to in this session.
    pub default_language: Language,
}

/// `GET /sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionList {
    /// Offset of the first session returned.
    pub from: u64,
    /// Number of sessions in total (not the page size).
    pub total: u64,
    /// The page.
    pub sessions: Vec<Session>,
}

/// `POST /batches`: Livy's batch fields (accepted; Spark's have no effect) plus what tilegate runs:
/// `file`, the name of a snippet in the gateway's jobs directory (`.rs` rust, `.wat`/`.wasm` wasm,
/// `.sql` sql), or inline `code` with its `kind`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBatch {
    /// A file in the jobs directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Inline code (instead of `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `rust`, `wasm` or `sql`; default from the file's extension, else `rust`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A name for the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// User to run as (honoured for admins once auth exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_user: Option<String>,
    /// Spark's main class (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Arguments (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Spark configuration (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<BTreeMap<String, serde_json::Value>>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jars: Option<Vec<String>>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub py_files: Option<Vec<String>>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives: Option<Vec<String>>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_memory: Option<String>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_cores: Option<u32>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_memory: Option<String>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_cores: Option<u32>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_executors: Option<u32>,
    /// Spark resources (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// A batch as Livy shows it: `starting` → `running` → `success`, `dead` (failed) or `killed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// Batch id.
    pub id: u64,
    /// Its name.
    pub name: Option<String>,
    /// Owner (null until authentication exists).
    pub owner: Option<String>,
    /// As requested.
    pub proxy_user: Option<String>,
    /// Livy state.
    pub state: SessionState,
    /// An id for the run.
    pub app_id: Option<String>,
    /// Livy's application info (always the same keys).
    pub app_info: BTreeMap<String, Option<String>>,
    /// The last lines of its log: the run, then the result's text or the error.
    pub log: Vec<String>,
}

/// `GET /batches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchList {
    /// Offset of the first batch returned.
    pub from: u64,
    /// Number of batches in total.
    pub total: u64,
    /// The page (Livy names it `sessions`).
    pub sessions: Vec<Batch>,
}

/// `GET /sessions/{id}/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStateInfo {
    /// Session id.
    pub id: u64,
    /// Livy state.
    pub state: SessionState,
}

/// `GET /sessions/{id}/log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionLog {
    /// Session id.
    pub id: u64,
    /// Offset of the first line returned.
    pub from: u64,
    /// Number of lines in total.
    pub total: u64,
    /// The lines.
    pub log: Vec<String>,
}

/// `POST /sessions/{id}/statements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStatement {
    /// The code: a Rust snippet, a WAT or base64 wasm module, or SQL.
    pub code: String,
    /// `rust`, `wasm`, `sql`; Livy's `spark`/`pyspark`/`sparkr` mean "the session's default".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A finished statement's output as the gateway holds it: the JSON text of an [`Output`], shared.
/// A parsed JSON tree costs about twenty times its text, and every listing would copy it.
pub type RawOutput = std::sync::Arc<serde_json::value::RawValue>;

/// `output` as its JSON text.
///
/// # Errors
/// Never for outputs built by the gateway (their maps have string keys).
pub fn raw_output(output: &Output) -> serde_json::Result<RawOutput> {
    serde_json::value::to_raw_value(output).map(RawOutput::from)
}

/// A statement, as `GET /sessions/{id}/statements/{sid}` returns it. The gateway holds the
/// output as [`RawOutput`]; clients read it as [`Output`] (the default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement<O = Output> {
    /// Per-session id, from 0.
    pub id: u64,
    /// The submitted code.
    pub code: String,
    /// Livy state.
    pub state: StatementState,
    /// Null until the statement is `available`; stays null when cancelled.
    pub output: Option<O>,
    /// 0.0 to 1.0; 1.0 once finished. Never null (sparkmagic feeds it to a progress bar).
    pub progress: f64,
    /// Start time, epoch milliseconds, 0 if not started.
    pub started: i64,
    /// Completion time, epoch milliseconds, 0 if not finished.
    pub completed: i64,
    /// What the statement has cost so far (a tilegate extension; absent until it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What a statement cost: CPU time on every thread and process that worked for it (the gateway's
/// threads, the compilers it started), and tiles it read. A tilegate extension to Livy's statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU seconds, summed over threads (a statement on four cores for one second costs four).
    pub cpu_seconds: f64,
    /// Tiles read (from the tile cache or the store), counted once per read.
    pub tiles_read: u64,
}

/// `GET /sessions/{id}/statements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementList<O = Output> {
    /// Number of statements in the session.
    pub total_statements: u64,
    /// The page.
    pub statements: Vec<Statement<O>>,
}

impl Statement<RawOutput> {
    /// The statement with its output parsed, as a client reads it.
    ///
    /// # Errors
    /// When the held text is not an output (never for the gateway's own).
    pub fn parsed(&self) -> serde_json::Result<Statement> {
        let output = self.output.as_ref().map(|raw| serde_json::from_str(raw.get())).transpose()?;
        Ok(Statement {
            id: self.id,
            code: self.code.clone(),
            state: self.state,
            output,
            progress: self.progress,
            started: self.started,
            completed: self.completed,
            usage: self.usage,
        })
    }
}

/// A finished statement's result, Livy's `output` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Output {
    /// The code ran; `data` maps MIME types to values.
    Ok {
        /// The statement id (0-based), as Livy reports it.
        execution_count: u64,
        /// MIME type → value: `text/plain` (a string) and `application/json` (any JSON).
        data: BTreeMap<String, Value>,
    },
    /// The code failed (did not compile, trapped, hit a limit, was rejected).
    Error {
        /// The statement id (0-based), as Livy reports it.
        execution_count: u64,
        /// What kind of failure, e.g. `Timeout`, `MemoryLimit`, `InvalidModule`.
        ename: String,
        /// The message.
        evalue: String,
        /// Details, one string per line.
        traceback: Vec<String>,
    },
}

impl Output {
    /// The `text/plain` value of an ok output.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Ok { data, .. } => data.get("text/plain").and_then(Value::as_str),
            Self::Error { .. } => None,
        }
    }

    /// The `application/json` value of an ok output.
    pub fn json(&self) -> Option<&Value> {
        match self {
            Self::Ok { data, .. } => data.get("application/json"),
            Self::Error { .. } => None,
        }
    }
}

/// `GET /version`: Livy's fields plus the gateway's own version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// The Livy API version served ([`LIVY_VERSION`]).
    pub version: String,
    /// Build user (empty).
    pub user: String,
    /// Source revision (empty when unknown).
    pub revision: String,
    /// Source branch (empty when unknown).
    pub branch: String,
    /// Build date (empty when unknown).
    pub date: String,
    /// Project URL.
    pub url: String,
    /// tilegate's own version.
    pub tilegate_version: String,
}

/// `{"msg": ...}`: the body of confirmations (`deleted`, `canceled`) and of every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    /// The message.
    pub msg: String,
}

impl Msg {
    /// A message body.
    pub fn new(msg: impl Into<String>) -> Self {
        Self { msg: msg.into() }
    }
}

/// A rectangle in degrees (cell centres), inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bbox {
    /// Westernmost longitude.
    pub west: f64,
    /// Southernmost latitude.
    pub south: f64,
    /// Easternmost longitude.
    pub east: f64,
    /// Northernmost latitude.
    pub north: f64,
}

/// A time interval, epoch seconds and ISO 8601, as NEXUS reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    /// First time, epoch seconds.
    pub start: i64,
    /// Last time, epoch seconds.
    pub stop: i64,
    /// First time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub iso_start: String,
    /// Last time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub iso_stop: String,
    /// Number of time steps.
    pub steps: u64,
}

/// A gridded variable of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariableInfo {
    /// Array name in the store.
    pub name: String,
    /// Dimension names, `[time, lat, lon]`.
    pub dims: Vec<String>,
    /// Array shape.
    pub shape: Vec<u64>,
    /// Chunk shape: one chunk is one tile.
    pub tile_shape: Vec<u64>,
    /// Stored element type.
    pub dtype: String,
    /// CF `units`.
    pub units: Option<String>,
    /// CF `long_name`.
    pub long_name: Option<String>,
    /// CF `standard_name`.
    pub standard_name: Option<String>,
    /// Tiles in the chunk grid.
    pub tiles: u64,
    /// Tiles with at least one valid cell (the rest are never read).
    pub tiles_with_data: u64,
    /// Valid cells in the whole variable.
    pub valid_cells: u64,
    /// Smallest valid value.
    pub min: Option<f64>,
    /// Largest valid value.
    pub max: Option<f64>,
}

/// A registered dataset, as `GET /datasets/{name}` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Name, as used in jobs and routes.
    pub name: String,
    /// Store location on the server; shown to admins only (with authentication off, everyone is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 2 or 3.
    pub zarr_format: u8,
    /// Extent of the cell centres.
    pub bbox: Bbox,
    /// Time coverage.
    pub time: TimeRange,
    /// `-180..180` or `0..360`.
    pub lon_convention: String,
    /// Whether latitude increases along its axis.
    pub lat_ascending: bool,
    /// The `(time, lat, lon)` variables.
    pub variables: Vec<VariableInfo>,
}

/// `GET /datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetList {
    /// All registered datasets, by name.
    pub datasets: Vec<DatasetInfo>,
}

/// `POST /datasets`: register a store at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDataset {
    /// Name to register it under.
    pub name: String,
    /// Path of the Zarr store on the gateway's file system; a relative one is taken from the data directory.
    pub path: String,
}

/// One tile of the tile index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileInfo {
    /// Variable.
    pub variable: String,
    /// Chunk index `[time, lat, lon]`.
    pub index: [u64; 3],
    /// Extent of its cell centres.
    pub bbox: Bbox,
    /// First time, epoch seconds.
    pub time_start: i64,
    /// Last time, epoch seconds.
    pub time_end: i64,
    /// Valid cells.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// cos(lat)-weighted mean.
    pub mean: f64,
    /// Standard deviation (ddof = 0).
    pub std: f64,
    /// Sum of values.
    pub sum: f64,
    /// Sum of cos(lat) x value.
    pub wsum: f64,
    /// Sum of cos(lat).
    pub weight: f64,
    /// Sum of squared deviations from the mean (merges exactly across tiles).
    pub m2: f64,
}

/// `GET /datasets/{name}/tiles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileList {
    /// Dataset.
    pub dataset: String,
    /// Variable.
    pub variable: String,
    /// Tiles selected (before paging).
    pub total: u64,
    /// Offset of the first tile returned.
    pub from: u64,
    /// The page.
    pub tiles: Vec<TileInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_serializes_as_livy() {
        let ok = Output::Ok { execution_count: 1, data: BTreeMap::from([("text/plain".into(), Value::from("42"))]) };
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"status": "ok", "execution_count": 1, "data": {"text/plain": "42"}})
        );
        let err = Output::Error {
            execution_count: 2,
            ename: "Timeout".into(),
            evalue: "took too long".into(),
            traceback: vec![],
        };
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["ename"], "Timeout");
    }

    #[test]
    fn create_session_rejects_unknown_keys_but_takes_spark_fields() {
        let ok: CreateSession = serde_json::from_str(
            r#"{"kind":"spark","driverMemory":"1g","numExecutors":2,"conf":{"a":"b"},"heartbeatTimeoutInSecond":60}"#,
        )
        .unwrap();
        assert_eq!(ok.driver_memory.as_deref(), Some("1g"));
        assert!(serde_json::from_str::<CreateSession>(r#"{"kind":"spark","bogus":1}"#).is_err());
    }

    #[test]
    fn states_use_livy_spelling() {
        assert_eq!(serde_json::to_value(SessionState::ShuttingDown).unwrap(), "shutting_down");
        assert_eq!(serde_json::to_value(StatementState::Cancelling).unwrap(), "cancelling");
        assert_eq!(serde_json::to_value(SessionKind::Pyspark).unwrap(), "pyspark");
    }
}
