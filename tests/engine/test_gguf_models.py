"""GGUF files and other model families through the engine: what they generate, their configs,
their vocabularies, and the errors for files that cannot be used."""

import json
import shutil

import pytest
import torch
from test_tokenizer import reference_cases

from devtools.gguf_writer import write_gguf
from devtools.model_builder import build_family_model, build_random_model
from pipelines.engine.engine import GenerationEngine
from pipelines.engine.generate import Request
from pipelines.engine.params import GenerationParams, ModelSpec
from pipelines.engine.tokenizer import BUNDLED_TOKENIZER_DIR, CodeTokenizer
from pipelines.models.gguf_file import read_gguf_model
from pipelines.models.source import ModelSourceError, resolve_model

# Longer than the tiny models' 64- and 48-token windows, so that the window matters.
PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import os\n\n\ndef list_python_files(root):\n    result = []\n    for dirpath, _, names in os.walk(root):\n"
    "        for name in names:\n            if name.endswith('.py'):\n                result.append(os.path.join("
    "dirpath, name))\n    return result\n\n\ndef count_lines(path):\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
]
NEW_TOKENS = 24


def greedy_ids(engine, prompts=PROMPTS, new_tokens=NEW_TOKENS):
    """Generated token ids per prompt, through the engine's decoder (one batch)."""
    params = GenerationParams(max_output_length=new_tokens)
    encoded = engine.tokenizer.encode_batch(prompts)
    outputs = engine.decoder.generate([Request(ids) for ids in encoded], params, None, max_rows=len(prompts))
    return [o.token_ids for (o,) in outputs]


def transformers_ids(model, tokenizer, prompts=PROMPTS, new_tokens=NEW_TOKENS):
    """transformers' own generate, one prompt at a time (no padding), on the same token ids."""
    out = []
    for ids in tokenizer.encode_batch(prompts):
        x = torch.tensor([ids])
        generated = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        out.append(generated[0, len(ids):].tolist())
    return out


@pytest.fixture(scope="module")
def starcoder2_dir(tmp_path_factory):
    # rope_theta 999999.44 (StarCoder2-3B's) and a 64-token window: neither is transformers' default.
    return build_random_model(tmp_path_factory.mktemp("sc2") / "model", "tiny", seed=3)


@pytest.fixture(scope="module")
def starcoder2_gguf(starcoder2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {t: write_gguf(starcoder2_dir, out / f"model-{t}.gguf", t) for t in ("F32", "Q8_0")}


def load(source, dtype="float32"):
    return GenerationEngine.load(ModelSpec(source=str(source), dtype=dtype, device="cpu"))


def test_starcoder2_gguf_config_comes_from_its_own_keys(starcoder2_gguf):
    config = read_gguf_model(str(starcoder2_gguf["F32"])).config
    assert config["model_type"] == "starcoder2"
    assert config["rope_theta"] == pytest.approx(999999.4420358813)
    assert config["sliding_window"] == 64
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is True


def test_starcoder2_gguf_without_a_window_key_gets_starcoder2s_4096(tmp_path):
    src = build_random_model(tmp_path / "m", "tiny", sliding_window=None)
    config = read_gguf_model(str(write_gguf(src, tmp_path / "m.gguf"))).config
    assert config["sliding_window"] == 4096


def test_f32_gguf_generates_exactly_what_its_source_directory_generates(starcoder2_dir, starcoder2_gguf):
    from_dir, from_gguf = load(starcoder2_dir), load(starcoder2_gguf["F32"])
    assert from_gguf.model.config.sliding_window == 64
    assert greedy_ids(from_gguf) == greedy_ids(from_dir)
    params = GenerationParams(max_output_length=NEW_TOKENS)
    assert [c[0].text for c in from_gguf.complete(PROMPTS, params)] == \
        [c[0].text for c in from_dir.complete(PROMPTS, params)]


def test_q8_0_gguf_runs_and_its_agreement_is_reported(starcoder2_dir, starcoder2_gguf):
    reference, quantised = greedy_ids(load(starcoder2_dir)), greedy_ids(load(starcoder2_gguf["Q8_0"]))
    assert [len(ids) for ids in quantised] == [NEW_TOKENS] * len(PROMPTS)
    same = sum(a == b for r, q in zip(reference, quantised) for a, b in zip(r, q))
    print(f"Q8_0 GGUF vs float32 directory: {same}/{NEW_TOKENS * len(PROMPTS)} greedy tokens identical")


def test_int8_loads_from_a_gguf(starcoder2_gguf):
    engine = load(starcoder2_gguf["Q8_0"], dtype="int8")
    assert type(engine.model.lm_head).__name__ == "Int8Linear"
    assert all(not t.is_meta for t in engine.model.state_dict().values())
    assert [len(ids) for ids in greedy_ids(engine)] == [NEW_TOKENS] * len(PROMPTS)


def test_gguf_vocabulary_encodes_the_reference_cases_as_the_bundled_tokenizer(starcoder2_gguf):
    from_gguf = CodeTokenizer.from_gguf(starcoder2_gguf["F32"])
    bundled = CodeTokenizer.from_file(BUNDLED_TOKENIZER_DIR / "tokenizer.json")
    cases = reference_cases()
    assert len(cases) == 46
    for text, expected in cases:
        assert from_gguf.encode(text) == bundled.encode(text) == expected, text
    assert from_gguf.eos_token_id == 0 and from_gguf.bos_token_id is None
    assert from_gguf.fim is not None and from_gguf.fim.name == "StarCoder"


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "mistral", "gpt_bigcode"])
def test_other_families_generate_what_transformers_generates(model_type, tmp_path):
    d = build_family_model(tmp_path / model_type, model_type, seed=1)
    if model_type == "llama":  # a tokenizer that says prompts start with BOS, as Llama 2's does
        config = json.loads((d / "tokenizer_config.json").read_text())
        (d / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    engine = load(d)
    assert type(engine.model).__name__.lower().startswith(model_type.replace("_", ""))
    first_ids = [ids[0] for ids in engine.tokenizer.encode_batch(PROMPTS)]
    assert (first_ids == [0] * len(PROMPTS)) == (model_type == "llama")
    assert greedy_ids(engine) == transformers_ids(engine.model, engine.tokenizer)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "mistral"])
