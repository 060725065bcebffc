//! Compiles `rust` statements (notebook-cell Rust snippets) to WebAssembly on the server.
//!
//! # Layout
//! - [`guard`]: refuses code that reaches outside the snippet (files, environment, linking).
//! - [`snippet`]: splits a cell into crate-level items and statements, keeping user lines.
//! - [`toolchain`]: the sysroot behind `rustc`, and the wasm32 target installed through rustup
//!   when it is missing.
//! - [`isolate`]: the OS jail rustc runs in (namespaces, a root holding only the toolchain, the
//!   prelude and the job directory, no network, an unprivileged user).
//! - `rustc`: the toolchain, the compile sandbox (the jail, cleared env, rlimits, deadline).
//! - [`Compiler`]: the embedded prelude built once, the module cache, the compile slots.
//!
//! One compile: guard → generate the crate (`main.rs` including earlier cells' items, this
//! cell's items and its body) → key = sha256(toolchain, prelude, flags, files) → memory or disk
//! cache, else rustc in a fresh job directory → the `.wasm` bytes.

pub mod guard;
pub mod isolate;
mod rustc;
pub mod snippet;
pub mod toolchain;

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use lru::LruCache;
use sha2::{Digest, Sha256};

pub use isolate::Isolation;
pub use rustc::Toolchain;
pub use snippet::Cell;

/// The guest prelude's sources, compiled into an rlib on first use with the snippets' flags.
const PRELUDE: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../prelude/src/lib.rs")),
    ("abi.rs", include_str!("../../prelude/src/abi.rs")),
    ("job.rs", include_str!("../../prelude/src/job.rs")),
    ("json.rs", include_str!("../../prelude/src/json.rs")),
    ("nexus.rs", include_str!("../../prelude/src/nexus.rs")),
    ("session.rs", include_str!("../../prelude/src/session.rs")),
    ("sql.rs", include_str!("../../prelude/src/sql.rs")),
    ("stats.rs", include_str!("../../prelude/src/stats.rs")),
    ("tile.rs", include_str!("../../prelude/src/tile.rs")),
    ("value.rs", include_str!("../../prelude/src/value.rs")),
];

/// The crate root around a cell: output macros that print to the statement's output, then the
/// earlier cells' items, this cell's items and its entry function.
const ROOT_HEAD: &str = r#"#![allow(unused, dead_code, non_snake_case, non_camel_case_types, non_upper_case_globals)]
use prelude::*;
macro_rules! print { ($($t:tt)*) => { ::prelude::print(&::std::format!($($t)*)) }; }
macro_rules! println {
    () => { ::prelude::print("\n") };
    ($($t:tt)*) => { ::prelude::print(&{ let mut line = ::std::format!($($t)*); line.push('\n'); line }) };
}
macro_rules! eprint { ($($t:tt)*) => { print!($($t)*) }; }
macro_rules! eprintln { ($($t:tt)*) => { println!($($t)*) }; }
macro_rules! dbg {
    ($e:expr $(,)?) => {
        match $e { v => { println!("[{}:{}] {} = {:#?}", ::std::file!(), ::std::line!(), ::std::stringify!($e), &v); v } }
    };
}
"#;

/// Why a snippet did not become a module.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The guard refused the snippet before compiling.
    #[error("line {line}: {message}")]
    Refused {
        /// Line in the snippet.
        line: usize,
        /// What is not allowed.
        message: String,
    },
    /// rustc reported errors.
    #[error("{message}")]
    Rejected {
        /// The first error's message.
        message: String,
        /// rustc's rendered diagnostics, one line per entry.
        rendered: Vec<String>,
    },
    /// rustc ran past the compile deadline and was killed.
    #[error("compilation took longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// rustc hit a memory, CPU or file-size limit.
    #[error("{0}")]
    ResourceLimit(String),
    /// No usable toolchain (rustc or the wasm32 target missing).
    #[error("rust statements are unavailable: {0}")]
    Unavailable(String),
    /// The statement was cancelled while it compiled or waited for a compile slot.
    #[error("cancelled while compiling")]
    Cancelled,
    /// Something on the server failed (I/O in the cache directory, ...).
    #[error("internal compiler failure: {0}")]
    Internal(String),
}

