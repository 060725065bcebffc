//! From a query's pushed-down filters to the [`Selection`] that prunes tiles through the index.
//!
//! Only conjunctions of comparisons between `time`, `lat` or `lon` and a constant are used; the
//! selection they give is a superset of the matching cells (`<` is read as `<=`), and DataFusion
//! applies every filter again on the rows, so pruning never changes a result.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::dataset::{Selection, cf};

/// Bounds found per axis, inclusive.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lat: (f64, f64),
    lon: (f64, f64),
    time: (i64, i64),
}

impl Default for Bounds {
    fn default() -> Self {
        Self { lat: (-90.0, 90.0), lon: (-180.0, 180.0), time: (i64::MIN / 4, i64::MAX / 4) }
    }
}

/// The selection the filters imply, and whether they rule out every cell (e.g. `lat > 100`).
pub(crate) fn selection(filters: &[Expr]) -> (Selection, bool) {
    let mut b = Bounds::default();
    let (mut space, mut time) = (false, false);
    for filter in filters.iter().flat_map(conjuncts) {
        let found = match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match (column(left), constant(right)) {
                (Some(c), Some(v)) => Some((c, *op, v)),
                _ => match (constant(left), column(right)) {
                    (Some(v), Some(c)) => op.swap().map(|op| (c, op, v)),
                    _ => None,
                },
            },
            Expr::Between(Between { expr, negated: false, low, high }) => {
                if let (Some(c), Some(lo), Some(hi)) = (column(expr), constant(low), constant(high)) {
                    narrow(&mut b, c, Operator::GtEq, lo);
                    narrow(&mut b, c, Operator::LtEq, hi);
                    space |= c != "time";
                    time |= c == "time";
                }
                None
            }
            _ => None,
        };
        if let Some((c, op, v)) = found {
            narrow(&mut b, c, op, v);
            space |= c != "time";
            time |= c == "time";
        }
    }
    let empty = b.lat.0 > b.lat.1 || b.lon.0 > b.lon.1 || b.time.0 > b.time.1;
    let selection = Selection {
        bbox: space.then_some([b.lon.0, b.lat.0.max(-90.0), b.lon.1, b.lat.1.min(90.0)]),
        time: time.then_some(b.time),
    };
    (selection, empty)
}

/// The terms of a conjunction (`a AND b AND c`), or the expression itself.
pub(super) fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        other => vec![other],
    }
}

/// `time`, `lat` or `lon`, possibly under a cast.
fn column(e: &Expr) -> Option<&'static str> {
    match e {
        Expr::Column(c) => ["time", "lat", "lon"].into_iter().find(|n| *n == c.name),
        Expr::Cast(c) => column(&c.expr),
        Expr::TryCast(c) => column(&c.expr),
        _ => None,
    }
}

/// A constant as a number: degrees, or epoch seconds for times (strings are parsed as dates).
fn constant(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(v, _) => number(v),
        Expr::Cast(c) => constant(&c.expr),
        Expr::TryCast(c) => constant(&c.expr),
        _ => None,
    }
}

fn number(v: &ScalarValue) -> Option<f64> {
    use ScalarValue::*;
    Some(match v {
        Float64(Some(x)) => *x,
        Float32(Some(x)) => f64::from(*x),
        Int64(Some(x)) => *x as f64,
        Int32(Some(x)) => f64::from(*x),
        Int16(Some(x)) => f64::from(*x),
        Int8(Some(x)) => f64::from(*x),
        UInt64(Some(x)) => *x as f64,
        UInt32(Some(x)) => f64::from(*x),
        TimestampSecond(Some(x), _) => *x as f64,
        TimestampMillisecond(Some(x), _) => x.div_euclid(1000) as f64,
        TimestampMicrosecond(Some(x), _) => x.div_euclid(1_000_000) as f64,
        TimestampNanosecond(Some(x), _) => x.div_euclid(1_000_000_000) as f64,
        Date32(Some(d)) => f64::from(*d) * 86_400.0,
        Utf8(Some(s)) | LargeUtf8(Some(s)) | Utf8View(Some(s)) => cf::parse_datetime(s).ok()? as f64,
        _ => return None,
    })
}

fn narrow(b: &mut Bounds, column: &str, op: Operator, v: f64) {
    let range_f = |r: &mut (f64, f64)| match op {
        Operator::Gt | Operator::GtEq => r.0 = r.0.max(v),
        Operator::Lt | Operator::LtEq => r.1 = r.1.min(v),
        Operator::Eq => *r = (r.0.max(v), r.1.min(v)),
        _ => {}
    };
    match column {
        "lat" => range_f(&mut b.lat),
        "lon" => range_f(&mut b.lon),
        _ => {
            let (lo, hi) = (v.floor() as i64, v.ceil() as i64);
            match op {
                Operator::Gt | Operator::GtEq => b.time.0 = b.time.0.max(lo),
                Operator::Lt | Operator::LtEq => b.time.1 = b.time.1.min(hi),
                Operator::Eq => b.time = (b.time.0.max(lo), b.time.1.min(hi)),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn comparisons_and_betweens_narrow_the_selection() {
        let filters = [
            col("lat").between(lit(45.0), lit(60.0)),
            col("lon").gt_eq(lit(-150)).and(lit(-120.0).gt_eq(col("lon"))),
            col("time").gt_eq(lit("2008-09-01")),
            col("time").lt(lit(ScalarValue::TimestampSecond(Some(1_221_523_200), None))),
            col("sst").gt(lit(20.0)),
        ];
        let (s, empty) = selection(&filters);
        assert!(!empty);
        assert_eq!(s.bbox, Some([-150.0, 45.0, -120.0, 60.0]));
        assert_eq!(s.time, Some((1_220_227_200, 1_221_523_200)));
    }

    #[test]
    fn no_filters_select_everything_and_contradictions_nothing() {
        assert_eq!(selection(&[]), (Selection::default(), false));
        assert!(selection(&[col("lat").gt(lit(10)), col("lat").lt(lit(5))]).1);
        let (s, _) = selection(&[col("lat").gt(lit(10)).or(col("lat").lt(lit(5)))]);
        assert_eq!(s, Selection::default(), "a disjunction does not prune");
    }
}
