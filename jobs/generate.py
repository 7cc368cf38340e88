"""Generate code for every row of a Parquet table with StarCoder2.

    python jobs/generate.py --conf conf/local.yaml [--set generation.max_output_length=64 ...]
    spark-submit --py-files dist/starcoder_pipelines-*.whl jobs/generate.py --conf conf/starcoder2-3b.yaml
    starcoder-generate --conf conf/local.yaml

A launcher for spark-submit and `python jobs/generate.py`: the job is pipelines.jobs.generate.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/generate.py): make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.jobs.generate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
