//! The compute engine: shared gridded datasets and the work that runs over their tiles, planned and
//! executed by DataFusion. It knows nothing of sessions, HTTP or the store; it is what a remote
//! executor links. Work is handed a [`RunContext`] (cancel flag, progress, meter).
//!
//! # Layout
//! - [`dataset`]: Zarr datasets, their tiles and the tile index ([`dataset::Catalog`]).
//! - [`job`]: map/reduce jobs over tiles: plans, the tile scan, the tile cache, the plan codec ([`job::Jobs`]).
//! - [`sql`]: SQL over the tile index and cells, with user functions and aggregates ([`sql::Sql`]).
//! - [`meter`]: DataFusion plans whose nodes charge their polls to a statement's meter.

pub mod dataset;
pub mod job;
pub mod meter;
pub mod sql;

pub use tilegate_context::RunContext;
