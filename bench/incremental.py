"""Work not done: the result cache on a grown table, and duplicate prompts run once.

    python bench/incremental.py                       # about 30 minutes on 2 cores
    python bench/incremental.py --rows 64 --repeats 1 # a quick look

Two workloads, each a side-by-side set of generation jobs (jobs/generate.py, each a fresh process
with a fresh local Spark session: cold), on the same StarCoder2-architecture model (111M
parameters, built here with a fixed seed, engine auto), greedy:

1. Incremental: day 1 is a table of --rows distinct prompts, run with cache.path; day 2 is that
   table with 10% new rows, run with the same cache.path. Beside it, day 2 run in full (no cache).
   Day 2's model time against the full run's, and its output against the full run's, row by row.
2. Duplicates: a corpus where 30% of the rows repeat a prompt of the others (copies drawn with
   Zipf weights, as licence headers and vendored files repeat), from the bundled sample corpus and
   jobs/prepare_corpus.py's output on Python's own standard library. Run by this checkout (each
   distinct prompt once) and by --baseline-ref, both without a cache. The baseline's engine
   already shared greedy duplicates that met in one engine call (one partition's batch of rows),
   and nothing else: sampled duplicates (--sample-seed), and greedy ones across partitions and
   shards, each ran again.

"Model time" is the time the model tasks spend, summed over tasks: each task's line "partition N:
R rows, T tokens in S s" (a worker's model load included), which both checkouts print alike.
Beside it: the job's generation time (the shard loop: reading, deduplicating, generating,
writing; the summary's generation_seconds) and, for this checkout, the engine's own time on the
requests it ran (request_seconds). Medians of --repeats. Writes bench/results/incremental.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# The last commit whose jobs generated every row (before each distinct request ran once).
DEFAULT_BASELINE = "db1d0be"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def job_conf(work: Path, name: str, table: str, model: str, out: str, cache: str | None, args) -> Path:
    conf = {
        "spark": {"master": "local[2]", "conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8"}},
        "input": {"path": table, "id_col": "id", "text_col": "prompt"},
        "model": {"source": model},
        "generation": {"max_output_length": args.max_new_tokens, "batch_size": args.batch_size,
                       **({"do_sample": True, "random_seed": args.sample_seed, "temperature": 0.8}
                          if args.sample_seed is not None else {})},
        "output": {"path": out, "mode": "error", "shards": args.shards},
    }
    if cache:
        conf["cache"] = {"path": cache}
    path = work / f"{name}.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(conf))
    return path


def run_job(checkout: Path, conf: Path) -> dict:
    """One generation job in a fresh process from `checkout`; its summary and output rows."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYSPARK_PYTHON": sys.executable}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(checkout / "jobs" / "generate.py"), "--conf", str(conf)],
                          cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"job {conf} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    out = json.loads(conf.read_text())["output"]["path"]
    summary = json.loads(Path(out, "_summary.json").read_text())
    import pandas as pd

    rows = pd.read_parquet(out)
    engine_seconds = None
    if "request_seconds" in rows.columns:
        ran = rows[~rows["cached"]].drop_duplicates(["shard", "request"])
        engine_seconds = float(ran["request_seconds"].sum())
    tasks = re.findall(r"partition -?\d+: \d+ rows, \d+ tokens in ([\d.]+)s", done.stdout + done.stderr)
    return {"wall_seconds": wall, "generation_seconds": summary["generation_seconds"], "engine_seconds": engine_seconds,
            "model_seconds": sum(float(t) for t in tasks),
            "summary": {k: summary.get(k) for k in ("rows_out", "requests_distinct", "cache_hits", "requests_generated",
                                                     "model_seconds_saved", "completion_tokens_this_run")},
            "completions": dict(zip(rows["id"], rows["completion"]))}


def same_rows(a: dict, b: dict) -> tuple[int, int]:
    """(rows equal, rows) between two runs' completions by id."""
    assert a.keys() == b.keys(), "the runs wrote different ids"
    return sum(a[k] == b[k] for k in a), len(a)


