"""StarCoderTransformer on real Spark: the Spark NLP API, row guarantees, persistence."""

import shutil
from collections import Counter
from pathlib import Path

import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import functions as F

from pipelines import DocumentAssembler, StarCoderTransformer
from pipelines.engine.params import GenerationParams, InvalidParamError, ModelSpec
from pipelines.spark.annotation_schema import is_annotation_array

CODE = [
    "def add(a, b):",
    "import os\n",
    "class Stack:\n    def push(self, item):\n",
    "for i in range(10):\n",
    "# read a csv file\n",
    "def fib(n):\n    if n < 2:\n        return n\n",
    "x = [i * i for i in",
    "SELECT name FROM users WHERE",
]


@pytest.fixture(scope="module")
def corpus(spark):
    rows = [(i, CODE[i % len(CODE)] + ("" if i < len(CODE) else f"  # {i}")) for i in range(40)]
    return spark.createDataFrame(rows, "id long, text string")


def starcoder(model_dir, **params):
    return StarCoderTransformer.loadSavedModel(str(model_dir)).setInputCols(["documents"]).setOutputCol(
        "generation"
    )._set(**params)


def pipeline(model_dir, **params):
    return Pipeline().setStages(
        [DocumentAssembler().setInputCol("text").setOutputCol("documents").setIdCol("id"), starcoder(model_dir, **params)]
    )


def test_spark_nlp_snippet_runs_unchanged_but_for_the_import(spark, tiny_model_dir):
    model_dir = str(tiny_model_dir)
    data = spark.createDataFrame([[1, "def add(a, b):"]]).toDF("id", "text")
    document_assembler = DocumentAssembler().setInputCol("text").setOutputCol("documents")
    starcoder = StarCoderTransformer.loadSavedModel(model_dir, spark) \
        .setMaxOutputLength(50).setDoSample(False) \
        .setInputCols(["documents"]).setOutputCol("generation")
    results = Pipeline().setStages([document_assembler, starcoder]).fit(data).transform(data)
    (row,) = results.select("generation.result", "generation.metadata").collect()
    (text,) = row.result
    assert text.startswith("def add(a, b):") and len(text) > len("def add(a, b):")
    meta = row.metadata[0]
    assert meta["finish_reason"] in ("eos", "length") and meta["prompt_tokens"] == "7"
    assert int(meta["completion_tokens"]) <= 50 and meta["truncated"] == "false" and meta["sentence"] == "0"


def test_defaults_are_spark_nlps():
    t = StarCoderTransformer()
    expected = dict(
        minOutputLength=0, maxOutputLength=20, doSample=False, temperature=0.6, topK=50, topP=0.9,
        repetitionPenalty=1.0, noRepeatNgramSize=0, ignoreTokenIds=[], batchSize=1, maxInputLength=4096,
        stopTokenIds=[], nReturnSequences=1, stopStrings=[], returnFullText=True, device="auto", dtype="auto",
        outputCol="generation",
    )
    assert {k: t.getOrDefault(k) for k in expected} == expected
    assert t.getRandomSeed() is None


def test_every_spark_nlp_setter_exists_and_chains():
    t = StarCoderTransformer()
    same = (
        t.setMinOutputLength(1).setMaxOutputLength(9).setDoSample(True).setTemperature(0.8).setTopK(5)
        .setTopP(0.5).setRepetitionPenalty(1.1).setNoRepeatNgramSize(2).setIgnoreTokenIds([4])
        .setBatchSize(4).setConfigProtoBytes([1]).setInputCols("documents").setOutputCol("gen")
        .setLazyAnnotator(False).setMaxInputLength(100).setStopTokenIds([6]).setRandomSeed(3)
        .setNReturnSequences(2).setStopStrings(["\ndef "]).setReturnFullText(False).setDevice("cpu")
        .setDtype("int8")
    )
    assert same is t
    p = t.generation_params()
    assert p == GenerationParams(
        max_output_length=9, min_output_length=1, do_sample=True, temperature=0.8, top_k=5, top_p=0.5,
        repetition_penalty=1.1, no_repeat_ngram_size=2, ignore_token_ids=(4,), stop_token_ids=(6,),
        stop_strings=("\ndef ",), max_input_length=100, random_seed=3, n_return_sequences=2, return_full_text=False,
    )
    assert t.getInputCols() == ["documents"] and t.getEngine() == "auto"  # the one engine default, as the config's


