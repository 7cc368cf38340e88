"""The real size: a model with bigcode/starcoder2-3b's exact configuration (3.03B parameters).

    python bench/real_size.py                       # builds the model (6 GB, bf16) under /tmp
    python bench/real_size.py --model /path/to/starcoder2-3b --repeats 3

Random weights (no hub here) with the real architecture and vocabulary: speed and memory are
those of StarCoder2-3B; the text is not. On 16 sample-corpus prompts of the shorter half and
16 new tokens (greedy), it measures:
  1. the engine alone, in a fresh process per dtype (float32, bfloat16, int8): tokens/s (median
     of --repeats runs after a warm-up), seconds to load, peak RSS;
  2. the generation job end to end on local[2] with spark.task.cpus=2 (one task at a time, two
     threads), float32 and int8 (--job-dtypes; auto is the default setting): tokens/s, the first
     run's seconds (the workers load the model) and the Python worker's peak RSS;
  3. two tasks at once (spark.task.cpus=1) in bfloat16, the dtype the file stores: the workers
     map the same weights, so their summed PSS stays near one copy while each one's RSS counts it;
  4. with --openvino: the engine alone and the job on an OpenVINO export (scripts/export_openvino.sh;
     `--openvino export --openvino-weights int8,int4` makes one per weight format, timed, with the
     exporter's peak RSS), in the plugin's default precision (dtype auto);
  5. the GEMM ceilings: measured peak GEMM FLOP/s / (2 x parameters).
Writes results_3b.json into --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold import warmup_prompts  # noqa: E402

from run import PythonWorkerMemory, gemm_peak_flops, in_fresh_process, spread  # noqa: E402


def build_3b(dest: Path) -> str:
    """starcoder2-3b's configuration with random weights, saved as bf16 safetensors."""
    import torch
    from transformers import Starcoder2ForCausalLM

    from devtools.model_builder import (
        STARCODER2_3B,
        save_model_dir,
        starcoder2_config,
    )

    torch.manual_seed(0)
    sizes = {k: STARCODER2_3B[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                           "num_attention_heads", "num_key_value_heads", "sliding_window")}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16: a float32 copy would need 12 GB more
    try:
        model = Starcoder2ForCausalLM(starcoder2_config("tiny", **sizes))
    finally:
        torch.set_default_dtype(previous)
    return str(save_model_dir(model, dest))