impl Error {
    /// The Livy `ename`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Refused { .. } | Self::Rejected { .. } => "CompileError",
            Self::Timeout(_) => "CompileTimeout",
            Self::ResourceLimit(_) => "CompileLimit",
            Self::Unavailable(_) => "RustUnavailable",
            Self::Cancelled => "Cancelled",
            Self::Internal(_) => "InternalError",
        }
    }

    /// The Livy `traceback`: rustc's rendered diagnostics, one line per entry (each ending in `\n`).
    pub fn traceback(&self) -> &[String] {
        match self {
            Self::Rejected { rendered, .. } => rendered,
            _ => &[],
        }
    }
}

/// Settings of the compiler.
#[derive(Debug, Clone)]
pub struct CompilerConfig {
    /// The rustc to use: a path or a name on `PATH` (the rustup proxy is resolved to the real one).
    pub rustc: String,
    /// Where the prelude rlib, compiled modules and job directories live.
    pub cache_dir: PathBuf,
    /// A compile is killed after this.
    pub deadline: Duration,
    /// Address-space limit of one rustc.
    pub memory_bytes: u64,
    /// Compiles running at once; more wait.
    pub max_concurrent: usize,
    /// Compiles of one user running at once (at least 1, at most `max_concurrent`).
    pub max_per_user: usize,
    /// Modules kept in memory (all are kept on disk).
    pub cache_entries: usize,
    /// How rustc is isolated from the host.
    pub isolation: Isolation,
}

impl Default for CompilerConfig {
    fn default() -> Self {
        Self {
            rustc: "rustc".into(),
            cache_dir: std::env::temp_dir().join("tilegate-compiler"),
            deadline: Duration::from_secs(30),
            memory_bytes: 2 << 30,
            max_concurrent: 2,
            max_per_user: 1,
            cache_entries: 256,
            isolation: Isolation::default(),
        }
    }
}

/// A compiled cell.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The module.
    pub wasm: Arc<[u8]>,
    /// Its cache key (hex sha256).
    pub key: String,
    /// Whether it came from the cache (no rustc ran).
    pub cached: bool,
}

/// Who a compile is for and what watches it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Whose share of the compile slots it uses.
    pub user: &'a str,
    /// Set when its statement is cancelled: rustc is killed, the wait for a slot given up.
    pub cancel: &'a AtomicBool,
    /// Where rustc's CPU time is added, in nanoseconds.
    pub cpu_ns: &'a AtomicU64,
}

/// The toolchain and the built prelude.
#[derive(Debug)]
struct Ready {
    toolchain: Toolchain,
    prelude: PathBuf,
    prelude_hash: String,
}

/// Compiles cells; shared by all sessions.
#[derive(Debug)]
pub struct Compiler {
    config: CompilerConfig,
    ready: OnceLock<Result<Ready, Error>>,
    /// What preparing is doing now (for `/ready`).
    phase: Mutex<String>,
    cache: Mutex<LruCache<String, Arc<[u8]>>>,
    slots: Slots,
    rustc_runs: AtomicU64,
}

/// Numbers job directories uniquely within the process (compilers may share a cache directory).
static NEXT_JOB: AtomicU64 = AtomicU64::new(0);

impl Compiler {
    /// A compiler with `config`; nothing runs until [`Compiler::prepare`] or the first compile.
    pub fn new(mut config: CompilerConfig) -> Self {
        // rustc runs in a job directory of its own: a relative cache path would name another place.
        if let Ok(dir) = std::path::absolute(&config.cache_dir) {
            config.cache_dir = dir;
        }
        let slots = Slots::new(config.max_concurrent.max(1), config.max_per_user);
        Self {
            cache: Mutex::new(LruCache::new(NonZeroUsize::new(config.cache_entries).unwrap_or(NonZeroUsize::MIN))),
            config,
            ready: OnceLock::new(),
            phase: Mutex::new("waiting to find the Rust toolchain".into()),
            slots,
            rustc_runs: AtomicU64::new(0),
        }
    }

