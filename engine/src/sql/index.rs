//! Aggregates the tile index answers: `COUNT`, `MIN`, `MAX`, `SUM` and `AVG` of a dataset's
//! variables, over the whole table or grouped by functions of `time` alone (`time`,
//! `date_trunc('month', time)`, `extract(month FROM time)`, ...), filtered only by
//! `time`/`lat`/`lon` comparisons. Every tile the filters cover whole contributes its index statistics (count, min,
//! max, sum: no cell is read); only the tiles the filters cut are read.
//!
//! The rewrite, when it applies (`EXPLAIN` shows it):
//!
//! ```text
//! Aggregate [..]                         Projection [the same columns, types and names]
//!   Filter [time/lat/lon]          =>      Aggregate [sum of counts, min of mins, max of maxes, sum of sums]
//!     TableScan <dataset>                    Union
//!                                              TableScan tile_index(<dataset>)   (whole tiles)
//!                                              Projection ← Aggregate [..] ← Filter ← TableScan <dataset>
//!                                                                                  (cut tiles only)
//! ```
//!
//! Counts, minima and maxima are exact. Sums and means add the same values in another order (per
//! tile in f64, then tile sums), so they agree with reading every cell to rounding (~1e-12
//! relative). Anything else (`COUNT(DISTINCT ..)`, a filter on a value, `GROUP BY lat`, a
//! `COUNT(*)` over several variables, tiles spanning several times when grouping) is left
//! to DataFusion as written.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Builder, Int64Builder, RecordBatch, TimestampSecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::default_table_source::{DefaultTableSource, provider_as_source};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Between, BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator, TableScan, cast,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::prelude::{coalesce, col, lit};

use super::filters;
use super::tables::CellsTable;
use crate::dataset::{Error as DatasetError, Tile};
use prelude::Stats;

/// The optimizer rule (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct IndexAggregates;

impl OptimizerRule for IndexAggregates {
    fn name(&self) -> &str {
        "tilegate_index_aggregates"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
        match answer(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// What one output aggregate asks of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    Min,
    Max,
    Sum,
    Avg,
}

/// The aggregate's input as the rule needs it: the cells table, its scan and filters.
struct Input<'a> {
    scan: &'a TableScan,
    cells: &'a CellsTable,
    predicate: Option<&'a Expr>,
}

/// The rewritten plan, or `None` when the aggregate is not one the index answers (or no tile is
/// covered whole, so nothing would be saved).
fn answer(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    let Some(input) = input(&aggregate.input) else { return Ok(None) };
    // Groups must be functions of `time` alone (`time`, `date_trunc('month', time)`, ...): the
    // partial rows then carry each tile's time, and the merge groups by the same expressions.
    let of_time = |e: &Expr| {
        !matches!(e, Expr::GroupingSet(_)) && !e.is_volatile() && e.column_refs().iter().all(|c| c.name == "time")
    };
    if !aggregate.group_expr.iter().all(of_time) {
        return Ok(None);
    }
    let by_time = !aggregate.group_expr.is_empty();
    let Some(wanted) = aggregates(aggregate, input.cells) else { return Ok(None) };
    let conjuncts: Vec<&Expr> = input.predicate.into_iter().chain(&input.scan.filters).flat_map(conjuncts).collect();
    let Some(bounds) = conjuncts.iter().map(|e| bound(e)).collect::<Option<Vec<_>>>() else { return Ok(None) };
    let Some(whole) = whole_tiles(input.cells, &conjuncts, &bounds, by_time)? else { return Ok(None) };

    let variables = &input.cells.variables;
    let index = index_table(&whole, variables, by_time)?;
    let index_scan = LogicalPlanBuilder::scan(
        format!("tile_index({})", input.cells.dataset.name()),
        provider_as_source(Arc::new(index)),
        None,
    )?
    .build()?;
    let skip: HashSet<[u64; 3]> = whole.keys().copied().collect();
    let cut = cut_tiles(&input, skip, variables, by_time)?;
    let partial = LogicalPlanBuilder::from(index_scan).union(cut)?.build()?;

    let group: Vec<Expr> = aggregate
        .group_expr
        .iter()
        .enumerate()
        .map(|(i, e)| Ok(unqualified_time(e.clone())?.alias(format!("__group{i}"))))
        .collect::<Result<_>>()?;
    let merged = variables.iter().flat_map(|v| {
        [
            sum(col(part(v, "cnt"))).alias(part(v, "cnt")),
            min(col(part(v, "min"))).alias(part(v, "min")),
            max(col(part(v, "max"))).alias(part(v, "max")),
            sum(col(part(v, "sum"))).alias(part(v, "sum")),
        ]
    });
    let mut out: Vec<Expr> = Vec::new();
    for i in 0..aggregate.group_expr.len() {
        let (qualifier, field) = aggregate.schema.qualified_field(i);
        out.push(col(format!("__group{i}")).alias_qualified(qualifier.cloned(), field.name()));
    }
    for (i, (kind, variable)) in wanted.iter().enumerate() {
        let (qualifier, field) = aggregate.schema.qualified_field(aggregate.group_expr.len() + i);
        let column = |p: &str| col(part(variable, p));
        let expr = match kind {
            Kind::Count => coalesce(vec![column("cnt"), lit(0i64)]),
            Kind::Min => column("min"),
            Kind::Max => column("max"),
            Kind::Sum => column("sum"),
            Kind::Avg => column("sum") / cast(column("cnt"), DataType::Float64),
        };
        out.push(cast(expr, field.data_type().clone()).alias_qualified(qualifier.cloned(), field.name()));
    }
    let plan = LogicalPlanBuilder::from(partial).aggregate(group, merged)?.project(out)?.build()?;
    Ok(Some(plan))
}

/// `e` with its `time` column unqualified: the merge reads it from the union of partial rows.
fn unqualified_time(e: Expr) -> Result<Expr> {
    e.transform(|e| match e {
        Expr::Column(c) if c.name == "time" => Ok(Transformed::yes(col("time"))),
        other => Ok(Transformed::no(other)),
    })
    .data()
}

/// The aggregate's input when it is a scan of an unrestricted cells table, possibly under a
/// filter and column-only projections.
fn input(plan: &LogicalPlan) -> Option<Input<'_>> {
    let mut plan = plan;
    let mut predicate = None;
    loop {
        match plan {
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => plan = &p.input,
            LogicalPlan::Filter(f) if predicate.is_none() => {
                predicate = Some(&f.predicate);
                plan = &f.input;
            }
            LogicalPlan::TableScan(scan) if scan.fetch.is_none() => {
                let source = scan.source.as_ref().downcast_ref::<DefaultTableSource>()?;
                let cells = source.table_provider.as_ref().downcast_ref::<CellsTable>()?;
                // A cells table that already skips tiles is this rule's own output.
                return cells.skip.is_empty().then_some(Input { scan, cells, predicate });
            }
            _ => return None,
        }
    }
}

