"""Generate code for every row of a Parquet table with StarCoder2.

    python jobs/generate.py --conf conf/local.yaml [--set generation.max_output_length=64 ...]
    spark-submit --py-files dist/starcoder_pipelines-*.whl jobs/generate.py --conf conf/starcoder2-3b.yaml
    starcoder-generate --conf conf/local.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/generate.py): make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.job_main import main_for  # noqa: E402


def main(argv=None) -> int:
    return main_for("generation_job", "Batch code generation with StarCoder2 on Spark", argv)


if __name__ == "__main__":
    raise SystemExit(main())