def prompt_pool(work: Path) -> list[str]:
    """Distinct prompts: the bundled sample corpus, then prepare_corpus's completion rows from the stdlib."""
    import pandas as pd

    from pipelines.models import bundled

    sample = pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")
    prompts = [p for p in sample["prompt"] if p]
    corpus = work / "stdlib-corpus"
    stdlib = Path(json.__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(ROOT / "jobs" / "prepare_corpus.py"), "--source-dir", str(stdlib / "email"),
                    "--glob", "*.py", "--out", str(corpus), "--master", "local[2]"],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable},
                   check=True, capture_output=True)
    prepared = pd.read_parquet(corpus / "prompts.parquet").sort_values("id")
    prompts += [p for p in prepared["prompt"] if p]
    return list(dict.fromkeys(prompts))  # distinct, in order


def write_table(path: Path, ids: list[str], prompts: list[str]) -> str:
    import pandas as pd

    pd.DataFrame({"id": ids, "prompt": prompts}).to_parquet(path)
    return str(path)


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# Per workload: ratio name -> (this checkout's run key, the other side's run key); and the run keys
# whose medians are reported, under their names in results["medians"].
RATIOS = {
    "incremental": {
        "day2_vs_full_model": ("day2_model_seconds", "full_model_seconds"),
        "day2_vs_full_engine": ("day2_engine_seconds", "full_engine_seconds"),
        "day2_vs_full_generation": ("day2_generation_seconds", "full_generation_seconds"),
    },
    "duplicates": {
        "duplicates_vs_baseline_model": ("ours_model_seconds", "baseline_model_seconds"),
        "duplicates_vs_baseline_generation": ("ours_generation_seconds", "baseline_generation_seconds"),
    },
}
MEDIANS = {
    "incremental": {k: k for k in ("day2_model_seconds", "full_model_seconds", "day2_generation_seconds",
                                   "full_generation_seconds")},
    "duplicates": {f"{side}_duplicates_{what}_seconds": f"{side}_{what}_seconds"
                   for side in ("ours", "baseline") for what in ("model", "generation")},
}


