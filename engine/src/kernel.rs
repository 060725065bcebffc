//! The seam between the engine and whatever runs code: the gateway wires a sandbox-backed kernel in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::Value;
use tilegate_api::Language;

use crate::meter::Meter;

/// Runs statements. Called on a blocking thread, never on the async reactor, one statement of a
/// session at a time (statements of different sessions run in parallel).
pub trait Kernel: Send + Sync + 'static {
    /// Runs one statement to completion and returns its output data or its error.
    fn execute(&self, job: &Job, ctx: &RunContext) -> Result<Data, Failure>;

    /// The session is gone and will run nothing more: drop what was kept for it (its earlier
    /// cells, its named values). Called once, after its last statement finished.
    fn session_closed(&self, _session_id: u64) {}

    /// The session was restored after a gateway restart: `history` is its statements that
    /// succeeded, oldest first, with their JSON values (each read from the store as it is taken),
    /// so what the kernel kept for it (definitions, named results) can be rebuilt. Called once,
    /// before any new statement of the session runs.
    fn session_restored(&self, _session_id: u64, _history: &mut dyn Iterator<Item = Restored>) {}
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

impl Job {
    /// Whose share of shared resources (compile slots) the job uses: its owner, or its session
    /// when there are no users.
    pub fn user_key(&self) -> String {
        self.owner.clone().unwrap_or_else(|| format!("session-{}", self.session_id))
    }
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

/// What a running statement can see of its surroundings: whether it was cancelled, where to
/// report progress, and the meter its work is charged to.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    cancel: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    meter: Arc<Meter>,
    /// Set once a `rust` statement's module is compiled (it no longer waits for a compile).
    compiled: Arc<AtomicBool>,
}

impl RunContext {
    /// The flag that is set when the statement is cancelled; hand it to the sandbox.
    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.cancel
    }

    /// Whether the statement was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Reports progress, clamped to 0..=1.
    pub fn set_progress(&self, fraction: f64) {
        let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        self.progress.store(fraction.to_bits(), Ordering::Relaxed);
    }

    /// What the statement has cost so far: charge its work here (see [`crate::meter`]).
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Says the statement's module is compiled: it no longer counts as waiting for a compile.
    pub fn set_compiled(&self) {
        self.compiled.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_compiled(&self) -> bool {
        self.compiled.load(Ordering::Relaxed)
    }

    pub(crate) fn progress(&self) -> f64 {
        f64::from_bits(self.progress.load(Ordering::Relaxed))
    }

    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}
