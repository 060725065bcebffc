//! Livy sessions and statements: their states, their durable record, and the order in which
//! statements run. It knows nothing of HTTP, wasm or datasets; code runs through a [`Kernel`]
//! (`tilegate-kernel` supplies the real one), with a [`RunContext`] (cancel flag, progress, meter)
//! per statement.
//!
//! # Layout
//! - [`Engine`]: the session table; every REST operation is one method here.
//! - `session`: one session, its statements and log, and its worker (one statement at a time).
//! - `batch`: Livy batches, each a one-shot session with its own Livy view and numbering.
//! - [`kernel`]: the seam: [`Kernel`] opens a [`KernelSession`] per session; [`Job`], [`Failure`].
//! - [`accounts`]: each user's compute today and since start (daily quotas, `/metrics`).
//! - [`language`]: session kinds and how a statement's language is resolved.
//! - [`store`]: the durable record (SQLite) sessions, statements and batches are restored from.
//! - [`Error`]: what the engine refuses.

pub mod accounts;
mod batch;
mod error;
pub mod kernel;
pub mod language;
mod lifetime;
pub mod metrics;
mod session;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tilegate_api::{
    CONF_KIND, CreateSession, CreateStatement, Language, RawOutput, Session, SessionList, SessionLog, SessionStateInfo,
    Statement, StatementList,
};

pub use error::Error;
pub use kernel::{Data, Failure, Job, Kernel, KernelSession, Opening, Restored, RunContext};
use session::SessionCell;
pub use store::{Store, StoreError};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sessions alive at once.
    pub max_sessions: usize,
    /// Log lines kept per session.
    pub log_lines: usize,
    /// Sessions idle this long expire, unless their `idleTimeout` says otherwise; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Sessions expire this long after creation (once idle), unless their `ttl` says otherwise.
    pub ttl: Option<Duration>,
    /// Expired sessions stay visible as `dead` this long.
    pub dead_retention: Duration,
    /// Largest statement result (its output data as JSON) kept and returned; `None` = no limit
    /// beyond the sandbox's output cap.
    pub max_result_bytes: Option<usize>,
    /// Per-owner overrides of `max_result_bytes`.
    pub owner_result_bytes: std::collections::HashMap<String, usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1000,
            log_lines: 1000,
            idle_timeout: Some(Duration::from_secs(3600)),
            ttl: None,
            dead_retention: Duration::from_secs(600),
            max_result_bytes: None,
            owner_result_bytes: std::collections::HashMap::new(),
        }
    }
}

/// The session table. Cheap to clone; all clones share the same sessions.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    kernel: Arc<dyn Kernel>,
    metrics: Arc<metrics::Metrics>,
    accounts: Arc<accounts::Accounts>,
    store: Arc<Store>,
    sessions: DashMap<u64, Arc<SessionCell>>,
    /// Session ids by [`name_key`].
    names: DashMap<String, u64>,
    next_id: AtomicU64,
    /// Batches (one-shot sessions, not in `sessions`) by batch id.
    batches: DashMap<u64, Arc<SessionCell>>,
    next_batch: AtomicU64,
}

/// Who a session belongs to: its owner (the user who created it, when authentication is on) and
/// the user it runs as (`proxyUser`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Its id.
    pub id: u64,
    /// The user who created it.
    pub owner: Option<String>,
    /// `proxyUser` of its request.
    pub proxy_user: Option<String>,
}

/// What one user's sessions hold now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Sessions not dead.
    pub sessions: usize,
    /// Statements waiting or running.
    pub active_statements: usize,
    /// `rust` statements waiting or running whose module is not compiled yet.
    pub compiles_waiting: usize,
}

/// A statement's language, the code it runs and its output's shape. A Livy kind (or none) may
/// carry sparkmagic's SQL wrapper: the query inside it is answered.
fn resolve_statement(
    request: &CreateStatement,
    default: Language,
) -> Result<(Language, String, language::Shape), Error> {
    let livy_kind = request.kind.as_deref().is_none_or(|k| {
        matches!(k.trim().to_ascii_lowercase().as_str(), "spark" | "scala" | "pyspark" | "python" | "sparkr" | "r")
    });
    if let Some((query, shape)) = livy_kind.then(|| language::sparkmagic_sql(&request.code)).flatten() {
        return Ok((Language::Sql, query, shape));
    }
    let (language, body) = language::resolve(request.kind.as_deref(), &request.code, default)?;
    Ok((language, body, language::Shape::Livy))
}

