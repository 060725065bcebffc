//! Snippet aggregates (`sql_aggregate!`) as DataFusion aggregate functions. A group's state is the
//! guest's encoding of its `SqlAggregate` value, kept as bytes by `job::states` (a `Binary` state
//! column, so DataFusion aggregates partitions in parallel and merges them); the guest updates,
//! merges and finishes states in batches (the wire format is in `sandbox/ABI.md`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, not_impl_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, GroupsAccumulator, Signature, Volatility};

use super::{SqlFunction, SqlFunctions, decode, encode_into};
use crate::job::JobError;
use crate::job::scan::external;
use crate::job::states::{
    FINISH, GroupStates, NewStates, OneState, StateCalls, UPDATE, header, merge_in_calls, read_states,
};

/// At most this many groups, or about this many state bytes, per finish call: keeps each call's
/// input and output well under the sandbox's memory and output caps.
const FINISH_GROUPS: usize = 1 << 16;
const FINISH_BYTES: usize = 4 << 20;

/// A snippet aggregate as a DataFusion aggregate function.
pub(crate) struct SnippetUdaf {
    calls: Arc<Calls>,
    signature: Signature,
}

impl SnippetUdaf {
    pub(crate) fn new(function: SqlFunction, runner: Arc<dyn SqlFunctions>) -> Self {
        let signature = Signature::exact(function.args.clone(), Volatility::Immutable);
        Self { calls: Arc::new(Calls { function, runner }), signature }
    }

    /// `DISTINCT` would need the distinct values of every group kept on the host: refused.
    fn refuse_distinct(&self, args: &AccumulatorArgs) -> Result<()> {
        if args.is_distinct {
            return not_impl_err!(
                "{}(DISTINCT ...): snippet aggregates take every row (deduplicate in a subquery)",
                self.calls.function.name
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for SnippetUdaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snippet aggregate {}", self.calls.function.export)
    }
}

impl PartialEq for SnippetUdaf {
    fn eq(&self, other: &Self) -> bool {
        self.calls.function == other.calls.function
    }
}

impl Eq for SnippetUdaf {}

impl Hash for SnippetUdaf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.calls.function.export.hash(state);
    }
}

impl AggregateUDFImpl for SnippetUdaf {
    fn name(&self) -> &str {
        &self.calls.function.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.calls.function.ret.clone())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.refuse_distinct(&args)?;
        Ok(Box::new(OneState::new(self.calls.clone())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "state"), DataType::Binary, true))])
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        self.refuse_distinct(&args)?;
        Ok(Box::new(GroupStates::new(self.calls.clone())))
    }

    /// The guest's merge may see states in any grouping and order (sandbox/ABI.md), so an
    /// `ORDER BY` inside the call would promise something it cannot keep.
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// The aggregate's export and what runs it: builds each call's input and reads its output.
struct Calls {
    function: SqlFunction,
    runner: Arc<dyn SqlFunctions>,
}

impl Calls {
    /// Runs the export on `input`; a failure names the aggregate and the step.
    fn call(&self, step: &str, input: &[u8]) -> Result<Vec<u8>> {
        self.runner.call(&self.function.export, input).map_err(|e| {
            external(JobError::new(&e.ename, format!("SQL aggregate {} ({step}): {}", self.function.name, e.message)))
        })
    }

    /// Reads the states of an update or merge output.
    fn states_of(&self, step: &str, bytes: Vec<u8>, expected: usize) -> Result<NewStates> {
        read_states(bytes, expected).map_err(|why| self.abi_error(step, why))
    }

    fn malformed(&self, step: &str, e: DataFusionError) -> DataFusionError {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<JobError>() {
                Ok(job) => self.abi_error(step, job.message),
                Err(other) => DataFusionError::External(other),
            },
            other => other,
        }
    }

    fn abi_error(&self, step: &str, why: String) -> DataFusionError {
        external(JobError::abi(format!("SQL aggregate {} ({step}): its output {why}", self.function.name)))
    }
}

impl StateCalls for Calls {
    fn name(&self) -> &str {
        &self.function.name
    }