@pytest.mark.parametrize(
    "setter,value,name",
    [("setTopP", 1.5, "topP"), ("setMaxOutputLength", -1, "maxOutputLength"), ("setTemperature", 0.0, "temperature"),
     ("setBatchSize", 0, "batchSize"), ("setDtype", "fp8", "dtype"), ("setNReturnSequences", 0, "nReturnSequences"),
     ("setKvCacheSizeGB", 0, "kvCacheSizeGB")],
)
def test_invalid_values_are_rejected_at_set_time(setter, value, name):
    with pytest.raises(InvalidParamError, match=name):
        getattr(StarCoderTransformer(), setter)(value)


def test_model_settings_reach_the_model_spec_from_the_job_config():
    from pipelines.jobs.config import load_config
    from pipelines.jobs.generate import build_pipeline
    from pipelines.models import bundled

    config = load_config(Path(__file__).resolve().parents[2] / "conf" / "local.yaml",
                         ["model.kv_cache_gb=3", "model.num_threads=2", "model.dtype=int8"])
    starcoder = build_pipeline(config).getStages()[-1]
    spec = starcoder.model_spec()
    assert (spec.source, spec.dtype, spec.num_threads, spec.kv_cache_gb) == (str(bundled.DEMO_MODEL), "int8", 2, 3)
    assert spec.cache_key() != ModelSpec(spec.source, spec.device, spec.dtype, 2, spec.engine, 1).cache_key()


def test_set_input_cols_checks_the_count():
    with pytest.raises(TypeError, match="expecting 1 columns"):
        StarCoderTransformer().setInputCols(["a", "b"])


def test_one_row_out_per_row_in_with_ids_and_order_whatever_the_partitioning(spark, corpus, tiny_model_dir):
    model = pipeline(tiny_model_dir, maxOutputLength=8, batchSize=4).fit(corpus)
    reference = None
    for partitions in (1, 3, 7):
        out = model.transform(corpus.repartition(partitions, "id").sortWithinPartitions("id"))
        rows = out.select("id", "text", "generation").collect()
        assert Counter(r.id for r in rows) == Counter(range(40))
        for r in rows:
            (g,) = r.generation
            assert g.result.startswith(r.text) and g.metadata["id"] == str(r.id)
        by_id = {r.id: r.generation[0].result for r in rows}
        reference = reference or by_id
        assert by_id == reference, f"greedy output changed with {partitions} partitions"


def test_row_order_within_a_partition_is_preserved(spark, corpus, tiny_model_dir):
    ordered = corpus.coalesce(1).orderBy(F.desc("id"))
    out = pipeline(tiny_model_dir, maxOutputLength=3, batchSize=8).fit(ordered).transform(ordered)
    assert [r.id for r in out.select("id").collect()] == list(range(39, -1, -1))


def test_sampling_is_reproducible_across_partition_counts(spark, corpus, tiny_model_dir):
    params = dict(doSample=True, temperature=1.0, topK=0, topP=1.0, randomSeed=42, maxOutputLength=8, batchSize=5)
    model = pipeline(tiny_model_dir, **params).fit(corpus)
    runs = []
    for partitions in (2, 5):
        out = model.transform(corpus.repartition(partitions))
        runs.append({r.id: (r.generation[0].result, r.generation[0].metadata["seed"]) for r in out.collect()})
    assert runs[0] == runs[1]
    other = pipeline(tiny_model_dir, **{**params, "randomSeed": 43}).fit(corpus).transform(corpus)
    assert {r.id: r.generation[0].result for r in other.collect()} != {k: v[0] for k, v in runs[0].items()}


def test_n_return_sequences_gives_one_annotation_each(spark, corpus, tiny_model_dir):
    out = pipeline(tiny_model_dir, doSample=True, randomSeed=1, nReturnSequences=3, maxOutputLength=4).fit(corpus)
    rows = out.transform(corpus.limit(4)).collect()
    for r in rows:
        assert [g.metadata["sequence"] for g in r.generation] == ["0", "1", "2"]


