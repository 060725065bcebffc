//! Livy batches (`/batches`): a batch is a one-shot session. Its one statement is its code,
//! queued when it is created; it takes no other. The session's state is the batch's Livy state:
//! `running` until the statement ends, then `success`, `dead` (the code failed, or the gateway
//! restarted while it ran) or `killed`. Its log is the session's log, ending with the result's text
//! and how the run ended. Batches are numbered apart from sessions (as in Livy) and are neither
//! listed nor addressed as sessions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tilegate_api::{
    Batch, BatchList, CreateBatch, CreateSession, Language, Output, SessionKind, SessionLog, SessionState,
    SessionStateInfo, StatementState,
};

use crate::session::{SessionCell, SessionData, StatementRecord, now_ms};
use crate::store::{self, BatchOf, SessionRow};
use crate::{Access, Engine, Error};

/// Bytes of a batch's result text its log keeps.
const LOG_RESULT_BYTES: usize = 256 << 10;

impl Engine {
    /// Starts a batch running `code` in `language` for `owner`; it is `running` at once.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it cannot be recorded.
    pub fn create_batch(
        &self,
        request: CreateBatch,
        (language, code): (Language, String),
        owner: Option<String>,
    ) -> Result<Batch, Error> {
        let inner = &self.inner;
        let limits = inner.limits(&CreateSession::default(), owner.as_deref())?;
        let batch = inner.next_batch.fetch_add(1, Ordering::Relaxed);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let row = SessionRow {
            id,
            app_id: format!("batch-{batch}"),
            kind: SessionKind::Shared,
            default_language: language,
            request: CreateSession { proxy_user: request.proxy_user.clone(), ..CreateSession::default() },
            created_ms: now_ms(),
            owner,
            batch: Some(BatchOf { id: batch, request }),
        };
        if let Err(e) = inner.store.create_session(&row, SessionState::Running) {
            tracing::error!("could not record batch {batch}: {e}");
            return Err(Error::Unavailable("the gateway could not record the batch; try again".into()));
        }
        let cell = SessionCell::start_batch(
            row,
            (inner.config.log_lines, limits),
            inner.kernel.clone(),
            (inner.metrics.clone(), inner.accounts.clone()),
            inner.store.clone(),
            (language, code),
        );
        let view = to_batch(&cell, &cell.lock());
        inner.batches.insert(batch, cell);
        tracing::info!(batch, session = id, %language, "batch started");
        Ok(view)
    }

    /// A page of the batches `visible` lets through, by id, and their total count.
    pub fn list_batches_where(&self, from: u64, size: u64, visible: impl Fn(&Access) -> bool) -> BatchList {
        let mut cells: Vec<(u64, Arc<SessionCell>)> = self
            .inner
            .batches
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .filter(|(_, c)| visible(&batch_access(c)))
            .collect();
        cells.sort_by_key(|(id, _)| *id);
        let total = cells.len() as u64;
        let sessions =
            cells.iter().skip(from as usize).take(size as usize).map(|(_, c)| to_batch(c, &c.lock())).collect();
        BatchList { from, total, sessions }
    }

    /// A batch by id.
    ///
    /// # Errors
    /// [`Error::BatchNotFound`].
    pub fn batch(&self, key: &str) -> Result<Batch, Error> {
        let cell = self.batch_cell(key)?;
        let data = cell.lock();
        Ok(to_batch(&cell, &data))
    }

    /// A batch's state.
    ///
    /// # Errors
    /// [`Error::BatchNotFound`].
    pub fn batch_state(&self, key: &str) -> Result<SessionStateInfo, Error> {
        let batch = self.batch(key)?;
        Ok(SessionStateInfo { id: batch.id, state: batch.state })
    }

    /// Lines of a batch's log, as for a session's.
    ///
    /// # Errors
    /// [`Error::BatchNotFound`].
    pub fn batch_log(&self, key: &str, from: Option<u64>, size: Option<i64>) -> Result<SessionLog, Error> {
        let cell = self.batch_cell(key)?;
        let (from, total, log) = cell.lock().log_page(from, size);
        Ok(SessionLog { id: batch_id(&cell), from, total, log })
    }