def test_gguf_of_other_families_generates_what_the_directory_generates(model_type, tmp_path):
    d = build_family_model(tmp_path / model_type, model_type, seed=2)
    gguf = write_gguf(d, tmp_path / f"{model_type}.gguf", "F32")
    from_gguf = load(gguf)
    assert type(from_gguf.model).__name__ == type(load(d).model).__name__
    assert greedy_ids(from_gguf) == greedy_ids(load(d))


def test_a_vocabulary_without_fim_tokens_refuses_fim_prompts(tmp_path, spark):
    from pipelines.jobs.config import config_from_dict
    from pipelines.jobs.generate import with_prompt
    from pipelines.models.families import UnsupportedModelError

    d = build_family_model(tmp_path / "m", "qwen2")
    tokenizer = (d / "tokenizer.json").read_text()
    (d / "tokenizer.json").write_text(tokenizer.replace("<fim_middle>", "<fim_centre>"))
    assert CodeTokenizer.from_dir(d).fim is None
    config = config_from_dict({"input": {"path": "x", "prefix_col": "prefix", "suffix_col": "suffix"},
                                  "model": {"source": str(d)}, "output": {"path": str(tmp_path / "out")}})
    df = spark.createDataFrame([("1", "def f(", ")")], ["id", "prefix", "suffix"])
    with pytest.raises(UnsupportedModelError, match="fill-in-the-middle needs FIM tokens.*StarCoder <fim_prefix>"):
        with_prompt(df, config)


def test_fim_prompts_take_the_models_format():
    from pipelines.models.families import FIM_FORMATS, fim_format_for

    qwen = fim_format_for({"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<fim_prefix>"})
    assert qwen.name == "Qwen2.5-Coder"
    assert qwen.prompt("a", "b", file_path="m.py") == "<|file_sep|>m.py\n<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
    assert fim_format_for({"<fim-prefix>", "<fim-suffix>", "<fim-middle>"}).name == "SantaCoder"
    assert fim_format_for({"<fim_prefix>", "<fim_suffix>"}) is None
    assert FIM_FORMATS[0].prompt("a", "b", repo_name="r") == "<repo_name>r<fim_prefix>a<fim_suffix>b<fim_middle>"


# --- files that cannot be used ------------------------------------------------------------------

