"""Scoring: log-probabilities and perplexity of documents, checked against transformers' own
loss and an explicit strided computation, on real forward passes of the tiny model."""

import json
import math

import pytest
import torch
from pyspark.ml import Pipeline, PipelineModel

from pipelines import DocumentAssembler, StarCoderScorer
from pipelines.engine.params import InvalidParamError, ScoringParams
from pipelines.engine.scoring import DocumentScorer, plan_windows
from pipelines.models import bundled

SHORT = [
    "def add(a, b):\n    return a + b\n",
    "import os\nprint(os.getcwd())\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "SELECT name FROM users WHERE id = 1;",
]
LONG = "".join(f"def f{i}(x):\n    return x * {i} + {i * i}\n\n" for i in range(30))


@pytest.fixture(scope="module")
def scorer(engine):
    return DocumentScorer.from_engine(engine)


def tokens_of(engine, text):
    return torch.tensor([engine.tokenizer.encode(text)])


def strided_reference(model, ids: torch.Tensor, window: int, stride: int):
    """The transformers perplexity guide's loop, counting each window's scored labels exactly:
    (sum of negative log-likelihoods, tokens scored, windows)."""
    n = ids.shape[1]
    nll_sum, scored, windows, prev_end = 0.0, 0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        target_len = end - prev_end
        inputs = ids[:, begin:end]
        targets = inputs.clone()
        targets[:, :-target_len] = -100
        with torch.no_grad():
            loss = model(inputs, labels=targets).loss.item()
        count = int((targets[:, 1:] != -100).sum())  # labels are shifted inside the model
        nll_sum += loss * count
        scored += count
        windows += 1
        prev_end = end
        if end == n:
            break
    return nll_sum, scored, windows


def close(a, b, rel):
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


# --- the engine -------------------------------------------------------------------------------

def test_short_document_perplexity_is_exp_of_transformers_loss(engine, scorer):
    assert engine.model.dtype == torch.float32
    for text, score in zip(SHORT, scorer.score(SHORT, ScoringParams(max_input_length=512))):
        ids = tokens_of(engine, text)
        with torch.no_grad():
            loss = engine.model(ids, labels=ids).loss.item()
        assert score.tokens == ids.shape[1] and score.windows == 1
        assert close(score.perplexity, math.exp(loss), 1e-4), (text, score.perplexity, math.exp(loss))
        assert close(score.mean_logprob, -loss, 1e-4)
        assert close(score.logprob, -loss * (ids.shape[1] - 1), 1e-4)


@pytest.mark.parametrize("window,stride", [(64, 24), (64, 32), (48, 47), (100, 1)])
def test_long_document_equals_the_explicit_strided_computation(engine, scorer, window, stride):
    ids = tokens_of(engine, LONG)
    n = ids.shape[1]
    assert n > 3 * window
    nll_sum, scored, windows = strided_reference(engine.model, ids, window, stride)
    (score,) = scorer.score([LONG], ScoringParams(max_input_length=window, stride=stride))
    assert scored == n - 1 == score.scored_tokens  # every token but the first, once
    assert score.windows == windows == math.ceil((n - window) / stride) + 1
    assert close(score.logprob, -nll_sum, 1e-5)
    assert close(score.perplexity, math.exp(nll_sum / scored), 1e-4)


def test_windows_score_every_token_once_with_the_promised_context():
    for n, window, stride in [(2, 2, 1), (10, 4, 3), (100, 16, 8), (17, 16, 15), (16, 16, 8)]:
        plan = plan_windows(n, window, stride)
        scored = [t for w in plan for t in range(w.first_scored, w.end)]
        assert scored == list(range(1, n))
        for w in plan:
            assert w.end - w.begin <= window and w.first_scored - w.begin >= min(window - stride, w.first_scored)
    assert plan_windows(0, 8, 4) == plan_windows(1, 8, 4) == []


def test_default_stride_is_half_the_window(engine, scorer):
    half = scorer.score([LONG], ScoringParams(max_input_length=64))[0]
    explicit = scorer.score([LONG], ScoringParams(max_input_length=64, stride=32))[0]
    assert (half.logprob, half.windows) == (explicit.logprob, explicit.windows)