    /// Finds the toolchain and builds the prelude rlib (once; later calls return at once).
    ///
    /// # Errors
    /// When no usable toolchain exists or the prelude does not build.
    pub fn prepare(&self) -> Result<(), Error> {
        self.ready().map(|_| ())
    }

    /// `None` while the toolchain and prelude are being prepared (or before anyone asked), then
    /// whether rust statements can compile.
    pub fn status(&self) -> Option<Result<(), Error>> {
        self.ready.get().map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone))
    }

    /// What preparing the toolchain and prelude is doing now (meaningful while
    /// [`Compiler::status`] is `None`).
    pub fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_phase(&self, phase: &str) {
        tracing::info!("{phase}");
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase.to_owned();
    }

    /// How many times rustc ran (prelude builds included); cache hits do not count.
    pub fn rustc_runs(&self) -> u64 {
        self.rustc_runs.load(Ordering::Relaxed)
    }

    /// Compiles `cell` in a crate that also holds the items of the `earlier` cells of its
    /// session (label, cell), oldest first; a later definition of a name replaces earlier ones.
    ///
    /// # Errors
    /// Refused code, rustc errors, the deadline or a resource limit, or no toolchain.
    pub fn compile(&self, earlier: &[(String, Arc<Cell>)], cell: &Cell) -> Result<Compiled, Error> {
        let (cancel, cpu_ns) = (AtomicBool::new(false), AtomicU64::new(0));
        self.compile_for(earlier, cell, Request { user: "", cancel: &cancel, cpu_ns: &cpu_ns })
    }

    /// [`Compiler::compile`] for `request`'s user (whose compiles share the slots fairly with other
    /// users'), stopped (rustc killed, or the wait for a slot given up) when its `cancel` is set;
    /// rustc's CPU time is added to its `cpu_ns`.
    ///
    /// # Errors
    /// As [`Compiler::compile`], plus [`Error::Cancelled`].
    pub fn compile_for(
        &self,
        earlier: &[(String, Arc<Cell>)],
        cell: &Cell,
        request: Request<'_>,
    ) -> Result<Compiled, Error> {
        let Request { user, cancel, .. } = request;
        guard::check(cell.source()).map_err(|r| Error::Refused { line: r.line, message: r.message })?;
        let ready = self.ready()?;
        let files = crate_files(earlier, cell);
        let key = cache_key(ready, &files);
        if let Some(wasm) = self.cached(&key) {
            return Ok(Compiled { wasm, key, cached: true });
        }
        let _slot = self.slots.acquire(user, cancel)?;
        // Another request may have compiled the same crate while this one waited.
        if let Some(wasm) = self.cached(&key) {
            return Ok(Compiled { wasm, key, cached: true });
        }
        let wasm: Arc<[u8]> = self.run_snippet(ready, &key, &files, request)?.into();
        let modules = self.config.cache_dir.join("modules");
        if std::fs::create_dir_all(&modules).is_ok() {
            // Write then rename, so a reader never sees half a module.
            let part = modules.join(format!("{key}.{}.part", NEXT_JOB.fetch_add(1, Ordering::Relaxed)));
            if std::fs::write(&part, &wasm).is_ok() {
                let _ = std::fs::rename(&part, modules.join(format!("{key}.wasm")));
            }
        }
        self.lock_cache().put(key.clone(), wasm.clone());
        Ok(Compiled { wasm, key, cached: false })
    }

    fn cached(&self, key: &str) -> Option<Arc<[u8]>> {
        if let Some(wasm) = self.lock_cache().get(key).cloned() {
            return Some(wasm);
        }
        let wasm: Arc<[u8]> =
            std::fs::read(self.config.cache_dir.join("modules").join(format!("{key}.wasm"))).ok()?.into();
        self.lock_cache().put(key.to_owned(), wasm.clone());
        Some(wasm)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<[u8]>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ready(&self) -> Result<&Ready, Error> {
        self.ready.get_or_init(|| self.build_prelude()).as_ref().map_err(Clone::clone)
    }

    /// Where the jails' empty mount points are made.
    fn jails(&self) -> PathBuf {
        self.config.cache_dir.join("jails")
    }

    fn bounds(&self) -> rustc::Bounds {
        rustc::Bounds { deadline: self.config.deadline, memory_bytes: self.config.memory_bytes, file_bytes: 256 << 20 }
    }

    /// Writes the embedded prelude and compiles it to `<cache>/prelude-<hash>/libprelude.rlib`
    /// unless an earlier run already did.
    fn build_prelude(&self) -> Result<Ready, Error> {
        self.set_phase(&format!("finding the Rust toolchain behind `{}`", self.config.rustc));
        let toolchain = Toolchain::find(&self.config.rustc, self.config.isolation, &mut |step| self.set_phase(step))?;
        let mut hash = Sha256::new();
        hash.update(&toolchain.version);
        hash.update(rustc::COMMON_FLAGS.join(" "));
        for (name, text) in PRELUDE {
            hash.update(name);
            hash.update(text);
        }
        let prelude_hash = hex::encode(hash.finalize());
        let dir = self.config.cache_dir.join(format!("prelude-{}", &prelude_hash[..16]));
        if !dir.join("libprelude.rlib").is_file() {
            self.set_phase("building the guest prelude");
            let io =
                |e: std::io::Error| Error::Internal(format!("prelude in {}: {e}", self.config.cache_dir.display()));
            // Unique per build: compilers of one process (and other processes) may share the cache.
            let n = NEXT_JOB.fetch_add(1, Ordering::Relaxed);
            let building =
                self.config.cache_dir.join(format!("prelude-{}.{}-{n}", &prelude_hash[..16], std::process::id()));
            let src = building.join("src");
            std::fs::create_dir_all(&src).map_err(io)?;
            for (name, text) in PRELUDE {
                std::fs::write(src.join(name), text).map_err(io)?;
            }
            // What rustc sees: in the jail, the building directory is its work directory.
            let seen = toolchain.view(&building, &building);
            let mut args: Vec<String> = rustc::COMMON_FLAGS.iter().map(|s| s.to_string()).collect();
            args.push(format!("--sysroot={}", seen.sysroot.display()));
            args.extend(["--crate-type", "rlib", "--crate-name", "prelude"].map(String::from));
            args.push(format!("--remap-path-prefix={}=prelude", seen.work.join("src").display()));
            args.push("--out-dir".into());
            args.push(seen.work.display().to_string());
            args.push(seen.work.join("src/lib.rs").display().to_string());
            self.rustc_runs.fetch_add(1, Ordering::Relaxed);
            let bounds =
                rustc::Bounds { deadline: self.config.deadline.max(Duration::from_secs(120)), ..self.bounds() };
            let never = AtomicBool::new(false);
            let done =
                rustc::run(&toolchain, (&building, None), &self.jails(), &args, bounds, (&never, &AtomicU64::new(0)))?;
            if !done.success {
                let _ = std::fs::remove_dir_all(&building);
                return Err(Error::Internal(format!("the prelude did not build:\n{}", done.stderr)));
            }
            if std::fs::rename(&building, &dir).is_err() {
                // Built concurrently by another gateway on the same cache directory: use theirs.
                let _ = std::fs::remove_dir_all(&building);
            }
            tracing::info!(dir = %dir.display(), "built the guest prelude");
        }
        Ok(Ready { toolchain, prelude: dir, prelude_hash })
    }

    fn run_snippet(
        &self,
        ready: &Ready,
        key: &str,
        files: &[(String, String)],
        request: Request<'_>,
    ) -> Result<Vec<u8>, Error> {
        let n = NEXT_JOB.fetch_add(1, Ordering::Relaxed);
        let job = self.config.cache_dir.join("jobs").join(format!("{}-{}-{n}", &key[..16], std::process::id()));
        let io = |e: std::io::Error| Error::Internal(format!("job directory: {e}"));
        std::fs::create_dir_all(&job).map_err(io)?;
        let result = (|| {
            for (name, text) in files {
                std::fs::write(job.join(name), text).map_err(io)?;
            }
            let seen = ready.toolchain.view(&job, &ready.prelude);
            let args = snippet_args(&seen, files);
            self.rustc_runs.fetch_add(1, Ordering::Relaxed);
            let dirs = (job.as_path(), Some(ready.prelude.as_path()));
            let watch = (request.cancel, request.cpu_ns);
            let done = rustc::run(&ready.toolchain, dirs, &self.jails(), &args, self.bounds(), watch)?;
            if done.success {
                return std::fs::read(job.join("snippet.wasm")).map_err(io);
            }
            Err(rejected(
                &done.stderr,
                // Host paths that survived the remaps (the jail's own are fixed names).
                &[(&job, "snippet"), (&ready.prelude, "prelude"), (&ready.toolchain.sysroot, "rust")],
            ))
        })();
        let _ = std::fs::remove_dir_all(&job);
        result
    }
}

