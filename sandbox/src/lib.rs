//! Runs untrusted WebAssembly core modules in wasmtime, with a deadline, a memory cap, an output cap,
//! a stack cap, prompt cancellation and no ambient authority (no WASI, no imports but `sbx`).
//!
//! Callers speak bytes and durations; engines, stores, epochs and limiters stay inside.
//!
//! ```no_run
//! use std::sync::{Arc, atomic::AtomicBool};
//! use tilegate_sandbox::{Limits, Sandbox, SandboxConfig};
//!
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let program = sandbox.compile(br#"(module (func (export "main") (result i32) i32.const 42))"#)?;
//! let out = sandbox.run(&program, b"", &Limits::default(), &Arc::new(AtomicBool::new(false)))?;
//! assert_eq!(out.result, serde_json::json!(42));
//! # Ok::<(), tilegate_sandbox::Error>(())
//! ```
//!
//! # Layout
//! - [`Sandbox`]: the one engine of the process, its epoch ticker and the module cache.
//! - [`Program`]: a validated, compiled module, identified by the SHA-256 of its bytes.
//! - [`Limits`]: per-call caps; [`RunOutput`]: what a call returns; [`Error`]: why it did not.
//! - `host`: the per-call store state, the memory limiter and the `sbx` imports.
//! - The ABI itself is documented in `sandbox/ABI.md`.

mod compile;
mod error;
mod host;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lru::LruCache;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, InstancePre, Linker, Module, OptLevel, Store, Trap, UpdateDeadline, Val, ValType,
};

pub use compile::{COMPILE_COMMAND, CompileProcess, ModuleCompiler, serve_compile};
pub use error::Error;
use host::{ALLOWED_IMPORTS, HostState, Stop};
pub use host::{Host, JobFailure, JobHandler, SessionValues};

/// Process-wide settings, fixed when the sandbox is created.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Maximum wasm call-stack size in bytes (wasmtime's `max_wasm_stack`).
    pub max_wasm_stack: usize,
    /// How many compiled modules to keep; the least recently used is dropped first.
    pub module_cache_entries: usize,
    /// How often deadlines and cancellation are checked.
    pub tick: Duration,
    /// Where modules are compiled (a child process bounds the cost of a hostile module).
    pub compiler: ModuleCompiler,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_wasm_stack: 512 << 10,
            module_cache_entries: 256,
            tick: Duration::from_millis(10),
            compiler: ModuleCompiler::InProcess,
        }
    }
}

/// Per-call caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time the call may take, instantiation included.
    pub deadline: Duration,
    /// Linear memory the module may grow to, in bytes.
    pub memory_bytes: usize,
    /// Bytes the module may print, and separately return.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline: Duration::from_secs(60), memory_bytes: 256 << 20, output_bytes: 8 << 20 }
    }
}

/// How a module is entered to run as a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `main: () -> number` (or no result): the minimum contract.
    Main,
    /// `sbx_prepare` + `sbx_main`: bytes in, JSON bytes out (see `ABI.md`).
    Abi,
    /// Neither: the module can be compiled but not run as a statement.
    None,
}

/// A validated, compiled module, ready to be instantiated many times.
pub struct Program {
    hash: String,
    pre: InstancePre<HostState>,
    entry: Entry,
}

impl Program {
    /// The names of the module's function exports that start with `prefix`.
    pub fn exports(&self, prefix: &str) -> Vec<String> {
        self.pre
            .module()
            .exports()
            .filter(|e| e.name().starts_with(prefix) && matches!(e.ty(), ExternType::Func(_)))
            .map(|e| e.name().to_owned())
            .collect()
    }

    /// Hex SHA-256 of the module's bytes (WAT text or binary, as given).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// How the module runs as a statement.
    pub fn entry(&self) -> Entry {
        self.entry
    }
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").field("hash", &self.hash).field("entry", &self.entry).finish()
    }
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// The result: the number `main` returned, or the JSON `sbx_main` returned (null when empty).
    pub result: Value,
    /// What the module printed through `sbx::print`, lossily decoded as UTF-8.
    pub printed: String,
}

