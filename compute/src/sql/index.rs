//! Aggregates the tile index answers: `COUNT`, `MIN`, `MAX`, `SUM`, `AVG`, `VAR_POP`, `VAR_SAMP`,
//! `STDDEV_POP` and `STDDEV` of a dataset's variables, and the cos(lat) weighting of NEXUS means
//! (`SUM(v * cos(radians(lat)))`, `SUM(cos(radians(lat)))`), over the whole table or grouped by
//! functions of `time` alone (`time`, `date_trunc('month', time)`, `extract(month FROM time)`,
//! ...), filtered only by `time`/`lat`/`lon` comparisons. Every tile the filters cover whole contributes its index statistics (count, min,
//! max, sum: no cell is read); only the tiles the filters cut are read.
//!
//! The rewrite, when it applies (`EXPLAIN` shows it):
//!
//! ```text
//! Aggregate [..]                         Projection [the same columns, types and names]
//!   Filter [time/lat/lon]          =>      Aggregate [sums of counts and sums, min of mins, max of maxes, M2 merge]
//!     TableScan <dataset>                    Union
//!                                              TableScan tile_index(<dataset>)   (whole tiles)
//!                                              Projection ← Aggregate [..] ← Filter ← TableScan <dataset>
//!                                                                                  (cut tiles only)
//! ```
//!
//! Counts, minima and maxima are exact. Sums and means add the same values in another order (per
//! tile in f64, then tile sums), so they agree with reading every cell to rounding (~1e-12
//! relative); variances merge the tiles' M2 with Chan's formula ([`M2Merge`]), as DataFusion's
//! own accumulators do. The weighted sums are taken from the index only when the grid's
//! latitudes are exact in `f32` (the cells table's type), so the weights are SQL's to the bit. Anything else (`COUNT(DISTINCT ..)`, a filter on a value, `GROUP BY lat`, a
//! `COUNT(*)` over several variables, tiles spanning several times when grouping) is left
//! to DataFusion as written.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Builder, RecordBatch, TimestampSecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, Schema, TimeUnit};
use datafusion::catalog::default_table_source::{DefaultTableSource, provider_as_source};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::functions::math;
use datafusion::functions::math::expr_fn::sqrt;
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum, var_pop};
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::functions_aggregate::stddev::{Stddev, StddevPop};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::functions_aggregate::variance::{VariancePopulation, VarianceSample};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, Aggregate, AggregateUDF, AggregateUDFImpl, Between, BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder,
    Operator, ScalarUDF, Signature, TableScan, Volatility, cast, when,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::prelude::{coalesce, col, lit};

use super::filters::{self, conjuncts};
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
    VarPop,
    VarSamp,
    StddevPop,
    StddevSamp,
    /// `SUM(v * cos(radians(lat)))`: the index's cos(lat)-weighted sum.
    WeightedSum,
    /// `SUM(cos(radians(lat)))` over one variable's cells: the index's weight.
    Weight,
}

impl Kind {
    /// Whether the merge needs the partial M2 (sum of squared deviations).
    fn spread(self) -> bool {
        matches!(self, Self::VarPop | Self::VarSamp | Self::StddevPop | Self::StddevSamp)
    }

    /// Whether the merge needs the cos(lat)-weighted parts.
    fn weighted(self) -> bool {
        matches!(self, Self::WeightedSum | Self::Weight)
    }
}

