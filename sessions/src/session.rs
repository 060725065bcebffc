//! One session: its settings, its statements and log, and the worker that runs its statements in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tilegate_api::{
    CreateSession, Language, Output, RawOutput, Session, SessionKind, SessionState, Statement, StatementState, Usage,
    raw_output,
};
use tokio::sync::mpsc;

use crate::accounts::Accounts;
use crate::kernel::{Failure, Job, Kernel, KernelSession, Opening, RunContext};
use crate::language::Shape;
use crate::lifetime::{Clock, Limits};
use crate::metrics::Metrics;
use crate::store::{self, BatchOf, Left, LoadedSession, SessionRow, StatementRow, Store};
use tilegate_context::metered;

/// How many log lines the session JSON shows (Livy shows the last 10).
const LOG_TAIL: usize = 10;

/// A live session. Shared between the engine's table, request handlers and the session's worker.
pub(crate) struct SessionCell {
    pub(crate) id: u64,
    pub(crate) name: Option<String>,
    app_id: String,
    kind: SessionKind,
    pub(crate) default_language: Language,
    request: CreateSession,
    /// Who created it (`None` without authentication).
    pub(crate) owner: Option<String>,
    /// Set when it is a batch: a one-shot session whose Livy state is the batch's (see `batch`).
    pub(crate) batch: Option<BatchOf>,
    log_capacity: usize,
    /// When it expires (see `lifetime`).
    pub(crate) limits: Limits,
    /// Where every change is recorded.
    store: Arc<Store>,
    data: Mutex<SessionData>,
    /// Woken at every statement change (see `Engine::statement_when_final`).
    pub(crate) changed: tokio::sync::Notify,
}

/// The mutable part of a session.
pub(crate) struct SessionData {
    pub(crate) state: SessionState,
    pub(crate) statements: Vec<StatementRecord>,
    log: VecDeque<String>,
    /// Lines dropped from the front of `log`, so line numbers stay absolute.
    log_dropped: u64,
    /// Sends statement ids to the worker; `None` once the session is shutting down.
    queue: Option<mpsc::UnboundedSender<u64>>,
    /// Creation, last activity, last request, death.
    pub(crate) clock: Clock,
    /// What runs its statements and keeps their definitions and values; `None` once it is closed.
    pub(crate) kernel: Option<Arc<dyn KernelSession>>,
}

/// A statement and its run.
pub(crate) struct StatementRecord {
    pub(crate) id: u64,
    pub(crate) code: String,
    pub(crate) job: Job,
    pub(crate) state: StatementState,
    /// The output as JSON text (see [`RawOutput`]).
    pub(crate) output: Option<RawOutput>,
    pub(crate) ctx: RunContext,
    started: i64,
    completed: i64,
    /// How its output is shaped for the client (sparkmagic's SQL records, or Livy's).
    shape: Shape,
    /// What it cost, once final (while it runs, its meter says).
    pub(crate) usage: Option<Usage>,
    /// What of it (once final) is too large to hold and left to the store (see `SessionCell::api`).
    pub(crate) left: Left,
}

impl StatementRecord {
    pub(crate) fn to_api(&self) -> Statement<RawOutput> {
        let progress = match self.state {
            StatementState::Waiting => 0.0,
            StatementState::Running | StatementState::Cancelling => self.ctx.progress(),
            StatementState::Available | StatementState::Error | StatementState::Cancelled => 1.0,
        };
        Statement {
            id: self.id,
            code: self.code.clone(),
            state: self.state,
            output: self.output.clone(),
            progress,
            started: self.started,
            completed: self.completed,
            usage: match self.state {
                StatementState::Waiting => None,
                StatementState::Running | StatementState::Cancelling => Some(self.ctx.meter().usage()),
                StatementState::Available | StatementState::Error | StatementState::Cancelled => self.usage,
            },
        }
    }
}

/// A statement as held, and what of it is left to the store (see [`SessionCell::api`]).
pub(crate) type Part = (Statement<RawOutput>, Left);

/// Statement states move only along Livy's edges:
///
/// ```text
/// Waiting → Running → Available
///    ↓         ↓
/// Cancelled ← Cancelling
/// ```
fn can_become(from: StatementState, to: StatementState) -> bool {
    use StatementState::*;
    matches!(
        (from, to),
        (Waiting, Running)
            | (Running, Available)
            | (Running, Cancelling)
            | (Waiting, Cancelled)
            | (Cancelling, Cancelled)
    )
}