/// The sandbox: one wasmtime engine per process, an epoch ticker, and a cache of compiled modules.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    config: SandboxConfig,
    /// Compiled modules by content hash, the least recently used dropped first.
    cache: Mutex<LruCache<String, Arc<Program>>>,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Creates the engine and starts the epoch ticker thread.
    ///
    /// # Errors
    /// [`Error::Setup`] when wasmtime rejects the configuration.
    pub fn new(config: SandboxConfig) -> Result<Self, Error> {
        let engine = Engine::new(&engine_config(config.max_wasm_stack)).map_err(|e| Error::Setup(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::link(&mut linker).map_err(|e| Error::Setup(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop, tick) = (engine.clone(), ticker_stop.clone(), config.tick);
            std::thread::Builder::new()
                .name("sandbox-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Setup(format!("cannot start the epoch thread: {e}")))?
        };
        let cache =
            Mutex::new(LruCache::new(NonZeroUsize::new(config.module_cache_entries).unwrap_or(NonZeroUsize::MIN)));
        Ok(Self { engine, linker, config, cache, ticker_stop, ticker: Some(ticker) })
    }

    /// Compiles a module (binary or WAT text), or returns the cached one with the same bytes.
    /// Imports are checked here, before anything runs. Without a time limit: see
    /// [`Sandbox::compile_within`].
    ///
    /// # Errors
    /// As [`Sandbox::compile_within`].
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Program>, Error> {
        let deadline = Instant::now() + Duration::from_secs(24 * 3600);
        self.compile_within(bytes, deadline, (&AtomicBool::new(false), &AtomicU64::new(0)))
    }

    /// Compiles a module (binary or WAT text), or returns the cached one with the same bytes.
    /// Imports are checked here, before anything runs. With [`ModuleCompiler::Process`] the
    /// compile stops at `deadline` or when `interrupt` is set, and within its memory; the child's
    /// CPU time is added to `cpu_ns`.
    ///
    /// # Errors
    /// [`Error::InvalidModule`] for bytes that do not parse or validate, [`Error::ForbiddenImport`] for
    /// an import the sandbox does not provide, [`Error::MissingEntry`] for a `main` or `sbx_*` export
    /// with the wrong signature, [`Error::CompileLimit`] or [`Error::Cancelled`] for a compile
    /// stopped by a limit or the caller.
    pub fn compile_within(
        &self,
        bytes: &[u8],
        deadline: Instant,
        (interrupt, cpu_ns): (&AtomicBool, &AtomicU64),
    ) -> Result<Arc<Program>, Error> {
        let hash = hex::encode(Sha256::digest(bytes));
        if let Some(program) = self.lock_cache().get(&hash).cloned() {
            return Ok(program);
        }
        let module = match &self.config.compiler {
            ModuleCompiler::InProcess => {
                Module::new(&self.engine, bytes).map_err(|e| Error::InvalidModule(format!("{e:#}")))?
            }
            ModuleCompiler::Process(process) => {
                let artifact =
                    compile::in_child(process, self.config.max_wasm_stack, bytes, deadline, (interrupt, cpu_ns))?;
                compile::load(&self.engine, &artifact)?
            }
        };
        for import in module.imports() {
            let allowed = import.module() == "sbx" && host::IMPORT_NAMES.contains(&import.name());
            if !allowed {
                return Err(Error::ForbiddenImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                    allowed: ALLOWED_IMPORTS,
                });
            }
        }
        let entry = entry_of(&module)?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| Error::InvalidModule(format!("{e:#}")))?;
        let program = Arc::new(Program { hash: hash.clone(), pre, entry });
        self.lock_cache().put(hash, program.clone());
        Ok(program)
    }

    /// Runs a program's statement entry on a fresh instance and returns its result.
    ///
    /// `input` is handed to `sbx_main` (ignored by `main`). Setting `interrupt` stops the call
    /// within one tick.
    ///
    /// # Errors
    /// [`Error::MissingEntry`] when the module has no statement entry; otherwise the limit that was
    /// hit ([`Error::Timeout`], [`Error::MemoryLimit`], [`Error::OutputLimit`], [`Error::StackOverflow`]),
    /// [`Error::Cancelled`], or what went wrong in the guest ([`Error::Panic`], [`Error::Trap`], [`Error::Abi`]).
    pub fn run(
        &self,
        program: &Program,
        input: &[u8],
        limits: &Limits,
        interrupt: &Arc<AtomicBool>,
    ) -> Result<RunOutput, Error> {
        self.run_with_host(program, input, limits, interrupt, Host::default())
    }

    /// Like [`Sandbox::run`], with the module's `sbx.run_job` and `sbx.session_*` calls answered
    /// by `host`.
    ///
    /// # Errors
    /// As [`Sandbox::run`], plus [`Error::Job`] when a job fails or a session value is refused.
    pub fn run_with_host(
        &self,
        program: &Program,
        input: &[u8],
        limits: &Limits,
        interrupt: &Arc<AtomicBool>,
        host: Host,
    ) -> Result<RunOutput, Error> {
        let deadline = Instant::now() + limits.deadline;
        let mut store = self.store(limits, interrupt, deadline, host);

        let result = match program.entry {
            Entry::Main => call_main(&mut store, program),
            Entry::Abi => call_abi(&mut store, program, input, limits.output_bytes),
            Entry::None => {
                return Err(Error::MissingEntry(
                    "the module exports neither `main` (no parameters, numeric result) nor `sbx_prepare` + `sbx_main`"
                        .into(),
                ));
            }
        };
        let state = store.data();
        let printed = String::from_utf8_lossy(&state.printed).into_owned();
        match result {
            Ok(result) => Ok(RunOutput { result, printed }),
            Err(Failure::Wasm(e)) => Err(classify(e, state, limits, self.config.max_wasm_stack)),
            Err(Failure::Sandbox(e)) => Err(e),
        }
    }

    /// An instance of `program` for calling `sbx_invoke` many times (the map and reduce workers
    /// of a job). Instances are never shared between jobs; `deadline` is the job's. `session`
    /// lets the functions read (never set) the session's values.
    ///
    /// # Errors
    /// [`Error::MissingEntry`] when the module lacks `sbx_prepare`/`sbx_invoke`/`memory`; a limit
    /// or trap hit while instantiating.
    pub fn worker(
        &self,
        program: &Program,
        limits: &Limits,
        interrupt: &Arc<AtomicBool>,
        deadline: Instant,
        session: Option<Arc<dyn SessionValues>>,
    ) -> Result<Worker, Error> {
        let mut store = self.store(limits, interrupt, deadline, Host { jobs: None, session });
        let failed = |e: wasmtime::Error, store: &Store<HostState>| {
            classify(e, store.data(), limits, self.config.max_wasm_stack)
        };
        let instance = match program.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(failed(e, &store)),
        };
        let missing = |what: &str| Error::MissingEntry(format!("a module that runs jobs must export {what}"));
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| missing("`memory`"))?;
        let prepare = instance
            .get_typed_func::<i32, i32>(&mut store, "sbx_prepare")
            .map_err(|_| missing("`sbx_prepare: (i32) -> i32`"))?;
        let invoke = instance
            .get_typed_func::<(i32, i32, i32, i32, i32), i64>(&mut store, "sbx_invoke")
            .map_err(|_| missing("`sbx_invoke: (i32, i32, i32, i32, i32) -> i64`"))?;
        Ok(Worker { store, instance, memory, prepare, invoke, limits: *limits, max_stack: self.config.max_wasm_stack })
    }

    /// A store with the memory cap and an epoch callback that stops at `deadline` or on `interrupt`.
    fn store(&self, limits: &Limits, interrupt: &Arc<AtomicBool>, deadline: Instant, host: Host) -> Store<HostState> {
        let mut store = Store::new(&self.engine, HostState::new(limits.memory_bytes, limits.output_bytes, host));
        store.limiter(|state| &mut state.memory);
        let interrupt = interrupt.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if interrupt.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::new(Stop::Cancelled));
            }
            if Instant::now() >= deadline {
                return Err(wasmtime::Error::new(Stop::Timeout));
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store
    }

    /// Number of compiled modules held in the cache.
    pub fn cached_modules(&self) -> usize {
        self.lock_cache().len()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<Program>>> {
        // A panic while holding the lock cannot leave the map inconsistent: take it back.
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The engine's settings; a module compiled in a child process is only loaded into an engine
/// with the same ones.
fn engine_config(max_wasm_stack: usize) -> Config {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .max_wasm_stack(max_wasm_stack)
        .cranelift_opt_level(OptLevel::Speed)
        // Enough frames to see where a trap happened without copying deep recursions.
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32));
    // For profiling only: wasmtime writes /tmp/perf-<pid>.map, so `perf report` names guest
    // functions. Off by default (the file grows with every module compiled).
    if std::env::var_os("TILEGATE_PERF_MAP").is_some() {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wasm
}

/// Turns a wasmtime error into the limit or guest failure it stands for.
fn classify(error: wasmtime::Error, state: &HostState, limits: &Limits, max_stack: usize) -> Error {
    if let Some(stop) = error.downcast_ref::<Stop>() {
        return match stop {
            Stop::Timeout => Error::Timeout(limits.deadline),
            Stop::Cancelled => Error::Cancelled,
            Stop::OutputLimit { size } => Error::OutputLimit { size: *size, limit: limits.output_bytes },
            Stop::Panic(message) => Error::Panic { message: message.clone(), backtrace: backtrace(&error) },
            Stop::Job(f) => Error::Job { ename: f.ename.clone(), message: f.message.clone() },
        };
    }
    if state.memory.hit {
        return Error::MemoryLimit { limit: limits.memory_bytes };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => Error::StackOverflow { limit: max_stack },
        Some(trap) => Error::Trap { message: format!("wasm trap: {trap}"), backtrace: backtrace(&error) },
        None => Error::Trap { message: format!("{error:#}"), backtrace: backtrace(&error) },
    }
}

/// A live instance for `sbx_invoke` calls: a job's map and reduce worker.
pub struct Worker {
    store: Store<HostState>,
    instance: wasmtime::Instance,
    memory: wasmtime::Memory,
    prepare: wasmtime::TypedFunc<i32, i32>,
    invoke: wasmtime::TypedFunc<(i32, i32, i32, i32, i32), i64>,
    limits: Limits,
    max_stack: usize,
}

impl Worker {
    /// Calls `sbx_invoke(tramp, func, a, b)` and returns its output bytes. After an error the
    /// worker must be dropped: the instance may be mid-way through anything.
    ///
    /// # Errors
    /// The limit hit, [`Error::Cancelled`], or the guest's failure ([`Error::Panic`], [`Error::Trap`], [`Error::Abi`]).
    pub fn invoke(&mut self, tramp: u32, func: u32, a: &[u8], b: &[u8]) -> Result<Vec<u8>, Error> {
        // Borrowed, not cloned: a clone of the typed function registers its type again, which
        // cost more than the call itself on a reduce of small values.
        let Self { store, memory, prepare, invoke, limits, max_stack, .. } = self;
        call_with(store, memory, prepare, limits, *max_stack, a, b, |store, ptr| {
            invoke.call(store, (tramp as i32, func as i32, ptr as i32, a.len() as i32, b.len() as i32))
        })
    }

    /// Calls the export `name: (ptr: i32, len: i32) -> i64` on `input` placed in a buffer from
    /// `sbx_prepare`, and returns its output bytes (`ptr << 32 | len`), as `sbx_invoke` does. Used
    /// for snippet SQL functions (`sbx_sql__*`, see `ABI.md`). After an error the worker must be
    /// dropped.
    ///
    /// # Errors
    /// [`Error::MissingEntry`] for no such export; otherwise as [`Worker::invoke`].
    pub fn call(&mut self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let func = self
            .instance
            .get_typed_func::<(i32, i32), i64>(&mut self.store, name)
            .map_err(|_| Error::MissingEntry(format!("the module has no export `{name}: (i32, i32) -> i64`")))?;
        let Self { store, memory, prepare, limits, max_stack, .. } = self;
        call_with(store, memory, prepare, limits, *max_stack, input, &[], |store, ptr| {
            func.call(store, (ptr as i32, input.len() as i32))
        })
    }
}

/// Writes `a` and `b` into a buffer from `sbx_prepare`, runs `call(store, ptr)`, and reads its
/// output: a [`Worker`]'s calls, over its fields (borrowed apart, so no function is cloned).
#[allow(clippy::too_many_arguments)]
fn call_with(
    store: &mut Store<HostState>,
    memory: &wasmtime::Memory,
    prepare: &wasmtime::TypedFunc<i32, i32>,
    limits: &Limits,
    max_stack: usize,
    a: &[u8],
    b: &[u8],
    call: impl FnOnce(&mut Store<HostState>, usize) -> wasmtime::Result<i64>,
) -> Result<Vec<u8>, Error> {
    let b_at = a.len().div_ceil(8) * 8;
    let total = i32::try_from(b_at + b.len()).map_err(|_| Error::Abi("input over 2 GiB".into()))?;
    let result = (|| -> Result<Vec<u8>, Failure> {
        let ptr = prepare.call(&mut *store, total)? as u32 as usize;
        let abi = |what: String| Failure::Sandbox(Error::Abi(what));
        memory.write(&mut *store, ptr, a).map_err(|_| abi(format!("`sbx_prepare` returned {ptr}, outside memory")))?;
        memory.write(&mut *store, ptr + b_at, b).map_err(|_| abi("input outside memory".into()))?;
        let packed = call(&mut *store, ptr)? as u64;
        let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        if out_len > limits.output_bytes {
            return Err(Failure::Sandbox(Error::OutputLimit { size: out_len, limit: limits.output_bytes }));
        }
        memory
            .data(&*store)
            .get(out_ptr..out_ptr + out_len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| abi(format!("the call returned bytes {out_ptr}+{out_len}, outside memory")))
    })();
    result.map_err(|f| match f {
        Failure::Wasm(e) => classify(e, store.data(), limits, max_stack),
        Failure::Sandbox(e) => e,
    })
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Turns statement code into module bytes: WAT text is kept as text, base64 is decoded.
///
/// # Errors
/// [`Error::Decode`] when the code is neither WAT (starting with `(` after comments) nor base64 of a wasm binary.
pub fn decode_source(code: &str) -> Result<Vec<u8>, Error> {
    let trimmed = code.trim();
    if looks_like_wat(trimmed) {
        return Ok(trimmed.as_bytes().to_vec());
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()).map_err(|e| {
        Error::Decode(format!("the code is neither WAT text (starting with `(module`) nor base64: {e}"))
    })?;
    if !bytes.starts_with(b"\0asm") {
        return Err(Error::Decode("the base64 code does not decode to a wasm binary (no `\\0asm` header)".into()));
    }
    Ok(bytes)
}

fn looks_like_wat(code: &str) -> bool {
    let mut rest = code;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(";;") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if rest.starts_with("(;") {
            rest = rest.split_once(";)").map_or("", |(_, tail)| tail);
        } else {
            return rest.starts_with('(');
        }
    }
}

/// A failure inside a call: either raised by wasmtime (to classify) or already ours.
enum Failure {
    Wasm(wasmtime::Error),
    Sandbox(Error),
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        Self::Wasm(e)
    }
}

