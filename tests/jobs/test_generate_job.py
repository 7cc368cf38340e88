"""The generation job on real Spark: sharded atomic output, summary, resume, fail-fast checks."""

import json
import shutil
from collections import Counter

import pytest

from pipelines.jobs import generate as generation_job
from pipelines.jobs.config import config_from_dict
from pipelines.jobs.input_table import InputError
from pipelines.jobs.output_guard import OutputRefusedError as OutputExistsError

N_ROWS = 30


@pytest.fixture(scope="module")
def input_table(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("input") / "prompts.parquet")
    rows = [(f"row-{i}", f"def f{i}(x):\n    return x + {i}\n\ndef g{i}(", "python") for i in range(N_ROWS)]
    spark.createDataFrame(rows, "id string, prompt string, language string").repartition(3).write.parquet(path)
    return path


def job_config(input_path, output_path, model_dir, **overrides):
    data = {
        "input": {"path": input_path, "id_col": "id", "text_col": "prompt", "passthrough_cols": ["language"]},
        "model": {"source": str(model_dir)},
        "generation": {"max_output_length": 6, "batch_size": 4},
        "output": {"path": output_path, "shards": 3},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data[section][key] = value
    return config_from_dict(data)


def test_job_writes_every_row_once_with_flat_columns_and_summary(spark, input_table, tiny_model_dir, tmp_path):
    out = str(tmp_path / "out")
    summary = generation_job.run(spark, job_config(input_table, out, tiny_model_dir))
    df = spark.read.parquet(out)
    rows = df.collect()
    assert Counter(r.id for r in rows) == Counter(f"row-{i}" for i in range(N_ROWS))
    assert {"id", "language", "generation", "completion", "prompt_tokens", "completion_tokens", "finish_reason",
            "truncated", "error", "shard"} <= set(df.columns)
    for r in rows:
        assert r.generation[0].result.endswith(r.completion) and r.completion
        assert r.completion_tokens == int(r.generation[0].metadata["completion_tokens"]) <= 6
        assert r.error is None and r.language == "python" and r.truncated is False
    written = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert written["rows_in"] == written["rows_out"] == N_ROWS and written["rows_with_errors"] == 0
    assert written["completion_tokens"] == sum(r.completion_tokens for r in rows) == summary.completion_tokens
    assert written["prompt_tokens"] == sum(r.prompt_tokens for r in rows)
    assert written["tokens_per_second"] > 0 and written["shards_written_this_run"] == 3
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert "rows in / out" in summary.table() and "30 / 30" in summary.table()


def test_existing_output_is_refused_in_error_mode_before_generating(spark, input_table, tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="already exists.*overwrite.*resume"):
        generation_job.run(spark, job_config(input_table, str(tmp_path / "out"), tiny_model_dir))
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


def test_overwrite_replaces_an_earlier_output_and_nothing_else(spark, input_table, tiny_model_dir, tmp_path):
    out = str(tmp_path / "out")
    generation_job.run(spark, job_config(input_table, out, tiny_model_dir, generation__max_output_length=2))
    generation_job.run(spark, job_config(input_table, out, tiny_model_dir, output__mode="overwrite"))
    assert max(r.completion_tokens for r in spark.read.parquet(out).collect()) > 2
    assert spark.read.parquet(out).count() == N_ROWS
    (tmp_path / "out" / "stale.txt").write_text("not ours")
    with pytest.raises(OutputExistsError, match="holds files this project's jobs did not write: stale.txt"):
        generation_job.run(spark, job_config(input_table, out, tiny_model_dir, output__mode="overwrite"))
    assert (tmp_path / "out" / "stale.txt").read_text() == "not ours"


def test_resume_regenerates_only_unfinished_shards(spark, input_table, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    config = job_config(input_table, str(out), tiny_model_dir)
    generation_job.run(spark, config)
    before = {r.id: r.completion for r in spark.read.parquet(str(out)).collect()}
    # As if the driver died while shard 1 was being written: no shard marker, no job marker.
    shutil.rmtree(out / "shard=00001")
    (out / "_SUCCESS").unlink()
    resumed = generation_job.run(spark, job_config(input_table, str(out), tiny_model_dir, output__mode="resume"))
    assert resumed.shards_written_this_run == 1
    after = {r.id: r.completion for r in spark.read.parquet(str(out)).collect()}
    assert after == before


def test_resume_refuses_changed_settings(spark, input_table, tiny_model_dir, tmp_path):
    out = str(tmp_path / "out")
    generation_job.run(spark, job_config(input_table, out, tiny_model_dir))
    changed = job_config(input_table, out, tiny_model_dir, output__mode="resume", generation__max_output_length=9)
    with pytest.raises(OutputExistsError, match="cannot resume.*generation"):
        generation_job.run(spark, changed)


def test_missing_column_lists_the_columns(spark, input_table, tiny_model_dir, tmp_path):
    config = job_config(input_table, str(tmp_path / "o"), tiny_model_dir, input__text_col="code")
    with pytest.raises(InputError, match=r"'code' is not in the input; its columns are \['id', 'prompt', 'language'\]"):
        generation_job.run(spark, config)


def test_missing_input_path_is_named(spark, tiny_model_dir, tmp_path):
    with pytest.raises(InputError, match="nope.parquet does not exist"):
        generation_job.run(spark, job_config(str(tmp_path / "nope.parquet"), str(tmp_path / "o"), tiny_model_dir))


def test_null_ids_are_refused(spark, tiny_model_dir, tmp_path):
    path = str(tmp_path / "in.parquet")
    spark.createDataFrame([("a", "x = 1"), (None, "y = 2")], "id string, prompt string").write.parquet(path)
    with pytest.raises(InputError, match="1 null ids"):
        generation_job.run(spark, job_config(path, str(tmp_path / "o"), tiny_model_dir, input__passthrough_cols=[]))