impl StatementRecord {
    fn become_(&mut self, next: StatementState) {
        debug_assert!(can_become(self.state, next), "statement {} cannot go {:?} → {next:?}", self.id, self.state);
        self.state = next;
    }

    fn to_row(&self) -> StatementRow {
        StatementRow {
            id: self.id,
            code: self.code.clone(),
            language: self.job.language,
            body: self.job.code.clone(),
            state: self.state,
            output: self.output.clone(),
            started: self.started,
            completed: self.completed,
            usage: self.usage,
            left: Left::default(),
        }
    }

    /// A stored statement. One that was waiting or running when the gateway stopped ends now, as
    /// an error saying so: its work is lost, its place in the session is not. Says whether it
    /// changed.
    fn restore(session_id: u64, row: StatementRow) -> (Self, bool) {
        let mut record = Self {
            id: row.id,
            code: row.code,
            job: Job { session_id, statement_id: row.id, language: row.language, code: row.body, owner: None },
            state: row.state,
            output: row.output,
            ctx: RunContext::default(),
            started: row.started,
            completed: row.completed,
            shape: Shape::Livy,
            usage: row.usage,
            left: row.left,
        };
        let was = match record.state {
            StatementState::Waiting => "waiting",
            StatementState::Running => "running",
            StatementState::Cancelling => {
                record.state = StatementState::Cancelled;
                record.completed = now_ms();
                return (record, true);
            }
            _ => return (record, false),
        };
        record.state = StatementState::Available;
        record.completed = now_ms();
        record.output = raw_output(&Output::Error {
            execution_count: record.id,
            ename: "GatewayRestarted".into(),
            evalue: format!("the gateway restarted while this statement was {was}; its work was lost: run it again"),
            traceback: Vec::new(),
        })
        .ok();
        (record, true)
    }
}

impl SessionCell {
    /// Starts a new session (already `idle`: there is nothing to start), recorded in `store`
    /// by the caller, and spawns its worker; `(log_capacity, limits)`: log lines kept, and when it
    /// expires.
    pub(crate) fn start(
        row: SessionRow,
        (log_capacity, limits): (usize, Limits),
        kernel: Arc<dyn Kernel>,
        books: (Arc<Metrics>, Arc<Accounts>),
        store: Arc<Store>,
    ) -> Arc<Self> {
        let (id, kind, language) = (row.id, row.kind, row.default_language);
        let (tx, rx) = mpsc::unbounded_channel();
        let cell = Self::new(
            row,
            (log_capacity, limits),
            store,
            SessionData {
                state: SessionState::Idle,
                statements: Vec::new(),
                log: VecDeque::new(),
                log_dropped: 0,
                queue: Some(tx),
                clock: Clock::new(),
                kernel: None,
            },
        );
        let kernel = kernel.open(Opening { id, durable: true, restored: false }, &mut std::iter::empty());
        cell.lock().kernel = Some(kernel.clone());
        cell.log(format!("session {id} started: kind {kind}, statements default to {language}"));
        tokio::spawn(run_statements(cell.clone(), rx, kernel, books));
        cell
    }

    /// Starts a batch: a one-shot session (recorded in `store` by the caller, `running`) whose one
    /// statement, `code` in `language`, is queued at once; it takes no other.
    pub(crate) fn start_batch(
        row: SessionRow,
        (log_capacity, limits): (usize, Limits),
        kernel: Arc<dyn Kernel>,
        books: (Arc<Metrics>, Arc<Accounts>),
        store: Arc<Store>,
        (language, code): (Language, String),
    ) -> Arc<Self> {
        let (id, batch) = (row.id, row.batch.as_ref().map_or(0, |b| b.id));
        let (tx, rx) = mpsc::unbounded_channel();
        let data = SessionData {
            state: SessionState::Running,
            statements: Vec::new(),
            log: VecDeque::new(),
            log_dropped: 0,
            queue: Some(tx),
            clock: Clock::new(),
            kernel: None,
        };
        let cell = Self::new(row, (log_capacity, limits), store, data);
        // It keeps nothing beyond its run.
        let kernel = kernel.open(Opening { id, durable: false, restored: false }, &mut std::iter::empty());
        cell.lock().kernel = Some(kernel.clone());
        cell.log(format!("batch {batch} started: {language}"));
        cell.submit(code.clone(), language, code, Shape::Livy);
        // Its worker ends, and closes the kernel, once the statement has run.
        cell.lock().queue = None;
        tokio::spawn(run_statements(cell.clone(), rx, kernel, books));
        cell
    }

