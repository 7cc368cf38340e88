"""The memory plan on the driver, and failures of the model's workers told as their causes."""

import json
import logging
import shutil
import struct
import subprocess
import sys
import types

import pytest

from devtools.model_builder import STARCODER2_3B
from pipelines.annotators.starcoder_transformer import StarCoderTransformer
from pipelines.engine.checkpoint import summarize_checkpoint
from pipelines.engine.memory_plan import GiB, MemoryPlanError, worker_memory
from pipelines.engine.tokenizer import BUNDLED_TOKENIZER_DIR
from pipelines.jobs import generate as generation_job
from pipelines.jobs.config import config_from_dict
from pipelines.spark.memory_check import local_cores, parse_size
from pipelines.spark.worker_failures import (
    WorkerCrashError,
    WorkerEnvironmentError,
    check_worker_python,
)


@pytest.fixture(scope="module")
def starcoder2_3b_shapes(tmp_path_factory):
    """A directory with StarCoder2-3B's config and a bf16 safetensors file of its exact tensor
    shapes. The data is a sparse hole: the plan reads headers only, never weights."""
    d = tmp_path_factory.mktemp("starcoder2-3b-shapes")
    c = STARCODER2_3B
    hidden, inter, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"]
    head_dim = hidden // c["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": [c["vocab_size"], hidden], "model.norm.weight": [hidden],
              "model.norm.bias": [hidden]}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in {
            "self_attn.q_proj": [hidden, hidden], "self_attn.k_proj": [kv * head_dim, hidden],
            "self_attn.v_proj": [kv * head_dim, hidden], "self_attn.o_proj": [hidden, hidden],
            "mlp.c_fc": [inter, hidden], "mlp.c_proj": [hidden, inter],
        }.items():
            shapes[p + name + ".weight"] = shape
            shapes[p + name + ".bias"] = [shape[0]]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shapes[p + norm + ".weight"] = [hidden]
            shapes[p + norm + ".bias"] = [hidden]
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 2
        for dim in shape:
            n *= dim
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(d / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    (d / "config.json").write_text(json.dumps({**c, "model_type": "starcoder2", "tie_word_embeddings": True}))
    for f in BUNDLED_TOKENIZER_DIR.iterdir():
        shutil.copy(f, d / f.name)
    return d


class FakeSession:
    """The two things the plan reads from a session: its conf and the workers' interpreter."""

    def __init__(self, conf, python=sys.executable):
        self.conf = types.SimpleNamespace(get=lambda key, default=None: conf.get(key, default), set=conf.__setitem__)
        self.sparkContext = types.SimpleNamespace(pythonExec=python)


def test_checkpoint_headers_give_the_3b_parameter_count(starcoder2_3b_shapes):
    summary = summarize_checkpoint(starcoder2_3b_shapes)
    assert summary.parameters == 3_030_371_328 and summary.stored_dtype == "bfloat16"
    assert summary.weight_bytes("float32") == 4 * summary.parameters
    assert summary.weight_bytes("int8") < 0.35 * summary.weight_bytes("float32")  # embeddings stay fp32


def test_3b_float32_with_two_tasks_at_once_is_refused_with_the_settings_that_fit(starcoder2_3b_shapes):
    from pipelines.engine.params import ModelSpec
    from pipelines.spark.memory_check import check_memory

    session = FakeSession({"spark.master": "local[2]", "spark.task.cpus": "1"})
    spec = ModelSpec(source=str(starcoder2_3b_shapes), device="cpu", dtype="float32")
    with pytest.raises(MemoryPlanError) as refused:
        check_memory(session, spec, worker_memory_gb=23)
    message = str(refused.value)
    assert "2 worker(s)" in message and "weights 11.3 GiB" in message and "23.0 GiB available" in message
    assert "spark.task.cpus=2" in message and "dtype int8" in message
    # One task at a time fits, and so does int8 with two.
    session = FakeSession({"spark.master": "local[2]", "spark.task.cpus": "2"})
    assert check_memory(session, spec, worker_memory_gb=23).workers == 1
    int8 = ModelSpec(source=str(starcoder2_3b_shapes), device="cpu", dtype="int8")
    assert check_memory(FakeSession({"spark.master": "local[2]"}), int8, worker_memory_gb=23).fits


def test_weights_used_as_stored_count_once_for_all_workers(starcoder2_3b_shapes):
    bf16 = worker_memory(str(starcoder2_3b_shapes), "bfloat16", "cpu", "pytorch", 1)
    fp32 = worker_memory(str(starcoder2_3b_shapes), "float32", "cpu", "pytorch", 1)
    assert bf16.weights_shared and not fp32.weights_shared
    assert fp32.private - bf16.private > 10 * GiB


def test_a_cluster_is_checked_against_pyspark_memory_or_says_it_cannot(starcoder2_3b_shapes, caplog):
    from pipelines.engine.params import ModelSpec
    from pipelines.spark.memory_check import check_memory

    spec = ModelSpec(source=str(starcoder2_3b_shapes), device="cpu", dtype="float32")
    cluster = {"spark.master": "spark://10.0.0.1:7077", "spark.executor.cores": "8", "spark.task.cpus": "4"}
    with pytest.raises(MemoryPlanError, match="spark.executor.pyspark.memory"):
        check_memory(FakeSession({**cluster, "spark.executor.pyspark.memory": "16g"}), spec)
    assert check_memory(FakeSession({**cluster, "spark.executor.pyspark.memory": "40g"}), spec).workers == 2
    with caplog.at_level(logging.INFO, logger="pipelines.memory"):
        assert check_memory(FakeSession({"spark.master": "yarn"}), spec) is None
    assert "cannot be checked" in caplog.text and "spark.executor.cores" in caplog.text


def test_spark_figures_are_parsed_as_spark_does():
    assert parse_size("4g") == 4 * GiB and parse_size("512m") == 512 * 2**20 and parse_size("2048") == 2 * GiB
    assert local_cores("local") == 1 and local_cores("local[3]") == 3 and local_cores("local[2,3]") == 2
    assert local_cores("local[*]") >= 1 and local_cores("yarn") is None


def test_the_annotator_refuses_a_plan_that_does_not_fit_before_any_task(spark, tiny_model_dir, load_log):
    df = spark.createDataFrame([([{"annotatorType": "document", "begin": 0, "end": 3, "result": "def ",
                                   "metadata": {}, "embeddings": []}],)],
                               "document array<struct<annotatorType:string,begin:int,end:int,result:string,"
                               "metadata:map<string,string>,embeddings:array<float>>>")
    loads_before = load_log.read_text() if load_log.exists() else ""
    starcoder = StarCoderTransformer.loadSavedModel(str(tiny_model_dir), spark).setInputCols(["document"])
    with pytest.raises(MemoryPlanError, match=r"spark.task.cpus=2.*memoryCheck='warn'"):
        starcoder.setWorkerMemoryGB(3.0).transform(df)
    assert (load_log.read_text() if load_log.exists() else "") == loads_before  # no model was loaded
    # The same plan as a warning runs; enough memory runs without one.
    assert starcoder.setMemoryCheck("warn").transform(df).count() == 1
    assert starcoder.setMemoryCheck("error").setWorkerMemoryGB(64.0).transform(df).count() == 1


def test_memory_held_by_this_sessions_workers_counts_as_available(spark, tiny_model_dir):
    """A second run in a session finds its workers holding the model: they are reused, so what
    they hold is not missing memory."""
    from pipelines.engine.params import ModelSpec
    from pipelines.spark.memory_check import session_plan, session_workers_memory

    spark.range(4).mapInArrow(lambda batches: batches, "id long").collect()  # Python workers up
    held = session_workers_memory()
    assert held > 20 * 2**20  # a Python worker with pyspark and pyarrow imported
    plan, _, _ = session_plan(spark, ModelSpec(source=str(tiny_model_dir), device="cpu"))
    assert "this session's Python workers hold" in plan.available_from


def test_the_job_refuses_a_plan_that_does_not_fit_before_writing(spark, tiny_model_dir, tmp_path):
    table = str(tmp_path / "in.parquet")
    spark.createDataFrame([("a", "def f():")], "id string, prompt string").write.parquet(table)
    config = config_from_dict({
        "input": {"path": table, "text_col": "prompt"},
        "model": {"source": str(tiny_model_dir), "worker_memory_gb": 2.5},
        "output": {"path": str(tmp_path / "out")},
    })
    with pytest.raises(MemoryPlanError, match="does not fit"):
        generation_job.run(spark, config)
    assert not (tmp_path / "out").exists()


def test_a_killed_worker_is_reported_with_its_memory_plan(spark, tiny_model_dir, tmp_path, inject_faults):
    table = str(tmp_path / "in.parquet")
    spark.createDataFrame([("a", "def f():")], "id string, prompt string").write.parquet(table)
    config = config_from_dict({
        "input": {"path": table, "text_col": "prompt"},
        "model": {"source": str(tiny_model_dir)},
        "output": {"path": str(tmp_path / "out"), "shards": 1},
    })
    inject_faults(sigkill_worker=True)  # as the kernel's out-of-memory killer does
    with pytest.raises(WorkerCrashError) as crashed:
        generation_job.run(spark, config)
    message = str(crashed.value)
    assert "likely cause is memory" in message and "Memory plan: 2 worker(s)" in message
    assert "spark.task.cpus" in message and "output.mode=resume" in message
    assert "Py4J" not in message and "at org.apache" not in message
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_workers_on_an_interpreter_without_the_package_are_named(tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    session = FakeSession({"spark.master": "local[2]"}, python=str(venv / "bin" / "python"))
    with pytest.raises(WorkerEnvironmentError, match=r"bare/bin/python.*cannot import pyarrow.*PYSPARK_PYTHON"):
        check_worker_python(session)
    check_worker_python(FakeSession({"spark.master": "local[2]"}))  # this interpreter: fine