/// Paging for statement listings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    /// Index of the first item.
    pub from: u64,
    /// Most items returned; `None` for all.
    pub size: Option<u64>,
    /// Newest first.
    pub descending: bool,
}

impl Engine {
    /// An engine whose statements run on `kernel`, recorded in memory only. Must be used inside a
    /// tokio runtime.
    ///
    /// # Panics
    /// When SQLite cannot start an in-memory database.
    pub fn new(config: EngineConfig, kernel: Arc<dyn Kernel>) -> Self {
        #[allow(clippy::expect_used)]
        let store = Store::in_memory().expect("in-memory SQLite");
        #[allow(clippy::expect_used)]
        Self::open(config, kernel, Arc::default(), Arc::new(store)).expect("an empty store restores")
    }

    /// An engine recording every change in `store` and statement durations in `metrics` (shared
    /// with the kernel), with the sessions `store` holds restored: the same ids, statements and
    /// outputs; statements that were waiting or running end as errors saying the gateway
    /// restarted, and `kernel` is told each live session's history. Must be used inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn open(
        config: EngineConfig,
        kernel: Arc<dyn Kernel>,
        metrics: Arc<metrics::Metrics>,
        store: Arc<Store>,
    ) -> Result<Self, StoreError> {
        let retention = config.dead_retention;
        let loaded = store.sessions()?;
        let next_id = loaded.iter().map(|s| s.row.id + 1).max().unwrap_or(0).max(store.counter(store::NEXT_SESSION)?);
        let batch_ids = loaded.iter().filter_map(|s| Some(s.row.batch.as_ref()?.id + 1));
        let next_batch = batch_ids.max().unwrap_or(0).max(store.counter(store::NEXT_BATCH)?);
        let inner = Inner {
            config,
            kernel,
            metrics,
            accounts: Arc::new(accounts::Accounts::new(store.clone())),
            store,
            sessions: DashMap::new(),
            names: DashMap::new(),
            next_id: AtomicU64::new(next_id),
            batches: DashMap::new(),
            next_batch: AtomicU64::new(next_batch),
        };
        let restored = loaded.iter().filter(|s| s.row.batch.is_none()).count();
        for session in loaded {
            let limits = inner.limits(&session.row.request, session.row.owner.as_deref()).unwrap_or_default();
            let cell = SessionCell::restore(
                session,
                (inner.config.log_lines, limits),
                inner.kernel.clone(),
                (inner.metrics.clone(), inner.accounts.clone()),
                inner.store.clone(),
            );
            if let Some(batch) = &cell.batch {
                inner.batches.insert(batch.id, cell);
                continue;
            }
            if let Some(name) = &cell.name {
                inner.names.insert(name_key(cell.owner.as_deref(), name), cell.id);
            }
            inner.sessions.insert(cell.id, cell);
        }
        if restored > 0 {
            tracing::info!("restored {restored} sessions; next session id {next_id}");
        }
        let inner = Arc::new(inner);
        tokio::spawn(lifetime::reap(Arc::downgrade(&inner), retention));
        Ok(Self { inner })
    }

    /// Where sessions and batches are recorded.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The metrics statements are recorded in.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.inner.metrics
    }

    /// What each user's statements cost (batches are charged here too).
    pub fn accounts(&self) -> &Arc<accounts::Accounts> {
        &self.inner.accounts
    }

    /// The kernel side of session `id` (what its kernel keeps beyond Livy's output), while it is
    /// open.
    pub fn kernel_session(&self, id: u64) -> Option<Arc<dyn KernelSession>> {
        let cell = self.inner.sessions.get(&id)?.value().clone();
        cell.lock().kernel.clone()
    }

    /// Number of sessions per state (Livy's state names).
    pub fn sessions_by_state(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for cell in self.inner.sessions.iter() {
            let state = cell.lock().state.to_string();
            *counts.entry(state).or_default() += 1;
        }
        counts
    }

    /// Creates a session. It is `idle` at once.
    ///
    /// # Errors
    /// [`Error::InvalidKind`] for an unknown kind, [`Error::InvalidRequest`] for a bad name or
    /// `tilegate.kind`, [`Error::DuplicateName`], [`Error::TooManySessions`].
    pub fn create_session(&self, request: CreateSession) -> Result<Session, Error> {
        self.create_session_for(request, None)
    }

    /// [`Engine::create_session`] for `owner` (the authenticated user), who then owns it.
    ///
    /// # Errors
    /// As [`Engine::create_session`].
    pub fn create_session_for(&self, request: CreateSession, owner: Option<String>) -> Result<Session, Error> {
        let (kind, kind_language) = language::parse_session_kind(request.kind.as_deref())?;
        let conf_language = match request.conf.as_ref().and_then(|c| c.get(CONF_KIND)) {
            None => None,
            Some(v) => Some(v.as_str().and_then(|s| s.parse::<Language>().ok()).ok_or_else(|| {
                Error::InvalidRequest(format!("conf '{CONF_KIND}' must be \"rust\", \"wasm\" or \"sql\", not {v}"))
            })?),
        };
        let default_language = language::session_default(kind, conf_language.or(kind_language));
        if let Some(name) = &request.name {
            validate_name(name)?;
        }
        let limits = self.inner.limits(&request, owner.as_deref())?;
        if self.inner.sessions.len() >= self.inner.config.max_sessions {
            return Err(Error::TooManySessions(self.inner.config.max_sessions));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = &request.name {
            match self.inner.names.entry(name_key(owner.as_deref(), name)) {
                Entry::Occupied(_) => return Err(Error::DuplicateName(name.clone())),
                Entry::Vacant(slot) => {
                    slot.insert(id);
                }
            }
        }
        let row = store::SessionRow {
            id,
            app_id: uuid::Uuid::new_v4().to_string(),
            kind,
            default_language,
            request,
            created_ms: session::now_ms(),
            owner,
            batch: None,
        };
        if let Err(e) = self.inner.store.create_session(&row, tilegate_api::SessionState::Idle) {
            if let Some(name) = &row.request.name {
                self.inner.names.remove(&name_key(row.owner.as_deref(), name));
            }
            tracing::error!("could not record session {id}: {e}");
            return Err(Error::Unavailable("the gateway could not record the session; try again".into()));
        }
        let cell = SessionCell::start(
            row,
            (self.inner.config.log_lines, limits),
            self.inner.kernel.clone(),
            (self.inner.metrics.clone(), self.inner.accounts.clone()),
            self.inner.store.clone(),
        );
        let session = cell.to_api(&cell.lock());
        self.inner.sessions.insert(id, cell);
        tracing::info!(session = id, kind = %kind, language = %default_language, "session created");
        Ok(session)
    }

    /// A page of sessions, by id, and the total count.
    pub fn list_sessions(&self, from: u64, size: u64) -> SessionList {
        self.list_sessions_where(from, size, |_| true)
    }

    /// A page of the sessions `visible` lets through, by id, and their total count.
    pub fn list_sessions_where(&self, from: u64, size: u64, visible: impl Fn(&Access) -> bool) -> SessionList {
        let mut cells: Vec<Arc<SessionCell>> =
            self.inner.sessions.iter().map(|e| e.value().clone()).filter(|c| visible(&c.access())).collect();
        cells.sort_by_key(|c| c.id);
        let total = cells.len() as u64;
        let sessions = cells.iter().skip(from as usize).take(size as usize).map(|c| c.to_api(&c.lock())).collect();
        SessionList { from, total, sessions }
    }

    /// A session by id or name.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`].
    pub fn session(&self, key: &str) -> Result<Session, Error> {
        let cell = self.cell(key)?;
        let data = cell.lock();
        Ok(cell.to_api(&data))
    }

    /// Who a session belongs to.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`].
    pub fn session_access(&self, key: &str) -> Result<Access, Error> {
        Ok(self.find(key)?.access())
    }

    /// What `owner`'s sessions hold now: live sessions, statements waiting or running, compiles.
    pub fn holdings(&self, owner: &str) -> Holdings {
        let mut usage = Holdings::default();
        for cell in self.inner.sessions.iter() {
            if cell.owner.as_deref() != Some(owner) {
                continue;
            }
            let data = cell.lock();
            if !matches!(data.state, tilegate_api::SessionState::Dead | tilegate_api::SessionState::ShuttingDown) {
                usage.sessions += 1;
            }
            for statement in data.statements.iter().filter(|s| !s.state.is_final()) {
                usage.active_statements += 1;
                if statement.job.language == Language::Rust && !statement.ctx.is_compiled() {
                    usage.compiles_waiting += 1;
                }
            }
        }
        usage
    }

    /// A session's state.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`].
    pub fn session_state(&self, key: &str) -> Result<SessionStateInfo, Error> {
        let cell = self.cell(key)?;
        let state = cell.lock().state;
        Ok(SessionStateInfo { id: cell.id, state })
    }

    /// Lines of a session's log. `from` defaults to the last `size` lines; `size` defaults to 100,
    /// negative means all.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`].
    pub fn session_log(&self, key: &str, from: Option<u64>, size: Option<i64>) -> Result<SessionLog, Error> {
        let cell = self.cell(key)?;
        let (from, total, log) = cell.lock().log_page(from, size);
        Ok(SessionLog { id: cell.id, from, total, log })
    }

    /// Deletes a session: cancels its statements and forgets it.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`].
    pub fn delete_session(&self, key: &str) -> Result<(), Error> {
        let cell = self.cell(key)?;
        if self.inner.sessions.remove(&cell.id).is_none() {
            return Err(Error::SessionNotFound(key.to_owned())); // deleted concurrently
        }
        if let Some(name) = &cell.name {
            self.inner.names.remove(&name_key(cell.owner.as_deref(), name));
        }
        cell.shut_down();
        store::warn(self.inner.store.delete_session(cell.id));
        tracing::info!(session = cell.id, "session deleted");
        Ok(())
    }

    /// Queues a statement; it runs after the session's earlier statements.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`], [`Error::InvalidKind`], [`Error::SessionNotActive`].
    pub fn submit(&self, key: &str, request: CreateStatement) -> Result<Statement<RawOutput>, Error> {
        let cell = self.cell(key)?;
        let (language, body, shape) = resolve_statement(&request, cell.default_language)?;
        cell.submit(request.code, language, body, shape)
            .ok_or_else(|| Error::SessionNotActive { id: cell.id, state: cell.lock().state.to_string() })
    }

    /// The language `request` would run in, in session `key` (for quotas, before submitting).
    ///
    /// # Errors
    /// As [`Engine::submit`].
    pub fn statement_language(&self, key: &str, request: &CreateStatement) -> Result<Language, Error> {
        let cell = self.cell(key)?;
        Ok(resolve_statement(request, cell.default_language)?.0)
    }

    /// A page of a session's statements.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`].
    /// Large outputs are read from the store: call it off the reactor.
    pub fn statements(&self, key: &str, page: Page) -> Result<StatementList<RawOutput>, Error> {
        let (cell, total, parts) = self.statement_parts(key, page)?;
        let statements = parts.into_iter().map(|part| cell.api(part)).collect();
        Ok(StatementList { total_statements: total, statements })
    }

    /// [`Engine::statements`] for async callers: what is left to the store is read on the
    /// blocking pool, and only when a statement of the page has something left.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`].
    pub async fn statements_read(&self, key: &str, page: Page) -> Result<StatementList<RawOutput>, Error> {
        let (cell, total, parts) = self.statement_parts(key, page)?;
        let statements = if parts.iter().any(|(_, left)| left.any()) {
            let session = cell.id;
            tokio::task::spawn_blocking(move || parts.into_iter().map(|part| cell.api(part)).collect())
                .await
                .map_err(|_| Error::SessionNotFound(session.to_string()))?
        } else {
            parts.into_iter().map(|(statement, _)| statement).collect()
        };
        Ok(StatementList { total_statements: total, statements })
    }

    /// A page of a session's statements as held: the session, its number of statements, the page.
    fn statement_parts(&self, key: &str, page: Page) -> Result<(Arc<SessionCell>, u64, Vec<session::Part>), Error> {
        let cell = self.cell(key)?;
        let (total, parts): (u64, Vec<_>) = {
            let data = cell.lock();
            let total = data.statements.len() as u64;
            let size = page.size.unwrap_or(total) as usize;
            let records: Box<dyn Iterator<Item = _>> =
                if page.descending { Box::new(data.statements.iter().rev()) } else { Box::new(data.statements.iter()) };
            (total, records.skip(page.from as usize).take(size).map(|s| (s.to_api(), s.left)).collect())
        };
        Ok((cell, total, parts))
    }

    /// One statement.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`], [`Error::StatementNotFound`].
    /// A large output is read from the store: call it off the reactor.
    pub fn statement(&self, key: &str, statement: &str) -> Result<Statement<RawOutput>, Error> {
        let (cell, part) = self.statement_part(key, statement)?;
        Ok(cell.api(part))
    }

    /// A statement's id, checked to exist (nothing is read from the store).
    ///
    /// # Errors
    /// [`Error::SessionNotFound`], [`Error::StatementNotFound`].
    pub fn statement_id(&self, key: &str, statement: &str) -> Result<u64, Error> {
        Ok(self.statement_part(key, statement)?.1.0.id)
    }

    /// A statement as held, and what of it is left to the store.
    fn statement_part(&self, key: &str, statement: &str) -> Result<(Arc<SessionCell>, session::Part), Error> {
        let cell = self.cell(key)?;
        let part = {
            let data = cell.lock();
            let record = &data.statements[statement_index(&cell, &data, statement)?];
            (record.to_api(), record.left)
        };
        Ok((cell, part))
    }

    /// One statement, once it is final (`available` or `cancelled`) or `timeout` has passed,
    /// whichever comes first: a long poll, woken by the statement's change, not by a timer.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`], [`Error::StatementNotFound`] (also when the session goes while waiting).
    pub async fn statement_when_final(
        &self,
        key: &str,
        statement: &str,
        timeout: Duration,
    ) -> Result<Statement<RawOutput>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let cell = self.cell(key)?;
            // Registered before the state is read, so a change in between still wakes us.
            let mut changed = std::pin::pin!(cell.changed.notified());
            changed.as_mut().enable();
            let (cell, (current, left)) = self.statement_part(key, statement)?;
            let is_final = current.state.is_final();
            if !is_final
                && tokio::time::Instant::now() < deadline
                && tokio::time::timeout_at(deadline, changed).await.is_ok()
            {
                continue; // it changed: look again
            }
            // Final, or the time is up (then look once more: it may have changed meanwhile).
            let (cell, (current, left)) =
                if is_final { (cell, (current, left)) } else { self.statement_part(key, statement)? };
            if !left.any() {
                return Ok(current);
            }
            // What was left to the store is read off the reactor.
            let (session, id) = (cell.id, current.id.to_string());
            return tokio::task::spawn_blocking(move || cell.api((current, left)))
                .await
                .map_err(|_| Error::StatementNotFound { session, statement: id });
        }
    }

    /// Cancels a statement. Finished statements are left as they are.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`], [`Error::StatementNotFound`].
    pub fn cancel(&self, key: &str, statement: &str) -> Result<(), Error> {
        let cell = self.cell(key)?;
        let mut data = cell.lock();
        let index = statement_index(&cell, &data, statement)?;
        cell.cancel(&mut data, index);
        Ok(())
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Cancels every statement of every session and batch (graceful shutdown). The store keeps
    /// them as they were, so they come back after a restart, with what was cut short marked so.
    pub fn shut_down(&self) {
        self.inner.store.close();
        for entry in self.inner.sessions.iter().chain(self.inner.batches.iter()) {
            entry.value().shut_down();
        }
    }

    /// The id of `owner`'s session called `name` (names are unique per owner; a session without
    /// an owner is found by its name alone, as any key). Not a heartbeat.
    pub fn session_named(&self, owner: Option<&str>, name: &str) -> Option<u64> {
        self.inner.names.get(&name_key(owner, name)).map(|e| *e.value())
    }

    /// The ids of every session called `name`, whoever owns it (admins may address any).
    pub fn sessions_named_by_anyone(&self, name: &str) -> Vec<u64> {
        let named = |key: &str| key == name || key.split_once('\u{0}').is_some_and(|(_, n)| n == name);
        self.inner.names.iter().filter(|e| named(e.key())).map(|e| *e.value()).collect()
    }

    /// The session by id or name; a request for it counts as its heartbeat.
    fn cell(&self, key: &str) -> Result<Arc<SessionCell>, Error> {
        let cell = self.find(key)?;
        cell.lock().clock.heard = tokio::time::Instant::now();
        Ok(cell)
    }

    /// The session by id or name, without counting as its heartbeat (a check of who may see it
    /// is not a request its owner made).
    fn find(&self, key: &str) -> Result<Arc<SessionCell>, Error> {
        let id = match key.parse::<u64>() {
            Ok(id) => Some(id),
            Err(_) => self.inner.names.get(key).map(|e| *e.value()),
        };
        id.and_then(|id| self.inner.sessions.get(&id).map(|e| e.value().clone()))
            .ok_or_else(|| Error::SessionNotFound(key.to_owned()))
    }
}

