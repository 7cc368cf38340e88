"""Each distinct request runs once: within a run (duplicates) and across runs (cache.path).

The prompts that reach an engine are counted where the engine receives them
(faults: record_prompts_to), so these tests see the model's work, not the job's bookkeeping.
"""

import json
import shutil

import pytest

from pipelines.jobs import generate as generation_job
from pipelines.jobs import score as scoring_job
from pipelines.jobs.config import config_from_dict
from pipelines.jobs.output_guard import OutputRefusedError
from pipelines.spark.result_cache import SEGMENT_PREFIX

# Columns that say where a row's result came from, not what it is.
PROVENANCE = ("cached", "request_seconds", "generation", "shard")


@pytest.fixture
def recorded(faults_file, tmp_path):
    """The prompts that reach an engine while the test runs, one entry per prompt per call."""
    path = tmp_path / "prompts.jsonl"
    faults_file.write_text(json.dumps({"record_prompts_to": str(path)}))

    def prompts():
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def clear():
        path.unlink(missing_ok=True)

    prompts.clear = clear
    yield prompts
    faults_file.unlink(missing_ok=True)


def table(spark, path, n, duplicates_of=0, start=0):
    """n rows with distinct prompts, then `duplicates_of` rows repeating the first prompts."""
    rows = [(f"row-{i}", f"def f{i}(x):\n    return x * {i}\n") for i in range(start, start + n)]
    rows += [(f"dup-{i}", rows[i % n][1]) for i in range(duplicates_of)]
    spark.createDataFrame(rows, "id string, prompt string").repartition(3).write.parquet(str(path))
    return str(path)


def config(input_path, output_path, model_dir, cache=None, generation=None, **output):
    return config_from_dict({
        "input": {"path": input_path, "id_col": "id", "text_col": "prompt"},
        "model": {"source": str(model_dir)},
        "generation": {"max_output_length": 5, "batch_size": 8, **(generation or {})},
        "output": {"path": str(output_path), "shards": 2, **output},
        "cache": {"path": str(cache) if cache else None},
    })


def rows_by_id(spark, path):
    return {r["id"]: r for r in (row.asDict() for row in spark.read.parquet(str(path)).collect())}


