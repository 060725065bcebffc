//! Shared datasets: stores written by xarray (v2 blosc, v3 zstd, int16 packed with descending
//! latitude and 0..360 longitude) and the gateway's own demo store, each tile of the index checked
//! against numpy on what xarray reads; pruning, persistence and bad stores over REST.

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::Method;
use serde_json::Value;
use tilegate_gateway::Config;

use crate::{Gateway, lasting_dir, run_tool, test_config};

/// Writes a store with the team's generator (as xarray writes it).
fn make_sst(out: &Path, format: &str) {
    let out = out.to_str().unwrap();
    let args = ["--out", out, "--days", "8", "--res", "2.0", "--chunks", "1,45,45", "--zarr-format", format];
    run_tool("make_sst_zarr.py", &args);
}

async fn all_tiles(gw: &Gateway, dataset: &str, query: &str) -> Vec<Value> {
    let (status, body) = gw.raw(Method::GET, &format!("/datasets/{dataset}/tiles?size=1000000{query}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["tiles"].as_array().unwrap().clone()
}

/// Every tile of the gateway's index equals numpy's statistics of the same chunk.
async fn assert_index_matches_numpy(gw: &Gateway, dataset: &str, store: &Path) {
    let reference: Vec<Value> =
        serde_json::from_str(&run_tool("reference.py", &["tiles", store.to_str().unwrap(), "sst"])).unwrap();
    let ours: BTreeMap<String, Value> =
        all_tiles(gw, dataset, "").await.into_iter().map(|t| (t["index"].to_string(), t)).collect();
    assert_eq!(ours.len(), reference.len(), "{dataset}: tiles with data");
    for want in &reference {
        let got = &ours[&want["index"].to_string()];
        assert_eq!(got["count"], want["count"], "{dataset} tile {}", want["index"]);
        for key in ["min", "max", "sum", "wsum", "weight", "m2"] {
            let (g, w) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{dataset} tile {} {key}: {g} vs numpy {w}",
                want["index"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xarray_written_stores_match_numpy_tile_by_tile() {
    let config = test_config();
    let datasets = config.data_dir.join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    make_sst(&datasets.join("sst_v2.zarr"), "2");
    make_sst(&datasets.join("sst_v3.zarr"), "3");
    run_tool("reference.py", &["odd-store", datasets.join("packed.zarr").to_str().unwrap()]);
    let gw = Gateway::start_with(config).await;

    let (status, list) = gw.raw(Method::GET, "/datasets", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["packed", "sst_v2", "sst_v3"]);
    for name in ["sst_v2", "sst_v3", "packed"] {
        assert_index_matches_numpy(&gw, name, &datasets.join(format!("{name}.zarr"))).await;
    }

    let (_, v3) = gw.raw(Method::GET, "/datasets/sst_v3", None).await;
    assert_eq!(v3["zarr_format"], 3);
    assert_eq!(v3["time"]["iso_start"], "2008-09-01T00:00:00Z");
    assert_eq!(v3["variables"][0]["tile_shape"], serde_json::json!([1, 45, 45]));
    assert_eq!(v3["variables"][0]["tiles"], 8 * 2 * 4);
    let (_, packed) = gw.raw(Method::GET, "/datasets/packed", None).await;
    assert_eq!((packed["zarr_format"].as_u64(), packed["lon_convention"].as_str()), (Some(2), Some("0..360")));
    assert_eq!(packed["lat_ascending"], false);
    assert_eq!(packed["time"]["iso_start"], "2010-01-01T00:00:00Z", "hours since 2010-01-01, decoded");
    assert_eq!(packed["variables"][0]["dtype"], "int16");
    // One chunk of day 2 was never written: it is not a tile with data.
    assert_eq!(packed["variables"][0]["tiles_with_data"], 6 * 3 * 4 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_prunes_tiles_through_the_index() {
    let config = test_config();
    let datasets = config.data_dir.join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    run_tool("reference.py", &["odd-store", datasets.join("packed.zarr").to_str().unwrap()]);
    make_sst(&datasets.join("sst.zarr"), "3");
    let gw = Gateway::start_with(config).await;

    // Across the prime meridian on a 0..360 grid: lon chunks 0 (1..89) and 3 (271..359); lat 0..30
    // on descending rows: chunks 0 (59..21) and 1 (19..-19). 6 days x 4 tiles, less the missing one.
    let (status, body) = gw.raw(Method::GET, "/datasets/packed/tiles?bbox=0,70,10,80", None).await;
    assert_eq!(status, 400, "the packed grid stops at 59 N: {body}");
    assert!(body["msg"].as_str().unwrap().contains("outside the grid"), "{body}");
    let tiles = all_tiles(&gw, "packed", "&bbox=-30,0,30,30").await;
    assert_eq!(tiles.len(), 23);
    assert!(tiles.iter().all(|t| [0, 3].contains(&t["index"][2].as_u64().unwrap())));
    // Time: an inclusive range of two days.
    let tiles = all_tiles(&gw, "packed", "&start=2010-01-02&end=2010-01-03").await;
    assert_eq!(tiles.len(), 2 * 12 - 1);
    // The NEXUS seed bbox over the generator's store: 45°-chunks, one lat and one lon chunk a day.
    let tiles = all_tiles(&gw, "sst", "&bbox=-150,45,-120,60&start=2008-09-01&end=2008-09-04").await;
    assert_eq!(tiles.len(), 4);
    assert!(
        tiles
            .iter()
            .all(|t| t["bbox"]["west"].as_f64().unwrap() <= -150.0 && t["bbox"]["north"].as_f64().unwrap() >= 60.0)
    );
    // Time given as epoch seconds works too, and paging reports the total.
    let (_, page) =
        gw.raw(Method::GET, "/datasets/sst/tiles?start=1220227200&end=1220227200&size=3&from=1", None).await;
    assert_eq!(
        (page["total"].as_u64(), page["from"].as_u64(), page["tiles"].as_array().unwrap().len()),
        (Some(8), Some(1), 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_dataset_is_written_and_reads_in_xarray_as_indexed() {
    let gw = Gateway::start_with(Config { demo_dataset: true, ..test_config() }).await;
    let (status, sst) = gw.raw(Method::GET, "/datasets/sst", None).await;
    assert_eq!(status, 200, "{sst}");
    assert_eq!(sst["zarr_format"], 3);
    assert_eq!(sst["time"]["steps"], 365);
    assert_eq!(sst["variables"][0]["shape"], serde_json::json!([365, 180, 360]));
    assert_eq!(sst["variables"][0]["units"], "degC");
    assert_index_matches_numpy(&gw, "sst", &gw.data_dir.join("datasets/sst.zarr")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tile_index_is_persisted_and_rebuilt_when_the_store_changes() {
    let data_dir = lasting_dir();
    let datasets = data_dir.join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    make_sst(&datasets.join("sst.zarr"), "3");
    let index = data_dir.join("index/sst.json");
    let config = || Config { data_dir: data_dir.clone(), ..test_config() };

    drop(Gateway::start_with(config()).await);
    let built = std::fs::metadata(&index).expect("index written").modified().unwrap();
    let gw = Gateway::start_with(config()).await;
    assert_eq!(std::fs::metadata(&index).unwrap().modified().unwrap(), built, "re-opened without a rescan");
    let before = all_tiles(&gw, "sst", "").await;
    drop(gw);

    // Rewrite one chunk with different (valid) values: the index must follow.
    let chunk = datasets.join("sst.zarr/sst/c/0/0/0");
    let other = datasets.join("sst.zarr/sst/c/1/0/0");
    std::fs::copy(&other, &chunk).unwrap();
    let gw = Gateway::start_with(config()).await;
    assert_ne!(std::fs::metadata(&index).unwrap().modified().unwrap(), built, "rebuilt after the store changed");
    let after = all_tiles(&gw, "sst", "").await;
    let first =
        |tiles: &[Value]| tiles.iter().find(|t| t["index"] == serde_json::json!([0, 0, 0])).unwrap()["sum"].clone();
    let second = after.iter().find(|t| t["index"] == serde_json::json!([1, 0, 0])).unwrap()["sum"].clone();
    assert_ne!(first(&before), first(&after));
    assert_eq!(first(&after), second);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stores_and_selections_get_clear_errors() {
    let config = test_config();
    let scratch = config.data_dir.join("scratch");
    std::fs::create_dir_all(config.data_dir.join("datasets")).unwrap();
    make_sst(&scratch.join("good.zarr"), "2");
    // A store in datasets/ that cannot be opened is skipped at start; the gateway still serves.
    std::fs::create_dir_all(config.data_dir.join("datasets/broken.zarr")).unwrap();
    let gw = Gateway::start_with(config).await;
    let (status, list) = gw.raw(Method::GET, "/datasets", None).await;
    assert_eq!((status, list["datasets"].as_array().unwrap().len()), (200, 0));

    let register = |name: &str, path: &Path| serde_json::json!({"name": name, "path": path}).to_string();
    let good = scratch.join("good.zarr");
    let response = gw.http.post(format!("{}/datasets", gw.url)).body(register("good", &good)).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/datasets/good");

    let refused = |status: u16, needle: &'static str| {
        move |(got, body): (u16, Value)| {
            assert_eq!(got, status, "{body}");
            let msg = body["msg"].as_str().unwrap().to_owned();
            assert!(msg.contains(needle), "'{msg}' lacks '{needle}'");
        }
    };
    refused(400, "already registered")(post(&gw, register("good", &good)).await);
    refused(400, "invalid dataset name")(post(&gw, register("../etc", &good)).await);
    // A '.' would make a name `schema.table` in SQL: once it broke every SQL statement gateway-wide.
    refused(400, "invalid dataset name")(post(&gw, register("evil.x", &good)).await);
    // A relative path is the data directory's.
    let response =
        gw.http.post(format!("{}/datasets", gw.url)).body(register("relative", Path::new("scratch/good.zarr")));
    assert_eq!(response.send().await.unwrap().status(), 201);
    refused(400, "not a directory")(post(&gw, register("gone", &scratch.join("missing.zarr"))).await);
    refused(400, "unknown field")(post(&gw, r#"{"name":"x","path":"/tmp","extra":1}"#.into()).await);

    // Corrupt one chunk of a copy: registration names the dataset and the tile.
    let corrupt = scratch.join("corrupt.zarr");
    copy_dir(&good, &corrupt);
    std::fs::write(corrupt.join("sst/3.1.2"), b"definitely not blosc").unwrap();
    refused(400, "corrupt")(post(&gw, register("corrupt", &corrupt)).await);
    let (_, body) = post(&gw, register("corrupt", &corrupt)).await;
    assert!(body["msg"].as_str().unwrap().contains("[3, 1, 2]"), "{body}");
    // Malformed metadata.
    let malformed = scratch.join("malformed.zarr");
    copy_dir(&good, &malformed);
    std::fs::write(malformed.join("sst/.zarray"), b"{ not json").unwrap();
    refused(400, "invalid Zarr metadata")(post(&gw, register("malformed", &malformed)).await);

    let get = |path: &'static str| gw.raw(Method::GET, path, None);
    refused(404, "Dataset 'nope' not found")(get("/datasets/nope").await);
    refused(404, "no variable 'chl'")(get("/datasets/good/tiles?variable=chl").await);
    refused(400, "Invalid bbox")(get("/datasets/good/tiles?bbox=1,2,3").await);
    refused(400, "south")(get("/datasets/good/tiles?bbox=0,10,10,5").await);
    refused(400, "west")(get("/datasets/good/tiles?bbox=10,0,5,10").await);
    refused(400, "inverted")(get("/datasets/good/tiles?start=2008-09-05&end=2008-09-01").await);
    refused(400, "Invalid time")(get("/datasets/good/tiles?start=yesterday").await);
    // Found by schemathesis: these overflowed (500) or read as impossible dates.
    for bad in ["start=99999999999999-01-01", "end=2009-01-01T1e300", "end=-9223372036854775808", "start=2008-02-30"] {
        refused(400, "Invalid time")(gw.raw(Method::GET, &format!("/datasets/good/tiles?{bad}"), None).await);
    }
    refused(400, "selects no time step")(get("/datasets/good/tiles?start=2020-01-01&end=2020-02-01").await);
    refused(400, "unknown field")(get("/datasets/good/tiles?bogus=1").await);
    // And the good dataset still works.
    assert_eq!(all_tiles(&gw, "good", "").await.len(), 64 - count_missing(&good));
}

async fn post(gw: &Gateway, body: String) -> (u16, Value) {
    gw.raw(Method::POST, "/datasets", Some(&body)).await
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Chunks of the 8 x 2 x 4 grid the generator left unwritten (all land).
fn count_missing(store: &Path) -> usize {
    let written = std::fs::read_dir(store.join("sst"))
        .unwrap()
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
        .count();
    64 - written
}