def test_output_column_is_an_annotation_column_with_metadata(spark, corpus, tiny_model_dir):
    out = pipeline(tiny_model_dir, maxOutputLength=2).fit(corpus).transform(corpus.limit(2))
    assert is_annotation_array(out.schema["generation"].dataType)
    assert out.schema["generation"].metadata == {"annotatorType": "document"}
    assert out.columns == ["id", "text", "documents", "generation"]


def test_model_is_loaded_once_per_python_worker(spark, corpus, tiny_model_dir, load_log, tmp_path):
    # A copy is a model no worker has loaded yet, so the loads counted below all happen here.
    fresh = shutil.copytree(tiny_model_dir, tmp_path / "fresh")
    model = pipeline(fresh, maxOutputLength=2, batchSize=8).fit(corpus)
    before = load_log.read_text().splitlines() if load_log.exists() else []
    for _ in range(3):
        model.transform(corpus.repartition(6)).count()
        model.transform(corpus.repartition(6)).select("generation").collect()
    loads = load_log.read_text().splitlines()[len(before):]
    # 6 runs x 6 partitions = 36 tasks; one load per Python worker (local[2]: 2 at a time).
    assert 1 <= len(loads) <= 2, loads
    assert all(line.endswith(str(fresh)) for line in loads)
    assert len(set(line.split()[0] for line in loads)) == len(loads), "a worker loaded the model twice"


def test_missing_input_column_is_reported_before_any_work(spark, corpus, tiny_model_dir):
    t = starcoder(tiny_model_dir).setInputCols(["docs"])
    with pytest.raises(ValueError, match=r"'docs' does not exist.*\['id', 'text'\]"):
        t.transform(corpus)


def test_non_annotation_input_column_is_reported(spark, corpus, tiny_model_dir):
    with pytest.raises(ValueError, match="not an array of annotations; put a DocumentAssembler"):
        starcoder(tiny_model_dir).setInputCols(["text"]).transform(corpus)


def test_pipeline_saves_and_loads_with_the_model_reference(spark, corpus, tiny_model_dir, tmp_path):
    model = pipeline(tiny_model_dir, maxOutputLength=5, stopStrings=["\n\n"], randomSeed=9).fit(corpus)
    model.save(str(tmp_path / "pm"))
    loaded = PipelineModel.load(str(tmp_path / "pm"))
    stage = loaded.stages[1]
    assert isinstance(stage, StarCoderTransformer)
    assert stage.getModelSource() == str(tiny_model_dir)
    assert (stage.getMaxOutputLength(), stage.getStopStrings(), stage.getRandomSeed()) == (5, ["\n\n"], 9)
    small = corpus.limit(5)
    assert loaded.transform(small).select("generation").collect() == model.transform(small).select("generation").collect()


# Saved by release 0.1 (pipelines/annotators/ as it was then): DocumentAssembler, StarCoderTransformer
# and StarCoderScorer with a model path of another machine. Kept as saved: later layouts must load it.
SAVED_BY_0_1 = Path(__file__).resolve().parents[1] / "data" / "pipeline-saved-by-0.1"


def test_a_pipeline_saved_by_an_earlier_release_loads_and_transforms(spark, corpus, tiny_model_dir):
    from pipelines import StarCoderScorer

    loaded = PipelineModel.load(str(SAVED_BY_0_1))
    assembler, generator, scorer = loaded.stages
    assert [type(s) for s in loaded.stages] == [DocumentAssembler, StarCoderTransformer, StarCoderScorer]
    assert generator.getModelSource() == scorer.getModelSource() == "/models/starcoder2-3b"
    assert (generator.getMaxOutputLength(), generator.getStopStrings(), generator.getRandomSeed(),
            generator.getBatchSize(), generator.getRepetitionPenalty()) == (6, ["\n\n"], 9, 4, 1.2)
    assert (assembler.getIdCol(), scorer.getMaxInputLength()) == ("id", 128)
    generator.setModelSource(str(tiny_model_dir))
    scorer.setModelSource(str(tiny_model_dir))
    fresh = Pipeline(stages=[
        DocumentAssembler().setInputCol("text").setOutputCol("document").setIdCol("id"),
        StarCoderTransformer(modelSource=str(tiny_model_dir), inputCols=["document"], outputCol="generation",
                             maxOutputLength=6, stopStrings=["\n\n"], randomSeed=9, batchSize=4, repetitionPenalty=1.2),
        StarCoderScorer(modelSource=str(tiny_model_dir), inputCols=["document"], outputCol="score", maxInputLength=128),
    ]).fit(corpus)
    rows = corpus.limit(4)
    columns = ["id", "generation", "score"]
    assert loaded.transform(rows).select(columns).collect() == fresh.transform(rows).select(columns).collect()


