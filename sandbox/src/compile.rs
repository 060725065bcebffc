//! Compiling a module with Cranelift in a child process, so that what a module costs to compile
//! is bounded like what it costs to run: the statement's deadline and cancel (the child is killed),
//! an address-space and a CPU-time limit. A 100 KB module can take Cranelift minutes and gigabytes;
//! in the gateway's own process that time could not be taken back, and its threads are shared.
//!
//! The child is the program itself (the `tilegate` binary runs [`serve_compile`] when its first
//! argument is [`COMPILE_COMMAND`]): it builds an engine with the same settings, compiles the
//! bytes from stdin with `Engine::precompile_module`, and writes one status byte and the compiled
//! artifact (or the error) to stdout. The parent loads the artifact with `Module::deserialize`,
//! which checks that it came from the same wasmtime with the same settings.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::Error;

/// The first argument that makes the `tilegate` binary a module compiler (hidden from `--help`).
pub const COMPILE_COMMAND: &str = "__compile-wasm-module";

/// Where modules are compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModuleCompiler {
    /// In the calling thread, unbounded (tests and embedding; not for untrusted modules on a
    /// shared service).
    #[default]
    InProcess,
    /// In a child process, bounded.
    Process(CompileProcess),
}

/// A child process that compiles modules: `program args… <max_wasm_stack> <memory_bytes> <cpu_secs>`
/// must end in [`serve_compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileProcess {
    /// The program, e.g. `/proc/self/exe`.
    pub program: PathBuf,
    /// Arguments before the limits, e.g. [`COMPILE_COMMAND`].
    pub args: Vec<OsString>,
    /// Address space the child may use, in bytes.
    pub memory_bytes: u64,
}

/// What the child writes first on stdout.
const COMPILED: u8 = 0;
const REFUSED: u8 = 1;

/// Compiles `bytes` in the child `process`, waiting at most until `deadline` and stopping when
/// `interrupt` is set; the child's CPU time is added to `cpu_ns`. Returns the serialized artifact.
pub(crate) fn in_child(
    process: &CompileProcess,
    max_wasm_stack: usize,
    bytes: &[u8],
    deadline: Instant,
    (interrupt, cpu_ns): (&AtomicBool, &AtomicU64),
) -> Result<Vec<u8>, Error> {
    let budget = deadline.saturating_duration_since(Instant::now());
    // CPU time is summed over threads: Cranelift compiles functions on every core.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let cpu_secs = (budget.as_secs() + 1).saturating_mul(cores);
    let mut child = Command::new(&process.program)
        .args(&process.args)
        .args([max_wasm_stack.to_string(), process.memory_bytes.to_string(), cpu_secs.to_string()])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Setup(format!("cannot start the module compiler {}: {e}", process.program.display())))?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err(Error::Setup("the module compiler has no pipes".into()));
    };
    // The child reads all of its input before it writes: one helper thread does both in turn, and
    // ends when the child does (its pipes close when it is killed).
    let (done, answer) = mpsc::channel();
    let input = bytes.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        drop(stdin);
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = done.send(out);
    });
    let out = loop {
        match answer.recv_timeout(Duration::from_millis(10)) {
            Ok(out) => break out,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Vec::new(),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let stop = if interrupt.load(Ordering::Relaxed) {
            Some(Error::Cancelled)
        } else if Instant::now() >= deadline {
            Some(Error::CompileLimit(format!(
                "compiling the module took longer than the statement's time limit of {} s (the gateway's \
                 `statement_timeout_secs`): make its functions smaller or simpler",
                budget.as_secs_f64().round()
            )))
        } else {
            None
        };
        if let Some(error) = stop {
            let _ = child.kill();
            let _ = reap(&child, cpu_ns);
            return Err(error);
        }
    };
    let status = reap(&child, cpu_ns).map_err(|e| Error::Setup(format!("the module compiler: {e}")))?;
    match out.split_first() {
        Some((&COMPILED, artifact)) if status.success() => Ok(artifact.to_vec()),
        Some((&REFUSED, message)) => Err(Error::InvalidModule(String::from_utf8_lossy(message).into_owned())),
        _ => Err(Error::CompileLimit(format!(
            "the module compiler stopped ({status}): compiling the module needed more than {} MiB or its CPU \
             time; make its functions smaller or simpler",
            process.memory_bytes >> 20
        ))),
    }
}

