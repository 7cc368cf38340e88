"""Fill-in-the-middle: StarCoder2's prompt format, middle-only results, FIM stops, and scoring."""

import pytest

from pipelines.engine.params import GenerationParams
from pipelines.jobs import generate as generation_job
from pipelines.jobs.config import config_from_dict
from pipelines.jobs.generate import fim_prompt_column
from pipelines.prompts.fim import fim_prompt


def test_prompt_format_is_starcoder2s():
    assert fim_prompt("def f(x):\n    ", "\n    return y\n") == \
        "<fim_prefix>def f(x):\n    <fim_suffix>\n    return y\n<fim_middle>"
    assert fim_prompt("a", "b", repo_name="org/repo", file_path="src/m.py") == \
        "<repo_name>org/repo<file_sep>src/m.py\n<fim_prefix>a<fim_suffix>b<fim_middle>"


def test_spark_column_builds_the_same_prompt(spark):
    df = spark.createDataFrame([("def f():\n", "\n    return 1\n", "m.py")], "prefix string, suffix string, path string")
    row = df.select(fim_prompt_column("prefix", "suffix").alias("a"),
                    fim_prompt_column("prefix", "suffix", path_col="path").alias("b")).first()
    assert row.a == fim_prompt("def f():\n", "\n    return 1\n")
    assert row.b == fim_prompt("def f():\n", "\n    return 1\n", file_path="m.py")


def test_fim_prompt_encodes_with_single_special_tokens(engine):
    ids = engine.tokenizer.encode(fim_prompt("x = ", "\nprint(x)"))
    assert ids[0] == engine.tokenizer.token_id("<fim_prefix>") and ids[-1] == engine.fim_middle_id
    assert engine.tokenizer.token_id("<fim_suffix>") in ids


def test_fim_result_is_the_middle_alone_and_stops_at_fim_tokens(engine, monkeypatch):
    prompt = fim_prompt("def f(x):\n    y = ", "\n    return y\n")
    (c,) = engine.complete([prompt], GenerationParams(max_output_length=12))[0]
    assert not c.text.startswith("<fim_prefix>") and c.text == c.completion  # middle only, even with returnFullText
    # Make a FIM token the most likely next token: generation must stop there, without it in the text.
    import pipelines.engine.sampling as sampling

    real = sampling.next_tokens
    file_sep = engine.tokenizer.token_id("<file_sep>")

    def prefer_file_sep(logits, *args):
        logits = logits.clone()
        logits[:, file_sep] = 1e9
        return real(logits, *args)

    monkeypatch.setattr(sampling, "next_tokens", prefer_file_sep)
    (stopped,) = engine.complete([prompt], GenerationParams(max_output_length=12))[0]
    assert stopped.finish_reason == "stop" and stopped.completion_tokens == 1 and stopped.completion == ""
    (plain,) = engine.complete(["def f(x):\n"], GenerationParams(max_output_length=3))[0]
    assert plain.finish_reason == "length"  # left-to-right prompts do not stop at FIM tokens


def test_fim_job_scores_middles_per_language(spark, tiny_model_dir, tmp_path):
    rows = [("a", "def f(x):\n    y = ", "\n    return y\n", "x + 1", "python"),
            ("b", "let y = ", ";\nconsole.log(y);\n", "2", "javascript")]
    src = str(tmp_path / "fim.parquet")
    spark.createDataFrame(rows, "id string, prefix string, suffix string, middle string, language string") \
        .write.parquet(src)
    config = config_from_dict({
        "input": {"path": src, "id_col": "id", "prefix_col": "prefix", "suffix_col": "suffix",
                  "middle_col": "middle", "language_col": "language"},
        "model": {"source": str(tiny_model_dir)},
        "generation": {"max_output_length": 6},
        "output": {"path": str(tmp_path / "out"), "shards": 1},
    })
    summary = generation_job.run(spark, config)
    out = {r.id: r for r in spark.read.parquet(str(tmp_path / "out")).collect()}
    for r in out.values():
        assert r.completion == r.generation[0].result  # the middle alone
        assert r.exact_match == (r.completion == r.middle)
        longest = max(len(r.completion), len(r.middle))
        assert r.edit_similarity == pytest.approx(1 - _levenshtein(r.completion, r.middle) / longest)
    assert set(summary.fim_scores) == {"python", "javascript"}
    assert summary.fim_scores["python"]["rows"] == 1


def test_fim_scores_on_known_pairs(spark):
    df = spark.createDataFrame([("abc", "abc"), ("abc", "abd"), ("", "xy")], "completion string, middle string")
    got = df.select(*generation_job.fim_scores("middle")).collect()
    assert [(r.exact_match, round(r.edit_similarity, 4)) for r in got] == [(True, 1.0), (False, 0.6667), (False, 0.0)]


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]