def test_unfitted_pipeline_saves_and_loads(spark, tiny_model_dir, tmp_path):
    p = pipeline(tiny_model_dir, maxOutputLength=7)
    p.save(str(tmp_path / "p"))
    stages = Pipeline.load(str(tmp_path / "p")).getStages()
    assert [type(s).__name__ for s in stages] == ["DocumentAssembler", "StarCoderTransformer"]
    assert stages[1].getMaxOutputLength() == 7


def test_transformer_without_a_model_says_how_to_get_one(spark, corpus):
    docs = DocumentAssembler().setInputCol("text").setOutputCol("documents").transform(corpus)
    with pytest.raises(ValueError, match="loadSavedModel"):
        StarCoderTransformer().setInputCols(["documents"]).transform(docs)


def test_pretrained_fails_fast_offline():
    with pytest.raises(ValueError, match="loadSavedModel"):
        StarCoderTransformer.pretrained()


def test_task_cores_come_from_the_task_context(spark):
    from pipelines.spark.partition_generation import task_cores

    def probe(_):
        yield task_cores(default=99)

    assert spark.sparkContext.parallelize(range(2), 2).mapPartitions(probe).collect() == [1, 1]  # spark.task.cpus
    assert task_cores(default=99) == 99  # outside a task


def test_generation_binds_torch_threads_to_the_task_cores(spark, tiny_model_dir):
    """Run the partition function in-process: outside a task it binds to 1 core, or to numThreads."""
    import pyarrow as pa
    import torch
    from pyspark.sql.pandas.types import to_arrow_type

    from pipelines.engine.params import ModelSpec
    from pipelines.spark.annotation_schema import ANNOTATION_ARRAY_TYPE, document
    from pipelines.spark.partition_generation import PartitionGenerator

    docs = pa.array([[document("def f():", {"sentence": "0"})]], type=to_arrow_type(ANNOTATION_ARRAY_TYPE))
    batch = pa.RecordBatch.from_arrays([docs], names=["documents"])
    previous = torch.get_num_threads()
    try:
        for threads, expected in ((0, 1), (2, 2)):
            torch.set_num_threads(3)
            run = PartitionGenerator(["documents"], "generation", ModelSpec(str(tiny_model_dir), num_threads=threads),
                                     GenerationParams(max_output_length=2), batch_size=1)
            (out,) = list(run(iter([batch])))
            assert out.column(out.schema.get_field_index("generation")).to_pylist()[0][0]["result"].startswith("def f():")
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(previous)


def test_stop_preset_ends_python_completions(spark, tiny_model_dir):
    t = StarCoderTransformer().setStopPreset("python").setStopStrings(["###"])
    assert t.generation_params().stop_strings[0] == "\ndef " and t.generation_params().stop_strings[-1] == "###"
    with pytest.raises(ValueError, match="stopPreset must be one of"):
        StarCoderTransformer().setStopPreset("cobol")


def test_generation_params_are_declared_once():
    from dataclasses import fields

    from pipelines.jobs.config import GenerationSettings

    annotator, section = StarCoderTransformer(), GenerationSettings()
    for f in fields(GenerationParams):
        name = f.metadata["param"]
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        assert annotator.hasParam(name) and getattr(section, f.name) == default, f.name
        assert getattr(annotator, f"get{name[0].upper()}{name[1:]}")() == default, f.name
        if f.name != "max_input_length":  # a model param, shared with the scorer (its own doc)
            assert annotator.getParam(name).doc == f.metadata["doc"]
    assert annotator.generation_params() == section.params() == GenerationParams()
