//! What a statement costs: the CPU time of every thread that works for it and the tiles it reads.
//!
//! A statement's work is spread over threads it does not own: its blocking thread, the worker
//! runtime's threads that plan and poll its DataFusion plans (DataFusion spawns a task per input
//! partition), the threads that format a job's rows. Each of them charges its thread CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) to the statement's [`Meter`] while it works for it:
//! - [`metered`] around a closure (the kernel call, a row-formatting thread),
//! - [`MeteredFuture`] around the work sent to the worker runtime (planning, pulling the root),
//! - [`meter_plan`], which puts a [`MeteredExec`] around every node of a physical plan, so the tasks
//!   DataFusion spawns are charged while they poll any of its streams.
//!
//! Only the outermost charge on a thread counts (a thread-local flag), so nested ones never count
//! twice. Child processes (rustc, the module compiler) add their own CPU time from `wait4`.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::Stream;

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

/// This thread's CPU time in nanoseconds.
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

/// `plan` with every node wrapped in a [`MeteredExec`] charging `meter`.
///
/// # Errors
/// When a node refuses its (identical but wrapped) children.
pub fn meter_plan(plan: Arc<dyn ExecutionPlan>, meter: &Arc<Meter>) -> Result<Arc<dyn ExecutionPlan>> {
    let children: Vec<_> =
        plan.children().into_iter().map(|child| meter_plan(child.clone(), meter)).collect::<Result<_>>()?;
    let plan = if children.is_empty() {
        plan
    } else {
        plan.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep))?
    };
    Ok(Arc::new(MeteredExec { inner: plan, meter: meter.clone() }))
}

/// A node of a plan, unchanged, whose streams charge their polls to a meter. Invisible to
/// displays, downcasts and metrics: everything but `execute` is the inner node's.
pub struct MeteredExec {
    inner: Arc<dyn ExecutionPlan>,
    meter: Arc<Meter>,
}

impl MeteredExec {
    fn rewrap(&self, inner: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        Arc::new(Self { inner, meter: self.meter.clone() })
    }
}

impl fmt::Debug for MeteredExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl DisplayAs for MeteredExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for MeteredExec {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.inner.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inner.children()
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self.rewrap(self.inner.clone().replace_children(children, options)?))
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self.rewrap(self.inner.clone().with_new_children(children)?))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self.rewrap(self.inner.clone().reset_state()?))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.inner.maintains_input_order()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.inner.benefits_from_input_partitioning()
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let inner = metered(&self.meter, || self.inner.execute(partition, context))?;
        Ok(Box::pin(MeteredStream { inner, meter: self.meter.clone() }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.inner.metrics()
    }

    fn fetch(&self) -> Option<usize> {
        self.inner.fetch()
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        self.inner.with_fetch(limit).map(|inner| self.rewrap(inner))
    }

    /// How a recursive query hands its work table to the node that reads it, at execution.
    fn with_new_state(&self, state: Arc<dyn std::any::Any + Send + Sync>) -> Option<Arc<dyn ExecutionPlan>> {
        self.inner.with_new_state(state).map(|inner| self.rewrap(inner))
    }

    fn dynamic_expressions_produced(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        self.inner.dynamic_expressions_produced()
    }

    fn input_distribution_requirements(&self) -> datafusion::physical_plan::InputDistributionRequirements {
        self.inner.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.inner.required_input_ordering()
    }

    fn supports_limit_pushdown(&self) -> bool {
        self.inner.supports_limit_pushdown()
    }

    fn cardinality_effect(&self) -> datafusion::physical_plan::execution_plan::CardinalityEffect {
        self.inner.cardinality_effect()
    }

    fn check_invariants(&self, check: datafusion::physical_plan::execution_plan::InvariantLevel) -> Result<()> {
        self.inner.check_invariants(check)
    }
}

/// A stream whose polls are charged to a meter.
struct MeteredStream {
    inner: SendableRecordBatchStream,
    meter: Arc<Meter>,
}

impl Stream for MeteredStream {
    type Item = Result<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let (meter, inner) = (&this.meter, &mut this.inner);
        metered(meter, || inner.as_mut().poll_next(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl RecordBatchStream for MeteredStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
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
