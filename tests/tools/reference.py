#!/usr/bin/env python3
"""Reference computations for the integration tests, with numpy on what xarray reads.

  reference.py tiles STORE VAR
      Per chunk with at least one valid cell: index [t, y, x], count, min, max, sum,
      wsum (cos(lat)-weighted sum), weight (sum of cos(lat)), m2. JSON list on stdout.
  reference.py timeseries STORE VAR W S E N START END
      The NEXUS time series: per day with a valid cell inside the bbox (inclusive), cnt, min, max,
      cos(lat)-weighted mean and std (ddof=0); W..N may be "all" for the whole grid, START/END
      "all" for every day. JSON list sorted by time (epoch seconds).
  reference.py warm STORE VAR W S E N START END THRESHOLD
      Per day, the number of valid cells inside the bbox above THRESHOLD.
  reference.py timeavg STORE VAR W S E N START END
      The NEXUS time-average map: per pixel with a valid value, {"key": [lat, lon], cnt, min, max,
      mean, std} over the days (ddof=0), sorted by key.
  reference.py climatology STORE VAR W S E N START END
      The NEXUS climatology map: per calendar month (1..12, UTC) and pixel, {"key": [month, [lat, lon]],
      cnt, min, max, mean, std} over that month's days, sorted by key.
  reference.py hovmoller-lat STORE VAR W S E N START END
      Per day and latitude row, {"key": [time, lat], cnt, min, max, mean, std} over the row's cells.
  reference.py hovmoller-lon STORE VAR W S E N START END
      Per day and longitude column, {"key": [time, lon], ...} over the column's cells; mean weighted
      by cos(lat).
  reference.py ddas STORE VAR W S E N START END
      Daily difference average: per day, cnt/min/max/mean (unweighted)/std (ddof=0) of each cell
      minus its pixel's mean over every day of the store.
  reference.py two-vars OUT
      Writes a Zarr v2 store with variables `sst` and `wind` missing in different cells; prints
      per day [cells with either valid, sst valid, wind valid].
  reference.py shard STORE OUT
      Rewrites a store as Zarr v3 with sharding (shards of 2 x 90 x 90, inner chunks 1 x 45 x 45).
  reference.py odd-store OUT
      Writes a Zarr v2 store as xarray does, with int16 values, scale_factor/add_offset,
      _FillValue, descending latitude, longitude 0..360 and some never-written chunks.
  reference.py golden STORE
      The rows of a few queries of tests/sql/cells.slt, computed here from what xarray reads:
      {name: [[cell, ...], ...]}, times as ISO text with a Z.
"""
import json
import sys
import warnings

import numpy as np
import pandas as pd
import xarray as xr
import zarr

warnings.filterwarnings("ignore")


