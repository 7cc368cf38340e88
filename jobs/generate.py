"""Generate code for every row of a Parquet table with StarCoder2.

    python jobs/generate.py --conf conf/local.yaml [--set generation.max_output_length=64 ...]
    spark-submit --py-files dist/starcoder_pipelines-*.whl jobs/generate.py --conf conf/starcoder2-3b.yaml
    starcoder-generate --conf conf/local.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/generate.py): make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.config import ConfigError, load_config  # noqa: E402

log = logging.getLogger("pipelines.job")


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Batch code generation with StarCoder2 on Spark")
    parser.add_argument("--conf", help="YAML config file (see conf/)", default=None)
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set generation.max_output_length=64 (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config = load_config(args.conf, args.set)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    log.info("config:\n%s", config.to_json())

    from pipelines import generation_job
    from pipelines.engine.memory_plan import MemoryPlanError
    from pipelines.spark.worker_failures import WorkerCrashError, WorkerEnvironmentError
    from pipelines.spark_session import build_session

    spark = build_session(config.spark)
    try:
        summary = generation_job.run(spark, config)
    except (ValueError, FileExistsError, PermissionError, MemoryPlanError, WorkerCrashError,
            WorkerEnvironmentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(summary.table())
    print(f"summary written to {config.output.path.rstrip('/')}/_summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
