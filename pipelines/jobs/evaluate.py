"""Score a model on HumanEval with the Spark pipeline: n samples per problem, sandboxed tests, pass@k.

    python jobs/evaluate.py --conf conf/local.yaml --samples 5 --k 1,5 --out output/humaneval
    python jobs/evaluate.py --conf conf/local.yaml --canonical --out output/harness-check

The model, Spark, generation and evaluation settings come from the config (its input/output
sections are not used). With --canonical the problems' own solutions are checked instead of
generations: the harness's self-test (164/164 must pass).

Completions run in the kernel sandbox (bubblewrap, else unshare). Where neither works the job
refuses to start; --allow-weak-sandbox (evaluation.allow_weak_sandbox) runs them with the
in-process guard only, and the summary says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from pipelines.jobs.config import ConfigError, load_config

log = logging.getLogger("pipelines.evaluate")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default=None, help="YAML config: spark, model, generation and evaluation sections")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", required=True, help="output directory (samples, problems, summary)")
    parser.add_argument("--samples", type=int, default=1, help="completions per problem (n)")
    parser.add_argument("--k", default="1", help="comma-separated k values for pass@k")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (n > 1 samples)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per test run")
    parser.add_argument("--canonical", action="store_true", help="check the canonical solutions (harness self-test)")
    parser.add_argument("--allow-weak-sandbox", action="store_true",
                        help="without kernel isolation, run completions with the in-process guard only")
    return parser.parse_args(argv)


def sandbox_summary(counts: dict[str, int]) -> str:
    """In words: what the checks ran in, per backend, with the number of checks."""
    from pipelines.evaluation.isolation import describe

    return "; ".join(f"{describe(backend)} ({n} checks)" for backend, n in sorted(counts.items()))


def generate_samples(problems, config, samples: int, temperature: float | None):
    from pyspark.sql import functions as F

    from pipelines.jobs import generate as generation_job

    overrides = dict(n_return_sequences=samples, return_full_text=False, stop_preset="python")
    if samples > 1 or temperature is not None:
        overrides.update(do_sample=True, temperature=temperature or 0.8, top_p=0.95, top_k=0)
        if config.generation.random_seed is None:
            overrides["random_seed"] = 0
    for key, value in overrides.items():
        setattr(config.generation, key, value)
    config.input.id_col, config.input.text_col = "task_id", "prompt"
    pipeline = generation_job.build_pipeline(config, config.model.source)
    prompted = generation_job.with_prompt(problems, config)
    generated = pipeline.fit(prompted).transform(prompted)
    return generated.select(
        "task_id", "prompt", "test", "entry_point",
        F.posexplode(F.col("generation")).alias("sample", "annotation"),
    ).select(
        "task_id", "prompt", "test", "entry_point", "sample",
        F.col("annotation.result").alias("completion"),
        F.col("annotation.metadata")["finish_reason"].alias("finish_reason"),
    )


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config = load_config(args.conf, args.set)
        ks = [int(k) for k in args.k.split(",")]
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if max(ks) > args.samples and not args.canonical:
        print(f"error: pass@{max(ks)} needs --samples >= {max(ks)}", file=sys.stderr)
        return 2

    from pipelines.jobs.output_guard import OutputRefusedError
    from pipelines.jobs.output_swap import WholeOutput

    try:
        WholeOutput.check(args.out, {}, "--out")  # before the session: a refused --out fails at once
    except OutputRefusedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    from pyspark.sql import functions as F

    from pipelines.evaluation.humaneval import (
        check_completions,
        per_problem,
        problems_frame,
    )
    from pipelines.evaluation.sandbox import (
        SandboxLimits,
        SandboxSettings,
        SandboxUnavailable,
        resolve_backend,
    )
    from pipelines.jobs.session import build_session
    from pipelines.spark.cluster import default_parallelism

    sandbox = SandboxSettings(allow_weak=args.allow_weak_sandbox or config.evaluation.allow_weak_sandbox,
                              hidden_paths=tuple(config.evaluation.hidden_paths))
    try:
        backend = resolve_backend(sandbox)  # here first, so that a machine without isolation fails fast
    except SandboxUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if backend == "weak":
        log.warning("no kernel isolation: completions run with the in-process guard only (--allow-weak-sandbox)")

    started = time.time()
    spark = build_session(config.spark)
    try:
        output = WholeOutput(spark, args.out, "evaluate", {}, "--out")
        problems = problems_frame(spark, args.limit)
        if args.canonical:
            samples = problems.select("task_id", "prompt", "test", "entry_point", F.lit(0).alias("sample"),
                                      F.col("canonical").alias("completion"), F.lit("canonical").alias("finish_reason"))
            ks = [1]
        else:
            samples = generate_samples(problems, config, args.samples, args.temperature)
        limits = SandboxLimits(timeout_s=args.timeout, cpu_s=int(args.timeout) + 1)
        checked = check_completions(samples.repartition(default_parallelism(spark) * 2), limits, sandbox)
        out = output.path
        checked.drop("test").write.mode("overwrite").parquet(f"{out}/samples.parquet")
        checked = spark.read.parquet(f"{out}/samples.parquet")
        scores = per_problem(checked, ks)
        spark.createDataFrame(scores).write.mode("overwrite").parquet(f"{out}/problems.parquet")
        statuses = {r["status"]: r["count"] for r in checked.groupBy("status").count().collect()}
        sandboxes = {r["sandbox"]: r["count"] for r in checked.groupBy("sandbox").count().collect()}
        summary = {
            "problems": len(scores),
            "samples_per_problem": 1 if args.canonical else args.samples,
            "passed_problems": int((scores["c"] > 0).sum()),
            **{f"pass@{k}": round(float(scores[f"pass@{k}"].mean()), 4) for k in ks},
            "statuses": statuses,
            "sandbox": sandbox_summary(sandboxes),
            "model": "canonical solutions" if args.canonical else config.model.source,
            "seconds": round(time.time() - started, 1),
        }
        output.fs.write_text(f"{out}/summary.json", json.dumps(summary, indent=2) + "\n")
        output.commit()
    except OutputRefusedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key.ljust(width)}  {value}")
    return 0

