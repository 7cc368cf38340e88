"""Side-by-side throughput benchmark: the pipeline against what users would otherwise write.

    python bench/run.py                      # full run (about 20-30 minutes on 2 cores)
    python bench/run.py --prompts 32 --repeats 1 --quick

In one run, on the same prompts (the bundled sample corpus), the same StarCoder2-architecture
model (111M parameters, real vocabulary, built here with a fixed seed) and the same settings
(greedy, --max-new-tokens, EOS honoured), it measures generated tokens per second and peak
memory of:
  1. naive: model-card `generate` per row in a pandas UDF
  2. expert: predict_batch_udf + Hugging Face batched generate
  3. ours end to end: the generation job's code path on local Spark
  4. ours, engine alone (outside Spark), fp32 and int8
  5. the ceiling: measured peak GEMM FLOP/s / (2 x parameters)
With --openvino, the same model exported to OpenVINO (fp32 and int8 weights, through
scripts/export_openvino.sh) runs on the openvino engine alone and end to end as well.
Each figure is the median of --repeats runs. Prints a table of ratios, writes results.json
and tokens_per_second_vs_batch.png into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold import warmup_prompts  # noqa: E402


# --- measurements that run in a fresh process (clean peak memory) ---------------------------

def _engine_run(model_dir, prompts, max_new, batch_size, dtype, threads):
    import resource

    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec

    engine = GenerationEngine.load(ModelSpec(source=model_dir, dtype=dtype, num_threads=threads))
    params = GenerationParams(max_output_length=max_new)
    engine.complete(warmup_prompts(2, prompts), GenerationParams(max_output_length=2), batch_size)
    started = time.perf_counter()
    results = engine.complete(prompts, params, batch_size)
    seconds = time.perf_counter() - started
    tokens = sum(r[0].completion_tokens for r in results)
    ids = [engine.tokenizer.encode(r[0].completion) for r in results]
    prompt_tokens = sum(r[0].prompt_tokens for r in results)
    return tokens, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ids, prompt_tokens


def _hf_run(model_dir, prompts, max_new, batch_size, threads):
    import resource

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from baselines import hf_batched_generate, load_hf

    tokenizer, model = load_hf(model_dir, padding_side="left")
    torch.set_num_threads(threads)
    hf_batched_generate(tokenizer, model, warmup_prompts(2, prompts), 2)
    started = time.perf_counter()
    tokens = 0
    for start in range(0, len(prompts), batch_size):
        tokens += sum(hf_batched_generate(tokenizer, model, prompts[start:start + batch_size], max_new)[1])
    return tokens, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None


def in_fresh_process(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def gemm_peak_flops(dtype: str, threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a size^3 product; int8: the faster of the engine's two int8 kernels."""
    import torch

    torch.set_num_threads(threads)
    if dtype == "int8":
        from pipelines.engine.int8_linear import packed_kernel_available

        a = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        b = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        products = [lambda: torch._int_mm(a, b)]
        if packed_kernel_available():
            a_u8, packed = a.view(torch.uint8), torch.ops.onednn.qlinear_prepack(b.t().contiguous(), None)
            scales, zeros = torch.ones(size), torch.zeros(size, dtype=torch.int64)
            products.append(lambda: torch.ops.onednn.qlinear_pointwise(
                a_u8, 1.0, 128, packed, scales, zeros, None, 1.0, 0, torch.float32, "none", [], ""))
    else:
        a, b = torch.randn(size, size), torch.randn(size, size)
        products = [lambda: torch.matmul(a, b)]
    best = float("inf")
    for product in products:
        product()
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def ceiling_with_prefill(peak_flops, n_params, lm_head_params, prompt_tokens, generated_tokens) -> float:
    """Generated tokens/s at peak GEMM speed, paying for the prompts' prefill too.

    A generated token costs 2 x parameters FLOPs; a prompt token, once, 2 x (parameters - LM
    head): only the last prompt position reaches the LM head, and it makes the first new token.
    """
    flops = generated_tokens * 2 * n_params + prompt_tokens * 2 * (n_params - lm_head_params)
    return round(peak_flops * generated_tokens / flops, 1)


def export_openvino(model_dir: str, dest: Path, weights: str) -> str:
    import subprocess

    subprocess.run(["bash", str(ROOT / "scripts" / "export_openvino.sh"), model_dir, str(dest), weights],
                   check=True, stdout=subprocess.DEVNULL)
    return str(dest)


# --- Spark approaches -------------------------------------------------------------------------

