"""Small input tables and job configs that tests in several folders build (tests/ is on the path:
its conftest.py puts it there)."""

from pipelines.jobs.config import config_from_dict


def job(input_path, output_path, model_dir, generation=None, output=None, **input_settings):
    return config_from_dict({
        "input": {"path": str(input_path), "id_col": "id", "text_col": "prompt", **input_settings},
        "model": {"source": str(model_dir)},
        "generation": {"max_output_length": 2, "batch_size": 16, **(generation or {})},
        "output": {"path": str(output_path), "shards": 2, **(output or {})},
    })


def write_table(spark, path, rows, schema="id string, prompt string"):
    spark.createDataFrame(rows, schema).write.parquet(str(path))
    return path