    /// Ends a batch (unless it already ended: a kill wins over a late finish) with its last log lines.
    pub(crate) fn end_batch(&self, data: &mut SessionData, state: SessionState, lines: Vec<String>) {
        self.push_logs(data, lines);
        if data.state == SessionState::Running {
            data.state = state;
            store::warn(self.store.session_state(self.id, state, None));
        }
    }

    /// A session from the store, after a restart: statements that were waiting or running end as
    /// errors (recorded), a live session is `idle` again and takes statements.
    pub(crate) fn restore(
        loaded: LoadedSession,
        (log_capacity, limits): (usize, Limits),
        kernel: Arc<dyn Kernel>,
        books: (Arc<Metrics>, Arc<Accounts>),
        store: Arc<Store>,
    ) -> Arc<Self> {
        let (id, loaded_state) = (loaded.row.id, loaded.state);
        let (statements, changed): (Vec<StatementRecord>, Vec<bool>) =
            loaded.statements.into_iter().map(|row| StatementRecord::restore(id, row)).unzip();
        let clock = Clock::restored(loaded.row.created_ms, loaded.dead_since_ms);
        // A batch runs once: after a restart it takes nothing more, and one that ran is dead.
        let is_batch = loaded.row.batch.is_some();
        let live = loaded.state != SessionState::Dead && !is_batch;
        let state = match loaded.state {
            SessionState::Running | SessionState::Starting if is_batch => SessionState::Dead,
            _ if is_batch => loaded.state,
            _ if live => SessionState::Idle,
            _ => SessionState::Dead,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let cell = Self::new(
            loaded.row,
            (log_capacity, limits),
            store,
            SessionData {
                state,
                statements,
                log: loaded.log.into(),
                log_dropped: loaded.log_first,
                queue: live.then_some(tx),
                clock,
                kernel: None,
            },
        );
        let interrupted = changed.iter().filter(|c| **c).count();
        if is_batch && state != loaded_state {
            store::warn(cell.store.session_state(id, state, None));
            cell.log("the gateway restarted while this batch ran; its work was lost: submit it again".into());
        }
        for (record, changed) in cell.lock().statements.iter().zip(changed) {
            if changed {
                cell.save(record);
            }
        }
        if live {
            let statements: Vec<(Job, Option<RawOutput>, Left)> =
                cell.lock().statements.iter().map(|s| (s.job.clone(), s.output.clone(), s.left)).collect();
            // What was left to the store is read one statement at a time, as the kernel takes them.
            let mut kept = 0;
            let mut history = statements.into_iter().filter_map(|(mut job, mut output, left)| {
                if left.any() {
                    let parts = cell.left_parts(job.statement_id);
                    if left.code {
                        job.code = parts.body;
                    }
                    if left.output {
                        output = parts.output;
                    }
                }
                let json = json_of_ok(output.as_ref()?)?;
                kept += 1;
                Some((job, json))
            });
            let kernel = kernel.open(Opening { id, durable: true, restored: true }, &mut history);
            drop(history);
            cell.lock().kernel = Some(kernel.clone());
            cell.log(format!(
                "gateway restarted: session {id} restored; {kept} results and their definitions kept, {interrupted} \
                 statements interrupted"
            ));
            tokio::spawn(run_statements(cell.clone(), rx, kernel, books));
        }
        cell
    }

    pub(crate) fn new(
        row: SessionRow,
        (log_capacity, limits): (usize, Limits),
        store: Arc<Store>,
        data: SessionData,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: row.id,
            name: row.request.name.clone(),
            app_id: row.app_id,
            kind: row.kind,
            default_language: row.default_language,
            request: row.request,
            owner: row.owner,
            batch: row.batch,
            log_capacity: log_capacity.max(LOG_TAIL),
            limits,
            store,
            data: Mutex::new(data),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn access(&self) -> crate::Access {
        crate::Access { id: self.id, owner: self.owner.clone(), proxy_user: self.request.proxy_user.clone() }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionData> {
        // Holders never leave the data half-updated across a panic point, so a poisoned lock is usable.
        self.data.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn log(&self, line: String) {
        self.push_log(&mut self.lock(), line);
    }

    /// Appends a log line, recorded.
    pub(crate) fn push_log(&self, data: &mut SessionData, line: String) {
        self.push_logs(data, vec![line]);
    }

    /// Appends log lines, recorded together.
    pub(crate) fn push_logs(&self, data: &mut SessionData, lines: Vec<String>) {
        let first = data.log_dropped + data.log.len() as u64;
        for line in &lines {
            if data.log.len() >= self.log_capacity {
                data.log.pop_front();
                data.log_dropped += 1;
            }
            data.log.push_back(line.clone());
        }
        // Lines past the capacity are dropped at once: only the last `log_capacity` are written.
        let skip = lines.len().saturating_sub(self.log_capacity);
        store::warn(self.store.push_log(self.id, first + skip as u64, &lines[skip..], data.log_dropped));
    }

    /// Records a statement's change and wakes whoever waits for one.
    fn save(&self, record: &StatementRecord) {
        // A statement with parts left to the store is final: its row does not change again.
        if !record.left.any() {
            store::warn(self.store.put_statement(self.id, &record.to_row()));
        }
        self.changed.notify_waiters();
    }

    /// A statement as the API shows it; a large final output is read back from the store.
    pub(crate) fn api(&self, (mut statement, left): Part) -> Statement<RawOutput> {
        if left.any() {
            let parts = self.left_parts(statement.id);
            if left.code {
                statement.code = parts.code;
            }
            if left.output {
                statement.output = parts.output;
            }
        }
        statement
    }

    /// Statement `id`'s code, body and output as the store has them.
    fn left_parts(&self, id: u64) -> store::LeftParts {
        self.store.statement_parts(self.id, id).unwrap_or_else(|e| {
            tracing::error!(session = self.id, statement = id, "could not read a statement back: {e}");
            store::LeftParts::default()
        })
    }

    /// Once a final statement is recorded, its large code and output are left to the store
    /// (unless the store no longer records).
    fn release_large_parts(&self, record: &mut StatementRecord) {
        let left = Left::of(&record.code, &record.job.code, record.output.as_ref());
        if !left.any() || !self.store.is_open() {
            return;
        }
        if left.code {
            record.code = String::new();
            record.job.code = String::new();
        }
        if left.output {
            record.output = None;
        }
        record.left = left;
    }

    pub(crate) fn to_api(&self, data: &SessionData) -> Session {
        let r = &self.request;
        Session {
            id: self.id,
            name: self.name.clone(),
            app_id: Some(self.app_id.clone()),
            owner: self.owner.clone(),
            proxy_user: r.proxy_user.clone(),
            state: data.state,
            kind: self.kind,
            app_info: BTreeMap::from([("driverLogUrl".into(), None), ("sparkUiUrl".into(), None)]),
            log: data.log.iter().rev().take(LOG_TAIL).rev().cloned().collect(),
            ttl: r.ttl.clone(),
            idle_timeout: r.idle_timeout.clone(),
            conf: r.conf.clone().unwrap_or_default(),
            heartbeat_timeout_in_second: r.heartbeat_timeout_in_second.unwrap_or(0),
            driver_memory: r.driver_memory.clone(),
            driver_cores: r.driver_cores,
            executor_memory: r.executor_memory.clone(),
            executor_cores: r.executor_cores,
            num_executors: r.num_executors,
            queue: r.queue.clone(),
            jars: r.jars.clone().unwrap_or_default(),
            py_files: r.py_files.clone().unwrap_or_default(),
            files: r.files.clone().unwrap_or_default(),
            archives: r.archives.clone().unwrap_or_default(),
            default_language: self.default_language,
        }
    }

    /// Queues a statement. Returns `None` when the session no longer takes statements.
    pub(crate) fn submit(
        &self,
        code: String,
        language: Language,
        body: String,
        shape: Shape,
    ) -> Option<Statement<RawOutput>> {
        let mut data = self.lock();
        let queue = data.queue.clone()?;
        let id = data.statements.len() as u64;
        let job = Job { session_id: self.id, statement_id: id, language, code: body, owner: self.owner.clone() };
        let record = StatementRecord {
            id,
            code,
            job,
            state: StatementState::Waiting,
            output: None,
            ctx: RunContext::default(),
            started: 0,
            completed: 0,
            shape,
            usage: None,
            left: Left::default(),
        };
        let statement = record.to_api();
        tracing::info!(session = self.id, statement = id, %language, "statement submitted");
        self.save(&record);
        data.statements.push(record);
        if self.batch.is_none() {
            data.state = SessionState::Busy;
        }
        data.clock.active = tokio::time::Instant::now();
        // The worker holds the receiver for as long as `queue` is set, so this cannot fail.
        let _ = queue.send(id);
        Some(statement)
    }

    /// Cancels a statement: a waiting one ends at once, a running one is interrupted.
    pub(crate) fn cancel(&self, data: &mut SessionData, statement: usize) {
        let record = &mut data.statements[statement];
        match record.state {
            StatementState::Waiting => {
                record.become_(StatementState::Cancelled);
                record.completed = now_ms();
            }
            StatementState::Running => {
                record.become_(StatementState::Cancelling);
                record.ctx.cancel();
            }
            _ => return,
        }
        self.save(record);
        let line = format!("statement {statement} cancelled");
        self.push_log(data, line);
        data.settle();
    }

    /// Stops taking statements and cancels all that have not finished.
    pub(crate) fn shut_down(&self) {
        let mut data = self.lock();
        data.queue = None;
        for i in 0..data.statements.len() {
            self.cancel(&mut data, i);
        }
        if self.batch.is_none() {
            data.state = SessionState::ShuttingDown;
            self.push_log(&mut data, "session shutting down".into());
        }
    }

    /// Ends an idle session that outlived its limits: `dead`, with the reason in its log.
    pub(crate) fn expire(&self, reason: &str) {
        let mut data = self.lock();
        data.queue = None;
        data.state = SessionState::Dead;
        data.clock.dead_since = Some(tokio::time::Instant::now());
        store::warn(self.store.session_state(self.id, SessionState::Dead, Some(now_ms())));
        self.push_log(&mut data, format!("session expired: {reason}"));
    }
}

impl SessionData {
    /// Log lines `from..from + size` (absolute numbering); `from` defaults to the last `size` lines.
    pub(crate) fn log_page(&self, from: Option<u64>, size: Option<i64>) -> (u64, u64, Vec<String>) {
        let total = self.log_dropped + self.log.len() as u64;
        let size = match size {
            Some(s) if s < 0 => total,
            Some(s) => s as u64,
            None => 100,
        };
        let from = from.unwrap_or_else(|| total.saturating_sub(size)).max(self.log_dropped);
        let start = (from - self.log_dropped) as usize;
        let lines = self.log.iter().skip(start).take(size as usize).cloned().collect();
        (from, total, lines)
    }

    /// Busy while any statement waits or runs, idle otherwise (unless shutting down).
    fn settle(&mut self) {
        if matches!(self.state, SessionState::Busy | SessionState::Idle) {
            let active = self.statements.iter().any(|s| !s.state.is_final());
            if !active && self.state == SessionState::Busy {
                self.clock.active = tokio::time::Instant::now();
            }
            self.state = if active { SessionState::Busy } else { SessionState::Idle };
        }
    }
}

/// The session's worker: runs its statements one at a time, in submission order, each on a
/// blocking thread so wasm never runs on the async reactor.
pub(crate) async fn run_statements(
    cell: Arc<SessionCell>,
    mut queue: mpsc::UnboundedReceiver<u64>,
    kernel: Arc<dyn KernelSession>,
    (metrics, accounts): (Arc<Metrics>, Arc<Accounts>),
) {
    while let Some(id) = queue.recv().await {
        let index = id as usize;
        let (job, ctx, shape) = {
            let mut data = cell.lock();
            let record = &mut data.statements[index];
            if record.state != StatementState::Waiting {
                continue; // cancelled while waiting
            }
            record.become_(StatementState::Running);
            record.started = now_ms();
            cell.save(record);
            (record.job.clone(), record.ctx.clone(), record.shape)
        };
        let clock = Instant::now();
        let kernel = kernel.clone();
        let span = tracing::info_span!("statement", session = cell.id, statement = id);
        let result_bytes = cell.limits.result_bytes;
        // Reshaping and measuring the output are JSON work on possibly megabytes: off the reactor too.
        let meter = ctx.meter().clone();
        let (charged, owner) = (accounts.clone(), cell.owner.clone());
        let result = tokio::task::spawn_blocking(move || {
            // Charged here, on the blocking thread: the account is written to the store.
            let run = || {
                let result = metered(ctx.meter(), || kernel.execute(&job, &ctx));
                charged.charge(owner.as_deref(), ctx.meter().usage());
                result
            };
            let result = span.in_scope(run).map(|data| shape.apply(data)).and_then(|data| within(data, result_bytes));
            // Held as text from here on: the parsed tree is dropped on this thread.
            result.map(|data| raw_output(&Output::Ok { execution_count: id, data }))
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(session = cell.id, statement = id, "statement worker panicked: {e}");
            Err(Failure::new("InternalError", "the gateway failed while running this statement; it has been logged"))
        });
        let elapsed = clock.elapsed();

        let usage = meter.usage();
        let mut data = cell.lock();
        let record = &mut data.statements[index];
        record.completed = now_ms();
        record.usage = Some(usage);
        let outcome = match (&result, record.state) {
            (_, StatementState::Cancelling) => "cancelled",
            (Ok(_), _) => "ok",
            (Err(_), _) => "error",
        };
        tracing::info!(
            session = cell.id,
            statement = id,
            outcome,
            ms = elapsed.as_millis() as u64,
            "statement finished"
        );
        metrics.observe(
            "tilegate_statement_seconds",
            crate::metrics::labels(&[("language", record.job.language.as_str()), ("outcome", outcome)]),
            elapsed,
        );
        let line = if record.state == StatementState::Cancelling {
            record.become_(StatementState::Cancelled);
            format!("statement {id} ({}) cancelled after {elapsed:.1?}", record.job.language)
        } else {
            record.become_(StatementState::Available);
            let language = record.job.language;
            let (output, line) = match result {
                Ok(Ok(output)) => (Some(output), format!("statement {id} ({language}) ok in {elapsed:.1?}")),
                Ok(Err(e)) => {
                    tracing::error!(session = cell.id, statement = id, "output not serialisable: {e}");
                    (None, format!("statement {id} ({language}) ok in {elapsed:.1?}, but its output was lost: {e}"))
                }
                Err(f) => {
                    let line =
                        format!("statement {id} ({language}) failed in {elapsed:.1?}: {}: {}", f.ename, f.evalue);
                    let output =
                        Output::Error { execution_count: id, ename: f.ename, evalue: f.evalue, traceback: f.traceback };
                    (raw_output(&output).ok(), line)
                }
            };
            record.output = output;
            line
        };
        cell.save(record);
        let ending = cell.batch.as_ref().map(|b| crate::batch::ending(b.id, record, elapsed));
        cell.release_large_parts(record);
        match ending {
            None => {
                cell.push_log(&mut data, line);
                data.settle();
            }
            Some((state, lines)) => cell.end_batch(&mut data, state, lines),
        }
    }
    cell.lock().kernel = None;
    kernel.close();
}

/// For an ok output, its `application/json` value if it has one, as JSON text (read without
/// building a tree); `None` for an error output.
fn json_of_ok(output: &RawOutput) -> Option<Option<Box<serde_json::value::RawValue>>> {
    #[derive(serde::Deserialize)]
    struct Held {
        status: String,
        #[serde(default)]
        data: BTreeMap<String, Box<serde_json::value::RawValue>>,
    }
    let mut held: Held = serde_json::from_str(output.get()).ok()?;
    (held.status == "ok").then(|| held.data.remove("application/json"))
}

/// The result, or an error when it is over the owner's limit.
fn within(data: crate::Data, limit: Option<usize>) -> Result<crate::Data, Failure> {
    let Some(limit) = limit else { return Ok(data) };
    // Counted as written: the output is serialised once more right after, kept as text.
    let mut size = Counted(0);
    let _ = serde_json::to_writer(&mut size, &data);
    let size = size.0;
    if size <= limit {
        return Ok(data);
    }
    Err(Failure::new(
        "ResultTooLarge",
        format!(
            "the result is {size} bytes, over your limit of {limit} (max_result_bytes): return less, or aggregate further"
        ),
    ))
}

/// A writer that only counts bytes.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
