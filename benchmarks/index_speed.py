"""Is the SQLite index of ``e3bench ls`` worth keeping? Times one ``ls`` query over 2,000 synthetic
records (2 batch sizes, 20 measured iterations of 64 tokens each, raw samples kept, one task) in
four ways and prints the ratios:

* ``rebuild``: the old index, rebuilt from every JSON record on every query;
* ``python``: no index, read every record and filter its rows in Python;
* ``index, warm``: the incremental index when nothing changed (a ``stat`` per file);
* ``index, 20 changed``: the incremental index after 20 records were rewritten.

    .venv/bin/python benchmarks/index_speed.py [--records 2000]

Measured on the shared 2-core development machine (2,000 records, 153 MB): rebuild 4.8 s, Python
filter 4.5 s, warm index 0.047 s (~100x faster than either), 20 changed records 0.10 s, first
query (cold index) 3.7 s. Reading and validating the records is the whole cost, so the index
stays, incremental.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from e3bench.bench import envinfo
from e3bench.core.timing import summarize
from e3bench.results import index, store
from e3bench.results.flatten import RUN_COLUMNS, TASK_COLUMNS, rows_of
from e3bench.results.schema import (
    BatchResult,
    Efficiency,
    ModelInfo,
    RawSamples,
    ResultRecord,
    TaskResult,
)

FILTERS = ["dtype=bf16", "batch_size=1"]
COLUMNS = ["run_id", "model", "dtype", "batch_size", "decode_tokens_per_s_mean"]


def _batch(rng: random.Random, bs: int, iters: int = 20, tokens: int = 64) -> BatchResult:
    itl = [[rng.uniform(8, 12) for _ in range(tokens - 1)] for _ in range(iters)]
    ttft = [rng.uniform(20, 40) for _ in range(iters)]
    e2e = [t + sum(g) for t, g in zip(ttft, itl, strict=True)]
    decode = [bs * (tokens - 1) / ((e - t) / 1e3) for e, t in zip(e2e, ttft, strict=True)]
    return BatchResult(
        batch_size=bs, iterations=iters, measured_s=sum(e2e) / 1e3, input_tokens_per_request_mean=128,
        output_tokens_per_request=tokens, e2e_ms=summarize(e2e), ttft_ms=summarize(ttft),
        tpot_ms=summarize([(e - t) / (tokens - 1) for e, t in zip(e2e, ttft, strict=True)]),
        itl_ms=summarize([x for g in itl for x in g]), prefill_tokens_per_s=summarize([bs * 128e3 / t for t in ttft]),
        decode_tokens_per_s=summarize(decode), throughput_tokens_per_s=bs * tokens * iters / (sum(e2e) / 1e3),
        requests_per_s=bs * iters / (sum(e2e) / 1e3),
        raw=RawSamples(e2e_ms=e2e, ttft_ms=ttft, itl_ms=itl, output_tokens=[tokens] * iters),
    )  # fmt: skip


def write_records(root: Path, n: int) -> None:
    rng = random.Random(0)
    manifest = envinfo.collect(sample_cpu=False)
    for i in range(n):
        dtype = ("fp32", "bf16", "fp16")[i % 3]
        cfg = {"model": f"m{i % 7}", "backend": "pytorch", "dtype": dtype, "device": "cpu", "sweep": f"s{i % 10}"}
        rec = ResultRecord(
            run_id=f"20260101T000000-{i:010d}", created_utc=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
            status="ok", config=cfg, config_hash=f"{i:016x}", manifest=manifest,
            model=ModelInfo(name=cfg["model"], source="hub", path="/m", architecture="decoder-only",
                            model_type="llama", parameters=135_000_000, weights_bytes=270_000_000, dtype=dtype,
                            device="cpu"),
            efficiency=Efficiency(load_time_s=1.0, load_note="", prompt_source="synthetic", peak_rss_bytes=2**30,
                                  generation=[_batch(rng, 1), _batch(rng, 4)]),
            effectiveness=[TaskResult(task="hellaswag", engine="e3bench", metrics={"acc": 0.3, "acc_norm": 0.35},
                                      stderr={"acc": 0.01, "acc_norm": 0.01}, n_items=500, duration_s=10,
                                      examples_per_s=50)],
        )  # fmt: skip
        store.save(rec, root, cfg["sweep"], stem=f"{i:06d}")


def rebuild_query(root: Path) -> list[dict]:
    """The old ``index.query``: a fresh SQLite file from every record, then the SELECT."""
    runs, tasks = rows_of(store.scan(root).records)
    path = root / ".old-index.sqlite"
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    with con:
        quoted = lambda cols: ", ".join(f'"{c}"' for c in cols)  # noqa: E731 ("limit" is an SQL word)
        con.execute(f"CREATE TABLE runs ({quoted(RUN_COLUMNS)})")
        con.execute(f"CREATE TABLE tasks ({quoted(TASK_COLUMNS)})")
        con.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                        [tuple(r.get(c) for c in RUN_COLUMNS) for r in runs])  # fmt: skip
        con.executemany(f"INSERT INTO tasks VALUES ({', '.join('?' * len(TASK_COLUMNS))})",
                        [tuple(r.get(c) for c in TASK_COLUMNS) for r in tasks])  # fmt: skip
    con.row_factory = sqlite3.Row
    sql = f"SELECT {', '.join(COLUMNS)} FROM runs WHERE dtype = ? AND batch_size = ? ORDER BY created_utc, batch_size"
    out = [dict(r) for r in con.execute(sql, ("bf16", 1))]
    con.close()
    return out


def python_query(root: Path) -> list[dict]:
    """No index: read every record, filter the rows in Python."""
    runs, _ = rows_of(store.scan(root).records)
    rows = [r for r in runs if r["dtype"] == "bf16" and r["batch_size"] == 1]
    rows.sort(key=lambda r: (r["created_utc"], r["batch_size"]))
    return [{c: r[c] for c in COLUMNS} for r in rows]


def timed(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_records(root, args.records)
        size = sum(p.stat().st_size for p in root.rglob("*.json"))
        print(f"{args.records} records, {size / 1e6:.0f} MB")
        query = lambda: index.query(root, FILTERS, COLUMNS)  # noqa: E731
        cold, want = timed(query, 1)
        warm, got = timed(query, args.reps * 3)
        assert got == want
        old, got_old = timed(lambda: rebuild_query(root), args.reps)
        py, got_py = timed(lambda: python_query(root), args.reps)
        assert [r["run_id"] for r in got_old] == [r["run_id"] for r in got_py] == [r["run_id"] for r in want]
        files = sorted(store.json_files(root))[:20]

        def changed() -> float:
            for p in files:
                p.write_text(p.read_text())  # same content, new mtime: re-read
            t0 = time.perf_counter()
            index.query(root, FILTERS, COLUMNS)
            return time.perf_counter() - t0

        inc = statistics.median(changed() for _ in range(args.reps))
        print(f"rebuild per query    {old:8.3f} s")
        print(f"python filter        {py:8.3f} s")
        print(f"index, cold (first)  {cold:8.3f} s")
        print(f"index, warm          {warm:8.3f} s")
        print(f"index, 20 changed    {inc:8.3f} s")
        print(f"ratio rebuild / warm index: {old / warm:.0f}x; python / warm index: {py / warm:.0f}x")


if __name__ == "__main__":
    main()