    /// Who a batch belongs to.
    ///
    /// # Errors
    /// [`Error::BatchNotFound`].
    pub fn batch_access(&self, key: &str) -> Result<Access, Error> {
        Ok(batch_access(&*self.batch_cell(key)?))
    }

    /// Kills a batch if it runs, and forgets it.
    ///
    /// # Errors
    /// [`Error::BatchNotFound`].
    pub fn delete_batch(&self, key: &str) -> Result<(), Error> {
        let cell = self.batch_cell(key)?;
        let batch = batch_id(&cell);
        if self.inner.batches.remove(&batch).is_none() {
            return Err(Error::BatchNotFound(key.to_owned())); // deleted concurrently
        }
        cell.shut_down();
        store::warn(self.inner.store.delete_session(cell.id));
        tracing::info!(batch, "batch deleted");
        Ok(())
    }

    /// Batches running now: everyone's, and `owner`'s.
    pub fn running_batches(&self, owner: Option<&str>) -> (usize, usize) {
        let running = self.inner.batches.iter().filter(|e| e.value().lock().state == SessionState::Running);
        running.fold((0, 0), |(all, mine), e| {
            (all + 1, mine + usize::from(owner.is_some() && e.value().owner.as_deref() == owner))
        })
    }

    pub(crate) fn batch_cell(&self, key: &str) -> Result<Arc<SessionCell>, Error> {
        key.parse::<u64>()
            .ok()
            .and_then(|id| self.inner.batches.get(&id).map(|e| e.value().clone()))
            .ok_or_else(|| Error::BatchNotFound(key.to_owned()))
    }
}

fn batch_id(cell: &SessionCell) -> u64 {
    cell.batch.as_ref().map_or(cell.id, |b| b.id)
}

fn batch_access(cell: &SessionCell) -> Access {
    let proxy_user = cell.batch.as_ref().and_then(|b| b.request.proxy_user.clone());
    Access { id: batch_id(cell), owner: cell.owner.clone(), proxy_user }
}

/// How Livy shows a batch.
fn to_batch(cell: &SessionCell, data: &SessionData) -> Batch {
    let session = cell.to_api(data);
    Batch {
        id: batch_id(cell),
        name: cell.batch.as_ref().and_then(|b| b.request.name.clone()),
        owner: session.owner,
        proxy_user: session.proxy_user,
        state: session.state,
        app_id: session.app_id,
        app_info: BTreeMap::from([("driverLogUrl".into(), None), ("sparkUiUrl".into(), None)]),
        log: session.log,
    }
}

/// How a batch's statement ended: the batch's state and its last log lines (the result's text up
/// to a bound, or the error; then the time and cost).
pub(crate) fn ending(batch: u64, record: &StatementRecord, took: Duration) -> (SessionState, Vec<String>) {
    let usage = record.usage.unwrap_or_default();
    let cost = format!("{:.3} CPU seconds, {} tiles read", usage.cpu_seconds, usage.tiles_read);
    if record.state == StatementState::Cancelled {
        return (SessionState::Killed, vec![format!("batch {batch} killed after {took:.1?} ({cost})")]);
    }
    let output = record.output.as_ref().and_then(|o| serde_json::from_str::<Output>(o.get()).ok());
    let mut lines = Vec::new();
    match output {
        Some(Output::Ok { data, .. }) => {
            let text = data.get("text/plain").and_then(|t| t.as_str()).unwrap_or_default();
            let mut logged = 0;
            for line in text.lines() {
                if logged + line.len() > LOG_RESULT_BYTES {
                    lines.push(format!(
                        "... {} more bytes of the result are not logged",
                        text.len().saturating_sub(logged)
                    ));
                    break;
                }
                logged += line.len() + 1;
                lines.push(line.to_owned());
            }
            lines.push(format!("batch {batch} succeeded in {took:.1?} ({cost})"));
            (SessionState::Success, lines)
        }
        Some(Output::Error { ename, evalue, traceback, .. }) => {
            lines.push(format!("{ename}: {evalue}"));
            lines.extend(traceback.iter().map(|l| l.trim_end().to_owned()));
            lines.push(format!("batch {batch} failed in {took:.1?} ({cost})"));
            (SessionState::Dead, lines)
        }
        None => {
            lines.push("the gateway failed while running this batch; it has been logged".into());
            (SessionState::Dead, lines)
        }
    }
}