def tiles(store, var):
    ds = xr.open_zarr(store, consolidated=None, mask_and_scale=True, decode_times=False)
    da = ds[var]
    values = da.values.astype(np.float64)  # NaN where fill / missing
    lat = ds[da.dims[1]].values.astype(np.float64)
    chunks = zarr.open_array(store=f"{store}/{var}", mode="r").chunks
    ct, cy, cx = chunks
    nt, ny, nx = values.shape
    out = []
    for t in range(0, nt, ct):
        for y in range(0, ny, cy):
            for x in range(0, nx, cx):
                block = values[t:t + ct, y:y + cy, x:x + cx]
                w = np.broadcast_to(np.cos(np.radians(lat[y:y + cy]))[None, :, None], block.shape)
                ok = ~np.isnan(block)
                n = int(ok.sum())
                if n == 0:
                    continue
                v = block[ok]
                out.append({
                    "index": [t // ct, y // cy, x // cx],
                    "count": n, "min": float(v.min()), "max": float(v.max()), "sum": float(v.sum()),
                    "wsum": float((v * w[ok]).sum()), "weight": float(w[ok].sum()),
                    "m2": float(((v - v.mean()) ** 2).sum()),
                })
    json.dump(out, sys.stdout)


def select(store, var, *box):
    times, lat, _, sub = select_grid(store, var, *box)
    return times, lat, sub


def select_grid(store, var, w, s, e, n, start, end):
    """Times (epoch seconds), latitudes, longitudes and values [t, lat, lon] inside the selection."""
    ds = xr.open_zarr(store, consolidated=None)
    da = ds[var]
    tdim, ydim, xdim = da.dims
    times = ds[tdim].values.astype("datetime64[s]").astype(np.int64)
    lat = ds[ydim].values.astype(np.float64)
    lon = ds[xdim].values.astype(np.float64)
    keep_t = np.ones(times.size, bool)
    if start != "all":
        lo = np.datetime64(start, "s").astype(np.int64)
        hi = np.datetime64(end, "s").astype(np.int64)
        keep_t = (times >= lo) & (times <= hi)
    keep_y = np.ones(lat.size, bool)
    keep_x = np.ones(lon.size, bool)
    if w != "all":
        w, s, e, n = map(float, (w, s, e, n))
        keep_y = (lat >= s) & (lat <= n)
        keep_x = (lon >= w) & (lon <= e)
    # Index before loading: only the chunks that hold the selection are read.
    picks = {tdim: np.flatnonzero(keep_t), ydim: np.flatnonzero(keep_y), xdim: np.flatnonzero(keep_x)}
    sub = da.isel(picks).values.astype(np.float64)
    return times[keep_t], lat[keep_y], lon[keep_x], sub


def timeseries(store, var, *box):
    times, lat, sub = select(store, var, *box)
    weights = np.broadcast_to(np.cos(np.radians(lat))[:, None], sub.shape[1:])
    out = []
    for t, day in zip(times, sub):
        ok = ~np.isnan(day)
        if not ok.any():
            continue
        v, w = day[ok], weights[ok]
        out.append({"time": int(t), "cnt": int(ok.sum()), "min": float(v.min()), "max": float(v.max()),
                    "mean": float((v * w).sum() / w.sum()), "std": float(v.std(ddof=0))})
    json.dump(out, sys.stdout)


def warm(store, var, *args):
    times, _, sub = select(store, var, *args[:6])
    threshold = float(args[6])
    out = [{"time": int(t), "value": int((day > threshold).sum())} for t, day in zip(times, sub)
           if (~np.isnan(day)).any()]
    json.dump(out, sys.stdout)


def stats_row(key, values, weights):
    """NEXUS's numbers for the valid cells among `values` (weights: cos(lat) of each), or None."""
    ok = ~np.isnan(values)
    if not ok.any():
        return None
    v, w = values[ok], np.broadcast_to(weights, values.shape)[ok]
    return {"key": key, "cnt": int(ok.sum()), "min": float(v.min()), "max": float(v.max()),
            "mean": float((v * w).sum() / w.sum()), "std": float(v.std(ddof=0))}


def dump_rows(rows):
    json.dump([r for r in rows if r is not None], sys.stdout)


def timeavg(store, var, *box):
    _, lat, lon, sub = select_grid(store, var, *box)
    cos = np.cos(np.radians(lat))
    dump_rows(stats_row([float(lat[y]), float(lon[x])], sub[:, y, x], cos[y])
              for y in np.argsort(lat) for x in np.argsort(lon))


def ddas(store, var, *box):
    """Per day: stats (unweighted mean, ddof=0) of value minus the pixel's mean over all days."""
    _, _, _, full = select_grid(store, var, *box[:4], "all", "all")
    clim = np.nanmean(full, axis=0)
    times, _, _, sub = select_grid(store, var, *box)
    diff = sub - clim[None, :, :]
    rows = [stats_row(int(times[t]), diff[t], np.ones(diff[t].shape)) for t in range(times.size)]
    dump_rows({"time": r.pop("key"), **r} if r else None for r in rows)


def civil_month(times):
    return pd.to_datetime(times, unit="s", utc=True).month.to_numpy()


def climatology(store, var, *box):
    times, lat, lon, sub = select_grid(store, var, *box)
    cos = np.cos(np.radians(lat))
    months = civil_month(times)
    dump_rows(stats_row([int(m), [float(lat[y]), float(lon[x])]], sub[months == m, y, x], cos[y])
              for m in np.unique(months) for y in np.argsort(lat) for x in np.argsort(lon))


def hovmoller_lat(store, var, *box):
    times, lat, _, sub = select_grid(store, var, *box)
    cos = np.cos(np.radians(lat))
    dump_rows(stats_row([int(times[t]), float(lat[y])], sub[t, y, :], cos[y])
              for t in np.argsort(times) for y in np.argsort(lat))


def hovmoller_lon(store, var, *box):
    times, lat, lon, sub = select_grid(store, var, *box)
    cos = np.cos(np.radians(lat))
    dump_rows(stats_row([int(times[t]), float(lon[x])], sub[t, :, x], cos)
              for t in np.argsort(times) for x in np.argsort(lon))


def shard(store, out):
    ds = xr.open_zarr(store, consolidated=None).load()
    for v in ds.variables.values():
        v.encoding = {}
    ds.to_zarr(out, zarr_format=3, mode="w",
               encoding={"sst": {"chunks": (1, 45, 45), "shards": (2, 90, 90)}})


def odd_store(out):
    rng = np.random.default_rng(3)
    lat = np.arange(59.0, -60.0, -2.0)           # descending, 60 rows
    lon = np.arange(1.0, 360.0, 2.0)             # 0..360, 180 columns
    time = pd.date_range("2010-01-01", periods=6, freq="D")
    sst = 15 + 10 * np.cos(np.radians(lat))[None, :, None] + rng.normal(0, 1, (6, lat.size, lon.size))
    sst[:, 10:20, 30:50] = np.nan                # a coastline inside chunks
    sst[2, 0:20, 0:45] = np.nan                  # one whole chunk of day 2: never written
    da = xr.DataArray(sst.astype(np.float32), dims=("time", "lat", "lon"),
                      coords={"time": time, "lat": lat, "lon": lon}, name="sst",
                      attrs={"units": "degC", "long_name": "packed sst"})
    enc = {"sst": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 20.0, "_FillValue": -32768,
                   "chunks": (1, 20, 45)},
           "time": {"units": "hours since 2010-01-01 00:00:00", "calendar": "proleptic_gregorian"}}
    da.to_dataset().to_zarr(out, zarr_format=2, encoding=enc, mode="w", consolidated=True)