impl Inner {
    /// A new session's limits: its `idleTimeout`, `ttl` and `heartbeatTimeoutInSecond`, else the
    /// server's defaults; its owner's result size.
    fn limits(&self, request: &CreateSession, owner: Option<&str>) -> Result<lifetime::Limits, Error> {
        let duration = |field: &str, value: &Option<String>, default: Option<Duration>| match value {
            None => Ok(default),
            Some(text) => lifetime::parse(text).map(Some).ok_or_else(|| {
                Error::InvalidRequest(format!("{field} '{text}' is not a duration like 30s, 10m, 2h or 1d"))
            }),
        };
        let heartbeat = match request.heartbeat_timeout_in_second {
            None | Some(0) => None,
            Some(s) if s > 0 => Some(Duration::from_secs(s as u64)),
            Some(s) => return Err(Error::InvalidRequest(format!("heartbeatTimeoutInSecond must be >= 0, not {s}"))),
        };
        Ok(lifetime::Limits {
            idle: duration("idleTimeout", &request.idle_timeout, self.config.idle_timeout)?,
            ttl: duration("ttl", &request.ttl, self.config.ttl)?,
            heartbeat,
            result_bytes: owner
                .and_then(|o| self.config.owner_result_bytes.get(o).copied())
                .or(self.config.max_result_bytes),
        })
    }
}

