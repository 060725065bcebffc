//! The tilegate guest prelude: what a wasm module built in Rust uses to run map/reduce jobs over
//! the tiles of shared datasets. No dependencies and no serde: values travel in a fixed binary
//! encoding ([`Value`]), and JSON is written by hand only for the final rows.
//!
//! ```ignore
//! use prelude::*;
//!
//! fn main() -> Rows {
//!     dataset("sst")
//!         .bbox(-150.0, 45.0, -120.0, 60.0)
//!         .time("2008-09-01", "2008-09-16")
//!         .map(|tile| tile.stats_by_time())
//!         .reduce_by_key(Stats::merge)
//! }
//! prelude::export_main!(main);
//! ```
//!
//! # Layout
//! - [`Tile`]: a zero-copy view of one tile (times, lats, lons, values; NaN = missing or outside the selection).
//! - [`Stats`]: count, min, max, sum, cos(lat)-weighted sum and weight, M2; exact merge.
//! - [`Value`]: binary encoding and JSON of keys and values; [`Time`] keys a row by time.
//! - [`dataset`] → [`Job`] → [`Mapped`] → [`Rows`]: describing and running a job.
//! - [`session`]: the statement's session, its named JSON values ([`Session::set`], [`Session::get`]
//!   as [`Json`]); `spark` and `sqlContext` for sparkmagic's bootstrap.
//! - [`nexus`]: NEXUS's response shapes for the shipped algorithms' rows.
//! - [`sql_function!`]: makes a plain fn (`f64`, `i64`, `bool` in and out) callable from SQL;
//!   [`sql_aggregate!`] does the same for an aggregate ([`SqlAggregate`]: update, merge, finish).
//! - [`record!`]: declares a struct that is a [`Value`] (a custom key, value or result).
//! - [`abi`]: the exports ([`export_main!`]) and the host imports (`sbx.print`, `sbx.panic`,
//!   `sbx.run_job`, `sbx.session_get`, `sbx.session_set`).
//!
//! The ABI is documented in `sandbox/ABI.md`.

#![allow(unsafe_code)] // the ABI boundary: raw pointers from the host and fn pointers as table indices

pub mod abi;
mod job;
mod json;
pub mod nexus;
mod session;
mod sql;
mod stats;
mod tile;
mod value;

pub use job::{Job, Mapped, Rows, dataset};
#[doc(hidden)]
pub use job::{job_fold_bytes, job_rows_bytes};
pub use json::Json;
pub use session::{Session, session, spark, sqlContext};
pub use sql::{SqlAggregate, SqlType};
#[doc(hidden)]
pub use sql::{SqlArgs, sql_aggregate_bytes, sql_aggregate_invoke, sql_invoke, sql_type_named};
pub use stats::Stats;
pub use tile::{Tile, encode_tile, encode_tile_head, select_cells};
pub use value::{Time, Value, json_string, value_field_decode, value_field_encode};

/// Prints text to the statement's output (`text/plain`).
pub fn print(text: &str) {
    abi::host_print(text.as_bytes());
}