def export_openvino(model_dir: str, dest: Path, weights: str) -> tuple[str, dict]:
    """scripts/export_openvino.sh with `weights` (int8, int4): (the export, its seconds, peak RSS and size)."""
    import resource
    import subprocess

    started = time.perf_counter()
    subprocess.run(["bash", str(ROOT / "scripts" / "export_openvino.sh"), model_dir, str(dest), weights],
                   check=True, stdout=subprocess.DEVNULL)
    return str(dest), {"seconds": round(time.perf_counter() - started, 1),
                       "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                       "size_mb": round(sum(f.stat().st_size for f in dest.iterdir()) / 2**20)}


def _engine_runs(model_dir, prompts, max_new, batch_size, dtype, threads, repeats):
    import resource

    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec

    rates, completions, loads = [], None, []
    for _ in range(repeats):
        # A fresh engine per timed run: OpenVINO's prefix cache would keep the prompts of the last one.
        engine = results = None
        started = time.perf_counter()
        engine = GenerationEngine.load(ModelSpec(source=model_dir, dtype=dtype, device="cpu", num_threads=threads))
        loads.append(time.perf_counter() - started)
        engine.complete(warmup_prompts(2, prompts), GenerationParams(max_output_length=2), batch_size)
        started = time.perf_counter()
        results = engine.complete(prompts, GenerationParams(max_output_length=max_new), batch_size)
        rates.append(sum(r[0].completion_tokens for r in results) / (time.perf_counter() - started))
        completions = [r[0].completion for r in results]
    return {
        "tokens_per_s": round(statistics.median(rates), 3),
        "runs_tokens_per_s": [round(r, 3) for r in rates],
        "load_seconds": round(statistics.median(loads), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "prompt_tokens": sum(r[0].prompt_tokens for r in results),
    }, completions


def job_runs(model_dir, table, warmup_table, max_new, batch_size, dtype, task_cpus, repeats, work):
    """The generation job on local[2]: tokens/s, median of `repeats` runs, each in a fresh session after
    a warm-up run on other prompts (in which the workers load the model)."""
    from pyspark.sql import SparkSession

    from pipelines.jobs import generate as generation_job
    from pipelines.jobs.config import config_from_dict
    from pipelines.jobs.session import with_master, worker_environment

    worker_environment()

    def run(spark, path, new_tokens):
        config = config_from_dict({
            "input": {"path": path, "id_col": "id", "text_col": "prompt"},
            "model": {"source": model_dir, "dtype": dtype, "device": "cpu"},
            "generation": {"max_output_length": new_tokens, "batch_size": batch_size},
            "output": {"path": f"{work}/job-{time.time_ns()}", "shards": 1, "partitions_per_shard": 2 // task_cpus},
        })
        started = time.perf_counter()
        summary = generation_job.run(spark, config)
        return summary.completion_tokens / (time.perf_counter() - started)

    rates, firsts = [], []
    with PythonWorkerMemory() as memory:
        for _ in range(repeats):  # a fresh session (fresh workers) per timed run: nothing cached between them
            spark = (with_master(SparkSession.builder, "local[2]").appName("starcoder-pipelines-bench-3b")
                     .config("spark.ui.enabled", "false").config("spark.task.cpus", str(task_cpus)).getOrCreate())
            try:
                started = time.perf_counter()
                run(spark, warmup_table, 2)
                firsts.append(time.perf_counter() - started)
                rates.append(run(spark, table, max_new))
            finally:
                spark.stop()
    return {"tokens_per_s": round(statistics.median(rates), 3), "runs_tokens_per_s": [round(r, 3) for r in rates],
            "first_run_seconds": round(statistics.median(firsts), 1),  # the workers load the model: a job's fixed cost
            "worker_peak_rss_mb": round(memory.peak_mb),
            "workers_peak_pss_total_mb": round(memory.peak_pss_total_mb),
            "workers_peak_rss_total_mb": round(memory.peak_rss_total_mb)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a StarCoder2-3B directory; default: build one under a temp dir")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtypes", default="float32,bfloat16,int8", help="engine-alone dtypes")
    parser.add_argument("--job-dtypes", default="float32,int8",
                        help="end-to-end dtypes (one task at a time); auto: what the job runs by default")
    parser.add_argument("--skip-shared", action="store_true", help="skip the two-workers bf16 run")
    parser.add_argument("--openvino", default="",
                        help="an OpenVINO export of --model to run too, or 'export' to make them first")
    parser.add_argument("--openvino-weights", default="int8", help="with --openvino export: the weight formats, e.g. int8,int4")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--update", action="store_true",
                        help="keep the figures of an earlier run in --out and replace only those measured now")
    args = parser.parse_args(argv)

    import pandas as pd

    from pipelines.engine.checkpoint import summarize_checkpoint
    from pipelines.engine.tokenizer import CodeTokenizer
    from pipelines.models import bundled

    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="bench-3b-"))
    model_dir = args.model
    if not model_dir:
        log("building the 3B model (bf16)")
        model_dir = build_3b(work / "starcoder2-3b-random")
    corpus = pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")
    lengths = [len(ids) for ids in CodeTokenizer.from_dir(model_dir).encode_batch(list(corpus["prompt"]))]
    shorter = [p for p, n in sorted(zip(corpus["prompt"], lengths), key=lambda x: x[1])][: len(lengths) // 2]
    prompts = spread(shorter, args.prompts)
    tables = {}
    for name, subset in (("all", prompts), ("warmup", warmup_prompts(2, prompts))):
        tables[name] = str(work / f"{name}.parquet")
        pd.DataFrame({"id": [f"p{i}" for i in range(len(subset))], "prompt": subset}).to_parquet(tables[name])

    checkpoint = summarize_checkpoint(model_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results_3b.json"
    results = {"engine": {}, "job": {}}
    if args.update and results_file.exists():
        results = json.loads(results_file.read_text())
    results.update(settings=vars(args), model_parameters=checkpoint.parameters, stored_dtype=checkpoint.stored_dtype)

    def save():  # after every stage: a long run that stops keeps what it measured
        results_file.write_text(json.dumps(results, indent=2) + "\n")

    completions = {}
    for dtype in filter(None, args.dtypes.split(",")):
        log(f"engine alone, {dtype}")
        results["engine"][dtype], completions[dtype] = in_fresh_process(
            _engine_runs, model_dir, prompts, args.max_new_tokens, args.batch_size, dtype, args.threads, args.repeats)
        log(f"  {results['engine'][dtype]}")
        save()
    if "float32" in completions:
        for dtype in completions:
            same = sum(a == b for a, b in zip(completions["float32"], completions[dtype]))
            results["engine"][dtype]["identical_to_float32"] = f"{same}/{len(prompts)}"
    for dtype in filter(None, args.job_dtypes.split(",")):
        log(f"job end to end, {dtype}, one task at a time")
        results["job"][dtype] = job_runs(model_dir, tables["all"], tables["warmup"], args.max_new_tokens,
                                         args.batch_size, dtype, 2, args.repeats, work)
        log(f"  {results['job'][dtype]}")
        save()
    if not args.skip_shared:
        log("job end to end, bfloat16, two tasks at once (weights shared through the page cache)")
        results["job"]["bfloat16_two_tasks"] = job_runs(model_dir, tables["all"], tables["warmup"],
                                                        args.max_new_tokens, args.batch_size, "bfloat16", 1, 1, work)
        log(f"  {results['job']['bfloat16_two_tasks']}")
        save()
    for weights in filter(None, args.openvino_weights.split(",")) if args.openvino else ():
        key = f"openvino_{weights}"
        openvino_dir = args.openvino
        if openvino_dir == "export":
            log(f"exporting to OpenVINO ({weights} weights)")
            openvino_dir, results[f"{key}_export"] = export_openvino(model_dir, work / f"openvino-{weights}", weights)
            log(f"  {results[f'{key}_export']}")
        log(f"engine alone, {key}")
        results["engine"][key], _ = in_fresh_process(
            _engine_runs, openvino_dir, prompts, args.max_new_tokens, args.batch_size, "auto", args.threads, args.repeats)
        log(f"  {results['engine'][key]}")
        save()
        log(f"job end to end, {key}, one task at a time")
        results["job"][key] = job_runs(openvino_dir, tables["all"], tables["warmup"], args.max_new_tokens,
                                       args.batch_size, "auto", 2, args.repeats, work)
        log(f"  {results['job'][key]}")
        save()
    log("GEMM ceilings")
    for dtype in ("float32", "int8"):
        peak = gemm_peak_flops(dtype, args.threads)
        results[f"gemm_peak_{dtype}_gflops"] = round(peak / 1e9, 1)
        results[f"ceiling_{dtype}_tokens_per_s"] = round(peak / (2 * checkpoint.parameters), 2)
    save()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