def test_results_do_not_depend_on_batch_size_order_or_neighbours(scorer):
    texts = SHORT + [LONG, LONG[:300], "x = 1\n"]
    params = dict(max_input_length=64, stride=32)
    reference = scorer.score(texts, ScoringParams(batch_size=1, **params))
    for batch_size, max_batch_tokens in [(2, 0), (16, 0), (16, 100)]:
        got = scorer.score(texts, ScoringParams(batch_size=batch_size, max_batch_tokens=max_batch_tokens, **params))
        for a, b in zip(reference, got):
            assert (a.tokens, a.windows) == (b.tokens, b.windows)
            assert close(a.logprob, b.logprob, 1e-6)
    backwards = scorer.score(texts[::-1], ScoringParams(batch_size=4, **params))[::-1]
    alone = [scorer.score([t], ScoringParams(batch_size=4, **params))[0] for t in texts]
    for a, b, c in zip(reference, backwards, alone):
        assert close(a.logprob, b.logprob, 1e-6) and close(a.logprob, c.logprob, 1e-6)


def test_empty_and_one_token_documents_have_a_defined_result(engine, scorer):
    one_token = "def"
    assert len(engine.tokenizer.encode(one_token)) == 1
    empty, single, normal = scorer.score(["", one_token, SHORT[0]], ScoringParams())
    for score, tokens in ((empty, 0), (single, 1)):
        assert (score.tokens, score.windows, score.logprob, score.error) == (tokens, 0, 0.0, None)
        assert math.isnan(score.perplexity) and math.isnan(score.mean_logprob)
    assert normal.windows == 1 and normal.perplexity > 1
    assert scorer.score([], ScoringParams()) == []


def test_a_batch_that_runs_out_of_memory_is_scored_in_halves(scorer, inject_faults):
    texts = SHORT * 2
    expected = scorer.score(texts, ScoringParams(batch_size=8))
    inject_faults(oom_above_batch=2)
    got = scorer.score(texts, ScoringParams(batch_size=8))
    assert [round(s.logprob, 4) for s in got] == [round(s.logprob, 4) for s in expected]


def test_invalid_scoring_params_are_named():
    with pytest.raises(InvalidParamError, match="stride"):
        ScoringParams(max_input_length=32, stride=32)
    with pytest.raises(InvalidParamError, match="maxInputLength"):
        ScoringParams(max_input_length=1)
    with pytest.raises(InvalidParamError, match="batchSize"):
        ScoringParams(batch_size=0)


# --- the annotator on Spark -------------------------------------------------------------------

@pytest.fixture(scope="module")
def documents(spark):
    texts = SHORT + [LONG, "", "def", None] + [f"x{i} = {i} * {i}\n" for i in range(12)]
    return spark.createDataFrame(list(enumerate(texts)), "id long, text string")


def score_pipeline(model_dir, **params):
    scorer = StarCoderScorer.loadSavedModel(str(model_dir)).setInputCols(["document"]).setOutputCol("score")
    return Pipeline(stages=[
        DocumentAssembler().setInputCol("text").setOutputCol("document").setIdCol("id"),
        scorer._set(**params),
    ])


def scores_by_id(df):
    return {r.id: (r.score[0].result, dict(r.score[0].metadata)) for r in df.select("id", "score").collect()}


def test_scorer_annotates_each_document_with_its_perplexity(spark, documents, tiny_model_dir, scorer):
    df = score_pipeline(tiny_model_dir, maxInputLength=64).fit(documents).transform(documents)
    assert set(df.columns) == {"id", "text", "document", "score"}
    rows = {r.id: r for r in df.collect()}
    assert len(rows) == documents.count()
    for row in rows.values():
        (annotation,) = row.score
        meta = annotation.metadata
        assert annotation.result == meta["perplexity"] and meta["id"] == str(row.id)
        expected = scorer.score([row.text or ""], ScoringParams(max_input_length=64))[0]
        assert int(meta["tokens"]) == expected.tokens and int(meta["windows"]) == expected.windows
        if expected.scored_tokens:
            assert close(float(meta["perplexity"]), expected.perplexity, 1e-5)
            assert close(float(meta["logprob"]), expected.logprob, 1e-5)
            assert close(float(meta["mean_logprob"]), expected.mean_logprob, 1e-5)
        else:
            assert meta["perplexity"] == meta["mean_logprob"] == "NaN" and float(meta["logprob"]) == 0.0
    assert int(rows[len(SHORT)].score[0].metadata["windows"]) > 1  # the long document


