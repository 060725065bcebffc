//! Aggregates answered from the tile index (`compute/src/sql/index.rs`): the same queries against
//! a gateway that answers whole tiles from the index and one that reads every cell
//! (`sql_index_aggregates = false`) give the same rows (counts, minima and maxima exactly, sums
//! and means to rounding), and `EXPLAIN` shows the index only where the rewrite applies. Over
//! the demo dataset (Zarr v3 written by our code, 1 x 90 x 90 tiles) and a store xarray writes
//! (Zarr v2, 1 x 45 x 45 tiles of 2°).

use serde_json::Value;
use tilegate_gateway::Config;
use tilegate_sdk::{CreateSession, Error, Language};

use crate::jobs::gateway_with_sst;
use crate::{Gateway, test_config};

/// Queries the rewrite answers: whole tiles from the index, cut tiles read.
const ANSWERED: &[&str] = &[
    "SELECT COUNT(*), COUNT(sst), MIN(sst), MAX(sst), SUM(sst), AVG(sst) FROM sst",
    "SELECT COUNT(*) AS n, MIN(sst) AS lo, MAX(sst) AS hi, AVG(sst) AS mean FROM sst \
     WHERE lat BETWEEN 0 AND 90 AND lon BETWEEN -180 AND -45 AND time BETWEEN '2008-09-01' AND '2008-09-05'",
    "SELECT time, COUNT(sst), MIN(sst), MAX(sst), AVG(sst), SUM(sst) FROM sst \
     WHERE lat >= 0 AND lon < 0 GROUP BY time ORDER BY time LIMIT 5",
    "SELECT MAX(sst) - MIN(sst) AS spread, COUNT(1) * 2 AS twice FROM sst \
     WHERE lat > -90 AND lat < 89.9 AND time >= '2008-09-02' AND time < '2008-09-04T00:00:00.5'",
    "SELECT time, AVG(sst) AS mean FROM sst WHERE lat <= 0 GROUP BY time HAVING COUNT(*) > 10 ORDER BY mean DESC LIMIT 3",
    "SELECT COUNT(sst), MIN(sst) FROM sst WHERE 0 <= lat AND time = '2008-09-03'",
    "SELECT date_trunc('month', time) AS month, COUNT(*), AVG(sst), MAX(sst) FROM sst WHERE lat >= 0 \
     GROUP BY 1 ORDER BY 1",
    "SELECT extract(month FROM time) AS m, extract(year FROM time) AS y, MIN(sst) FROM sst \
     GROUP BY extract(month FROM time), extract(year FROM time) ORDER BY y, m LIMIT 4",
    "SELECT STDDEV_POP(sst), COUNT(*) FROM sst WHERE time = '2008-09-01'",
    "SELECT VAR_POP(sst), VAR_SAMP(sst), STDDEV(sst), STDDEV_POP(sst) FROM sst \
     WHERE lat BETWEEN -50 AND 90 AND time <= '2008-09-03'",
    // The NEXUS time series, whole tiles and cut ones: cos(lat)-weighted mean and std from the index.
    "SELECT time, COUNT(sst) AS cnt, MIN(sst) AS min, MAX(sst) AS max, \
     SUM(sst * cos(radians(lat))) / SUM(cos(radians(lat))) AS mean, STDDEV_POP(sst) AS std \
     FROM sst WHERE lat >= -10 AND lon BETWEEN -180 AND 10 GROUP BY time ORDER BY time LIMIT 6",
    "SELECT SUM(cos(radians(lat)) * sst), SUM(cos(radians(lat))) FROM sst WHERE lat < 0",
];

/// Queries it must leave alone (they still answer the same).
const LEFT_ALONE: &[&str] = &[
    "SELECT COUNT(*), MIN(sst) FROM sst WHERE sst > 20",
    "SELECT COUNT(DISTINCT sst) FROM sst WHERE time = '2008-09-01'",
    "SELECT lat, COUNT(*) FROM sst WHERE time = '2008-09-01' GROUP BY lat ORDER BY lat LIMIT 3",
    "SELECT MIN(lat), MAX(time) FROM sst",
    "SELECT COUNT(*), MAX(sst) FROM sst WHERE lat > 100",
    "SELECT COUNT(*) FROM sst WHERE lat BETWEEN 45 AND 60 AND lon BETWEEN -150 AND -120",
    "SELECT SUM(sst * cos(lat)), SUM(sst * sst) FROM sst WHERE time = '2008-09-01'",
    "SELECT date_trunc('month', time), lon > 0 AS east, COUNT(*) FROM sst GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 4",
];

async fn session(gw: &Gateway) -> u64 {
    gw.client.create_session(&CreateSession { kind: Some("sql".into()), ..Default::default() }).await.unwrap().id
}

async fn answer(gw: &Gateway, session: u64, sql: &str) -> Value {
    match gw.client.run(session, Language::Sql, sql).await {
        Ok(out) => out.json().cloned().unwrap_or_else(|| panic!("{sql}: no application/json")),
        Err(Error::Statement { ename, evalue, .. }) => panic!("{sql}: {ename}: {evalue}"),
        Err(other) => panic!("{sql}: {other}"),
    }
}

/// Whether the optimized plan reads the tile index.
async fn uses_index(gw: &Gateway, session: u64, sql: &str) -> bool {
    answer(gw, session, &format!("EXPLAIN {sql}")).await.to_string().contains("tile_index(sst)")
}

/// Same columns, same rows; floats within `1e-9` relative (counts, minima and maxima are
/// exact in the index, so only sums and means can differ, by rounding).
fn assert_same(sql: &str, indexed: &Value, read: &Value) {
    assert_eq!(indexed["schema"], read["schema"], "{sql}: schemas differ");
    let (a, b) = (indexed["data"].as_array().unwrap(), read["data"].as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{sql}: {a:?} vs {b:?}");
    for (x, y) in a.iter().flat_map(|r| r.as_array().unwrap()).zip(b.iter().flat_map(|r| r.as_array().unwrap())) {
        match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) if x.is_f64() || y.is_f64() => {
                assert!((p - q).abs() <= 1e-9 * q.abs().max(1.0), "{sql}: {p} vs {q}")
            }
            _ => assert_eq!(x, y, "{sql}"),
        }
    }
}

async fn compare(format: Option<&str>) {
    let indexed = gateway_with_sst(format, test_config()).await;
    // The same data directory (datasets and built index), its own state and no index answers.
    let state_db = Some(crate::fresh_dir().join("state.sqlite"));
    let config = Config { data_dir: indexed.data_dir.clone(), state_db, sql_index_aggregates: false, ..test_config() };
    let read = Gateway::start_with(config).await;
    let (s, r) = (session(&indexed).await, session(&read).await);
    for (sql, expected) in ANSWERED.iter().map(|q| (q, true)).chain(LEFT_ALONE.iter().map(|q| (q, false))) {
        assert_eq!(uses_index(&indexed, s, sql).await, expected, "{sql}: index used?");
        assert!(!uses_index(&read, r, sql).await, "{sql}: switched off, yet the index is used");
        let (a, b) = (answer(&indexed, s, sql).await, answer(&read, r, sql).await);
        assert!(!b["data"].as_array().unwrap().is_empty(), "{sql}: no rows");
        assert_same(sql, &a, &b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_answers_agree_with_reading_every_cell_on_the_demo_dataset() {
    compare(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_answers_agree_with_reading_every_cell_on_an_xarray_store() {
    compare(Some("2")).await;
}