/// The crate's files, name → text: `main.rs`, `s<i>.rs` per earlier cell with items (each
/// remapped to its own label: rustc keeps one file per displayed name) and `cell.rs`, the cell as
/// the entry function's body.
fn crate_files(earlier: &[(String, Arc<Cell>)], cell: &Cell) -> Vec<(String, String)> {
    let mut root = String::from(ROOT_HEAD);
    let mut files = Vec::new();
    // Names defined by the cells after each one: an earlier definition of them is dropped.
    let mut later: HashSet<&str> = cell.names().collect();
    let mut history = Vec::new();
    for (i, (label, past)) in earlier.iter().enumerate().rev() {
        if past.has_items() {
            history.push((i, label, past.items_file(&later)));
        }
        later.extend(past.names());
    }
    for (i, _, text) in history.into_iter().rev() {
        root.push_str(&format!("include!(\"s{i}.rs\");\n"));
        files.push((format!("s{i}.rs"), text));
    }
    root.push_str("fn __tilegate_cell() -> impl ::prelude::abi::IntoOutput {\n    include!(\"cell.rs\")\n}\n");
    root.push_str("::prelude::export_main!(__tilegate_cell);\n");
    files.push(("cell.rs".into(), cell.body_file()));
    files.push(("main.rs".into(), root));
    files
}