/// Per output aggregate, what it asks and of which variable; `None` when one is not answerable.
fn aggregates(aggregate: &Aggregate, cells: &CellsTable) -> Option<Vec<(Kind, String)>> {
    let one_variable = cells.variables.len() == 1;
    aggregate
        .aggr_expr
        .iter()
        .map(|e| {
            let e = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(AggregateFunction { func, params }) = e else { return None };
            if params.distinct || params.filter.is_some() || !params.order_by.is_empty() || params.args.len() != 1 {
                return None;
            }
            let inner = func.inner().as_ref();
            let kind = if inner.is::<Count>() {
                Kind::Count
            } else if inner.is::<Min>() {
                Kind::Min
            } else if inner.is::<Max>() {
                Kind::Max
            } else if inner.is::<Sum>() {
                Kind::Sum
            } else if inner.is::<Avg>() {
                Kind::Avg
            } else {
                return None;
            };
            let arg = match &params.args[0] {
                // SUM and AVG widen a float column to f64 (exact).
                Expr::Cast(c) if c.field.data_type() == &DataType::Float64 => c.expr.as_ref(),
                other => other,
            };
            let variable = match arg {
                Expr::Column(c) if cells.variables.contains(&c.name) => c.name.clone(),
                // COUNT(*), COUNT(1), COUNT(lat): the rows, which are one variable's valid cells.
                Expr::Column(c)
                    if kind == Kind::Count && one_variable && ["time", "lat", "lon"].contains(&c.name.as_str()) =>
                {
                    cells.variables[0].clone()
                }
                Expr::Literal(v, _) if kind == Kind::Count && one_variable && !v.is_null() => {
                    cells.variables[0].clone()
                }
                _ => return None,
            };
            Some((kind, variable))
        })
        .collect()
}

fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        other => vec![other],
    }
}

