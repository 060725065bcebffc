//! Running the toolchain's own `rustc` in the compile sandbox: the OS jail of [`crate::isolate`]
//! (its own root file system, no network, an unprivileged user), a cleared environment, rlimits
//! (CPU, address space, file size), a wall-clock deadline that kills the whole process group, and
//! paths remapped so nothing of the server shows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::isolate::{self, Isolation, Jail};

pub use crate::toolchain::TARGET;

/// Flags shared by the prelude and snippets (they must match for the rlib to link).
pub const COMMON_FLAGS: &[&str] =
    &["--edition", "2024", "--target", TARGET, "-C", "opt-level=3", "-C", "target-feature=+simd128"];

/// Flags for a snippet crate.
pub const SNIPPET_FLAGS: &[&str] = &[
    "--crate-type",
    "cdylib",
    "--crate-name",
    "snippet",
    "-C",
    "strip=debuginfo",
    "-C",
    "panic=abort",
    "-F",
    "long_running_const_eval",
    "--error-format=json",
];

/// The rustc binary snippets are compiled with, found once through the sysroot.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `<sysroot>/bin/rustc`: the real compiler, not the rustup proxy (which reads `HOME`,
    /// `RUSTUP_*` and toolchain files).
    pub rustc: PathBuf,
    /// The sysroot, remapped in diagnostics.
    pub sysroot: PathBuf,
    /// `rustc -vV`, part of every cache key.
    pub version: String,
    /// How rustc is isolated.
    pub isolation: Isolation,
    /// The shared libraries from outside the sysroot that rustc and its linker load (the jail
    /// has them and nothing else of the host).
    libraries: Vec<(PathBuf, PathBuf)>,
}

impl Toolchain {
    /// Finds the toolchain behind `rustc` (a path or a name on `PATH`, possibly the rustup proxy)
    /// and makes sure it can build for wasm32, installing the target through rustup when it is
    /// missing (`log` hears what is done).
    pub fn find(rustc: &str, isolation: Isolation, log: &mut dyn FnMut(&str)) -> Result<Self, Error> {
        let unavailable = |why: String| Error::Unavailable(format!("{why} (rustc: `{rustc}`)"));
        let sysroot = crate::toolchain::sysroot(rustc).map_err(unavailable)?;
        crate::toolchain::ensure_target(&sysroot, log).map_err(unavailable)?;
        let sysroot = sysroot.canonicalize().map_err(|e| unavailable(format!("{}: {e}", sysroot.display())))?;
        let real = sysroot.join("bin").join("rustc");
        let version = Command::new(&real)
            .arg("-vV")
            .env_clear()
            .output()
            .map_err(|e| unavailable(format!("cannot run {}: {e}", real.display())))?;
        let libraries = match isolation {
            Isolation::None => Vec::new(),
            _ => isolate::libraries(&binaries(&sysroot), &sysroot).map_err(unavailable)?,
        };
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        Ok(Self { rustc: real, sysroot, version, isolation, libraries })
    }

    /// What rustc is told the paths of a run are: fixed names inside the jail, the host's
    /// without one.
    pub fn view(&self, work: &Path, prelude: &Path) -> View {
        match self.isolation {
            Isolation::None => View { sysroot: self.sysroot.clone(), work: work.into(), prelude: prelude.into() },
            _ => {
                View { sysroot: isolate::SYSROOT.into(), work: isolate::WORK.into(), prelude: isolate::PRELUDE.into() }
            }
        }
    }
}

/// rustc and the linkers it may start: `bin/rustc`, and every file of `lib/rustlib/*/bin`.
fn binaries(sysroot: &Path) -> Vec<PathBuf> {
    let mut found = vec![sysroot.join("bin/rustc")];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(sysroot.join("lib/rustlib"))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path().join("bin")).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(&dir).into_iter().flatten().filter_map(Result::ok).map(|e| e.path()) {
            if path.is_dir() { dirs.push(path) } else { found.push(path) }
        }
    }
    found
}

/// The paths of one run as rustc sees them.
#[derive(Debug, Clone)]
pub struct View {
    /// The toolchain.
    pub sysroot: PathBuf,
    /// The run's work directory (its files, its output).
    pub work: PathBuf,
    /// The prelude rlib's directory.
    pub prelude: PathBuf,
}