/// rustc's arguments for a snippet crate whose paths rustc sees as `seen`; every path that could
/// show is remapped (the last matching remap wins, so the general ones come first).
fn snippet_args(seen: &rustc::View, files: &[(String, String)]) -> Vec<String> {
    let mut args: Vec<String> = rustc::COMMON_FLAGS.iter().chain(rustc::SNIPPET_FLAGS).map(|s| s.to_string()).collect();
    args.push(format!("--sysroot={}", seen.sysroot.display()));
    let remap = |from: &Path, to: &str| format!("--remap-path-prefix={}={to}", from.display());
    args.push(remap(&seen.sysroot, "rust"));
    args.push(remap(&seen.prelude, "prelude"));
    args.push(remap(&seen.work, "snippet"));
    for (name, _) in files {
        let label = match name.as_str() {
            "cell.rs" => "cell",
            "main.rs" => "tilegate",
            history => history.trim_end_matches(".rs"),
        };
        args.push(remap(&seen.work.join(name), label));
    }
    args.push("--extern".into());
    args.push(format!("prelude={}", seen.prelude.join("libprelude.rlib").display()));
    args.push("-L".into());
    args.push(format!("dependency={}", seen.prelude.display()));
    args.push(seen.work.join("main.rs").display().to_string());
    args.push("-o".into());
    args.push(seen.work.join("snippet.wasm").display().to_string());
    args
}

