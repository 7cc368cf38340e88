"""Scoring throughput: the scoring job's path against a naive per-row forward in a pandas UDF.

    python bench/score.py                          # 256 documents, the 111M benchmark model
    python bench/score.py --docs 64 --size small   # a quick look

On the sample corpus' full texts (prompt + reference body), the same StarCoder2-architecture
model (built here with a fixed seed, fp32) and local[2] Spark with one thread per task, it
measures scored tokens per second of:
  1. naive: transformers `model(ids, labels=ids)` one document at a time in a pandas UDF
     (the model loaded once per Python worker), perplexity = exp(loss);
  2. ours: jobs/score.py's path (scoring_job.run: DocumentAssembler -> StarCoderScorer ->
     sharded Parquet);
  3. the ceiling: measured peak fp32 GEMM FLOP/s on the same cores / (2 x parameters), the cost
     of one token through every weight, LM head included (scoring runs it for every token).
Each approach: a warm-up run that loads the model into the workers, then the median of
--repeats runs. Both write their scores; the perplexities of documents the naive forward saw
whole (it truncates at the window) are compared too. Results go to
--out/scoring.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd  # module level: the pandas UDF's type hints are resolved against it

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold import warmup_prompts  # noqa: E402


def naive_score_udf(model_dir: str, max_length: int):
    """Per row: tokenizer, one forward pass with labels, perplexity = exp(loss)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("perplexity double, tokens int")
    def score(texts: pd.Series) -> pd.DataFrame:
        import torch
        from baselines import load_hf

        tokenizer, model = load_hf(model_dir)
        perplexities, tokens = [], []
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            with torch.no_grad():
                loss = model(ids, labels=ids).loss.item() if ids.shape[1] > 1 else math.nan
            perplexities.append(math.exp(loss))
            tokens.append(ids.shape[1])
        return pd.DataFrame({"perplexity": perplexities, "tokens": tokens})

    return score


def timed_spark_run(name, model_dir, table, warmup_table, work, args):
    """(tokens, median seconds of --repeats runs, worker peak MB, {id: (perplexity, tokens)}) in a
    fresh local[2] session, after a warm-up run that loads the model into the workers."""
    from pyspark.sql import functions as F
    from run import PythonWorkerMemory, spark_session

    from pipelines.jobs import score as scoring_job
    from pipelines.jobs.config import config_from_dict

    spark = spark_session()

    def run(path):
        out = f"{work}/{name}-{time.time_ns()}"
        if name == "pipeline":
            config = config_from_dict({
                "input": {"path": path, "id_col": "id", "text_col": "text"},
                "model": {"source": model_dir, "num_threads": 1, "dtype": "float32"},
                "scoring": {"max_input_length": args.window, "batch_size": args.batch_size},
                "output": {"path": out, "shards": 1, "partitions_per_shard": 2},
            })
            scoring_job.run(spark, config)
        else:
            udf = naive_score_udf(model_dir, args.window)
            spark.read.parquet(path).repartition(2).select("id", udf(F.col("text")).alias("s")) \
                .select("id", "s.perplexity", "s.tokens").write.parquet(out)
        written = spark.read.parquet(out)
        return written.agg(F.sum("tokens")).first()[0], {r.id: (r.perplexity, r.tokens) for r in written.collect()}

    try:
        with PythonWorkerMemory() as memory:
            run(warmup_table)
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                tokens, perplexities = run(table)
                times.append(time.perf_counter() - started)
        return tokens, statistics.median(times), memory.peak_mb, perplexities
    finally:
        spark.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--naive-docs", type=int, default=64, help="the naive baseline runs on a spread subset")
    parser.add_argument("--size", default="bench", help="model size of devtools.model_builder.SIZES")
    parser.add_argument("--window", type=int, default=1024, help="maxInputLength (naive: truncation)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per approach (median)")
    parser.add_argument("--threads", type=int, default=2, help="cores for the GEMM ceiling (local[2])")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    from run import gemm_peak_flops, in_fresh_process, spread

    from devtools.model_builder import build_random_model
    from pipelines.engine.checkpoint import tensor_index
    from pipelines.models import bundled

    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    model_dir = str(build_random_model(work / "model", args.size, seed=1234))
    # Weights as stored (the tied embedding once: a lookup for input, one GEMM as the LM head).
    n_params = sum(e.numel for e in tensor_index(model_dir).values())

    corpus = pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")
    texts = [p + (r or "") for p, r in zip(corpus["prompt"], corpus["reference"])]
    texts = (texts * (args.docs // len(texts) + 1))[: args.docs]
    tables = {}
    for name, subset in (("all", texts), ("naive", spread(texts, args.naive_docs)), ("warmup", warmup_prompts(4, texts))):
        path = str(work / f"{name}.parquet")
        pd.DataFrame({"id": [f"d{i}" for i in range(len(subset))], "text": subset}).to_parquet(path)
        tables[name] = path

    results = {"settings": vars(args), "model_parameters": n_params, "documents": len(texts)}
    # Before Spark starts (a JVM winding down took a third off one measurement): best of three,
    # each in a fresh process.
    log("GEMM ceiling")
    peak_flops = max(in_fresh_process(gemm_peak_flops, "float32", args.threads) for _ in range(3))
    log(f"pipeline: {len(texts)} documents")
    tokens, seconds, peak, ours = timed_spark_run("pipeline", model_dir, tables["all"], tables["warmup"], work, args)
    results["pipeline"] = {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
                           "peak_rss_mb": round(peak)}
    log(f"naive: {args.naive_docs} documents")
    tokens, seconds, peak, naive = timed_spark_run("naive", model_dir, tables["naive"], tables["warmup"], work, args)
    results["naive"] = {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
                        "peak_rss_mb": round(peak)}
    # The naive subset's documents are rows of the full table: same text, same perplexity expected
    # wherever the naive forward saw the whole document (it truncates at the window; ours strides).
    by_text = dict(zip(texts, (f"d{i}" for i in range(len(texts)))))
    subset = spread(texts, args.naive_docs)
    pairs = [(ours[by_text[t]], naive[f"d{i}"]) for i, t in enumerate(subset)]
    whole = [(a[0], b[0]) for a, b in pairs if a[1] == b[1]]
    results["perplexity_compared_documents"] = len(whole)
    results["max_relative_perplexity_difference_vs_naive"] = max(abs(a - b) / b for a, b in whole)

    results["gemm_peak_float32_gflops"] = round(peak_flops / 1e9, 1)
    results["ceiling_tokens_per_s"] = round(peak_flops / (2 * n_params), 1)
    ours_rate = results["pipeline"]["tokens_per_s"]
    results["ratios"] = {
        "pipeline / naive": round(ours_rate / results["naive"]["tokens_per_s"], 2),
        "pipeline / ceiling": round(ours_rate / results["ceiling_tokens_per_s"], 3),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scoring.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
