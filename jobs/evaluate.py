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

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/evaluate.py): make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.jobs.evaluate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