fn cache_key(ready: &Ready, files: &[(String, String)]) -> String {
    let mut hash = Sha256::new();
    hash.update(&ready.toolchain.version);
    hash.update(&ready.prelude_hash);
    hash.update(rustc::SNIPPET_FLAGS.join(" "));
    for (name, text) in files {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name);
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(text);
    }
    hex::encode(hash.finalize())
}

/// The errors of a failed compile, with any server path that survived the remaps replaced.
fn rejected(stderr: &str, paths: &[(&Path, &str)]) -> Error {
    let scrub = |text: &str| {
        paths.iter().fold(text.to_owned(), |text, (path, label)| text.replace(&path.display().to_string(), label))
    };
    let errors: Vec<rustc::Diagnostic> = rustc::diagnostics(stderr)
        .into_iter()
        .filter(|d| d.level.starts_with("error") && !d.message.starts_with("aborting due to"))
        .collect();
    let message = errors.first().map_or_else(|| "rustc failed without a message".to_owned(), |d| scrub(&d.message));
    let rendered =
        errors.iter().flat_map(|d| scrub(&d.rendered).lines().map(|l| format!("{l}\n")).collect::<Vec<_>>()).collect();
    Error::Rejected { message, rendered }
}

/// A bounded number of compiles at once, shared fairly: at most `per_user` of them are one user's,
/// and when a slot frees, the waiting compile of the user with the fewest running goes first
/// (among equals, the one that waited longest). So one user's slow compiles can delay their own
/// later ones, not everyone's.
#[derive(Debug)]
struct Slots {
    total: usize,
    per_user: usize,
    state: Mutex<SlotState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    running: usize,
    /// Running compiles per user.
    by_user: HashMap<String, usize>,
    /// Waiting compiles in arrival order: (ticket, user).
    waiting: VecDeque<(u64, String)>,
    next_ticket: u64,
}

impl SlotState {
    /// The ticket that goes next, if a slot and a user's share allow one.
    fn next(&self, total: usize, per_user: usize) -> Option<u64> {
        if self.running >= total {
            return None;
        }
        let running = |user: &str| self.by_user.get(user).copied().unwrap_or(0);
        self.waiting
            .iter()
            .enumerate()
            .filter(|(_, (_, user))| running(user) < per_user)
            .min_by_key(|(position, (_, user))| (running(user), *position))
            .map(|(_, (ticket, _))| *ticket)
    }
}

struct Slot<'a> {
    slots: &'a Slots,
    user: String,
}

impl Slots {
    fn new(total: usize, per_user: usize) -> Self {
        Self { total, per_user: per_user.clamp(1, total), state: Mutex::default(), freed: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(&self, user: &str, cancel: &AtomicBool) -> Result<Slot<'_>, Error> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back((ticket, user.to_owned()));
        loop {
            if state.next(self.total, self.per_user) == Some(ticket) {
                state.waiting.retain(|(t, _)| *t != ticket);
                state.running += 1;
                *state.by_user.entry(user.to_owned()).or_default() += 1;
                return Ok(Slot { slots: self, user: user.to_owned() });
            }
            if cancel.load(Ordering::Relaxed) {
                state.waiting.retain(|(t, _)| *t != ticket);
                drop(state);
                self.freed.notify_all();
                return Err(Error::Cancelled);
            }
            state = self.freed.wait_timeout(state, Duration::from_millis(20)).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        state.running -= 1;
        if let Some(n) = state.by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                state.by_user.remove(&self.user);
            }
        }
        drop(state);
        self.slots.freed.notify_all();
    }
}

#[cfg(test)]
mod tests;