/// The partial columns of a variable: Int64 `cnt`, then Float64 the rest.
const PARTS: [&str; 7] = ["cnt", "min", "max", "sum", "m2", "wsum", "weight"];

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
    let needs: Vec<(String, bool, bool)> = variables
        .iter()
        .map(|v| {
            let asks = |f: fn(Kind) -> bool| wanted.iter().any(|(k, w)| w == v && f(*k));
            (v.clone(), asks(Kind::spread), asks(Kind::weighted))
        })
        .collect();
    let index = index_table(&whole, variables, by_time)?;
    let index_scan = LogicalPlanBuilder::scan(
        format!("tile_index({})", input.cells.dataset.name()),
        provider_as_source(Arc::new(index)),
        None,
    )?
    .build()?;
    let skip: HashSet<[u64; 3]> = whole.keys().copied().collect();
    let cut = cut_tiles(&input, skip, &needs, by_time)?;
    let partial = LogicalPlanBuilder::from(index_scan).union(cut)?.build()?;

    let group: Vec<Expr> = aggregate
        .group_expr
        .iter()
        .enumerate()
        .map(|(i, e)| Ok(unqualified_time(e.clone())?.alias(format!("__group{i}"))))
        .collect::<Result<_>>()?;
    let m2_merge = AggregateUDF::from(M2Merge::default());
    let merged = variables.iter().flat_map(|v| {
        let c = |p: &str| col(part(v, p));
        [
            sum(c("cnt")).alias(part(v, "cnt")),
            min(c("min")).alias(part(v, "min")),
            max(c("max")).alias(part(v, "max")),
            sum(c("sum")).alias(part(v, "sum")),
            m2_merge.call(vec![c("cnt"), c("sum"), c("m2")]).alias(part(v, "m2")),
            sum(c("wsum")).alias(part(v, "wsum")),
            sum(c("weight")).alias(part(v, "weight")),
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
        let n = || cast(column("cnt"), DataType::Float64);
        let var_pop = || when(column("cnt").gt(lit(0i64)), column("m2") / n()).end();
        let var_samp = || when(column("cnt").gt(lit(1i64)), column("m2") / (n() - lit(1.0))).end();
        let expr = match kind {
            Kind::Count => coalesce(vec![column("cnt"), lit(0i64)]),
            Kind::Min => column("min"),
            Kind::Max => column("max"),
            Kind::Sum => column("sum"),
            Kind::Avg => column("sum") / n(),
            Kind::VarPop => var_pop()?,
            Kind::VarSamp => var_samp()?,
            Kind::StddevPop => sqrt(var_pop()?),
            Kind::StddevSamp => sqrt(var_samp()?),
            Kind::WeightedSum => column("wsum"),
            Kind::Weight => column("weight"),
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
            let arg = match &params.args[0] {
                // SUM and AVG widen a float column to f64 (exact).
                Expr::Cast(c) if c.field.data_type() == &DataType::Float64 => c.expr.as_ref(),
                other => other,
            };
            if inner.is::<Sum>() {
                if let Some(variable) = weighted_value(arg, cells) {
                    return Some((Kind::WeightedSum, variable));
                }
                if one_variable && is_cos_lat(arg) && lat_f32_exact(cells) {
                    return Some((Kind::Weight, cells.variables[0].clone()));
                }
            }
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
            } else if inner.is::<VariancePopulation>() {
                Kind::VarPop
            } else if inner.is::<VarianceSample>() {
                Kind::VarSamp
            } else if inner.is::<StddevPop>() {
                Kind::StddevPop
            } else if inner.is::<Stddev>() {
                Kind::StddevSamp
            } else {
                return None;
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

/// The variable `v` of `v * cos(radians(lat))` (either order), when the index's weights are
/// exactly the weights SQL computes.
fn weighted_value(e: &Expr, cells: &CellsTable) -> Option<String> {
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Multiply, right }) = e else { return None };
    let variable = |e: &Expr| match e {
        Expr::Cast(c) if c.field.data_type() == &DataType::Float64 => match c.expr.as_ref() {
            Expr::Column(c) if cells.variables.contains(&c.name) => Some(c.name.clone()),
            _ => None,
        },
        _ => None,
    };
    let found = match (variable(left), variable(right)) {
        (Some(v), None) if is_cos_lat(right) => Some(v),
        (None, Some(v)) if is_cos_lat(left) => Some(v),
        _ => None,
    };
    found.filter(|_| lat_f32_exact(cells))
}

/// `cos(radians(lat))`, with DataFusion's own `cos` and `radians` (not a session's function of
/// the same name).
fn is_cos_lat(e: &Expr) -> bool {
    let call = |e: &Expr, f: &Arc<ScalarUDF>| match e {
        Expr::ScalarFunction(ScalarFunction { func, args }) if Arc::ptr_eq(func, f) && args.len() == 1 => {
            Some(args[0].clone())
        }
        _ => None,
    };
    call(e, &math::cos())
        .and_then(|inner| call(&inner, &math::radians()))
        .is_some_and(|arg| matches!(arg, Expr::Column(c) if c.name == "lat"))
}

/// Whether the cells table's latitudes (f32 cell centres) are the index's (f64) exactly, so that
/// SQL's `cos(radians(lat))` is the index's weight to the last bit.
fn lat_f32_exact(cells: &CellsTable) -> bool {
    cells.dataset.lats().iter().all(|&l| f64::from(l as f32) == l)
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

/// The partial columns: `[time,] then per variable the [`PARTS`]`.
fn partial_schema(variables: &[String], by_time: bool) -> Schema {
    let mut fields = Vec::new();
    if by_time {
        fields.push(Field::new("time", DataType::Timestamp(TimeUnit::Second, None), false));
    }
    for v in variables {
        fields.push(Field::new(part(v, "cnt"), DataType::Int64, true));
        for p in &PARTS[1..] {
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
        for get in [
            |s: Stats| s.min,
            |s: Stats| s.max,
            |s: Stats| s.sum,
            |s: Stats| s.m2,
            |s: Stats| s.wsum,
            |s: Stats| s.weight,
        ] {
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
fn cut_tiles(
    input: &Input<'_>,
    skip: HashSet<[u64; 3]>,
    variables: &[(String, bool, bool)],
    by_time: bool,
) -> Result<LogicalPlan> {
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
    let lat = Expr::Column(Column::new(Some(scan.table_name.clone()), "lat"));
    let weight = math::cos().call(vec![math::radians().call(vec![lat])]);
    let mut aggregates = Vec::new();
    let mut columns: Vec<Expr> = if by_time { vec![col("time")] } else { Vec::new() };
    for (v, spread, weighted) in variables {
        let x = || cast(value(v), DataType::Float64);
        aggregates.extend([
            count(value(v)).alias(part(v, "cnt")),
            min(value(v)).alias(part(v, "min")),
            max(value(v)).alias(part(v, "max")),
            sum(x()).alias(part(v, "sum")),
        ]);
        columns.push(col(part(v, "cnt")));
        columns.extend(["min", "max", "sum"].map(|p| cast(col(part(v, p)), DataType::Float64).alias(part(v, p))));
        // M2 and the weighted sums only when asked: they cost a pass of arithmetic per cell.
        if *spread {
            aggregates.push(var_pop(x()).alias(part(v, "var")));
            columns.push((col(part(v, "var")) * cast(col(part(v, "cnt")), DataType::Float64)).alias(part(v, "m2")));
        } else {
            columns.push(lit(ScalarValue::Float64(None)).alias(part(v, "m2")));
        }
        if *weighted {
            let valid_weight = when(value(v).is_not_null(), weight.clone()).end()?;
            aggregates
                .extend([sum(x() * weight.clone()).alias(part(v, "wsum")), sum(valid_weight).alias(part(v, "weight"))]);
            columns.extend([col(part(v, "wsum")), col(part(v, "weight"))]);
        } else {
            columns.extend(["wsum", "weight"].map(|p| lit(ScalarValue::Float64(None)).alias(part(v, p))));
        }
    }
    plan.aggregate(group, aggregates)?.project(columns)?.build()
}

/// Merges partial `(count, sum, M2)` rows into the total M2 with Chan's formula, so variances
/// from the index are as exact as DataFusion's own (no sum-of-squares cancellation).
#[derive(Debug, PartialEq, Eq, Hash)]
struct M2Merge {
    signature: Signature,
}

impl Default for M2Merge {
    fn default() -> Self {
        let types = vec![DataType::Int64, DataType::Float64, DataType::Float64];
        Self { signature: Signature::exact(types, Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for M2Merge {
    fn name(&self) -> &str {
        "tile_m2_merge"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::<Moments>::default())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(["count", "mean", "m2"]
            .map(|p| Arc::new(Field::new(format_state_name(args.name, p), DataType::Float64, true)))
            .to_vec())
    }
}

/// Count, mean and M2 of the rows merged so far.
#[derive(Debug, Default)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Chan et al.: the union's mean and M2 from the parts'.
    fn merge(&mut self, n: f64, mean: f64, m2: f64) {
        if n <= 0.0 {
            return;
        }
        let total = self.n + n;
        let delta = mean - self.mean;
        self.mean += delta * n / total;
        self.m2 += m2 + delta * delta * self.n * n / total;
        self.n = total;
    }
}

impl Accumulator for Moments {
    /// Rows of `(count, sum, M2)`; a row with any null has no cells.
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let n = values[0].as_primitive::<Int64Type>();
        let (sum, m2) = (values[1].as_primitive::<Float64Type>(), values[2].as_primitive::<Float64Type>());
        for i in 0..n.len() {
            if n.is_valid(i) && sum.is_valid(i) && m2.is_valid(i) && n.value(i) > 0 {
                let count = n.value(i) as f64;
                self.merge(count, sum.value(i) / count, m2.value(i));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [n, mean, m2] = [0, 1, 2].map(|i| states[i].as_primitive::<Float64Type>());
        for i in 0..n.len() {
            self.merge(n.value(i), mean.value(i), m2.value(i));
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok([self.n, self.mean, self.m2].map(|v| ScalarValue::Float64(Some(v))).to_vec())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64((self.n > 0.0).then_some(self.m2)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
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