def pipeline_config(table: str, model_dir: str, out: str, generation: dict, **model):
    """The generation job's config for a benchmark table (id, prompt): one shard of two partitions,
    one thread per task, float32."""
    from pipelines.jobs.config import config_from_dict

    return config_from_dict({
        "input": {"path": table, "id_col": "id", "text_col": "prompt"},
        "model": {"source": model_dir, "num_threads": 1, "dtype": "float32", **model},
        "generation": generation,
        "output": {"path": out, "shards": 1, "partitions_per_shard": 2},
    })


def spark_session():
    from pyspark.sql import SparkSession

    from pipelines.jobs.session import with_master, worker_environment

    worker_environment()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), os.environ["PYTHONPATH"]])
    return (
        with_master(SparkSession.builder, "local[2]").appName("starcoder-pipelines-bench")
        .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000").getOrCreate()
    )


class PythonWorkerMemory:
    """Polls /proc for Spark's Python worker processes: the highest peak RSS (VmHWM) of one
    worker, and the highest summed RSS and PSS of all of them (PSS counts pages the workers
    share, such as weights mapped from one file, once in all)."""

    def __init__(self, interval: float = 0.5):
        import threading

        self.peak_mb = 0.0
        self.peak_rss_total_mb = 0.0
        self.peak_pss_total_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)

    @staticmethod
    def _field_mb(path: Path, key: str) -> float:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _poll(self, interval):
        while not self._stop.is_set():
            rss = pss = 0.0
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if b"pyspark" not in (proc / "cmdline").read_bytes():
                        continue
                    self.peak_mb = max(self.peak_mb, self._field_mb(proc / "status", "VmHWM"))
                    rss += self._field_mb(proc / "status", "VmRSS")
                    pss += self._field_mb(proc / "smaps_rollup", "Pss")
                except OSError:
                    continue
            self.peak_rss_total_mb = max(self.peak_rss_total_mb, rss)
            self.peak_pss_total_mb = max(self.peak_pss_total_mb, pss)
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def spark_approach(name, model_dir, table, warmup_table, max_new, batch_size, out_dir):
    """One approach over the table in a fresh local[2] session: (tokens, seconds, worker peak MB).

    A small warm-up run first loads the model into the Python workers, as a long job amortises it.
    """
    import baselines
    from pyspark.sql import functions as F

    from pipelines.jobs import generate as generation_job

    spark = spark_session()

    def run(path, new_tokens):
        out = f"{out_dir}/{name}-{time.time_ns()}"
        if name.startswith("pipeline"):
            config = pipeline_config(path, model_dir, out, {"max_output_length": new_tokens, "batch_size": batch_size})
            return generation_job.run(spark, config).completion_tokens
        udf = (baselines.naive_udf(model_dir, new_tokens) if name == "naive"
               else baselines.predict_batch_udf_generate(model_dir, new_tokens, batch_size))
        spark.read.parquet(path).repartition(2).select("id", udf(F.col("prompt")).alias("out")).write.parquet(out)
        return spark.read.parquet(out).agg(F.sum("out.tokens")).first()[0]

    try:
        with PythonWorkerMemory() as memory:
            run(warmup_table, 2)
            started = time.perf_counter()
            tokens = run(table, max_new)
            seconds = time.perf_counter() - started
        return tokens, seconds, memory.peak_mb
    finally:
        spark.stop()


# --- the run ----------------------------------------------------------------------------------

def median_run(fn, repeats):
    runs = [fn() for _ in range(repeats)]
    rates = [r[0] / r[1] for r in runs]
    best = runs[rates.index(statistics.median_low(rates))]
    summary = {"tokens_per_s": statistics.median(rates), "runs_tokens_per_s": [round(x, 2) for x in rates],
               "tokens": best[0], "seconds": round(best[1], 2), "peak_rss_mb": round(max(r[2] for r in runs), 1)}
    if len(best) > 4:
        summary["prompt_tokens"] = best[4]
    return summary, best


def token_agreement(reference: list[list[int]], other: list[list[int]]) -> dict:
    exact = sum(a == b for a, b in zip(reference, other)) / len(reference)
    prefix = []
    for a, b in zip(reference, other):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix.append(n / max(len(a), 1))
    return {"identical_completions": round(exact, 4), "mean_agreeing_prefix": round(sum(prefix) / len(prefix), 4)}