    fn update(
        &self,
        states: &[Option<&[u8]>],
        columns: &[ArrayRef],
        rows: usize,
        pick: &[u32],
        groups: Option<&[u32]>,
    ) -> Result<NewStates> {
        let sizes: usize = states.iter().map(|s| s.map_or(4, |s| 4 + s.len())).sum();
        let mut input = Vec::with_capacity(8 + sizes + 8 + columns.len() * (1 + 9 * pick.len()) + 4 * pick.len());
        header(&mut input, UPDATE, states);
        encode_into(&mut input, columns, rows, Some(pick))?;
        if let Some(groups) = groups {
            groups.iter().for_each(|g| input.extend_from_slice(&g.to_le_bytes()));
        }
        self.states_of("update", self.call("update", &input)?, states.len())
    }

    fn merge<'a>(&self, states: &[Option<&[u8]>], others: impl Iterator<Item = (u32, &'a [u8])>) -> Result<NewStates> {
        merge_in_calls(states, others, |input| self.states_of("merge", self.call("merge", &input)?, states.len()))
    }

    /// The groups' values, a column of the return type, in as many calls as keep each one small.
    fn finish(&self, states: &[Option<&[u8]>]) -> Result<ArrayRef> {
        let mut columns = Vec::new();
        let mut rest = states;
        loop {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && n < FINISH_GROUPS && (n == 0 || bytes < FINISH_BYTES) {
                bytes += rest[n].map_or(0, <[u8]>::len);
                n += 1;
            }
            let (chunk, after) = rest.split_at(n);
            let mut input = Vec::with_capacity(8 + 4 * n + bytes);
            header(&mut input, FINISH, chunk);
            let output = self.call("finish", &input)?;
            columns.push(decode(&output, n, &self.function.ret).map_err(|e| self.malformed("finish", e))?);
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
        match columns.as_slice() {
            [one] => Ok(one.clone()),
            many => Ok(concat(&many.iter().map(AsRef::as_ref).collect::<Vec<_>>())?),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Float64Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use prelude::{SqlAggregate, sql_aggregate_bytes};

    use super::*;
    use crate::job::states::picked;
    use crate::sql::functions::FunctionKind;
    use datafusion::arrow::array::{Array, AsArray, BooleanArray};
    use datafusion::logical_expr::EmitTo;

    prelude::record! {
        #[derive(Default)]
        struct WeightedMean { sum: f64, weight: f64 }
    }

    impl SqlAggregate<(f64, f64)> for WeightedMean {
        type Output = f64;
        fn update(&mut self, (x, w): (f64, f64)) {
            self.sum += x * w;
            self.weight += w;
        }
        fn merge(&mut self, other: Self) {
            self.sum += other.sum;
            self.weight += other.weight;
        }
        fn finish(self) -> Option<f64> {
            (self.weight != 0.0).then(|| self.sum / self.weight)
        }
    }

    prelude::record! {
        #[derive(Default)]
        struct Fails { n: u64 }
    }

    impl SqlAggregate<f64> for Fails {
        type Output = f64;
        fn update(&mut self, x: f64) {
            assert!(x < 900.0, "too big: {x}");
            self.n += 1;
        }
        fn merge(&mut self, other: Self) {
            self.n += other.n;
        }
        fn finish(self) -> Option<f64> {
            Some(self.n as f64)
        }
    }

    /// Runs the prelude's aggregate code natively, as a sandbox worker runs it in wasm; a panic
    /// becomes a `Panic` failure. Counts the calls.
    #[derive(Default)]
    struct Native {
        calls: AtomicUsize,
    }

    impl SqlFunctions for Native {
        fn call(&self, export: &str, input: &[u8]) -> Result<Vec<u8>, JobError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let run = || match export {
                "sbx_sqlagg__wmean__f64_f64__f64" => {
                    sql_aggregate_bytes::<WeightedMean, (f64, f64), f64>(input, "wmean")
                }
                "sbx_sqlagg__fails__f64__f64" => sql_aggregate_bytes::<Fails, (f64,), f64>(input, "fails"),
                _ => panic!("no export {export}"),
            };
            std::panic::catch_unwind(run).map_err(|p| {
                let message = p.downcast_ref::<String>().cloned().unwrap_or_default();
                JobError::panic(message)
            })
        }
    }

    const ROWS: i64 = 40_000;

    /// `t(g, x, w)`: `ROWS` rows in batches of 1000 over 4 partitions; `g = i % groups`, `x` null
    /// on every 7th row, `w` on every 11th.
    fn context(groups: i64, config: SessionConfig) -> (SessionContext, Arc<Native>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("w", DataType::Float64, true),
        ]));
        let batch = |start: i64| {
            let rows = start..start + 1000;
            let g = Int64Array::from_iter_values(rows.clone().map(|i| i % groups));
            let x: Float64Array =
                rows.clone().map(|i| (i % 7 != 3).then_some((i % 1000) as f64 * 0.37 - 50.0)).collect();
            let w: Float64Array = rows.map(|i| (i % 11 != 5).then_some(1.0 + (i % 13) as f64)).collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(g), Arc::new(x), Arc::new(w)]).unwrap()
        };
        let partitions: Vec<Vec<RecordBatch>> =
            (0..4).map(|p| (0..ROWS / 4000).map(|b| batch((p * ROWS / 4000 + b) * 1000)).collect()).collect();
        let ctx = SessionContext::new_with_config(config.with_target_partitions(4));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, partitions).unwrap())).unwrap();
        let native = Arc::new(Native::default());
        for export in ["sbx_sqlagg__wmean__f64_f64__f64", "sbx_sqlagg__fails__f64__f64"] {
            let function = SqlFunction::from_export(export).unwrap();
            assert_eq!(function.kind, FunctionKind::Aggregate);
            ctx.register_udaf(AggregateUDF::from(SnippetUdaf::new(function, native.clone())));
        }
        (ctx, native)
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    /// Every row's two columns (Float64) agree within 1e-9 relative; returns how many rows.
    fn assert_columns_agree(batches: &[RecordBatch], ours: usize, theirs: usize) -> usize {
        let mut n = 0;
        for batch in batches {
            let (a, b) =
                (batch.column(ours).as_primitive::<Float64Type>(), batch.column(theirs).as_primitive::<Float64Type>());
            for i in 0..batch.num_rows() {
                assert_eq!(
                    a.is_null(i),
                    b.is_null(i),
                    "row {i}: {:?} vs {:?}",
                    a.is_valid(i).then(|| a.value(i)),
                    b.is_valid(i).then(|| b.value(i))
                );
                if a.is_valid(i) {
                    let (a, b) = (a.value(i), b.value(i));
                    assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-300), "row {i}: ours {a}, built-in {b}");
                }
                n += 1;
            }
        }
        n
    }

    /// The same weighted mean with built-in SQL: a row counts when neither argument is null.
    const BUILT_IN: &str = "SUM(x * w) / SUM(CASE WHEN x IS NOT NULL THEN w END)";

    #[tokio::test]
    async fn grouped_and_ungrouped_match_built_in_sql_in_few_calls() {
        let (ctx, native) = context(997, SessionConfig::new());
        let sql = format!("SELECT g, wmean(x, w), {BUILT_IN} FROM t GROUP BY g");
        assert_eq!(assert_columns_agree(&rows(&ctx, &sql).await.unwrap(), 1, 2), 997);
        // One update call per input batch (40), a merge per partial batch and a finish per
        // output batch: nowhere near one per group and batch (40 * 997).
        let calls = native.calls.swap(0, Ordering::Relaxed);
        assert!((40..200).contains(&calls), "{calls} calls");

        let sql = format!("SELECT wmean(x, w), {BUILT_IN} FROM t");
        assert_eq!(assert_columns_agree(&rows(&ctx, &sql).await.unwrap(), 0, 1), 1);
        let sql = "SELECT g, wmean(x, w) FILTER (WHERE g % 3 = 0), \
                   SUM(x * w) FILTER (WHERE g % 3 = 0) / SUM(CASE WHEN x IS NOT NULL THEN w END) FILTER (WHERE g % 3 = 0) \
                   FROM t GROUP BY g";
        assert_eq!(assert_columns_agree(&rows(&ctx, sql).await.unwrap(), 1, 2), 997);
    }

    #[tokio::test]
    async fn window_functions_over_whole_or_growing_frames() {
        let (ctx, _) = context(10, SessionConfig::new());
        let sql = "SELECT wmean(x, w) OVER (PARTITION BY g), \
                   SUM(x * w) OVER (PARTITION BY g) / SUM(CASE WHEN x IS NOT NULL THEN w END) OVER (PARTITION BY g), \
                   wmean(x, w) OVER (PARTITION BY g ORDER BY x), \
                   SUM(x * w) OVER (PARTITION BY g ORDER BY x) \
                   / SUM(CASE WHEN x IS NOT NULL THEN w END) OVER (PARTITION BY g ORDER BY x) \
                   FROM t WHERE g < 3";
        let batches = rows(&ctx, sql).await.unwrap();
        assert_eq!(assert_columns_agree(&batches, 0, 1), assert_columns_agree(&batches, 2, 3));
        // A sliding frame would need to take rows out of a state.
        let sql = "SELECT wmean(x, w) OVER (ORDER BY x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t";
        assert!(rows(&ctx, sql).await.unwrap_err().to_string().contains("retract_batch"));
    }

    #[tokio::test]
    async fn groups_without_rows_are_null() {
        let (ctx, _) = context(10, SessionConfig::new());
        let batches = rows(&ctx, "SELECT wmean(x, w) FROM t WHERE g < 0").await.unwrap();
        assert_eq!((batches[0].num_rows(), batches[0].column(0).null_count()), (1, 1));
        let sql = format!("SELECT g, wmean(CASE WHEN g > 5 THEN x END, w), {BUILT_IN} FROM t GROUP BY g ORDER BY g");
        let batches = rows(&ctx, &sql).await.unwrap();
        let ours = concat(&batches.iter().map(|b| b.column(1).as_ref()).collect::<Vec<_>>()).unwrap();
        assert_eq!(ours.len(), 10);
        assert!((0..10).all(|g| ours.is_null(g) == (g <= 5)), "{ours:?}");
    }

    #[tokio::test]
    async fn rows_that_barely_group_go_straight_to_states() {
        // Every row its own group: DataFusion stops pre-aggregating after the probe and turns
        // batches into states directly (`convert_to_state`).
        let mut config = SessionConfig::new();
        config.options_mut().execution.skip_partial_aggregation_probe_rows_threshold = 2000;
        config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 0.5;
        let (ctx, _) = context(ROWS, config);
        let sql = format!("SELECT g, wmean(x, w), {BUILT_IN} FROM t GROUP BY g");
        assert_eq!(assert_columns_agree(&rows(&ctx, &sql).await.unwrap(), 1, 2), ROWS as usize);
        let plan = rows(&ctx, &format!("EXPLAIN ANALYZE {sql}")).await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
        let skipped: Vec<&str> =
            text.match_indices("skipped_aggregation_rows=").map(|(at, _)| &text[at..at + 30]).collect();
        assert!(skipped.iter().any(|s| !s.starts_with("skipped_aggregation_rows=0")), "{text}");
    }

    #[tokio::test]
    async fn a_panic_names_the_aggregate_and_step() {
        let (ctx, _) = context(997, SessionConfig::new());
        for sql in ["SELECT fails(x * 100) FROM t", "SELECT g, fails(x * 100) FROM t GROUP BY g"] {
            let err = rows(&ctx, sql).await.unwrap_err();
            let DataFusionError::External(inner) = err.find_root() else { panic!("{err}") };
            let job = inner.downcast_ref::<JobError>().unwrap();
            assert_eq!(job.ename, "Panic");
            assert!(job.message.starts_with("SQL aggregate fails (update): too big"), "{}", job.message);
        }
    }

    #[tokio::test]
    async fn wrong_arguments_and_distinct_are_planning_errors() {
        let (ctx, _) = context(10, SessionConfig::new());
        for sql in ["SELECT wmean(x) FROM t", "SELECT wmean('a', w) FROM t", "SELECT wmean(DISTINCT x, w) FROM t"] {
            let err = rows(&ctx, sql).await.unwrap_err().to_string();
            assert!(err.contains("wmean"), "{sql}: {err}");
        }
    }

    fn wmean_calls() -> Arc<Calls> {
        let function = SqlFunction::from_export("sbx_sqlagg__wmean__f64_f64__f64").unwrap();
        Arc::new(Calls { function, runner: Arc::new(Native::default()) })
    }

    fn values(array: &ArrayRef) -> Vec<f64> {
        array.as_primitive::<Float64Type>().values().to_vec()
    }

    #[test]
    fn group_states_survive_compaction_and_partial_emits() {
        let mut acc = GroupStates::new(wmean_calls());
        let n = 1000;
        // (sum, weight) per group, as the aggregate adds them.
        let mut want = vec![(0.0f64, 0.0f64); n];
        for round in 0..100 {
            let x: Vec<f64> = (0..n).map(|g| ((round * 7 + g) % 13) as f64).collect();
            let w: Vec<f64> = (0..n).map(|g| 1.0 + (g % 3) as f64).collect();
            // Rows in reverse group order, so a group's number in a call is not its index.
            let rows: Vec<usize> = (0..n).rev().collect();
            let columns: [ArrayRef; 2] = [
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|&g| x[g]))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|&g| w[g]))),
            ];
            acc.update_batch(&columns, &rows, None, n).unwrap();
            for g in 0..n {
                want[g].0 += x[g] * w[g];
                want[g].1 += w[g];
            }
        }
        // 100 rounds of 1000 states of 28 bytes, well over the 1 MiB of garbage that compacts.
        assert!(acc.held().0 < 100 * 1000 * 28 / 2, "{} bytes kept", acc.held().0);
        let mean = |(sum, weight): (f64, f64)| sum / weight;
        assert_eq!(
            values(&acc.evaluate(EmitTo::First(10)).unwrap()),
            want[..10].iter().map(|&p| mean(p)).collect::<Vec<_>>()
        );
        // The next ten leave as states and finish in another accumulator; the rest stay put.
        let states = acc.state(EmitTo::First(10)).unwrap();
        let mut other = GroupStates::new(wmean_calls());
        other.merge_batch(&states, &(0..10).collect::<Vec<_>>(), 10).unwrap();
        assert_eq!(
            values(&other.evaluate(EmitTo::All).unwrap()),
            want[10..20].iter().map(|&p| mean(p)).collect::<Vec<_>>()
        );
        assert_eq!(
            values(&acc.evaluate(EmitTo::All).unwrap()),
            want[20..].iter().map(|&p| mean(p)).collect::<Vec<_>>()
        );
        assert_eq!(acc.held(), (0, 0, 0));
    }

    #[test]
    fn calls_send_states_picked_rows_and_groups() {
        let mut out = Vec::new();
        header(&mut out, UPDATE, &[Some(&[7u8, 8][..]), None]);
        let x: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0)]));
        encode_into(&mut out, &[x], 3, Some(&[0, 2])).unwrap();
        let mut want = vec![0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 7, 8, 255, 255, 255, 255];
        want.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1]);
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&3.0f64.to_le_bytes());
        assert_eq!(out, want);
        let x: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0)]));
        let w: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), Some(1.0), None]));
        assert_eq!(picked(&[x.clone(), w], 3, None), [0]);
        assert_eq!(picked(&[x], 3, Some(&BooleanArray::from(vec![false, true, true]))), [2]);
    }

    #[test]
    fn malformed_outputs_are_abi_errors() {
        let calls = Calls {
            function: SqlFunction::from_export("sbx_sqlagg__m__f64__f64").unwrap(),
            runner: Arc::new(Native::default()),
        };
        let ok = [1, 0, 0, 0, 2, 0, 0, 0, 9, 9];
        assert_eq!(calls.states_of("merge", ok.to_vec(), 1).unwrap().get(0), Some(&[9u8, 9][..]));
        for (bad, groups) in [(&ok[..], 2), (&ok[..9], 1), (&[1, 0, 0][..], 1), (&[0, 0, 0, 0, 1][..], 0)] {
            let DataFusionError::External(e) = calls.states_of("merge", bad.to_vec(), groups).unwrap_err() else {
                panic!()
            };
            let e = e.downcast_ref::<JobError>().unwrap();
            assert!(e.ename == "AbiError" && e.message.starts_with("SQL aggregate m (merge): its output"), "{e:?}");
        }
    }
}