fn call_main(store: &mut Store<HostState>, program: &Program) -> Result<Value, Failure> {
    let instance = program.pre.instantiate(&mut *store)?;
    let main = instance
        .get_func(&mut *store, "main")
        .ok_or_else(|| Failure::Sandbox(Error::MissingEntry("no `main` export".into())))?;
    let mut results = vec![Val::I32(0); main.ty(&*store).results().len()];
    main.call(&mut *store, &[], &mut results)?;
    Ok(match results.first() {
        None => Value::Null,
        Some(Val::I32(v)) => Value::from(*v),
        Some(Val::I64(v)) => Value::from(*v),
        Some(Val::F32(bits)) => float_json(f64::from(f32::from_bits(*bits))),
        Some(Val::F64(bits)) => float_json(f64::from_bits(*bits)),
        Some(_) => return Err(Failure::Sandbox(Error::MissingEntry("`main` must return a number".into()))),
    })
}

fn call_abi(
    store: &mut Store<HostState>,
    program: &Program,
    input: &[u8],
    output_limit: usize,
) -> Result<Value, Failure> {
    let instance = program.pre.instantiate(&mut *store)?;
    let abi = |what: String| Failure::Sandbox(Error::Abi(what));
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| abi("the module exports `sbx_main` but no `memory`".into()))?;
    let prepare = instance.get_typed_func::<i32, i32>(&mut *store, "sbx_prepare")?;
    let main = instance.get_typed_func::<(i32, i32), i64>(&mut *store, "sbx_main")?;
    let len = i32::try_from(input.len()).map_err(|_| abi("input larger than 2 GiB".into()))?;
    let ptr = prepare.call(&mut *store, len)?;
    memory
        .write(&mut *store, ptr as u32 as usize, input)
        .map_err(|_| abi(format!("`sbx_prepare({len})` returned {ptr}, which is outside the module's memory")))?;
    let packed = main.call(&mut *store, (ptr, len))? as u64;
    let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if out_len > output_limit {
        return Err(Failure::Sandbox(Error::OutputLimit { size: out_len, limit: output_limit }));
    }
    if out_len == 0 {
        return Ok(Value::Null);
    }
    let bytes = memory
        .data(&*store)
        .get(out_ptr..out_ptr + out_len)
        .ok_or_else(|| abi(format!("`sbx_main` returned bytes {out_ptr}+{out_len}, outside the module's memory")))?;
    serde_json::from_slice(bytes).map_err(|e| abi(format!("`sbx_main` returned invalid JSON: {e}")))
}

