//! The durable record of sessions, statements, session logs and batches: one SQLite database in the
//! data directory, in WAL mode with `synchronous = NORMAL`.
//!
//! Every change is committed before the engine answers or moves on, so a gateway that is killed
//! (even with `kill -9`) comes back with every session, statement and output it had reported.
//! WAL with `NORMAL` survives a process crash; a power loss may drop the last commits, never
//! corrupt the file. Nothing here knows about HTTP or wasm; rows are JSON where their shape is
//! the API's.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tilegate_api::{
    CreateBatch, CreateSession, Language, Output, RawOutput, SessionKind, SessionState, StatementState, raw_output,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row did not decode.
    #[error("state database row: {0}")]
    Row(#[from] serde_json::Error),
    /// The data directory is unusable.
    #[error("state database directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The database. Cheap to share; writes are serialised.
pub struct Store {
    conn: Mutex<Connection>,
    /// Set by [`Store::close`]: later writes are dropped (the gateway is stopping; what runs now
    /// must come back as interrupted, not as cancelled).
    closed: AtomicBool,
    /// Stops the checkpoint thread when the store is dropped.
    checkpoints: Option<Arc<AtomicBool>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(stop) = &self.checkpoints {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// How often the WAL is copied back into the database, off the request path.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A session as stored: what does not change after creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionRow {
    pub(crate) id: u64,
    pub(crate) app_id: String,
    pub(crate) kind: SessionKind,
    pub(crate) default_language: Language,
    pub(crate) request: CreateSession,
    /// Creation, wall clock ms.
    pub(crate) created_ms: i64,
    /// Who created it (`None` without authentication).
    #[serde(default)]
    pub(crate) owner: Option<String>,
    /// Set when the session is a Livy batch: a one-shot session, listed and addressed as a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) batch: Option<BatchOf>,
}

/// What makes a session a batch: its batch id (batches are numbered apart from sessions, as in
/// Livy) and its request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BatchOf {
    pub(crate) id: u64,
    pub(crate) request: CreateBatch,
}

/// A statement as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StatementRow {
    pub(crate) id: u64,
    pub(crate) code: String,
    pub(crate) language: Language,
    /// The code the kernel runs (without a `%kind` line).
    pub(crate) body: String,
    pub(crate) state: StatementState,
    /// Stored and read back as JSON text, never as a tree.
    pub(crate) output: Option<RawOutput>,
    pub(crate) started: i64,
    pub(crate) completed: i64,
    /// What it cost (absent in rows written before costs were kept).
    #[serde(default)]
    pub(crate) usage: Option<tilegate_api::Usage>,
    /// What of it was left in the database when it was read back (see [`Left`]).
    #[serde(skip)]
    pub(crate) left: Left,
}

/// A final statement's code or output larger than this is not held in memory: it is read from
/// the database when asked for, so what a gateway holds does not grow with what it has recorded.
pub(crate) const HELD_BYTES: usize = 64 << 10;

/// What of a final statement is left in the database only (empty or `None` in memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Left {
    /// Its code and the body the kernel ran.
    pub(crate) code: bool,
    /// Its output.
    pub(crate) output: bool,
}

impl Left {
    /// Whether anything is left.
    pub(crate) fn any(self) -> bool {
        self.code || self.output
    }

    /// What of a final statement's `code`, `body` and `output` is too large to hold.
    pub(crate) fn of(code: &str, body: &str, output: Option<&RawOutput>) -> Self {
        Self { code: code.len() + body.len() > HELD_BYTES, output: output.is_some_and(|o| o.get().len() > HELD_BYTES) }
    }
}

/// The parts of a statement row that may be left in the database.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LeftParts {
    pub(crate) code: String,
    pub(crate) body: String,
    #[serde(default)]
    pub(crate) output: Option<RawOutput>,
}