def same_results(a: dict, b: dict) -> None:
    """Row for row, every column but provenance, and the generation annotations but their `cached` key."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        assert {k: v for k, v in x.items() if k not in PROVENANCE} == {k: v for k, v in y.items() if k not in PROVENANCE}
        strip = [(g.result, {k: v for k, v in g.metadata.items() if k != "cached"}) for g in x["generation"]]
        assert strip == [(g.result, {k: v for k, v in g.metadata.items() if k != "cached"}) for g in y["generation"]]


def test_duplicates_run_once_and_every_row_gets_its_own_id(spark, tiny_model_dir, tmp_path, recorded):
    src = table(spark, tmp_path / "in", 6, duplicates_of=9)
    summary = generation_job.run(spark, config(src, tmp_path / "out", tiny_model_dir))
    assert sorted(recorded()) == sorted(f"def f{i}(x):\n    return x * {i}\n" for i in range(6))
    rows = rows_by_id(spark, tmp_path / "out")
    assert len(rows) == 15
    for i in range(9):
        dup, first = rows[f"dup-{i}"], rows[f"row-{i % 6}"]
        assert dup["completion"] == first["completion"] and dup["request"] == first["request"]
        assert dup["generation"][0].metadata["id"] == f"dup-{i}"  # its own metadata, not the first row's
        assert dup["cached"] is False
    assert (summary.requests_distinct, summary.cache_hits, summary.requests_generated) == (6, 0, 6)
    assert summary.model_seconds_saved > 0
    written = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert written["requests_distinct"] == 6 and written["requests_generated"] == 6 and written["cache_hits"] == 0


@pytest.mark.slow  # four jobs
def test_duplicates_give_what_each_row_would_get_alone(spark, tiny_model_dir, tmp_path, recorded):
    """Greedy and seeded sampling with two samples: a duplicated table's rows equal the rows of the
    same prompts run without duplicates."""
    for generation in ({}, {"do_sample": True, "random_seed": 7, "n_return_sequences": 2, "temperature": 1.5}):
        name = "sampled" if generation else "greedy"
        unique = table(spark, tmp_path / f"u-{name}", 5)
        duplicated = table(spark, tmp_path / f"d-{name}", 5, duplicates_of=5)
        generation_job.run(spark, config(unique, tmp_path / f"ou-{name}", tiny_model_dir, generation=generation))
        recorded.clear()
        generation_job.run(spark, config(duplicated, tmp_path / f"od-{name}", tiny_model_dir, generation=generation))
        assert len(recorded()) == 5
        alone, together = rows_by_id(spark, tmp_path / f"ou-{name}"), rows_by_id(spark, tmp_path / f"od-{name}")
        same_results(alone, {k: v for k, v in together.items() if k.startswith("row-")})
        for i in range(5):
            assert together[f"dup-{i}"]["completion"] == alone[f"row-{i}"]["completion"]
            assert [g.result for g in together[f"dup-{i}"]["generation"]] == [g.result for g in alone[f"row-{i}"]["generation"]]


def test_prompts_equal_after_the_cut_to_max_input_length_are_one_request(spark, tiny_model_dir, tmp_path, recorded):
    """Greedy rows whose result holds no prompt text: prompts whose last maxInputLength tokens are
    equal are one request (the engine runs a prompt's end), wherever the shards put them, and get
    what each gets alone; with returnFullText each prompt is a request of its own."""
    tail = "def f(x):\n    return x * 2\n" * 3
    rows = [("a", "import os\n" + tail), ("b", "x = [1, 2]\n" + tail), ("short", "def g(y):\n")]
    src = str(tmp_path / "in")
    spark.createDataFrame(rows, "id string, prompt string").repartition(3).write.parquet(src)
    cut = {"max_input_length": 12, "return_full_text": False}
    summary = generation_job.run(spark, config(src, tmp_path / "out", tiny_model_dir, generation=cut, shards=4))
    assert len(recorded()) == 2 and summary.requests_distinct == 2
    out = rows_by_id(spark, tmp_path / "out")
    assert out["a"]["request"] == out["b"]["request"] != out["short"]["request"]
    assert out["a"]["truncated"] and out["b"]["truncated"] and not out["short"]["truncated"]
    alone = str(tmp_path / "alone")
    spark.createDataFrame(rows[1:2], "id string, prompt string").write.parquet(alone)
    generation_job.run(spark, config(alone, tmp_path / "out-alone", tiny_model_dir, generation=cut))
    assert out["a"]["completion"] == out["b"]["completion"] == rows_by_id(spark, tmp_path / "out-alone")["b"]["completion"]

    recorded.clear()
    full = generation_job.run(spark, config(src, tmp_path / "out-full", tiny_model_dir,
                                            generation={**cut, "return_full_text": True}, shards=4))
    assert len(recorded()) == 3 and full.requests_distinct == 3
    full_rows = rows_by_id(spark, tmp_path / "out-full")
    assert full_rows["a"]["generation"][0].result.startswith("import os\n")
    assert full_rows["b"]["generation"][0].result.startswith("x = [1, 2]\n")


@pytest.mark.parametrize("generation", [{}, pytest.param({"do_sample": True, "random_seed": 3, "temperature": 1.3},
                                                           marks=pytest.mark.slow)], ids=["greedy", "sampled"])
def test_an_incremental_run_equals_a_full_run_and_runs_only_the_new_rows(spark, tiny_model_dir, tmp_path, recorded,
                                                                         generation):
    cache = tmp_path / "cache"
    first = table(spark, tmp_path / "day1", 10)
    generation_job.run(spark, config(first, tmp_path / "out1", tiny_model_dir, cache, generation))
    grown = str(tmp_path / "day2")
    spark.read.parquet(first).unionByName(spark.read.parquet(table(spark, tmp_path / "new", 2, start=10))) \
        .write.parquet(grown)
    recorded.clear()
    summary = generation_job.run(spark, config(grown, tmp_path / "out2", tiny_model_dir, cache, generation))
    assert sorted(recorded()) == [f"def f{i}(x):\n    return x * {i}\n" for i in (10, 11)]
    assert (summary.requests_distinct, summary.cache_hits, summary.requests_generated) == (12, 10, 2)
    assert summary.model_seconds_saved > 0
    generation_job.run(spark, config(grown, tmp_path / "full", tiny_model_dir, None, generation))
    incremental, full = rows_by_id(spark, tmp_path / "out2"), rows_by_id(spark, tmp_path / "full")
    same_results(incremental, full)
    assert sum(r["cached"] for r in incremental.values()) == 10 and not any(r["cached"] for r in full.values())
    assert all(r["generation"][0].metadata["cached"] == str(r["cached"]).lower() for r in incremental.values())


def test_a_changed_setting_or_model_file_misses_the_cache(spark, tiny_model_dir, tmp_path, recorded):
    cache, src = tmp_path / "cache", table(spark, tmp_path / "in", 4)
    generation_job.run(spark, config(src, tmp_path / "a", tiny_model_dir, cache))
    recorded.clear()
    generation_job.run(spark, config(src, tmp_path / "b", tiny_model_dir, cache))
    assert recorded() == []  # same model, same settings: every request served
    generation_job.run(spark, config(src, tmp_path / "c", tiny_model_dir, cache, {"max_output_length": 4}))
    assert len(recorded()) == 4  # another setting: every request runs
    # The same model directory with one weight changed, at the same path.
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    recorded.clear()
    generation_job.run(spark, config(src, tmp_path / "d", model, cache))
    assert recorded() == []  # a copy of the same files is the same model
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] * 1.001
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    recorded.clear()
    generation_job.run(spark, config(src, tmp_path / "e", model, cache))
    assert len(recorded()) == 4


def test_a_segment_an_interrupted_run_left_is_not_read(spark, tiny_model_dir, tmp_path, recorded):
    cache, src = tmp_path / "cache", table(spark, tmp_path / "in", 4)
    generation_job.run(spark, config(src, tmp_path / "a", tiny_model_dir, cache))
    segments = sorted(p for p in cache.iterdir() if p.name.startswith(SEGMENT_PREFIX))
    assert segments and all((p / "_SUCCESS").exists() for p in segments)
    for segment in segments:  # as a run killed while writing them would leave them
        (segment / "_SUCCESS").unlink()
    recorded.clear()
    generation_job.run(spark, config(src, tmp_path / "b", tiny_model_dir, cache))
    assert len(recorded()) == 4
    assert not any(r["cached"] for r in rows_by_id(spark, tmp_path / "b").values())


def test_rows_kept_with_an_error_are_not_served_from_the_cache(spark, tiny_model_dir, tmp_path, recorded, faults_file):
    cache, src = tmp_path / "cache", table(spark, tmp_path / "in", 4)
    path = tmp_path / "prompts.jsonl"
    faults_file.write_text(json.dumps({"record_prompts_to": str(path), "fail_prompt_containing": "x * 2\n"}))
    generation_job.run(spark, config(src, tmp_path / "a", tiny_model_dir, cache, on_error="keep"))
    assert rows_by_id(spark, tmp_path / "a")["row-2"]["error"]
    faults_file.write_text(json.dumps({"record_prompts_to": str(path)}))
    recorded.clear()
    generation_job.run(spark, config(src, tmp_path / "a", tiny_model_dir, cache, mode="retry_errors"))
    assert recorded() == ["def f2(x):\n    return x * 2\n"]
    retried = rows_by_id(spark, tmp_path / "a")
    assert not any(r["error"] for r in retried.values()) and retried["row-2"]["cached"] is False


@pytest.mark.slow  # three jobs of four shards
def test_resume_after_a_failed_shard_runs_only_the_unfinished_shards(spark, tiny_model_dir, tmp_path, recorded,
                                                                     faults_file):
    from pyspark.sql import functions as F

    from pipelines.jobs.sharded_output import shard_of

    cache, src = tmp_path / "cache", table(spark, tmp_path / "in", 12)
    # A prompt of the last shard fails: the shards before it are committed (shards run in order).
    last = spark.read.parquet(src).where(shard_of(F.col("prompt"), 4) == 3).first()
    path = tmp_path / "prompts.jsonl"
    faults_file.write_text(json.dumps({"record_prompts_to": str(path), "fail_prompt_containing": last.prompt}))
    with pytest.raises(Exception, match=f"generation failed for the row with id {last.id}"):
        generation_job.run(spark, config(src, tmp_path / "out", tiny_model_dir, cache, on_error="fail", shards=4))
    committed = [p for p in (tmp_path / "out").glob("shard=*") if (p / "_SUCCESS").exists()]
    assert len(committed) == 3
    done = {r.prompt for r in spark.read.parquet(src).join(spark.read.parquet(*map(str, committed)), "id").collect()}
    faults_file.write_text(json.dumps({"record_prompts_to": str(path)}))
    recorded.clear()
    summary = generation_job.run(spark, config(src, tmp_path / "out", tiny_model_dir, cache, mode="resume", shards=4))
    assert summary.rows_out == 12
    assert last.prompt in recorded() and done and not done & set(recorded())
    generation_job.run(spark, config(src, tmp_path / "full", tiny_model_dir, shards=4))
    same_results(rows_by_id(spark, tmp_path / "out"), rows_by_id(spark, tmp_path / "full"))


def test_the_cache_path_must_be_apart_from_input_and_output(spark, tiny_model_dir, tmp_path):
    src = table(spark, tmp_path / "in", 2)
    with pytest.raises(OutputRefusedError, match="cache.path .* is inside output.path"):
        generation_job.run(spark, config(src, tmp_path / "out", tiny_model_dir, tmp_path / "out" / "cache"))
    with pytest.raises(OutputRefusedError, match="cache.path .* is input.path"):
        generation_job.run(spark, config(src, tmp_path / "out", tiny_model_dir, src))


def test_scoring_runs_each_distinct_document_once_and_reuses_the_cache(spark, tiny_model_dir, tmp_path, recorded):
    cache = tmp_path / "cache"
    src = table(spark, tmp_path / "in", 4, duplicates_of=4)
    first = scoring_job.run(spark, config(src, tmp_path / "s1", tiny_model_dir, cache))
    assert len(recorded()) == 4 and (first.requests_distinct, first.requests_generated) == (4, 4)
    scores = rows_by_id(spark, tmp_path / "s1")
    for i in range(4):
        assert scores[f"dup-{i}"]["perplexity"] == scores[f"row-{i}"]["perplexity"] > 0
    recorded.clear()
    second = scoring_job.run(spark, config(src, tmp_path / "s2", tiny_model_dir, cache))
    assert recorded() == [] and second.cache_hits == 4
    again = rows_by_id(spark, tmp_path / "s2")
    assert {k: r["perplexity"] for k, r in again.items()} == {k: r["perplexity"] for k, r in scores.items()}


def test_the_annotator_reads_and_extends_its_cache(spark, tiny_model_dir, tmp_path, recorded):
    from pipelines import DocumentAssembler, StarCoderTransformer

    df = spark.createDataFrame([(i, ["a = 1\n", "import os\n"][i % 2]) for i in range(6)], "id int, text string")
    documents = DocumentAssembler(inputCol="text", outputCol="document", idCol="id").transform(df)
    annotator = (StarCoderTransformer.loadSavedModel(str(tiny_model_dir), spark).setInputCols(["document"])
                 .setOutputCol("generation").setMaxOutputLength(4).setCachePath(str(tmp_path / "cache")))
    first = {r.id: r.generation for r in annotator.transform(documents).collect()}
    assert sorted(recorded()) == ["a = 1\n", "import os\n"]
    assert all(g[0].metadata["cached"] == "false" and g[0].metadata["id"] == str(i) for i, g in first.items())
    recorded.clear()
    second = {r.id: r.generation for r in annotator.transform(documents).collect()}
    assert recorded() == []
    assert {i: g[0].result for i, g in second.items()} == {i: g[0].result for i, g in first.items()}
    assert all(g[0].metadata["cached"] == "true" and g[0].metadata["id"] == str(i) for i, g in second.items())