/// A condition on one axis: every value `v` of the column with `lo <= v <= hi` (or `<`, per the
/// flags) passes. Constants are exact: times in seconds with their fraction.
#[derive(Debug, Clone, Copy)]
struct Bound {
    axis: Axis,
    lo: Option<(f64, bool)>,
    hi: Option<(f64, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    Time,
    Lat,
    Lon,
}

impl Bound {
    /// Whether every value in `range` passes.
    fn covers(&self, (lo, hi): (f64, f64)) -> bool {
        let above = self.lo.is_none_or(|(c, strict)| if strict { lo > c } else { lo >= c });
        let below = self.hi.is_none_or(|(c, strict)| if strict { hi < c } else { hi <= c });
        above && below
    }
}

/// A conjunct as a [`Bound`]; `None` for anything else (which stops the rewrite).
fn bound(e: &Expr) -> Option<Bound> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (axis, op, c) = match (axis(left), exact(right)) {
                (Some(a), Some(c)) => (a, *op, c),
                _ => (axis(right)?, op.swap()?, exact(left)?),
            };
            let b = Bound { axis, lo: None, hi: None };
            Some(match op {
                Operator::Gt => Bound { lo: Some((c, true)), ..b },
                Operator::GtEq => Bound { lo: Some((c, false)), ..b },
                Operator::Lt => Bound { hi: Some((c, true)), ..b },
                Operator::LtEq => Bound { hi: Some((c, false)), ..b },
                Operator::Eq => Bound { lo: Some((c, false)), hi: Some((c, false)), ..b },
                _ => return None,
            })
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            Some(Bound { axis: axis(expr)?, lo: Some((exact(low)?, false)), hi: Some((exact(high)?, false)) })
        }
        _ => None,
    }
}

/// `time`, `lat` or `lon`, bare or widened to a timestamp of finer unit (exact, order-keeping).
fn axis(e: &Expr) -> Option<Axis> {
    match e {
        Expr::Column(c) => match c.name.as_str() {
            "time" => Some(Axis::Time),
            "lat" => Some(Axis::Lat),
            "lon" => Some(Axis::Lon),
            _ => None,
        },
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(_, None)) => {
            matches!(axis(&c.expr), Some(Axis::Time)).then_some(Axis::Time)
        }
        _ => None,
    }
}

/// A literal as the exact number the comparison sees (degrees; seconds for times).
fn exact(e: &Expr) -> Option<f64> {
    use ScalarValue::*;
    let Expr::Literal(v, _) = e else { return None };
    Some(match v {
        Float64(Some(x)) => *x,
        Int64(Some(x)) if x.unsigned_abs() < 1 << 53 => *x as f64,
        TimestampSecond(Some(x), None) => *x as f64,
        TimestampMillisecond(Some(x), None) => *x as f64 / 1e3,
        TimestampMicrosecond(Some(x), None) => *x as f64 / 1e6,
        TimestampNanosecond(Some(x), None) => *x as f64 / 1e9,
        _ => return None,
    })
}

/// A tile's range on an axis as the cells table shows it (coordinates are `f32` cell centres).
fn range(tile: &Tile, axis: Axis) -> (f64, f64) {
    let f32_value = |x: f64| f64::from(x as f32);
    match axis {
        Axis::Time => (tile.time.0 as f64, tile.time.1 as f64),
        Axis::Lat => (f32_value(tile.lat.0), f32_value(tile.lat.1)),
        Axis::Lon => (f32_value(tile.lon.0), f32_value(tile.lon.1)),
    }
}

/// Per tile the filters cover whole: its time and each variable's statistics. `None` when there
/// is none (nothing to gain), or under `GROUP BY time` when such a tile spans several times.
#[allow(clippy::type_complexity)]
fn whole_tiles(
    cells: &CellsTable,
    conjuncts: &[&Expr],
    bounds: &[Bound],
    by_time: bool,
) -> Result<Option<BTreeMap<[u64; 3], (i64, Vec<Option<Stats>>)>>> {
    let (selection, nothing) = filters::selection(&conjuncts.iter().map(|e| (*e).clone()).collect::<Vec<_>>());
    if nothing {
        return Ok(None);
    }
    let mut whole: BTreeMap<[u64; 3], (i64, Vec<Option<Stats>>)> = BTreeMap::new();
    for (i, variable) in cells.variables.iter().enumerate() {
        let tiles = match cells.dataset.select(variable, &selection) {
            Ok(tiles) => tiles,
            Err(DatasetError::InvalidRequest(_)) => return Ok(None),
            Err(e) => return Err(datafusion::common::DataFusionError::External(Box::new(e))),
        };
        for tile in tiles.iter().filter(|t| bounds.iter().all(|b| b.covers(range(t, b.axis)))) {
            if by_time && tile.time.0 != tile.time.1 {
                return Ok(None);
            }
            let entry = whole.entry(tile.index).or_insert_with(|| (tile.time.0, vec![None; cells.variables.len()]));
            entry.1[i] = Some(tile.stats);
        }
    }
    Ok((!whole.is_empty()).then_some(whole))
}