def test_scores_do_not_depend_on_partitioning_or_row_order(spark, documents, tiny_model_dir):
    model = score_pipeline(tiny_model_dir, maxInputLength=64, batchSize=3).fit(documents)
    one = scores_by_id(model.transform(documents.coalesce(1)))
    many = scores_by_id(model.transform(documents.repartition(5).orderBy(documents.id.desc())))
    assert one.keys() == many.keys()
    for key in one:
        (p1, m1), (p2, m2) = one[key], many[key]
        assert (m1["tokens"], m1["windows"]) == (m2["tokens"], m2["windows"])
        assert p1 == p2 == "NaN" or close(float(p1), float(p2), 1e-6)


def test_scorer_saves_and_loads_with_its_params(spark, documents, tiny_model_dir, tmp_path):
    model = score_pipeline(tiny_model_dir, maxInputLength=64, stride=16, batchSize=4).fit(documents)
    model.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    scorer = loaded.stages[-1]
    assert isinstance(scorer, StarCoderScorer)
    assert (scorer.getMaxInputLength(), scorer.getStride(), scorer.getBatchSize()) == (64, 16, 4)
    assert scorer.getModelSource() == str(tiny_model_dir)
    small = documents.limit(4)
    assert scores_by_id(loaded.transform(small)).keys() == scores_by_id(model.transform(small)).keys()


def test_scorer_defaults_setters_and_errors():
    s = StarCoderScorer()
    assert (s.getOutputCol(), s.getBatchSize(), s.getMaxInputLength(), s.getStride(), s.getEngine()) == \
        ("score", 8, 4096, 0, "auto")
    same = (s.setStride(8).setMaxInputLength(32).setBatchSize(2).setMaxBatchTokens(64).setDevice("cpu")
            .setDtype("float32").setNumThreads(1).setOnRowError("keep").setInputCols(["document"]))
    assert same is s
    assert s.scoring_params() == ScoringParams(max_input_length=32, stride=8, batch_size=2, max_batch_tokens=64)
    with pytest.raises(InvalidParamError, match="stride"):
        s.setStride(-1)
    with pytest.raises(ValueError, match="StarCoderScorer has no model"):
        s.model_spec()


def test_openvino_engine_is_refused_for_scoring_with_the_reason():
    with pytest.raises(InvalidParamError, match="no logits for prompt tokens"):
        StarCoderScorer.loadSavedModel(str(bundled.DEMO_MODEL_OPENVINO))


def test_scorer_shares_the_workers_model_with_the_generator(tiny_model_dir):
    from pipelines import StarCoderTransformer

    generator = StarCoderTransformer.loadSavedModel(str(tiny_model_dir))
    scorer = StarCoderScorer.loadSavedModel(str(tiny_model_dir))
    assert generator.model_spec().cache_key() == scorer.model_spec().cache_key()


def test_memory_plan_of_scoring_counts_no_kv_cache(spark, tiny_model_dir):
    from pipelines import StarCoderTransformer
    from pipelines.engine.memory_plan import GiB, activation_bytes_per_token

    generator = StarCoderTransformer.loadSavedModel(str(tiny_model_dir)).setKvCacheSizeGB(3).setMemoryCheck("warn")
    scorer = StarCoderScorer.loadSavedModel(str(tiny_model_dir)).setKvCacheSizeGB(3).setMemoryCheck("warn") \
        .setBatchSize(4).setMaxInputLength(256)
    assert generator.check_memory(spark).memory.kv_cache == 3 * GiB
    plan = scorer.check_memory(spark)
    assert plan.memory.kv_cache == 0
    # Batches hold at most batchSize x maxInputLength tokens: that bounds the activations.
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert plan.memory.activations == 4 * 256 * activation_bytes_per_token(config, 4)
