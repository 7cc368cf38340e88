"""Score a model on HumanEval with the Spark pipeline: n samples per problem, sandboxed tests, pass@k.

    python jobs/evaluate.py --conf conf/local.yaml --samples 5 --k 1,5 --out output/humaneval
    python jobs/evaluate.py --conf conf/local.yaml --canonical --out output/harness-check
    starcoder-evaluate --conf conf/local.yaml --canonical --out output/harness-check

A launcher for spark-submit and `python jobs/evaluate.py`: the job is pipelines.jobs.evaluate.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/evaluate.py): make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.jobs.evaluate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
