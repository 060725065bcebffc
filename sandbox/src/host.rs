//! What the host gives a guest: per-call state, the memory cap and the `sbx` imports.

use std::sync::Arc;

use wasmtime::{Caller, Linker, ResourceLimiter};

/// The imports the sandbox provides, for error messages.
pub(crate) const ALLOWED_IMPORTS: &str = "`sbx::print(ptr: i32, len: i32)`, `sbx::panic(ptr: i32, len: i32)`, \
     `sbx::run_job(ptr: i32, len: i32) -> i64`, `sbx::session_get(name_ptr: i32, name_len: i32) -> i64` and \
     `sbx::session_set(name_ptr: i32, name_len: i32, json_ptr: i32, json_len: i32)`";

/// The names of the `sbx` imports.
pub(crate) const IMPORT_NAMES: &[&str] = &["print", "panic", "run_job", "session_get", "session_set"];

/// The longest session value name read from a guest.
const MAX_NAME: usize = 256;

/// The longest job spec read from a guest.
const MAX_JOB_SPEC: usize = 1 << 20;

/// Runs a job a guest asked for with `sbx.run_job`: spec bytes in, result bytes out.
pub type JobHandler = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, JobFailure> + Send + Sync>;

/// A session's named JSON values, kept across its statements (`sbx.session_get`/`session_set`).
pub trait SessionValues: Send + Sync {
    /// The JSON kept under `name`.
    fn get(&self, name: &str) -> Option<Arc<[u8]>>;
    /// Keeps `json` under `name`; `Err` says why not (not JSON, too large, ...).
    ///
    /// # Errors
    /// The reason the value was refused, for the statement's error output.
    fn set(&self, name: &str, json: &[u8]) -> Result<(), String>;
}

/// What a guest's imports reach beyond print and panic.
#[derive(Clone, Default)]
pub struct Host {
    /// Answers `sbx.run_job`; `None` in map/reduce workers (no nested jobs).
    pub jobs: Option<JobHandler>,
    /// Answers `sbx.session_get` (and `sbx.session_set` when `jobs` is set: only a statement's
    /// main instance may change its session, never a map or reduce).
    pub session: Option<Arc<dyn SessionValues>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("jobs", &self.jobs.is_some()).field("session", &self.session.is_some()).finish()
    }
}

/// Why a job failed, as the statement's error output should name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// Kind of failure, e.g. `JobError`, `Cancelled`, `Timeout`, `Panic`.
    pub ename: String,
    /// What happened, naming the dataset and tile where it applies.
    pub message: String,
}

/// The longest panic message kept; the rest is cut.
const MAX_PANIC_MESSAGE: usize = 64 << 10;

/// Why the host stopped a guest. Raised inside wasmtime as an error and recognised by downcasting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    #[error("deadline passed")]
    Timeout,
    #[error("cancelled")]
    Cancelled,
    #[error("output limit")]
    OutputLimit { size: usize },
    #[error("guest panicked: {0}")]
    Panic(String),
    #[error("{}: {}", .0.ename, .0.message)]
    Job(JobFailure),
}

/// State of one call: lives in the `Store` and dies with it.
pub(crate) struct HostState {
    pub(crate) memory: MemoryCap,
    pub(crate) printed: Vec<u8>,
    pub(crate) output_limit: usize,
    pub(crate) host: Host,
}

impl HostState {
    pub(crate) fn new(memory_bytes: usize, output_limit: usize, host: Host) -> Self {
        Self { memory: MemoryCap { limit: memory_bytes, hit: false }, printed: Vec::new(), output_limit, host }
    }
}

/// Caps linear memory and remembers whether the cap was hit, so a guest abort that follows a
/// refused `memory.grow` can be reported as a memory limit rather than a bare trap.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // A table element is a pointer; a million is 8 MiB, far beyond what real code needs.
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}

