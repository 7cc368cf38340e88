# Databricks notebook source
# MAGIC %md
# MAGIC # Fill-in-the-middle over a table
# MAGIC Each row has the code before (`prefix`) and after (`suffix`) a gap; StarCoder2 writes the
# MAGIC middle from the prompt `<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>`. The true
# MAGIC middle is kept in the table, so the job scores exact match and edit similarity per language.

# COMMAND ----------

import os

from pipelines.jobs import generate
from pipelines.jobs.config import config_from_dict
from pipelines.jobs.notebook import show, spark_session

spark = spark_session()

config = config_from_dict({
    "input": {
        "path": os.environ.get("STARCODER_INPUT", "bundled:sample-corpus/fim.parquet"),
        "id_col": "id", "prefix_col": "prefix", "suffix_col": "suffix", "middle_col": "middle",
        "language_col": "language", "passthrough_cols": ["source"],
    },
    "model": {"source": os.environ.get("STARCODER_MODEL_DIR", "bundled:demo-model")},
    "generation": {"max_output_length": 24, "batch_size": 16},
    "output": {"path": os.environ.get("STARCODER_OUTPUT", "output/notebook-fim"), "mode": "overwrite", "shards": 2},
}, source="notebooks/fill_in_the_middle.py")

# COMMAND ----------

summary = generate.run(spark, config)
print(summary.table())

# COMMAND ----------

show(spark.read.parquet(config.output.path).select("id", "middle", "completion", "exact_match", "edit_similarity"))
