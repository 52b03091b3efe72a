#!/usr/bin/env python3
"""InfraMind's forest next to scikit-learn's RandomForestRegressor on the same honest rows.

For each data set (real builds, a CI-like simulated history, the demo simulation) the runs are
ingested into a throw-away SQLite store with the `inframind` binary, which then trains with the
temporal split (`train --split temporal --output json`) and exports the very rows it trained and
scored on (`features export`: admission-time features only, the label, holdout membership).
scikit-learn fits the same hyperparameters (100 trees, depth 15, every feature per split,
bootstrap, seed 42) on the temporal training rows and is scored on the temporal holdout with
the same MAE, R² and rank accuracy (pairs of one pipeline with different configs whose
durations differ by more than 5 %; a predicted tie counts half).

Run through benches/sklearn_compare.sh (it installs scikit-learn into target/sklearn-venv).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import mean_absolute_error, r2_score

TIE_FRACTION = 0.05
CONFIG_COLUMNS = ("cpu_req", "mem_req_gb", "concurrency")


def rank_accuracy(pipeline, configs, y, pred):
    right, pairs = 0.0, 0
    n = len(y)
    for i in range(n):
        for j in range(i + 1, n):
            if pipeline[i] != pipeline[j] or configs[i] == configs[j]:
                continue
            a, b = y[i], y[j]
            if abs(a - b) <= TIE_FRACTION * max(abs(a), abs(b)):
                continue
            pairs += 1
            g = pred[i] - pred[j]
            right += 0.5 if g == 0 else float((g > 0) == (a > b))
    return (right / pairs if pairs else float("nan")), pairs


def run(bin_path, env, *args):
    out = subprocess.run([bin_path, *args], env=env, check=True, capture_output=True, text=True)
    return out.stdout


def compare(name, bin_path, runs_file, workdir):
    env = dict(os.environ)
    env["INFRAMIND_DATABASE_URL"] = f"sqlite://{workdir / 'runs.db'}"
    env["INFRAMIND_MODELS_DIR"] = str(workdir / "models")
    env.pop("INFRAMIND_REDIS_URL", None)
    run(bin_path, env, "ingest", str(runs_file))
    ours = json.loads(run(bin_path, env, "train", "--split", "temporal", "--limit", "100000", "--output", "json"))
    matrix = workdir / "features.csv"
    run(bin_path, env, "features", "export", "--split", "temporal", "--limit", "100000", "--out", str(matrix))
    with matrix.open() as f:
        rows = list(csv.DictReader(f))
    meta = {"row", "started_at_ms", "duration_s", "random_holdout", "temporal_holdout"}
    features = [c for c in rows[0].keys() if c not in meta]
    x = np.array([[float(r[c]) for c in features] for r in rows])
    y = np.array([float(r["duration_s"]) for r in rows])
    test = np.array([r["temporal_holdout"] == "1" for r in rows])
    model = RandomForestRegressor(n_estimators=100, max_depth=15, max_features=1.0, min_samples_split=2,
                                  min_samples_leaf=1, bootstrap=True, random_state=42, n_jobs=-1)
    model.fit(x[~test], y[~test])
    pred = model.predict(x[test])
    xt = x[test]
    pipeline = xt[:, features.index("pipeline")]
    configs = [tuple(r) for r in xt[:, [features.index(c) for c in CONFIG_COLUMNS]]]
    acc, pairs = rank_accuracy(pipeline, configs, y[test], pred)
    theirs = {"mae_s": mean_absolute_error(y[test], pred), "r2": r2_score(y[test], pred),
              "rank_accuracy": acc, "rank_pairs": pairs}
    mine = ours["temporal_holdout"]
    print(f"\n{name}: {len(rows)} rows, {int(test.sum())} in the temporal holdout")
    print("| model | MAE (s) | R² | rank accuracy | pairs |")
    print("|---|---|---|---|---|")
    for label, m in (("InfraMind (smartcore)", mine), ("scikit-learn", theirs)):
        ra = m.get("rank_accuracy")
        ra = "-" if ra is None or ra != ra else f"{ra:.3f}"
        print(f"| {label} | {m['mae_s']:.2f} | {m['r2']:.3f} | {ra} | {m.get('rank_pairs', 0)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the inframind binary")
    ap.add_argument("--real", help="real builds (JSON lines)")
    ap.add_argument("--sim-runs", type=int, default=2000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = []
        if a.real and Path(a.real).exists():
            sets.append(("real builds", Path(a.real)))
        for label, flags in (("simulated, CI-like", ["--ci"]), ("simulated, demo", [])):
            f = tmp / f"sim{len(sets)}.jsonl"
            run(a.bin, dict(os.environ), "simulate", "--runs", str(a.sim_runs), "--out", str(f), *flags)
            sets.append((label, f))
        for i, (label, f) in enumerate(sets):
            d = tmp / f"set{i}"
            d.mkdir()
            compare(label, a.bin, f, d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
