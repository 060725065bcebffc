//! What running work sees of its surroundings: a [`RunContext`] (its cancel flag, where it reports
//! progress) and the [`Meter`] its work is charged to. Shared by the session layer, which starts and
//! cancels statements, and the compute layer, which does their work; it links neither.
//!
//! # Metering
//! What a statement costs: the CPU time of every thread that works for it and the tiles it reads.
//!
//! A statement's work is spread over threads it does not own: its blocking thread, the worker
//! runtime's threads that plan and poll its DataFusion plans (DataFusion spawns a task per input
//! partition), the threads that format a job's rows. Each of them charges its thread CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) to the statement's [`Meter`] while it works for it:
//! - [`metered`] around a closure (the kernel call, a row-formatting thread),
//! - [`MeteredFuture`] around the work sent to the worker runtime (planning, pulling the root),
//! - `tilegate_compute::meter::meter_plan`, which wraps every node of a DataFusion plan, so the
//!   tasks DataFusion spawns are charged while they poll any of its streams.
//!
//! Only the outermost charge on a thread counts (a thread-local flag), so nested ones never count
//! twice. Child processes (rustc, the module compiler) add their own CPU time from `wait4`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// A statement's running cost. Shared by every thread that works for it.
#[derive(Debug, Default)]
pub struct Meter {
    cpu_ns: AtomicU64,
    tiles: AtomicU64,
}

impl Meter {
    /// The CPU nanoseconds counter, for work measured elsewhere (a child process's `wait4`).
    pub fn cpu_ns(&self) -> &AtomicU64 {
        &self.cpu_ns
    }

    /// Counts `n` tiles read.
    pub fn add_tiles(&self, n: u64) {
        self.tiles.fetch_add(n, Ordering::Relaxed);
    }

    /// CPU time so far.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }

    /// Tiles read so far.
    pub fn tiles(&self) -> u64 {
        self.tiles.load(Ordering::Relaxed)
    }

    /// The cost so far, as the API shows it.
    pub fn usage(&self) -> tilegate_api::Usage {
        tilegate_api::Usage { cpu_seconds: self.cpu().as_secs_f64(), tiles_read: self.tiles() }
    }
}

thread_local! {
    /// Whether this thread is being charged to a meter now.
    static CHARGING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, charging the CPU time this thread spends in it to `meter` (unless an outer charge on
/// this thread already covers it).
pub fn metered<R>(meter: &Meter, f: impl FnOnce() -> R) -> R {
    let _charge = Charge::start(meter);
    f()
}

/// An outermost charge in progress; it adds its time when dropped (also on a panic).
struct Charge<'a> {
    meter: &'a Meter,
    started: Option<u64>,
}

impl<'a> Charge<'a> {
    fn start(meter: &'a Meter) -> Self {
        let outermost = !CHARGING.replace(true);
        Self { meter, started: outermost.then(thread_cpu_ns) }
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            self.meter.cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(started), Ordering::Relaxed);
            CHARGING.set(false);
        }
    }
}

/// This thread's CPU time in nanoseconds (0 when the clock cannot be read).
#[allow(unsafe_code)]
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a local timespec; the clock id is a constant the kernel knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return 0;
    }
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// A future whose polls are charged to a meter.
pub struct MeteredFuture<F> {
    inner: Pin<Box<F>>,
    meter: Arc<Meter>,
}

impl<F: Future> MeteredFuture<F> {
    /// `inner`, charged to `meter`.
    pub fn new(inner: F, meter: Arc<Meter>) -> Self {
        Self { inner: Box::pin(inner), meter }
    }
}

impl<F: Future> Future for MeteredFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let (meter, inner) = (&this.meter, &mut this.inner);
        metered(meter, || inner.as_mut().poll(cx))
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

    /// What the statement has cost so far: charge its work here (see [`Meter`]).
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Says the statement's module is compiled: it no longer counts as waiting for a compile.
    pub fn set_compiled(&self) {
        self.compiled.store(true, Ordering::Relaxed);
    }

    /// Whether the statement's module is compiled.
    pub fn is_compiled(&self) -> bool {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Progress so far, 0..=1.
    pub fn progress(&self) -> f64 {
        f64::from_bits(self.progress.load(Ordering::Relaxed))
    }

    /// Cancels the statement: sets its cancel flag.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(for_: Duration) {
        let started = thread_cpu_ns();
        while thread_cpu_ns() - started < for_.as_nanos() as u64 {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn nested_charges_count_once_and_other_threads_add_up() {
        let meter = Arc::new(Meter::default());
        metered(&meter, || {
            spin(Duration::from_millis(30));
            metered(&meter, || spin(Duration::from_millis(30)));
        });
        let one = meter.cpu();
        assert!((60..90).contains(&one.as_millis()), "{one:?}");
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| metered(&meter, || spin(Duration::from_millis(40))));
            }
        });
        let all = meter.cpu() - one;
        assert!((80..120).contains(&all.as_millis()), "{all:?}");
        // Not charged: work outside any charge.
        spin(Duration::from_millis(20));
        assert_eq!(meter.cpu() - one, all);
    }
}
