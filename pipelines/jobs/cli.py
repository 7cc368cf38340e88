"""The command line the generation and scoring jobs share: --conf and --set, a Spark session,
errors as one line.

`main_for(run, description, argv)` runs a job's `run(spark, config)` (which returns a summary with
`table()`) and returns the exit code: 0 done, 1 the job refused or failed with a message, 2 a bad
config.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines.jobs.config import ConfigError, load_config

log = logging.getLogger("pipelines.job")


def parse_args(argv, description: str):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--conf", help="YAML config file (see conf/)", default=None)
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set generation.max_output_length=64 (repeatable)",
    )
    return parser.parse_args(argv)


def main_for(run, description: str, argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv, description)
    try:
        config = load_config(args.conf, args.set)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    log.info("config:\n%s", config.to_json())

    from pipelines.engine.memory_plan import MemoryPlanError
    from pipelines.jobs.session import build_session
    from pipelines.jobs.sharded_output import OutputWriteError
    from pipelines.spark.worker_failures import WorkerCrashError, WorkerEnvironmentError

    spark = build_session(config.spark)
    try:
        summary = run(spark, config)
    except (ValueError, FileExistsError, PermissionError, MemoryPlanError, WorkerCrashError,
            WorkerEnvironmentError, OutputWriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(summary.table())
    print(f"summary written to {config.output.path.rstrip('/')}/_summary.json")
    return 0