def test_truncated_gguf_is_refused_naming_the_file(starcoder2_gguf, tmp_path):
    data = starcoder2_gguf["Q8_0"].read_bytes()
    for cut in (len(data) - 1000, 2000, 10):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelSourceError, match=f"{bad}.*(truncated|not a GGUF)"):
            resolve_model(str(bad))


def test_corrupt_gguf_is_refused_naming_the_file(starcoder2_gguf, tmp_path):
    data = bytearray(starcoder2_gguf["F32"].read_bytes())
    data[8:16] = b"\xff" * 8  # the tensor count
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match=f"{bad}.*(truncated or corrupt|truncated)"):
        resolve_model(str(bad))


def test_gguf_of_an_architecture_the_engine_does_not_drive_is_refused(tmp_path):
    path = tmp_path / "bert.gguf"
    gguf_writer_for(path, "bert").close()
    with pytest.raises(ModelSourceError, match=f"{path}: GGUF architecture 'bert' is not one this pipeline loads"):
        resolve_model(str(path))


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match="nope.gguf does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_gguf_refuses_the_openvino_engine(starcoder2_gguf):
    from pipelines.engine.backends import choose_backend

    from pipelines.engine.backends import BACKENDS

    assert choose_backend(str(starcoder2_gguf["F32"])).name == ("llamacpp" if BACKENDS["llamacpp"].installed()
                                                                else "pytorch")
    assert choose_backend(str(starcoder2_gguf["F32"]), dtype="float32").name == "pytorch"
    with pytest.raises(ModelSourceError, match="is a GGUF file: use engine '(llamacpp|pytorch)'"):
        choose_backend(str(starcoder2_gguf["F32"]), "openvino")


def test_ollama_name_resolves_to_its_verified_gguf_blob(starcoder2_gguf, tmp_path, monkeypatch):
    from pipelines.models.ollama_store import write_store

    store = tmp_path / "ollama"
    blob = write_store(store, "starcoder2", "3b", starcoder2_gguf["Q8_0"])
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_model("ollama:starcoder2:3b").path == str(blob)
    shutil.rmtree(store / "manifests")
    with pytest.raises(ModelSourceError, match="ollama pull starcoder2:3b"):
        resolve_model("ollama:starcoder2:3b")


def test_gguf_and_ollama_jobs_fail_before_any_output(spark, starcoder2_gguf, tmp_path, monkeypatch):
    from job_tables import job, write_table

    from pipelines.jobs import generate as generation_job

    src = write_table(spark, tmp_path / "in", [("a", "x = 1")])
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(starcoder2_gguf["F32"].read_bytes()[:-4096])
    with pytest.raises(ModelSourceError, match=f"{truncated} (is truncated|cannot be read as GGUF.*truncated or corrupt)"):
        generation_job.run(spark, job(src, tmp_path / "out1", truncated))
    assert not (tmp_path / "out1").exists()

    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "empty-store"))
    with pytest.raises(ModelSourceError, match="ollama pull starcoder2:3b.*or point model.source"):
        generation_job.run(spark, job(src, tmp_path / "out2", "ollama:starcoder2:3b"))
    assert not (tmp_path / "out2").exists()


def test_starcoder_gpt_bigcode_gguf_is_refused_with_what_to_do_instead(tmp_path):
    path = tmp_path / "starcoder.gguf"
    writer = gguf_writer_for(path, "starcoder")
    writer.close()
    with pytest.raises(ModelSourceError, match="cannot load GGUF files of StarCoder/SantaCoder.*Hugging Face directory"):
        resolve_model(str(path))


def test_remote_code_models_are_refused(tmp_path):
    d = build_family_model(tmp_path / "m", "llama")
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match="trust_remote_code and is refused"):
        resolve_model(str(d))


def gguf_writer_for(path, architecture):
    """A minimal GGUF of `architecture`: one tensor, header and keys written, ready to close."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    return writer


def test_a_tokenizer_whose_post_processor_adds_bos_gets_bos_prompts(tmp_path):
    from tokenizers import Tokenizer, processors

    d = build_family_model(tmp_path / "m", "llama")
    tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert CodeTokenizer.from_dir(d).bos_token_id is None  # StarCoder2's post-processor adds nothing
    tokenizer.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                             special_tokens=[("<|endoftext|>", 0)])
    tokenizer.save(str(d / "tokenizer.json"))
    assert CodeTokenizer.from_dir(d).encode("def f():") == [0, *tokenizer.encode("def f():", add_special_tokens=False).ids]
