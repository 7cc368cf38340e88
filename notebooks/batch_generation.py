# Databricks notebook source
# MAGIC %md
# MAGIC # Batch generation over a table
# MAGIC Runs the generation job (what `jobs/generate.py` runs) from a notebook: a Parquet table of
# MAGIC prompts in, a Parquet table of generations out, with a summary. Run locally it uses the
# MAGIC bundled demo model and sample corpus; on Databricks, set the paths to volumes or DBFS.

# COMMAND ----------

import os

from pipelines.jobs import generate
from pipelines.jobs.config import config_from_dict
from pipelines.jobs.notebook import show, spark_session

spark = spark_session()

config = config_from_dict({
    "input": {
        "path": os.environ.get("STARCODER_INPUT", "bundled:sample-corpus/prompts.parquet"),
        "id_col": "id", "text_col": "prompt", "passthrough_cols": ["source", "kind"],
    },
    "model": {"source": os.environ.get("STARCODER_MODEL_DIR", "bundled:demo-model")},
    "generation": {"max_output_length": 32, "batch_size": 16, "repetition_penalty": 1.2,
                   "stop_strings": ["\ndef ", "\nclass "]},
    "output": {"path": os.environ.get("STARCODER_OUTPUT", "output/notebook-batch"), "mode": "overwrite", "shards": 2},
}, source="notebooks/batch_generation.py")

# COMMAND ----------

summary = generate.run(spark, config)
print(summary.table())

# COMMAND ----------

generations = spark.read.parquet(config.output.path)
show(generations.select("id", "kind", "completion", "completion_tokens", "finish_reason"))