/// Registers the `sbx` imports. Nothing else is ever linked: no WASI, no clock, no randomness.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sbx", "print", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let len = len as u32 as usize;
        let size = caller.data().printed.len().saturating_add(len);
        if size > caller.data().output_limit {
            return Err(wasmtime::Error::new(Stop::OutputLimit { size }));
        }
        let bytes = guest_bytes(&mut caller, ptr, len)?;
        caller.data_mut().printed.extend_from_slice(&bytes);
        Ok(())
    })?;
    linker.func_wrap("sbx", "panic", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let len = (len as u32 as usize).min(MAX_PANIC_MESSAGE);
        let bytes = guest_bytes(&mut caller, ptr, len)?;
        let message = String::from_utf8_lossy(&bytes).into_owned();
        Err::<(), _>(wasmtime::Error::new(Stop::Panic(message)))
    })?;
    linker.func_wrap("sbx", "run_job", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let len = len as u32 as usize;
        if len > MAX_JOB_SPEC {
            return Err(job_error("JobError", format!("job spec of {len} bytes is over the 1 MiB limit")));
        }
        let spec = guest_bytes(&mut caller, ptr, len)?;
        let Some(jobs) = caller.data().host.jobs.clone() else {
            return Err(job_error("JobError", "jobs cannot be started from inside a map or reduce".into()));
        };
        let result = jobs(&spec).map_err(|f| wasmtime::Error::new(Stop::Job(f)))?;
        give(&mut caller, &result)
    })?;
    linker.func_wrap("sbx", "session_get", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let name = session_name(&mut caller, ptr, len)?;
        let value = caller.data().host.session.as_ref().and_then(|s| s.get(&name));
        match value {
            Some(json) => give(&mut caller, &json),
            None => Ok(-1),
        }
    })?;
    linker.func_wrap(
        "sbx",
        "session_set",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32, json_ptr: i32, json_len: i32| {
            let name = session_name(&mut caller, ptr, len)?;
            let json_len = json_len as u32 as usize;
            if json_len > caller.data().output_limit {
                return Err(session_error(format!(
                    "the value of '{name}' is {json_len} bytes, over the output limit of {} bytes",
                    caller.data().output_limit
                )));
            }
            let json = guest_bytes(&mut caller, json_ptr, json_len)?;
            let host = &caller.data().host;
            let Some(session) = host.session.clone().filter(|_| host.jobs.is_some()) else {
                return Err(session_error(
                    "session values can be set by a statement, not inside a map or reduce".into(),
                ));
            };
            session.set(&name, &json).map_err(session_error)
        },
    )?;
    Ok(())
}

fn session_name(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    let len = len as u32 as usize;
    if len > MAX_NAME {
        return Err(session_error(format!("a session value name is at most {MAX_NAME} bytes")));
    }
    String::from_utf8(guest_bytes(caller, ptr, len)?).map_err(|_| session_error("the name is not UTF-8".into()))
}

fn session_error(message: String) -> wasmtime::Error {
    job_error("SessionError", message)
}

/// Hands `bytes` to the guest in memory it allocates with `sbx_alloc` (and then owns); returns
/// `ptr << 32 | len`.
fn give(caller: &mut Caller<'_, HostState>, bytes: &[u8]) -> wasmtime::Result<i64> {
    let alloc = caller
        .get_export("sbx_alloc")
        .and_then(|e| e.into_func())
        .ok_or_else(|| job_error("AbiError", "a module that receives data must export `sbx_alloc`".into()))?
        .typed::<i32, i32>(&*caller)?;
    let out_len = i32::try_from(bytes.len()).map_err(|_| job_error("OutputLimit", "a result over 2 GiB".into()))?;
    let out_ptr = alloc.call(&mut *caller, out_len)?;
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| job_error("AbiError", "no `memory` export".into()))?;
    memory
        .write(&mut *caller, out_ptr as u32 as usize, bytes)
        .map_err(|_| job_error("AbiError", format!("`sbx_alloc({out_len})` returned {out_ptr}, outside memory")))?;
    Ok(((out_ptr as u32 as u64) << 32 | bytes.len() as u64) as i64)
}

fn job_error(ename: &str, message: String) -> wasmtime::Error {
    wasmtime::Error::new(Stop::Job(JobFailure { ename: ename.into(), message }))
}

/// Copies `len` bytes at `ptr` out of the caller's exported memory.
fn guest_bytes(caller: &mut Caller<'_, HostState>, ptr: i32, len: usize) -> wasmtime::Result<Vec<u8>> {
    let memory = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the module calls an `sbx` import but exports no `memory`"))?;
    let start = ptr as u32 as usize;
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg(format!("pointer {start}+{len} is outside the module's memory")))
}