/// A session and everything stored for it.
pub(crate) struct LoadedSession {
    pub(crate) row: SessionRow,
    pub(crate) state: SessionState,
    /// When it died, wall clock ms.
    pub(crate) dead_since_ms: Option<i64>,
    pub(crate) statements: Vec<StatementRow>,
    /// Log lines kept, and the number of the first.
    pub(crate) log: Vec<String>,
    pub(crate) log_first: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, row TEXT NOT NULL, state TEXT NOT NULL, dead_since_ms INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS statements (
    session INTEGER NOT NULL, id INTEGER NOT NULL, row TEXT NOT NULL, PRIMARY KEY (session, id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    session INTEGER NOT NULL, n INTEGER NOT NULL, line TEXT NOT NULL, PRIMARY KEY (session, n)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, row TEXT NOT NULL) STRICT; -- before 0.3: see migrate_batches
CREATE TABLE IF NOT EXISTS usage (
    user TEXT NOT NULL, day INTEGER NOT NULL, cpu_ns INTEGER NOT NULL, tiles INTEGER NOT NULL,
    statements INTEGER NOT NULL, PRIMARY KEY (user, day)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_values (
    session INTEGER NOT NULL, name TEXT NOT NULL, json BLOB NOT NULL, PRIMARY KEY (session, name)
) STRICT, WITHOUT ROWID;
";

/// Counters in `meta`: the next id of each kind, so ids are never reused.
pub(crate) const NEXT_SESSION: &str = "next_session";
pub(crate) const NEXT_BATCH: &str = "next_batch";

impl Store {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// When the directory or the database cannot be used.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
        }
        let mut store = Self::init(Connection::open(path)?)?;
        // Checkpoints fsync the database: a thread of its own does them (SQLite's automatic ones
        // would stall whichever commit crossed the threshold, tens of ms on some disks).
        store.conn.get_mut().unwrap_or_else(PoisonError::into_inner).pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Connection::open(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("state-checkpoint".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if let Err(e) = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!("state database checkpoint: {e}");
                    }
                }
            })
            .map_err(|source| StoreError::Directory { path: path.display().to_string(), source })?;
        store.checkpoints = Some(stop);
        Ok(store)
    }

    /// A store that lives in memory only (tests, and gateways configured without state).
    ///
    /// # Errors
    /// When SQLite cannot start.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        migrate_batches(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn), closed: Default::default(), checkpoints: None })
    }

    /// Stops writing: the state on disk stays as it is now.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn lock(&self) -> Option<MutexGuard<'_, Connection>> {
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.conn.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads a counter (0 when never set).
    pub(crate) fn counter(&self, key: &str) -> Result<u64, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let value: Option<i64> =
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        Ok(value.unwrap_or(0) as u64)
    }

    /// Records a new session and moves the session counter past it, in one transaction.
    pub(crate) fn create_session(&self, row: &SessionRow, state: SessionState) -> Result<(), StoreError> {
        let Some(mut conn) = self.lock() else { return Ok(()) };
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO sessions (id, row, state, dead_since_ms) VALUES (?1, ?2, ?3, NULL)",
            params![row.id as i64, serde_json::to_string(row)?, state.to_string()],
        )?;
        bump(&tx, NEXT_SESSION, row.id + 1)?;
        if let Some(batch) = &row.batch {
            bump(&tx, NEXT_BATCH, batch.id + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A session's state (and when it died).
    pub(crate) fn session_state(
        &self,
        id: u64,
        state: SessionState,
        dead_since_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let Some(conn) = self.lock() else { return Ok(()) };
        conn.execute(
            "UPDATE sessions SET state = ?2, dead_since_ms = ?3 WHERE id = ?1",
            params![id as i64, state.to_string(), dead_since_ms],
        )?;
        Ok(())
    }

    /// Forgets a session with its statements and log.
    pub(crate) fn delete_session(&self, id: u64) -> Result<(), StoreError> {
        let Some(mut conn) = self.lock() else { return Ok(()) };
        let tx = conn.transaction()?;
        for table in
            ["sessions WHERE id", "statements WHERE session", "log WHERE session", "session_values WHERE session"]
        {
            tx.execute(&format!("DELETE FROM {table} = ?1"), [id as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes a statement as it is now.
    pub(crate) fn put_statement(&self, session: u64, row: &StatementRow) -> Result<(), StoreError> {
        let Some(conn) = self.lock() else { return Ok(()) };
        conn.execute(
            "INSERT OR REPLACE INTO statements (session, id, row) VALUES (?1, ?2, ?3)",
            params![session as i64, row.id as i64, serde_json::to_string(row)?],
        )?;
        Ok(())
    }

    /// Adds one statement's cost to `user`'s account for `day` (days since the epoch, UTC).
    pub(crate) fn add_usage(&self, user: &str, day: i64, cpu_ns: u64, tiles: u64) -> Result<(), StoreError> {
        let Some(conn) = self.lock() else { return Ok(()) };
        conn.execute(
            "INSERT INTO usage (user, day, cpu_ns, tiles, statements) VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT (user, day) DO UPDATE SET cpu_ns = cpu_ns + ?3, tiles = tiles + ?4,
             statements = statements + 1",
            params![user, day, cpu_ns as i64, tiles as i64],
        )?;
        Ok(())
    }

    /// `user`'s account for `day`: CPU nanoseconds, tiles, statements (zeros when none ran).
    pub(crate) fn usage(&self, user: &str, day: i64) -> Result<[u64; 3], StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let row: Option<(i64, i64, i64)> = conn
            .query_row(
                "SELECT cpu_ns, tiles, statements FROM usage WHERE user = ?1 AND day = ?2",
                params![user, day],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.map_or([0; 3], |(c, t, s)| [c as u64, t as u64, s as u64]))
    }

    /// Appends log lines `first..` of a session, dropping lines before `keep_from`, in one
    /// transaction.
    pub(crate) fn push_log(
        &self,
        session: u64,
        first: u64,
        lines: &[String],
        keep_from: u64,
    ) -> Result<(), StoreError> {
        let Some(mut conn) = self.lock() else { return Ok(()) };
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare("INSERT OR REPLACE INTO log (session, n, line) VALUES (?1, ?2, ?3)")?;
            for (n, line) in (first..).zip(lines) {
                insert.execute(params![session as i64, n as i64, line])?;
            }
        }
        if keep_from > 0 {
            tx.execute("DELETE FROM log WHERE session = ?1 AND n < ?2", params![session as i64, keep_from as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored session, by id, with its statements and log.
    pub(crate) fn sessions(&self) -> Result<Vec<LoadedSession>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let mut sessions = conn.prepare("SELECT row, state, dead_since_ms FROM sessions ORDER BY id")?;
        let mut statements = conn.prepare("SELECT row FROM statements WHERE session = ?1 ORDER BY id")?;
        let mut log = conn.prepare("SELECT n, line FROM log WHERE session = ?1 ORDER BY n")?;
        let rows = sessions
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))?;
        for row in rows {
            let (row, state, dead_since_ms) = row?;
            let row: SessionRow = serde_json::from_str(&row)?;
            let state = serde_json::from_value(serde_json::Value::String(state))?;
            let statement_rows: Vec<StatementRow> = statements
                .query_map([row.id as i64], |r| r.get::<_, String>(0))?
                .map(|text| {
                    // One row at a time: a large output is dropped before the next is read.
                    let mut row: StatementRow = serde_json::from_str(&text?)?;
                    if row.state.is_final() {
                        row.left = Left::of(&row.code, &row.body, row.output.as_ref());
                        if row.left.code {
                            (row.code, row.body) = (String::new(), String::new());
                        }
                        if row.left.output {
                            row.output = None;
                        }
                    }
                    Ok(row)
                })
                .collect::<Result<_, StoreError>>()?;
            let lines: Vec<(i64, String)> =
                log.query_map([row.id as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let log_first = lines.first().map_or(0, |(n, _)| *n as u64);
            out.push(LoadedSession {
                row,
                state,
                dead_since_ms,
                statements: statement_rows,
                log: lines.into_iter().map(|(_, l)| l).collect(),
                log_first,
            });
        }
        Ok(out)
    }

    /// The code, body and output of statement `id` of `session` as recorded.
    pub(crate) fn statement_parts(&self, session: u64, id: u64) -> Result<LeftParts, StoreError> {
        let text: Option<String> = {
            let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            conn.query_row(
                "SELECT row FROM statements WHERE session = ?1 AND id = ?2",
                params![session as i64, id as i64],
                |r| r.get(0),
            )
            .optional()?
        };
        Ok(match text {
            Some(text) => serde_json::from_str(&text)?,
            None => LeftParts::default(),
        })
    }

    /// Whether writes are still recorded (not after [`Store::close`]).
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    /// Records a session's named value (`session().set` in a snippet).
    ///
    /// # Errors
    /// When the database cannot be written.
    pub fn put_value(&self, session: u64, name: &str, json: &[u8]) -> Result<(), StoreError> {
        let Some(conn) = self.lock() else { return Ok(()) };
        conn.execute(
            "INSERT OR REPLACE INTO session_values (session, name, json) VALUES (?1, ?2, ?3)",
            params![session as i64, name, json],
        )?;
        Ok(())
    }

    /// Forgets a session's named values.
    ///
    /// # Errors
    /// When the database cannot be written.
    pub fn delete_values(&self, session: u64) -> Result<(), StoreError> {
        let Some(conn) = self.lock() else { return Ok(()) };
        conn.execute("DELETE FROM session_values WHERE session = ?1", [session as i64])?;
        Ok(())
    }

    /// A session's named values.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn values(&self, session: u64) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut query = conn.prepare("SELECT name, json FROM session_values WHERE session = ?1 ORDER BY name")?;
        let rows = query.query_map([session as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Raises counter `key` to at least `value`.
fn bump(tx: &rusqlite::Transaction<'_>, key: &str, value: u64) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = max(value, ?2)",
        params![key, value as i64],
    )?;
    Ok(())
}

/// Logs a failed write: the gateway keeps serving from memory, and says so.
pub fn warn(result: Result<(), StoreError>) {
    if let Err(e) = result {
        tracing::error!("could not record state: {e}");
    }
}

/// Moves batches recorded before batches were sessions (a row of their own in `batches`: state and
/// log) into the session tables, each as a one-shot session with the same batch id, its log, and
/// one statement standing for its run (the batch view shows only the state and the log). Runs at
/// every open; a store without such rows is untouched.
fn migrate_batches(conn: &mut Connection) -> Result<(), StoreError> {
    /// A batch as recorded before.
    #[derive(Deserialize)]
    struct Old {
        #[serde(default)]
        owner: Option<String>,
        request: CreateBatch,
        app_id: String,
        state: SessionState,
        log: Vec<String>,
    }
    let tx = conn.transaction()?;
    let old: Vec<(i64, String)> = {
        let mut query = tx.prepare("SELECT id, row FROM batches ORDER BY id")?;
        let rows = query.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if old.is_empty() {
        return Ok(());
    }
    let counter = |key: &str| -> Result<u64, rusqlite::Error> {
        let value: Option<i64> =
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        Ok(value.unwrap_or(0) as u64)
    };
    let highest: Option<i64> = tx.query_row("SELECT max(id) FROM sessions", [], |r| r.get(0))?;
    let mut next = counter(NEXT_SESSION)?.max(highest.map_or(0, |h| h as u64 + 1));
    for (batch, text) in &old {
        let Old { owner, request, app_id, state, log } = serde_json::from_str(text)?;
        let (id, batch) = (next, *batch as u64);
        next += 1;
        let language = request.kind.as_deref().and_then(|k| k.parse().ok()).unwrap_or(Language::Rust);
        let code = request.code.clone().or_else(|| request.file.clone()).unwrap_or_default();
        let execution_count = 0;
        let (statement_state, output) = match state {
            SessionState::Success => {
                (StatementState::Available, Some(Output::Ok { execution_count, data: Default::default() }))
            }
            SessionState::Killed => (StatementState::Cancelled, None),
            SessionState::Running | SessionState::Starting => (StatementState::Running, None),
            _ => (
                StatementState::Available,
                Some(Output::Error {
                    execution_count,
                    ename: "BatchFailed".into(),
                    evalue: "the batch failed: its log says why".into(),
                    traceback: Vec::new(),
                }),
            ),
        };
        let row = SessionRow {
            id,
            app_id,
            kind: SessionKind::Shared,
            default_language: language,
            request: CreateSession { proxy_user: request.proxy_user.clone(), ..CreateSession::default() },
            created_ms: 0,
            owner,
            batch: Some(BatchOf { id: batch, request }),
        };
        let statement = StatementRow {
            id: 0,
            code: code.clone(),
            language,
            body: code,
            state: statement_state,
            output: output.map(|o| raw_output(&o)).transpose()?,
            started: 0,
            completed: 0,
            usage: None,
            left: Left::default(),
        };
        tx.execute(
            "INSERT INTO sessions (id, row, state, dead_since_ms) VALUES (?1, ?2, ?3, NULL)",
            params![id as i64, serde_json::to_string(&row)?, state.to_string()],
        )?;
        tx.execute(
            "INSERT INTO statements (session, id, row) VALUES (?1, 0, ?2)",
            params![id as i64, serde_json::to_string(&statement)?],
        )?;
        for (n, line) in log.iter().enumerate() {
            tx.execute("INSERT INTO log (session, n, line) VALUES (?1, ?2, ?3)", params![id as i64, n as i64, line])?;
        }
        bump(&tx, NEXT_BATCH, batch + 1)?;
    }
    bump(&tx, NEXT_SESSION, next)?;
    tx.execute("DELETE FROM batches", [])?;
    tx.commit()?;
    tracing::info!("moved {} batches recorded by an earlier version into the session tables", old.len());
    Ok(())
}