/// Limits of one rustc run.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Wall clock; the process group is killed after it.
    pub deadline: Duration,
    /// Address space of rustc and the linker.
    pub memory_bytes: u64,
    /// Largest file rustc may write.
    pub file_bytes: u64,
}

/// What a finished rustc run left.
#[derive(Debug)]
pub struct Finished {
    /// Whether rustc exited with success.
    pub success: bool,
    /// Its stderr (JSON diagnostics for snippets).
    pub stderr: String,
}

/// Runs rustc with `args` (paths as [`Toolchain::view`] gives them) on the work directory `dir`
/// (writable) and `prelude` (read-only), in the jail when the toolchain is isolated, with nothing
/// of the server's environment; stops it when `cancel` is set and adds its CPU time (and its
/// linker's) to `cpu_ns`. `jails` is a directory for the jail's empty mount point.
pub fn run(
    toolchain: &Toolchain,
    (dir, prelude): (&Path, Option<&Path>),
    jails: &Path,
    args: &[String],
    bounds: Bounds,
    (cancel, cpu_ns): (&AtomicBool, &AtomicU64),
) -> Result<Finished, Error> {
    let isolated = toolchain.isolation != Isolation::None;
    let program = if isolated { Path::new(isolate::SYSROOT).join("bin/rustc") } else { toolchain.rustc.clone() };
    let mut command = Command::new(program);
    command.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let root = if isolated {
        let jail_error = |e: std::io::Error| Error::Internal(format!("compile sandbox: {e}"));
        let root = jails.join(format!("{}-{}", std::process::id(), NEXT_JAIL.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&root).map_err(jail_error)?;
        let jail = Jail::new(toolchain.isolation, &root, &toolchain.sysroot, &toolchain.libraries, dir, prelude)
            .map_err(jail_error)?;
        if jail.drops_to_nobody() {
            isolate::give_to_nobody(dir).map_err(jail_error)?;
        }
        // No /proc in the jail: the loader cannot find `$ORIGIN`, so it is told where the
        // toolchain's own libraries are.
        command.env("TMPDIR", isolate::WORK).env("LD_LIBRARY_PATH", Path::new(isolate::SYSROOT).join("lib"));
        jail.apply(&mut command);
        Some(root)
    } else {
        command.current_dir(dir).env("TMPDIR", dir);
        None
    };
    let result = run_command(command, bounds, (cancel, cpu_ns));
    if let Some(root) = root {
        let _ = std::fs::remove_dir(&root);
    }
    result.map_err(|e| match e {
        Error::Internal(why) if isolated && why.starts_with("cannot start rustc") => Error::Unavailable(format!(
            "the compile sandbox could not start rustc ({why}): rustc runs in Linux namespaces of its own \
                 (mount, network, and a user namespace unless the gateway is root), and this host refuses them; \
                 allow unprivileged user namespaces, or run the gateway as root, or set \
                 compile_isolation = \"none\" on a gateway that only trusted users reach"
        )),
        other => other,
    })
}

/// Numbers jail mount points uniquely within the process.
static NEXT_JAIL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run_command(
    mut command: Command,
    bounds: Bounds,
    (cancel, cpu_ns): (&AtomicBool, &AtomicU64),
) -> Result<Finished, Error> {
    limits::apply(&mut command, bounds);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| Error::Internal(format!("cannot start rustc: {e}")))?;
    // Read stderr on a thread so a chatty rustc cannot block on a full pipe.
    let mut stderr = child.stderr.take().ok_or_else(|| Error::Internal("rustc stderr".into()))?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // Reaped with wait4, which also says what CPU time rustc (and the linker it waited for) used.
    let charge = |cpu: std::time::Duration| cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
    let status = loop {
        if let Some((status, cpu)) = limits::reap(&child, false).map_err(|e| Error::Internal(e.to_string()))? {
            charge(cpu);
            break status;
        }
        let cancelled = cancel.load(Ordering::Relaxed);
        if cancelled || started.elapsed() > bounds.deadline {
            limits::kill_group(&child);
            if let Ok(Some((_, cpu))) = limits::reap(&child, true) {
                charge(cpu);
            }
            let _ = reader.join();
            return Err(if cancelled { Error::Cancelled } else { Error::Timeout(bounds.deadline) });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().unwrap_or_default();
    if !status.success() && limits::killed_by_limit(&status) {
        return Err(Error::ResourceLimit(format!("rustc was stopped by a resource limit ({status})")));
    }
    Ok(Finished { success: status.success(), stderr })
}

/// rlimits and process-group kill: the only unsafe code of the crate (libc calls).
#[allow(unsafe_code)]
mod limits {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, ExitStatus};

    use super::Bounds;

    pub fn apply(command: &mut Command, bounds: Bounds) {
        let cpu = bounds.deadline.as_secs() + 1;
        let (memory, file) = (bounds.memory_bytes, bounds.file_bytes);
        command.process_group(0);
        // SAFETY: the closure runs between fork and exec and only calls setrlimit, which is
        // async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                set(libc::RLIMIT_CPU, cpu)?;
                set(libc::RLIMIT_AS, memory)?;
                set(libc::RLIMIT_FSIZE, file)?;
                set(libc::RLIMIT_CORE, 0)?;
                Ok(())
            });
        }
    }

    fn set(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
        let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: a valid pointer to a local rlimit.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Reaps `child` once it has exited (waiting for that when `block`): its status and the CPU
    /// time it and the children it waited for used. The `Child` must not be waited on after.
    pub fn reap(child: &Child, block: bool) -> std::io::Result<Option<(ExitStatus, std::time::Duration)>> {
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        loop {
            let mut status = 0;
            // SAFETY: all-zero is a valid rusage (plain integers and timevals).
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers to locals; `pid` is our own unreaped child.
            let reaped = unsafe { libc::wait4(pid, &mut status, if block { 0 } else { libc::WNOHANG }, &mut usage) };
            match reaped {
                0 => return Ok(None),
                -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                -1 => return Err(std::io::Error::last_os_error()),
                _ => {
                    let time = |t: libc::timeval| {
                        std::time::Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000))
                    };
                    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
                    return Ok(Some((ExitStatus::from_raw(status), cpu)));
                }
            }
        }
    }

    /// Kills rustc and the linker it started.
    pub fn kill_group(child: &Child) {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: plain syscall on the group we created (process_group(0) makes pgid = pid).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }

    /// SIGXCPU (CPU limit), SIGXFSZ (file size), SIGKILL/SIGSEGV/SIGABRT after a failed allocation.
    pub fn killed_by_limit(status: &ExitStatus) -> bool {
        matches!(status.signal(), Some(libc::SIGXCPU | libc::SIGXFSZ | libc::SIGKILL | libc::SIGSEGV | libc::SIGABRT))
    }
}