def two_vars(out):
    """A Zarr v2 store with two variables on one grid, `sst` and `wind`, missing in different
    cells; prints per day the cells where either, sst, and wind are valid."""
    rng = np.random.default_rng(5)
    lat = np.arange(-29.5, 30.0, 1.0)
    lon = np.arange(-59.5, 60.0, 1.0)
    time = pd.date_range("2012-03-01", periods=3, freq="D")
    sst = (20 + rng.normal(0, 1, (3, lat.size, lon.size))).astype(np.float32)
    wind = (5 + rng.normal(0, 2, (3, lat.size, lon.size))).astype(np.float32)
    sst[:, :10, :] = np.nan                      # sst missing in the south
    wind[:, :, :20] = np.nan                     # wind missing in the west
    sst[0, :30, :60] = np.nan                    # day 0: a whole tile without sst, with some wind
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), sst), "wind": (("time", "lat", "lon"), wind)},
                    coords={"time": time, "lat": lat, "lon": lon})
    ds.to_zarr(out, zarr_format=2, mode="w", encoding={v: {"chunks": (1, 30, 60)} for v in ("sst", "wind")})
    either = (~np.isnan(sst)) | (~np.isnan(wind))
    json.dump([[int(either[t].sum()), int((~np.isnan(sst[t])).sum()), int((~np.isnan(wind[t])).sum())]
               for t in range(3)], sys.stdout)


def golden(store):
    ds = xr.open_zarr(store)
    times = pd.to_datetime(ds.time.values)
    lat, lon = ds.lat.values.astype("f8"), ds.lon.values.astype("f8")
    sst = ds.sst.values
    iso = lambda t: pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = {}
    # One day's cells on the equator, 160W..158W, by longitude.
    t = np.nonzero(times == pd.Timestamp("2008-09-01"))[0][0]
    y = np.nonzero(lat == 0.5)[0][0]
    xs = [x for x in np.argsort(lon) if -160 <= lon[x] <= -158 and not np.isnan(sst[t, y, x])]
    out["equator"] = [[iso(times[t]), 0.5, float(lon[x]), float(sst[t, y, x])] for x in xs]
    # Valid cells of one day.
    n = int((~np.isnan(sst[t])).sum())
    out["day_count"] = [[n, n, 0]]
    # A box over two days, bounds exclusive.
    tsel = (times >= pd.Timestamp("2008-09-01")) & (times < pd.Timestamp("2008-09-03"))
    box = sst[tsel][:, (lat > 45) & (lat < 60)][:, :, (lon > -150) & (lon < -120)]
    out["box_count"] = [[int((~np.isnan(box)).sum())]]
    # Per month over a 1x1 degree box, bounds inclusive: cells and mean, the first four months.
    cells = sst[:, (lat >= 40) & (lat <= 41)][:, :, (lon >= -140) & (lon <= -139)].astype("f8")
    months = times.to_period("M")
    rows = []
    for month in sorted(set(months))[:4]:
        v = cells[months == month]
        v = v[~np.isnan(v)]
        rows.append([iso(month.start_time), int(v.size), round(float(v.mean()), 3)])
    out["months"] = rows
    # Day of year and the largest value of one cell over the new year.
    tsel = (times >= pd.Timestamp("2008-12-30")) & (times <= pd.Timestamp("2009-01-02"))
    x = np.nonzero(lon == -150.5)[0][0]
    out["new_year"] = sorted([int(times[i].dayofyear), float(sst[i, y, x])] for i in np.nonzero(tsel)[0])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "tiles":
        tiles(sys.argv[2], sys.argv[3])
    elif cmd == "timeseries":
        timeseries(*sys.argv[2:10])
    elif cmd == "warm":
        warm(*sys.argv[2:11])
    elif cmd in ("timeavg", "climatology", "hovmoller-lat", "hovmoller-lon", "ddas"):
        {"timeavg": timeavg, "climatology": climatology,
         "hovmoller-lat": hovmoller_lat, "hovmoller-lon": hovmoller_lon, "ddas": ddas}[cmd](*sys.argv[2:10])
    elif cmd == "two-vars":
        two_vars(sys.argv[2])
    elif cmd == "shard":
        shard(sys.argv[2], sys.argv[3])
    elif cmd == "odd-store":
        odd_store(sys.argv[2])
    elif cmd == "golden":
        golden(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