/// The child's side: `args` are `<max_wasm_stack> <memory_bytes> <cpu_secs>` (what follows
/// [`COMPILE_COMMAND`]). Reads the module from stdin, writes the status byte and the artifact or
/// the error to stdout.
pub fn serve_compile(args: &[OsString]) -> ExitCode {
    let number = |i: usize| args.get(i).and_then(|a| a.to_str()).and_then(|s| s.parse::<u64>().ok());
    let (Some(stack), Some(memory), Some(cpu)) = (number(0), number(1), number(2)) else {
        eprintln!("usage: {COMPILE_COMMAND} <max_wasm_stack> <memory_bytes> <cpu_secs> < module");
        return ExitCode::from(2);
    };
    if let Err(e) = limits::restrict_self(memory, cpu) {
        eprintln!("cannot set the compiler's limits: {e}");
        return ExitCode::FAILURE;
    }
    let mut bytes = Vec::new();
    if std::io::stdin().read_to_end(&mut bytes).is_err() {
        return ExitCode::FAILURE;
    }
    let stack = usize::try_from(stack).unwrap_or(usize::MAX);
    let answer = match Engine::new(&crate::engine_config(stack)) {
        Ok(engine) => match engine.precompile_module(&bytes) {
            Ok(artifact) => [&[COMPILED][..], &artifact].concat(),
            Err(e) => [&[REFUSED][..], format!("{e:#}").as_bytes()].concat(),
        },
        Err(e) => {
            eprintln!("cannot create the engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&answer).and_then(|()| stdout.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The child's own rlimits: the only libc calls of the crate.
/// Waits for `child` with wait4, adding the CPU time it used to `cpu_ns`. The `Child` must not be
/// waited on after.
#[allow(unsafe_code)]
fn reap(child: &std::process::Child, cpu_ns: &AtomicU64) -> std::io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid rusage (plain integers and timevals).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; `pid` is our own unreaped child.
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } == -1 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let micros = |t: libc::timeval| (t.tv_sec as u64).saturating_mul(1_000_000).saturating_add(t.tv_usec as u64);
        let cpu = micros(usage.ru_utime) + micros(usage.ru_stime);
        cpu_ns.fetch_add(cpu.saturating_mul(1000), Ordering::Relaxed);
        return Ok(std::process::ExitStatus::from_raw(status));
    }
}

#[allow(unsafe_code)]
mod limits {
    pub fn restrict_self(memory_bytes: u64, cpu_secs: u64) -> std::io::Result<()> {
        set(libc::RLIMIT_AS, memory_bytes)?;
        set(libc::RLIMIT_CPU, cpu_secs)?;
        set(libc::RLIMIT_CORE, 0)
    }

    fn set(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
        let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: a valid pointer to a local rlimit.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

/// Loads an artifact [`in_child`] returned.
#[allow(unsafe_code)]
pub(crate) fn load(engine: &Engine, artifact: &[u8]) -> Result<wasmtime::Module, Error> {
    // SAFETY: the bytes are `Engine::precompile_module`'s output, written by our own program
    // (`/proc/self/exe`, the same build) into a pipe only we read; `deserialize` also checks that
    // the wasmtime version and every compilation setting match this engine's.
    unsafe { wasmtime::Module::deserialize(engine, artifact) }
        .map_err(|e| Error::Setup(format!("the module compiler's artifact does not load: {e:#}")))
}
