//! The `/datasets` routes: the catalog of shared datasets and their tile index.

use std::path::PathBuf;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::Deserialize;
use tilegate_api::{DatasetInfo, DatasetList, RegisterDataset, TileList};
use tilegate_compute::dataset::{Selection, cf, tile_info};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/datasets", get(list_datasets).post(register_dataset))
        .route("/datasets/{name}", get(get_dataset))
        .route("/datasets/{name}/tiles", get(list_tiles))
}

async fn list_datasets(State(app): State<AppState>, caller: Caller) -> ApiJson<DatasetList> {
    ApiJson(DatasetList { datasets: app.catalog.list().iter().map(|d| shown(d.info(), &caller)).collect() })
}

async fn get_dataset(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<DatasetInfo>, ApiError> {
    Ok(ApiJson(shown(app.catalog.get(&name)?.info(), &caller)))
}

/// A dataset as `caller` sees it: where it lives on the server is for admins.
fn shown(mut info: DatasetInfo, caller: &Caller) -> DatasetInfo {
    if !caller.is_admin() {
        info.path = None;
    }
    info
}

/// Registers a store at run time. Opening it builds its tile index, so it runs off the reactor.
/// Until authentication lands (issue 7) this route is open to every caller of the gateway.
async fn register_dataset(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterDataset>,
) -> Result<(StatusCode, HeaderMap, ApiJson<DatasetInfo>), ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("Only admins may register datasets.".into()));
    }
    let catalog = app.catalog.clone();
    let name = req.name.clone();
    // A relative path is the data directory's (the caller cannot know the gateway's working directory).
    let path = app.config.data_dir.join(PathBuf::from(req.path));
    let dataset = tokio::task::spawn_blocking(move || catalog.register(&req.name, &path))
        .await
        .map_err(|_| ApiError::Internal)??;
    Ok((StatusCode::CREATED, crate::routes::location(&format!("/datasets/{name}")), ApiJson(dataset.info())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TileQuery {
    /// Variable; defaults to the dataset's first.
    variable: Option<String>,
    /// `W,S,E,N` in degrees.
    bbox: Option<String>,
    /// First time: `YYYY-MM-DD[THH:MM:SSZ]` or epoch seconds.
    start: Option<String>,
    /// Last time, inclusive.
    end: Option<String>,
    from: Option<u64>,
    size: Option<u64>,
}

async fn list_tiles(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TileQuery>,
) -> Result<ApiJson<TileList>, ApiError> {
    let dataset = app.catalog.get(&name)?;
    let variable = dataset.variable_or_first(q.variable.as_deref());
    let selection = Selection {
        bbox: q.bbox.as_deref().map(parse_bbox).transpose()?,
        time: match (q.start.as_deref(), q.end.as_deref()) {
            (None, None) => None,
            (start, end) => Some((
                start.map(parse_time).transpose()?.unwrap_or(i64::MIN),
                end.map(parse_time).transpose()?.unwrap_or(i64::MAX),
            )),
        },
    };
    let tiles = dataset.select(&variable, &selection)?;
    let from = q.from.unwrap_or(0);
    let page = tiles.iter().skip(from as usize).take(q.size.unwrap_or(1000) as usize);
    Ok(ApiJson(TileList {
        dataset: name,
        variable: variable.clone(),
        total: tiles.len() as u64,
        from,
        tiles: page.map(|t| tile_info(&variable, t)).collect(),
    }))
}

/// `W,S,E,N` → `[w, s, e, n]`.
pub(crate) fn parse_bbox(text: &str) -> Result<[f64; 4], ApiError> {
    let parts: Vec<f64> = text.split(',').map(|p| p.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|_| {
        ApiError::BadRequest(format!("Invalid bbox '{text}': give four numbers W,S,E,N, e.g. -150,45,-120,60."))
    })?;
    let bbox: [f64; 4] = parts
        .try_into()
        .map_err(|_| ApiError::BadRequest(format!("Invalid bbox '{text}': give exactly four numbers W,S,E,N.")))?;
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(ApiError::BadRequest(format!("Invalid bbox '{text}': numbers must be finite.")));
    }
    Ok(bbox)
}

/// An ISO date/time or epoch seconds, within years 0000–9999.
pub(crate) fn parse_time(text: &str) -> Result<i64, ApiError> {
    const YEARS_0_TO_9999: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;
    let epoch = text
        .trim()
        .parse::<i64>()
        .or_else(|_| cf::parse_datetime(text))
        .map_err(|e| ApiError::BadRequest(format!("Invalid time: {e}")))?;
    if !YEARS_0_TO_9999.contains(&epoch) {
        return Err(ApiError::BadRequest(format!("Invalid time '{text}': epoch seconds of years 0000 to 9999 only.")));
    }
    Ok(epoch)
}