/// A rustc diagnostic as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// `error`, `warning`, ...
    pub level: String,
    /// The one-line message.
    pub message: String,
    /// rustc's rendering (with source lines and carets).
    pub rendered: String,
}

/// The diagnostics in rustc's `--error-format=json` stderr; lines that are not JSON (e.g. an
/// internal compiler error's text) become error diagnostics of their own.
pub fn diagnostics(stderr: &str) -> Vec<Diagnostic> {
    stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => Diagnostic {
                level: v["level"].as_str().unwrap_or("error").to_owned(),
                message: v["message"].as_str().unwrap_or_default().to_owned(),
                rendered: v["rendered"].as_str().unwrap_or_default().to_owned(),
            },
            Err(_) => Diagnostic { level: "error".into(), message: line.to_owned(), rendered: format!("{line}\n") },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_plain_lines_become_diagnostics() {
        let stderr = r#"{"$message_type":"diagnostic","message":"cannot find value `y`","level":"error","rendered":"error[E0425]: cannot find value `y`\n --> cell:1:1\n"}
thread 'rustc' panicked"#;
        let d = diagnostics(stderr);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].message, "cannot find value `y`");
        assert!(d[0].rendered.contains("cell:1:1"));
        assert_eq!(d[1].level, "error");
    }
}
