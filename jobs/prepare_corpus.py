"""Turn source files into prompt tables for the generation job.

    python jobs/prepare_corpus.py --source-dir src/ --out corpus/ [--glob '*.py'] [--humaneval]
    python jobs/prepare_corpus.py --source-table files.parquet --out corpus/   # columns path, content[, language]
    starcoder-prepare-corpus --source-dir src/ --out corpus/

A launcher for spark-submit and `python jobs/prepare_corpus.py`: the job is pipelines.jobs.prepare_corpus.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/prepare_corpus.py): make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.jobs.prepare_corpus import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
