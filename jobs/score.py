"""Score every row of a Parquet table with StarCoder2: perplexity, log-probabilities, tokens.

    python jobs/score.py --conf conf/score-local.yaml [--set scoring.max_input_length=1024 ...]
    spark-submit --py-files dist/starcoder_pipelines-*.whl jobs/score.py --conf conf/score-local.yaml
    starcoder-score --conf conf/score-local.yaml

A launcher for spark-submit and `python jobs/score.py`: the job is pipelines.jobs.score.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/score.py): make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.jobs.score import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
