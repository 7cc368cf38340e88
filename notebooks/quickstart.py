# Databricks notebook source
# MAGIC %md
# MAGIC # Quickstart: StarCoder2 code generation, Spark NLP style
# MAGIC The usage from Spark NLP's `starcoder2_3b_int8` model page, with only the import changed.
# MAGIC `MODEL_DIR` is a Hugging Face StarCoder2 directory: on Databricks a volume or DBFS path
# MAGIC holding `bigcode/starcoder2-3b`; run locally it is the bundled demo model.

# COMMAND ----------

import os

from pipelines.jobs.notebook import show, spark_session
from pipelines.models import bundled

spark = spark_session()
model_dir = os.environ.get("STARCODER_MODEL_DIR", str(bundled.DEMO_MODEL))

# COMMAND ----------

from pyspark.ml import Pipeline

from pipelines import DocumentAssembler, StarCoderTransformer

data = spark.createDataFrame([[1, "def add(a, b):"]]).toDF("id", "text")
document_assembler = DocumentAssembler().setInputCol("text").setOutputCol("documents")
starcoder = StarCoderTransformer.loadSavedModel(model_dir, spark) \
    .setMaxOutputLength(50).setDoSample(False) \
    .setInputCols(["documents"]).setOutputCol("generation")
results = Pipeline().setStages([document_assembler, starcoder]).fit(data).transform(data)
results.select("generation.result").show(truncate=False)

# COMMAND ----------

# MAGIC %md Each generation carries its metrics in the annotation metadata.

# COMMAND ----------

show(results.selectExpr("id", "generation[0].metadata AS metadata"))