def medians(results: dict) -> dict:
    """Each ratio as the ratio of the two sides' medians, each run's ratio beside it, and the medians."""
    out = {}
    for workload, ratios in RATIOS.items():
        runs = results[workload]
        if not runs:
            continue
        for name, (ours, other) in ratios.items():
            out[name] = median_of(runs, ours) / median_of(runs, other)
            out[f"{name}_runs"] = [round(r[ours] / r[other], 4) for r in runs]
        out.update({name: median_of(runs, key) for name, key in MEDIANS[workload].items()})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=128, help="distinct prompts of day 1 and of the duplicates corpus")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    # Several decode waves per partition (rows / partitions / batch size), so that the model's time
    # follows the rows it runs rather than how full the last batch of a partition is.
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="incremental,duplicates", help="which of the two to run")
    parser.add_argument("--sample-seed", type=int, default=None,
                        help="sample (temperature 0.8) with this randomSeed instead of greedy decoding")
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE,
                        help="the commit to compare with (default: the last before each distinct request ran once)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "incremental.json"))
    args = parser.parse_args(argv)

    from devtools.model_builder import build_random_model
    from peers import cpu_name

    work = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    model = str(build_random_model(work / "model", "bench", seed=1234))
    baseline = work / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline_ref], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        pool = prompt_pool(work)
        new = max(1, args.rows // 10)
        assert len(pool) >= args.rows + new, f"{len(pool)} distinct prompts, {args.rows + new} needed"
        rng = random.Random(0)
        rng.shuffle(pool)
        day1 = write_table(work / "day1.parquet", [f"r{i}" for i in range(args.rows)], pool[:args.rows])
        day2 = write_table(work / "day2.parquet", [f"r{i}" for i in range(args.rows + new)], pool[:args.rows + new])
        # 30% of the rows are copies: rows = distinct / 0.7; each copy picks a prompt with Zipf weights.
        copies = round(args.rows / 0.7) - args.rows
        weights = [1 / (k + 1) for k in range(args.rows)]
        copied = rng.choices(pool[:args.rows], weights=weights, k=copies)
        dup_prompts = pool[:args.rows] + copied
        dup_ids = [f"d{i}" for i in range(len(dup_prompts))]
        order = list(range(len(dup_prompts)))
        rng.shuffle(order)
        duplicated = write_table(work / "dup.parquet", [dup_ids[i] for i in order], [dup_prompts[i] for i in order])

        results = {"settings": {**vars(args), "model": "StarCoder2-architecture 111M, random weights (seed 1234)",
                                "cpu": cpu_name(), "new_rows": new, "duplicate_rows": copies,
                                "rows_duplicates_corpus": len(dup_prompts)},
                   "incremental": [], "duplicates": []}
        for repeat in range(args.repeats):
            if "incremental" in args.workloads:
                cache = str(work / f"cache-{repeat}")
                log(f"repeat {repeat + 1}: day 1 ({args.rows} rows, filling the cache)")
                first = run_job(ROOT, job_conf(work, f"day1-{repeat}", day1, model, str(work / f"o-day1-{repeat}"), cache, args))
                log(f"repeat {repeat + 1}: day 2 ({args.rows + new} rows, {new} new) from the cache")
                second = run_job(ROOT, job_conf(work, f"day2-{repeat}", day2, model, str(work / f"o-day2-{repeat}"), cache, args))
                log(f"repeat {repeat + 1}: day 2 in full (no cache)")
                full = run_job(ROOT, job_conf(work, f"full-{repeat}", day2, model, str(work / f"o-full-{repeat}"), None, args))
                equal, rows = same_rows(second["completions"], full["completions"])
                results["incremental"].append({
                    "day2_model_seconds": second["model_seconds"], "full_model_seconds": full["model_seconds"],
                    "day1_generation_seconds": first["generation_seconds"],
                    "day2_generation_seconds": second["generation_seconds"], "day2_engine_seconds": second["engine_seconds"],
                    "full_generation_seconds": full["generation_seconds"], "full_engine_seconds": full["engine_seconds"],
                    "day2_summary": second["summary"], "rows_equal_to_full": equal, "rows": rows})
                log(f"  model time: day 2 {second['model_seconds']:.1f}s vs full {full['model_seconds']:.1f}s; job: "
                    f"{second['generation_seconds']:.1f}s vs {full['generation_seconds']:.1f}s; {equal}/{rows} rows equal")

            if "duplicates" in args.workloads:
                log(f"repeat {repeat + 1}: duplicates corpus ({len(dup_prompts)} rows, {copies} copies), this checkout")
                ours = run_job(ROOT, job_conf(work, f"dup-ours-{repeat}", duplicated, model, str(work / f"o-dup-{repeat}"),
                                              None, args))
                log(f"repeat {repeat + 1}: duplicates corpus, {args.baseline_ref}")
                today = run_job(baseline, job_conf(work, f"dup-base-{repeat}", duplicated, model,
                                                   str(work / f"o-base-{repeat}"), None, args))
                equal, rows = same_rows(ours["completions"], today["completions"])
                results["duplicates"].append({
                    "ours_model_seconds": ours["model_seconds"], "baseline_model_seconds": today["model_seconds"],
                    "ours_generation_seconds": ours["generation_seconds"], "ours_engine_seconds": ours["engine_seconds"],
                    "baseline_generation_seconds": today["generation_seconds"], "ours_summary": ours["summary"],
                    "rows_equal_to_baseline": equal, "rows": rows})
                log(f"  model time: ours {ours['model_seconds']:.1f}s vs baseline {today['model_seconds']:.1f}s; job: "
                    f"{ours['generation_seconds']:.1f}s vs {today['generation_seconds']:.1f}s; {equal}/{rows} rows equal")

        results["medians"] = medians(results)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["medians"], indent=2))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
