//! The seam between sessions and whatever runs their code: `tilegate-kernel` supplies the
//! sandbox-backed kernel; tests supply small in-process ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tilegate_api::Language;

pub use tilegate_context::RunContext;

/// What runs code. The engine opens a [`KernelSession`] for each session when it starts (or is
/// restored after a restart) and closes it when the session ends; the session owns it, so what
/// the kernel keeps for a session lives and dies with it.
pub trait Kernel: Send + Sync + 'static {
    /// Opens the kernel side of a session. `history` is empty for a new session; for one restored
    /// after a gateway restart it is its statements that succeeded, oldest first, with their JSON
    /// values (each read from the store as it is taken), so what the kernel keeps for it
    /// (definitions, named results) can be rebuilt before any new statement runs.
    fn open(&self, session: Opening, history: &mut dyn Iterator<Item = Restored>) -> Arc<dyn KernelSession>;
}

/// The session a [`KernelSession`] is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    /// Its id (a session's, or a batch's).
    pub id: u64,
    /// Whether what it keeps is recorded in the store, to be there after a restart (sessions);
    /// one-shot work (batches) keeps nothing beyond its run.
    pub durable: bool,
    /// Whether it comes back after a restart, with what the store kept for it (else it is new and
    /// the store holds nothing of it: ids are never reused).
    pub restored: bool,
}

/// One session's kernel: runs its statements, one at a time, on a blocking thread (never on the
/// async reactor); statements of different sessions run in parallel.
pub trait KernelSession: std::any::Any + Send + Sync {
    /// Runs one statement to completion and returns its output data or its error.
    fn execute(&self, job: &Job, ctx: &RunContext) -> Result<Data, Failure>;

    /// The session is gone and will run nothing more: drop what was kept for it (its earlier
    /// cells, its named values). Called once, after its last statement finished.
    fn close(&self) {}
}

/// A restored statement that succeeded: its job and its output's `application/json` value as
/// JSON text, when it has one.
pub type Restored = (Job, Option<Box<serde_json::value::RawValue>>);

/// Livy output `data`: MIME type → value (`text/plain`, `application/json`, ...).
pub type Data = BTreeMap<String, Value>;

/// One statement to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Session id.
    pub session_id: u64,
    /// Statement id within the session.
    pub statement_id: u64,
    /// The resolved language.
    pub language: Language,
    /// The code, without a leading `%kind` directive line.
    pub code: String,
    /// Who runs it: the session's owner (`None` without authentication).
    pub owner: Option<String>,
}

/// A failed statement, as Livy's error output shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Kind of failure, e.g. `Timeout`.
    pub ename: String,
    /// Message.
    pub evalue: String,
    /// Details, one line per entry.
    pub traceback: Vec<String>,
}

impl Failure {
    /// A failure with no traceback.
    pub fn new(ename: impl Into<String>, evalue: impl Into<String>) -> Self {
        Self { ename: ename.into(), evalue: evalue.into(), traceback: Vec::new() }
    }
}
