"""Nothing lost: exactly-once output, bad input answered row by row, faults survived."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from job_tables import job, write_table
from pyspark.sql import functions as F

from pipelines import DocumentAssembler, StarCoderTransformer
from pipelines.jobs import generate as generation_job
from pipelines.jobs.input_table import InputError


@pytest.mark.slow
def test_ten_thousand_rows_come_out_exactly_once(spark, tiny_model_dir, tmp_path):
    rows = [(f"id-{i}", f"x{i % 97} = {i}") for i in range(10_000)]
    src = write_table(spark, tmp_path / "in", rows)
    config = job(src, tmp_path / "out", tiny_model_dir, generation={"max_output_length": 1, "batch_size": 64},
                 output={"shards": 3, "partitions_per_shard": 7})
    summary = generation_job.run(spark, config)
    ids = [r.id for r in spark.read.parquet(str(tmp_path / "out")).select("id").collect()]
    assert len(ids) == 10_000 and set(ids) == {r[0] for r in rows}
    assert summary.rows_in == summary.rows_out == 10_000


def test_duplicate_ids_are_kept_as_separate_rows(spark, tiny_model_dir, tmp_path):
    src = write_table(spark, tmp_path / "in", [("a", "x = 1"), ("a", "y = 2"), ("b", "z = 3")])
    generation_job.run(spark, job(src, tmp_path / "out", tiny_model_dir))
    out = spark.read.parquet(str(tmp_path / "out")).collect()
    assert Counter(r.id for r in out) == {"a": 2, "b": 1}
    assert {r.generation[0].result[:5] for r in out if r.id == "a"} == {"x = 1", "y = 2"}


def test_bad_texts_each_get_a_defined_row(spark, tiny_model_dir, tmp_path):
    long_text = "value = 1\n" * 3000
    rows = [("null", None), ("empty", ""), ("spaces", "   \n\t "), ("long", long_text),
            ("control", "a\x00b\x07c\x1b[0m"), ("emoji", "def 🦙():")]
    src = write_table(spark, tmp_path / "in", rows)
    generation_job.run(spark, job(src, tmp_path / "out", tiny_model_dir, generation={"max_input_length": 256}))
    out = {r.id: r for r in spark.read.parquet(str(tmp_path / "out")).collect()}
    assert set(out) == {r[0] for r in rows}
    assert out["null"].finish_reason == "empty_input" and out["null"].completion_tokens == 0
    assert out["empty"].finish_reason == "empty_input"
    assert out["spaces"].finish_reason in ("eos", "length") and out["spaces"].completion_tokens >= 1
    assert out["long"].truncated is True and out["long"].prompt_tokens == 256
    assert out["control"].generation[0].result.startswith("a\x00b\x07c")
    assert out["emoji"].generation[0].result.startswith("def 🦙():")
    assert all(r.error is None for r in out.values())


def test_invalid_utf8_is_replaced_not_fatal(spark, tiny_model_dir, tmp_path):
    # Parquet written by another tool: a string column holding bytes that are not UTF-8.
    table = pa.table({"id": ["good", "bad"], "prompt": pa.array([b"x = 1", b"y = \xff\xfe"], pa.binary())})
    path = tmp_path / "in.parquet"
    pq.write_table(table, path)
    raw = spark.read.parquet(str(path)).withColumn("prompt", F.col("prompt").cast("string"))
    docs = DocumentAssembler().setInputCol("prompt").setOutputCol("documents").transform(raw)
    out = StarCoderTransformer.loadSavedModel(str(tiny_model_dir)).setInputCols("documents") \
        .setMaxOutputLength(2).transform(docs).collect()
    results = {r.id: r.generation[0].result for r in out}
    assert results["bad"].startswith("y = \ufffd")


def test_text_column_of_the_wrong_type(spark, tiny_model_dir, tmp_path):
    src = write_table(spark, tmp_path / "in", [("a", 1)], "id string, prompt int")
    with pytest.raises(InputError, match="'prompt' has type int, expected string"):
        generation_job.run(spark, job(src, tmp_path / "out", tiny_model_dir))


def test_empty_table_gives_an_empty_complete_output(spark, tiny_model_dir, tmp_path):
    src = write_table(spark, tmp_path / "in", [], "id string, prompt string")
    summary = generation_job.run(spark, job(src, tmp_path / "out", tiny_model_dir))
    assert summary.rows_in == summary.rows_out == 0
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_corrupt_parquet_file_is_named(spark, tiny_model_dir, tmp_path):
    src = write_table(spark, tmp_path / "in", [("a", "x = 1")])
    (src / "part-99999-corrupt.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(InputError, match="part-99999-corrupt.parquet"):
        generation_job.run(spark, job(src, tmp_path / "out", tiny_model_dir))
    assert not (tmp_path / "out").exists()


def test_unwritable_output_path_fails_before_generating(spark, tiny_model_dir, tmp_path, load_log):
    src = write_table(spark, tmp_path / "in", [("a", "x = 1")])
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(PermissionError, match="file/out is not writable.*Not a directory"):
        generation_job.run(spark, job(src, blocker / "out", tiny_model_dir))


def test_bad_model_directory_fails_before_any_output(spark, tmp_path):
    src = write_table(spark, tmp_path / "in", [("a", "x = 1")])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match="model_type 't5' is an encoder-decoder model"):
        generation_job.run(spark, job(src, tmp_path / "out", tmp_path / "model"))
    assert not (tmp_path / "out").exists()


def test_a_failing_row_is_kept_with_its_error(spark, tiny_model_dir, tmp_path, inject_faults):
    inject_faults(fail_prompt_containing="BOOM")
    src = write_table(spark, tmp_path / "in", [("ok1", "x = 1"), ("bad", "BOOM = 2"), ("ok2", "y = 3")])
    summary = generation_job.run(spark, job(src, tmp_path / "out", tiny_model_dir, output={"on_error": "keep"}))
    out = {r.id: r for r in spark.read.parquet(str(tmp_path / "out")).collect()}
    assert set(out) == {"ok1", "bad", "ok2"}
    assert "injected failure" in out["bad"].error and out["bad"].finish_reason == "error"
    assert out["ok1"].error is None and out["ok1"].completion_tokens >= 1
    assert summary.rows_with_errors == 1


def test_a_failing_row_fails_the_job_when_asked_and_nothing_is_committed(spark, tiny_model_dir, tmp_path, inject_faults):
    inject_faults(fail_prompt_containing="BOOM")
    src = write_table(spark, tmp_path / "in", [("ok1", "x = 1"), ("bad", "BOOM = 2")])
    with pytest.raises(Exception, match="generation failed for the row with id bad"):
        generation_job.run(spark, job(src, tmp_path / "out", tiny_model_dir, output={"on_error": "fail"}))
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_out_of_memory_splits_the_batch_instead_of_failing(spark, tiny_model_dir, tmp_path, inject_faults):
    src = write_table(spark, tmp_path / "in", [(f"r{i}", f"v{i} = {i}") for i in range(12)])
    plain = generation_job.generations(spark.read.parquet(str(src)), job(src, tmp_path / "o1", tiny_model_dir))
    expected = {r.id: r.completion for r in plain.collect()}
    inject_faults(oom_above_batch=2)
    config = job(src, tmp_path / "o2", tiny_model_dir, output={"on_error": "fail"})
    got = {r.id: r.completion for r in generation_job.generations(spark.read.parquet(str(src)), config).collect()}
    assert got == expected


def test_a_worker_dying_mid_partition_is_retried_with_identical_output(spark, tiny_model_dir, tmp_path, inject_faults):
    src = write_table(spark, tmp_path / "in", [(f"r{i}", f"def f{i}():") for i in range(20)])
    params = {"do_sample": True, "random_seed": 5, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_output_length": 4}
    generation_job.run(spark, job(src, tmp_path / "calm", tiny_model_dir, generation=params))
    marker = tmp_path / "killed"
    inject_faults(kill_worker_once=str(marker))
    generation_job.run(spark, job(src, tmp_path / "stormy", tiny_model_dir, generation=params))
    assert marker.exists(), "the fault was not triggered"
    calm = {r.id: r.completion for r in spark.read.parquet(str(tmp_path / "calm")).collect()}
    stormy = {r.id: r.completion for r in spark.read.parquet(str(tmp_path / "stormy")).collect()}
    assert calm == stormy and len(calm) == 20


def test_weights_never_load_with_remote_code_or_pickle():
    root = Path(__file__).resolve().parents[2] / "pipelines"
    sources = "\n".join(p.read_text() for p in root.rglob("*.py"))
    assert "trust_remote_code=True" not in sources
    assert "use_safetensors=True" in (root / "engine" / "model_loader.py").read_text()