/// JSON has no NaN or infinity: such results become null (their text form still says what they were).
fn float_json(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Finds the statement entry and checks the signatures of the exports the ABI names.
fn entry_of(module: &Module) -> Result<Entry, Error> {
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(f)) => Some(f),
        _ => None,
    };
    let signature_error =
        |name: &str, want: &str| Error::MissingEntry(format!("export `{name}` must have type {want}"));
    if let Some(main) = func("sbx_main") {
        let ok = main.params().map(|p| p.matches(&ValType::I32)).eq([true, true])
            && main.results().map(|r| r.matches(&ValType::I64)).eq([true]);
        if !ok {
            return Err(signature_error("sbx_main", "(i32, i32) -> i64"));
        }
        let prepare = func("sbx_prepare")
            .ok_or_else(|| Error::MissingEntry("`sbx_main` needs an `sbx_prepare` export".into()))?;
        let ok = prepare.params().map(|p| p.matches(&ValType::I32)).eq([true])
            && prepare.results().map(|r| r.matches(&ValType::I32)).eq([true]);
        if !ok {
            return Err(signature_error("sbx_prepare", "(i32) -> i32"));
        }
        return Ok(Entry::Abi);
    }
    if let Some(main) = func("main") {
        let numeric = |t: ValType| matches!(t, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64);
        let results: Vec<ValType> = main.results().collect();
        if main.params().len() != 0 || results.len() > 1 || !results.into_iter().all(numeric) {
            return Err(signature_error("main", "() -> i32 | i64 | f32 | f64 (or no result)"));
        }
        return Ok(Entry::Main);
    }
    Ok(Entry::None)
}

fn backtrace(error: &wasmtime::Error) -> Vec<String> {
    let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return Vec::new();
    };
    trace
        .frames()
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let name = frame.func_name().map_or_else(|| format!("func[{}]", frame.func_index()), str::to_owned);
            match frame.module_offset() {
                Some(offset) => format!("{i:>3}: {name} @ 0x{offset:x}"),
                None => format!("{i:>3}: {name}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