fn statement_index(cell: &SessionCell, data: &session::SessionData, statement: &str) -> Result<usize, Error> {
    statement
        .parse::<usize>()
        .ok()
        .filter(|&i| i < data.statements.len())
        .ok_or_else(|| Error::StatementNotFound { session: cell.id, statement: statement.to_owned() })
}

fn validate_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::InvalidRequest(format!("invalid session name {name:?}: {why}")));
    if name.is_empty() || name.chars().count() > 256 {
        return bad("it must have 1 to 256 characters");
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return bad("it must not be a number (session routes take ids and names alike)");
    }
    if name.chars().any(|c| hidden_char(c) || c == '/') {
        return bad("it must not contain '/', control characters, or invisible or text-reordering ones");
    }
    Ok(())
}

/// Where a session name is kept: names are unique per owner (so that a refused duplicate never
/// tells one user about another's session), and the names of sessions without an owner are
/// themselves. Neither user names nor session names hold control characters.
fn name_key(owner: Option<&str>, name: &str) -> String {
    match owner {
        Some(owner) => format!("{owner}\u{0}{name}"),
        None => name.to_owned(),
    }
}

/// A character that does not show as itself: a control character, a bidirectional override or
/// isolate (which reorders the text around it), or a zero-width or otherwise invisible one. Names
/// others see must not hold them, or one name can pass for another.
pub fn hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}' | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests;