/// A partial column's name: `__<variable>__<part>`.
fn part(variable: &str, part: &str) -> String {
    format!("__{variable}__{part}")
}

/// The partial columns: `[time,] then per variable cnt, min, max, sum`.
fn partial_schema(variables: &[String], by_time: bool) -> Schema {
    let mut fields = Vec::new();
    if by_time {
        fields.push(Field::new("time", DataType::Timestamp(TimeUnit::Second, None), false));
    }
    for v in variables {
        fields.push(Field::new(part(v, "cnt"), DataType::Int64, true));
        for p in ["min", "max", "sum"] {
            fields.push(Field::new(part(v, p), DataType::Float64, true));
        }
    }
    Schema::new(fields)
}

/// One row per whole tile with data: the index's statistics as partial aggregates.
fn index_table(
    whole: &BTreeMap<[u64; 3], (i64, Vec<Option<Stats>>)>,
    variables: &[String],
    by_time: bool,
) -> Result<MemTable> {
    let rows: Vec<_> = whole.values().filter(|(_, s)| s.iter().flatten().any(|s| s.count > 0)).collect();
    let schema = Arc::new(partial_schema(variables, by_time));
    let mut columns: Vec<ArrayRef> = Vec::new();
    if by_time {
        columns.push(Arc::new(TimestampSecondArray::from_iter_values(rows.iter().map(|(t, _)| *t))));
    }
    for i in 0..variables.len() {
        let stats = || rows.iter().map(move |(_, s)| s[i].filter(|s| s.count > 0));
        let mut cnt = Int64Builder::new();
        stats().for_each(|s| cnt.append_value(s.map_or(0, |s| s.count as i64)));
        columns.push(Arc::new(cnt.finish()));
        for get in [|s: Stats| s.min, |s: Stats| s.max, |s: Stats| s.sum] {
            let mut b = Float64Builder::new();
            stats().for_each(|s| b.append_option(s.map(get)));
            columns.push(Arc::new(b.finish()));
        }
    }
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    MemTable::try_new(schema, vec![vec![batch]])
}

/// The cut tiles' part: the original filter over the cells of every selected tile but the whole
/// ones, aggregated into the partial columns.
fn cut_tiles(input: &Input<'_>, skip: HashSet<[u64; 3]>, variables: &[String], by_time: bool) -> Result<LogicalPlan> {
    let cells = input.cells.skipping(skip);
    let scan = input.scan;
    let mut plan = LogicalPlanBuilder::scan_with_filters(
        scan.table_name.clone(),
        provider_as_source(Arc::new(cells)),
        None,
        scan.filters.clone(),
    )?;
    if let Some(predicate) = input.predicate {
        plan = plan.filter(predicate.clone())?;
    }
    let value = |v: &str| Expr::Column(Column::new(Some(scan.table_name.clone()), v));
    let group: Vec<Expr> = if by_time { vec![col("time")] } else { Vec::new() };
    let aggregates = variables.iter().flat_map(|v| {
        [
            count(value(v)).alias(part(v, "cnt")),
            min(value(v)).alias(part(v, "min")),
            max(value(v)).alias(part(v, "max")),
            sum(cast(value(v), DataType::Float64)).alias(part(v, "sum")),
        ]
    });
    let mut columns: Vec<Expr> = if by_time { vec![col("time")] } else { Vec::new() };
    for v in variables {
        columns.push(col(part(v, "cnt")));
        columns.extend(["min", "max", "sum"].map(|p| cast(col(part(v, p)), DataType::Float64).alias(part(v, p))));
    }
    plan.aggregate(group, aggregates)?.project(columns)?.build()
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn bounds_cover_ranges_exactly() {
        let b = bound(&col("lat").between(lit(45.0), lit(60.0))).unwrap();
        assert!(b.covers((45.0, 60.0)) && !b.covers((44.9, 50.0)));
        let b = bound(&lit(60.0).gt(col("lat"))).unwrap();
        assert!(b.covers((45.0, 59.9)) && !b.covers((45.0, 60.0)), "60 > lat is lat < 60");
        let t = ScalarValue::TimestampNanosecond(Some(1_220_227_200_500_000_000), None);
        let b = bound(&col("time").gt(lit(t))).unwrap();
        assert!(!b.covers((1_220_227_200.0, 1_220_227_200.0)), "a fraction of a second counts");
        assert!(bound(&col("sst").gt(lit(20.0))).is_none());
        assert!(bound(&col("lat").not_eq(lit(20.0))).is_none());
        assert!(bound(&col("lat").gt(lit(ScalarValue::Float64(None)))).is_none());
    }
}
