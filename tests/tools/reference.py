#!/usr/bin/env python3
"""Reference computations for the integration tests, with numpy on what xarray reads.

  reference.py tiles STORE VAR
      Per chunk with at least one valid cell: index [t, y, x], count, min, max, sum,
      wsum (cos(lat)-weighted sum), weight (sum of cos(lat)), m2. JSON list on stdout.
  reference.py odd-store OUT
      Writes a Zarr v2 store as xarray does, with int16 values, scale_factor/add_offset,
      _FillValue, descending latitude, longitude 0..360 and some never-written chunks.
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


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "tiles":
        tiles(sys.argv[2], sys.argv[3])
    elif cmd == "odd-store":
        odd_store(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