def spread(prompts: list[str], n: int) -> list[str]:
    """n prompts spread over the whole list, so subsets keep its length distribution."""
    step = max(1, len(prompts) // n)
    return prompts[::step][:n]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-prompts", type=int, default=16, help="the naive baseline runs on a spread subset")
    parser.add_argument("--expert-prompts", type=int, default=64)
    parser.add_argument("--sweep", default="1,4,16,32", help="batch sizes for the plot")
    parser.add_argument("--sweep-prompts", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true", help="skip the batch-size sweep")
    parser.add_argument("--openvino", action="store_true",
                        help="also export the model to OpenVINO and measure the openvino engine (the first export "
                             "installs the exporter's virtual environment: see scripts/export_openvino.sh)")
    parser.add_argument("--sweep-only", action="store_true",
                        help="add the batch-size sweep and plot to an existing --out/results.json")
    args = parser.parse_args(argv)

    import pandas as pd

    from devtools.model_builder import build_random_model
    from pipelines.models import bundled

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    model_dir = str(build_random_model(work / "model", "bench", seed=1234))
    corpus = pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")
    prompts = list(corpus["prompt"])
    prompts = (prompts * (args.prompts // len(prompts) + 1))[: args.prompts]
    tables = {}
    for name, subset in (("all", prompts), ("naive", spread(prompts, args.naive_prompts)),
                         ("expert", spread(prompts, args.expert_prompts)), ("warmup", warmup_prompts(4, prompts))):
        path = str(work / f"{name}.parquet")
        pd.DataFrame({"id": [f"p{i}" for i in range(len(subset))], "prompt": subset}).to_parquet(path)
        tables[name] = path

    n_params = 110_992_896
    lm_head_params = 49_152 * 768  # tied to the embedding: a lookup for prompt tokens, a GEMM per new token
    results = {"settings": vars(args), "model_parameters": n_params}
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    if args.sweep_only:
        results = json.loads((out / "results.json").read_text())
        results["sweep_settings"] = vars(args)
        run_sweep(results, model_dir, prompts, args, out, log)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["sweep"], indent=2))
        return 0

    log("engine alone, fp32")
    results["engine_fp32"], fp32 = median_run(
        lambda: in_fresh_process(_engine_run, model_dir, prompts, args.max_new_tokens, args.batch_size, "float32",
                                 args.threads), args.repeats)
    log("engine alone, int8")
    results["engine_int8"], int8 = median_run(
        lambda: in_fresh_process(_engine_run, model_dir, prompts, args.max_new_tokens, args.batch_size, "int8",
                                 args.threads), args.repeats)
    results["int8_vs_fp32_agreement"] = token_agreement(fp32[3], int8[3])
    # Random weights give flat logits, where int8 flips many argmaxes; the trained demo model shows
    # what quantisation does to a model with real preferences.
    demo = str(bundled.DEMO_MODEL)
    demo_fp32 = in_fresh_process(_engine_run, demo, prompts, args.max_new_tokens, args.batch_size, "float32", args.threads)
    demo_int8 = in_fresh_process(_engine_run, demo, prompts, args.max_new_tokens, args.batch_size, "int8", args.threads)
    results["int8_vs_fp32_agreement_demo_model"] = token_agreement(demo_fp32[3], demo_int8[3])
    spark_runs = [("pipeline", model_dir, tables["all"]), ("expert", model_dir, tables["expert"]),
                  ("naive", model_dir, tables["naive"])]
    if args.openvino:
        for weights in ("fp32", "int8"):
            log(f"openvino export, {weights} weights")
            ov_dir = export_openvino(model_dir, work / f"openvino-{weights}", weights)
            log(f"engine alone, openvino {weights}")
            results[f"engine_openvino_{weights}"], ov_run = median_run(
                lambda: in_fresh_process(_engine_run, ov_dir, prompts, args.max_new_tokens, args.batch_size,
                                         "float32", args.threads), args.repeats)
            results[f"openvino_{weights}_vs_fp32_agreement"] = token_agreement(fp32[3], ov_run[3])
            spark_runs.append((f"pipeline_openvino_{weights}", ov_dir, tables["all"]))
    for name, model, table in spark_runs:
        log(f"spark: {name}")
        results[name], _ = median_run(
            lambda: spark_approach(name, model, table, tables["warmup"], args.max_new_tokens, args.batch_size,
                                   str(work)),
            args.repeats)

    log("GEMM ceiling")
    results["prompt_tokens"] = results["engine_fp32"]["prompt_tokens"]
    for dtype in ("float32", "int8"):
        peak = gemm_peak_flops(dtype, args.threads)
        results[f"gemm_peak_{dtype}_gflops"] = round(peak / 1e9, 1)
        results[f"ceiling_{dtype}_tokens_per_s"] = round(peak / (2 * n_params), 1)
        results[f"ceiling_{dtype}_with_prefill_tokens_per_s"] = ceiling_with_prefill(
            peak, n_params, lm_head_params, results["prompt_tokens"], results["engine_fp32"]["tokens"])

    if not args.quick:
        run_sweep(results, model_dir, prompts, args, out, log)

    ours = results["pipeline"]["tokens_per_s"]
    results["ratios"] = {
        "pipeline / naive": round(ours / results["naive"]["tokens_per_s"], 2),
        "pipeline / expert": round(ours / results["expert"]["tokens_per_s"], 2),
        "pipeline / engine_fp32": round(ours / results["engine_fp32"]["tokens_per_s"], 3),
        "engine_int8 / engine_fp32": round(results["engine_int8"]["tokens_per_s"] / results["engine_fp32"]["tokens_per_s"], 2),
        "engine_fp32 / ceiling_fp32": round(results["engine_fp32"]["tokens_per_s"] / results["ceiling_float32_tokens_per_s"], 3),
        "engine_int8 / ceiling_int8": round(results["engine_int8"]["tokens_per_s"] / results["ceiling_int8_tokens_per_s"], 3),
        "engine_fp32 / ceiling_fp32_with_prefill": round(
            results["engine_fp32"]["tokens_per_s"] / results["ceiling_float32_with_prefill_tokens_per_s"], 3),
    }
    if args.openvino:
        for weights in ("fp32", "int8"):
            ov_pipeline = results[f"pipeline_openvino_{weights}"]["tokens_per_s"]
            ov_engine = results[f"engine_openvino_{weights}"]["tokens_per_s"]
            results["ratios"].update({
                f"pipeline_openvino_{weights} / naive": round(ov_pipeline / results["naive"]["tokens_per_s"], 2),
                f"pipeline_openvino_{weights} / expert": round(ov_pipeline / results["expert"]["tokens_per_s"], 2),
                f"pipeline_openvino_{weights} / engine_openvino_{weights}": round(ov_pipeline / ov_engine, 3),
                f"engine_openvino_{weights} / engine_fp32": round(ov_engine / results["engine_fp32"]["tokens_per_s"], 2),
            })
        results["ratios"]["engine_openvino_fp32 / ceiling_fp32_with_prefill"] = round(
            results["engine_openvino_fp32"]["tokens_per_s"] / results["ceiling_float32_with_prefill_tokens_per_s"], 3)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def run_sweep(results, model_dir, prompts, args, out, log) -> None:
    """Tokens/s against batch size for the engine and for HF batched generate, outside Spark."""
    sweep = spread(prompts, args.sweep_prompts)
    results["sweep"] = {"ours": {}, "hf_batched_generate": {}}
    for bs in [int(x) for x in args.sweep.split(",")]:
        subset = sweep[: max(8, min(len(sweep), bs * 4))] if bs == 1 else sweep
        log(f"sweep batch {bs}")
        t, s, *_ = in_fresh_process(_engine_run, model_dir, subset, args.max_new_tokens, bs, "float32", args.threads)
        results["sweep"]["ours"][bs] = round(t / s, 2)
        t, s, *_ = in_fresh_process(_hf_run, model_dir, subset, args.max_new_tokens, bs, args.threads)
        results["sweep"]["hf_batched_generate"][bs] = round(t / s, 2)
    plot(results, out / "tokens_per_second_vs_batch.png")


def print_table(results: dict) -> None:
    rows = [("approach", "tokens/s (median)", "runs", "peak RSS MB")]
    for key in ("naive", "expert", "pipeline", "engine_fp32", "engine_int8", "pipeline_openvino_fp32",
                "pipeline_openvino_int8", "engine_openvino_fp32", "engine_openvino_int8"):
        if key not in results:
            continue
        r = results[key]
        rows.append((key, f"{r['tokens_per_s']:.1f}", " ".join(map(str, r["runs_tokens_per_s"])), f"{r['peak_rss_mb']:.0f}"))
    rows.append(("ceiling fp32", f"{results['ceiling_float32_tokens_per_s']:.1f}", "", ""))
    rows.append(("ceiling int8", f"{results['ceiling_int8_tokens_per_s']:.1f}", "", ""))
    rows.append(("ceiling fp32 + prefill", f"{results['ceiling_float32_with_prefill_tokens_per_s']:.1f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print()
    for name, value in results["ratios"].items():
        print(f"{name:32s} {value}")
    print(f"{'int8 agreement with fp32':32s} {results['int8_vs_fp32_agreement']}")
    print(f"{'  on the trained demo model':32s} {results['int8_vs_fp32_agreement_demo_model']}")
    for weights in ("fp32", "int8"):
        if f"openvino_{weights}_vs_fp32_agreement" in results:
            print(f"{f'openvino {weights} agreement':32s} {results[f'openvino_{weights}_vs_fp32_agreement']}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, series in results["sweep"].items():
        sizes = sorted(int(k) for k in series)
        ax.plot(sizes, [series[k] for k in sizes], marker="o", label=name)
    ax.axhline(results["naive"]["tokens_per_s"], color="grey", linestyle="--", label="naive (per row, in Spark)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("generated tokens / s")
    ax.set_title("StarCoder2-architecture 111M, fp32, 2 CPU cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
