"""devtools.gguf_writer: Hugging Face directory -> GGUF, read back by transformers' GGUF loader."""

import json

import gguf
import numpy as np
import pytest
import torch
from conftest import DATA

from devtools.gguf_writer import _llama_permute, write_gguf
from devtools.model_builder import build_family_model, build_random_model

LLAMA_VOCAB = DATA / "starcoder2-vocab" / "ggml-vocab-starcoder.gguf"  # written by llama.cpp
Q8_0 = gguf.GGMLQuantizationType.Q8_0

# Parsing a GGUF file with the 49,152-token vocabulary takes seconds (GGUFReader reads ~100,000
# strings one by one), so every file is parsed once: here and inside transformers' loader, which
# calls gguf.GGUFReader too.
_GGUFReader = gguf.GGUFReader
_readers = {}


def cached_reader(path, mode="r"):
    key = str(path)
    if key not in _readers:
        _readers[key] = _GGUFReader(path, mode)
    return _readers[key]


@pytest.fixture(scope="module", autouse=True)
def read_each_file_once():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "GGUFReader", cached_reader)
        yield
    _readers.clear()
    _loaded.clear()


def field(reader, key):
    return reader.fields[key].contents()


def safetensors_weights(model_dir):
    from safetensors.torch import load_file

    weights = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(str(path)))
    return weights


_loaded = {}


def load_back(path, model_dir, model_type=None):
    """transformers' GGUF loader, mapping names onto a model built from the directory's config."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if str(path) not in _loaded:
        config = AutoConfig.from_pretrained(model_dir)
        if model_type is not None:  # see test_mistral_and_qwen2
            settings = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")}
            config = AutoConfig.for_model(model_type, **settings)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        _loaded[str(path)] = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    return _loaded[str(path)]


def assert_within_q8_0(restored: torch.Tensor, original: torch.Tensor):
    """Q8_0: blocks of 32 along a row, scale amax/127 stored as f16, values rounded to the nearest step."""
    x = original.float().numpy().reshape(-1, 32)
    err = np.abs(restored.float().numpy().reshape(-1, 32) - x)
    step = np.abs(x).max(axis=1, keepdims=True) / 127
    assert (err <= 0.6 * step + 1e-12).all()


@pytest.fixture(scope="module")
def starcoder2_dir(tmp_path_factory):

    return build_random_model(tmp_path_factory.mktemp("gguf") / "m", "tiny")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    # rope_theta 50000, untied output layer (model_builder.TINY_FAMILY_CONFIGS)
    return build_family_model(tmp_path_factory.mktemp("gguf") / "llama", "llama")


@pytest.fixture(scope="module")
def written(starcoder2_dir, llama_dir, tmp_path_factory):
    """{(family, file_type): path}, written once for the module."""
    out = tmp_path_factory.mktemp("gguf-out")
    dirs = {"starcoder2": starcoder2_dir, "llama": llama_dir}
    return {
        (family, ft): write_gguf(dirs[family], out / f"{family}-{ft}.gguf", ft)
        for family in dirs
        for ft in ("F32", "Q8_0")
    }


@pytest.mark.parametrize("family", ["starcoder2", "llama"])
def test_f32_round_trip_is_exact(family, written, starcoder2_dir, llama_dir):
    model_dir = {"starcoder2": starcoder2_dir, "llama": llama_dir}[family]
    original = safetensors_weights(model_dir)
    loaded = load_back(written[family, "F32"], model_dir)["tensors"]

    assert set(loaded) == set(original)
    for name, tensor in original.items():
        assert loaded[name].dtype == torch.float32
        assert torch.equal(loaded[name], tensor), name

    reader = gguf.GGUFReader(str(written[family, "F32"]))
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}
    assert ("output.weight" in {t.name for t in reader.tensors}) == (family == "llama")  # starcoder2 ties


@pytest.mark.parametrize("family", ["starcoder2", "llama"])
def test_q8_0_quantises_matrices_and_keeps_vectors_f32(family, written, starcoder2_dir, llama_dir):
    model_dir = {"starcoder2": starcoder2_dir, "llama": llama_dir}[family]
    reader = gguf.GGUFReader(str(written[family, "Q8_0"]))
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    for t in reader.tensors:
        expected = Q8_0 if len(t.shape) == 2 else gguf.GGMLQuantizationType.F32
        assert t.tensor_type == expected, t.name
    assert any(t.name == "token_embd.weight" and t.tensor_type == Q8_0 for t in reader.tensors)

    original = safetensors_weights(model_dir)
    loaded = load_back(written[family, "Q8_0"], model_dir)["tensors"]
    assert set(loaded) == set(original)
    for name, tensor in original.items():
        if tensor.dim() == 1:
            assert torch.equal(loaded[name], tensor), name
        else:
            assert not torch.equal(loaded[name], tensor), name
            assert_within_q8_0(loaded[name], tensor)


def test_starcoder2_architecture_keys(written, starcoder2_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(starcoder2_dir)
    reader = gguf.GGUFReader(str(written["starcoder2", "F32"]))
    assert field(reader, "general.architecture") == "starcoder2"
    assert field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32
    expected = {
        "context_length": config.max_position_embeddings,
        "embedding_length": 64,
        "feed_forward_length": 256,
        "block_count": 2,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "attention.sliding_window": 64,
    }
    for key, value in expected.items():
        assert field(reader, f"starcoder2.{key}") == value, key
    assert field(reader, "starcoder2.rope.freq_base") == pytest.approx(999999.4420358813, rel=1e-7)
    assert field(reader, "starcoder2.attention.layer_norm_epsilon") == pytest.approx(1e-5, rel=1e-6)
    assert "starcoder2.attention.layer_norm_rms_epsilon" not in reader.fields
    assert field(reader, "tokenizer.ggml.add_bos_token") is False


def test_vocabulary_matches_llama_cpps_starcoder_vocab(written):
    """Tokens, types, merges and special ids equal those of the vocab GGUF llama.cpp wrote."""
    ours = gguf.GGUFReader(str(written["starcoder2", "F32"]))
    theirs = gguf.GGUFReader(str(LLAMA_VOCAB))
    for key in (
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
    ):
        assert field(ours, key) == field(theirs, key), key
    # The architecture keys llama.cpp wrote for starcoder2-3b exist, with the same types, in ours.
    for key, f in theirs.fields.items():
        if key.startswith("starcoder2."):
            assert ours.fields[key].types == f.types, key


def test_llama_keys_and_permutation(written, llama_dir):
    reader = gguf.GGUFReader(str(written["llama", "F32"]))
    assert field(reader, "general.architecture") == "llama"
    expected = {
        "context_length": 2048,
        "embedding_length": 64,
        "feed_forward_length": 128,
        "block_count": 2,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "rope.dimension_count": 16,
        "vocab_size": 49152,
    }
    for key, value in expected.items():
        assert field(reader, f"llama.{key}") == value, key
    assert field(reader, "llama.rope.freq_base") == 50000.0
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6, rel=1e-6)
    assert "llama.attention.sliding_window" not in reader.fields

    # The file holds llama.cpp's layout: q/k rows interleaved per head, not transformers' halves.
    original = safetensors_weights(llama_dir)
    stored = {t.name: np.asarray(t.data) for t in reader.tensors}
    q = original["model.layers.0.self_attn.q_proj.weight"].numpy()
    k = original["model.layers.0.self_attn.k_proj.weight"].numpy()
    assert np.array_equal(stored["blk.0.attn_q.weight"], _llama_permute(q, 4, 4))
    assert np.array_equal(stored["blk.0.attn_k.weight"], _llama_permute(k, 4, 2))
    assert not np.array_equal(stored["blk.0.attn_k.weight"], k)
    assert np.array_equal(stored["blk.0.attn_v.weight"], original["model.layers.0.self_attn.v_proj.weight"].numpy())


def test_llama_loads_with_from_pretrained_and_gives_the_same_logits(written, llama_dir):
    from transformers import AutoModelForCausalLM

    path = written["llama", "F32"]
    reference = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ids = torch.tensor([[0, 100, 2000, 30000, 49151, 7]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)


def write_small_tokenizer(out_dir, vocab_size):
    """A byte-level BPE tokenizer.json with 260 tokens whose merges are stored as "a b" strings."""
    from tokenizers import pre_tokenizers

    vocab = {"<|endoftext|>": 0}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = ["Ġ t", "h e", "Ġt he"]
    for merge in merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    assert len(vocab) == 260 < vocab_size
    tokenizer = {
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": merges},
    }
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return vocab, merges


@pytest.mark.parametrize("model_type", ["mistral", "qwen2"])
def test_mistral_and_qwen2(model_type, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    vocab_size = 288
    config = AutoConfig.for_model(
        model_type,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        tie_word_embeddings=model_type == "qwen2",
    )
    torch.manual_seed(0)
    model_dir = tmp_path / model_type
    AutoModelForCausalLM.from_config(config).save_pretrained(str(model_dir), safe_serialization=True)
    vocab, merges = write_small_tokenizer(model_dir, vocab_size)

    path = write_gguf(model_dir, tmp_path / f"{model_type}.gguf", pre="gpt-2")
    reader = gguf.GGUFReader(str(path))
    if model_type == "mistral":
        # llama.cpp writes mistral as llama; readers tell them apart by general.name.
        assert field(reader, "general.architecture") == "llama"
        assert field(reader, "general.name") == "mistral"
        assert field(reader, "llama.attention.sliding_window") == config.sliding_window == 4096
        assert field(reader, "llama.rope.dimension_count") == 16
    else:
        assert field(reader, "general.architecture") == "qwen2"
        assert "qwen2.attention.sliding_window" not in reader.fields  # use_sliding_window is false
        assert "output.weight" not in {t.name for t in reader.tensors}
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert field(reader, "tokenizer.ggml.merges") == merges
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert tokens[:260] == list(vocab) and types[:260] == [3] + [1] * 259
    assert tokens[260:] == [f"[PAD{i}]" for i in range(260, vocab_size)] and set(types[260:]) == {5}

    # transformers 5 reads the file as a mistral model, but cannot map a MistralForCausalLM's names
    # (get_gguf_hf_weights_map knows no GGUF arch "mistral"): map them with the llama model's, which
    # are the same.
    parsed = load_back(path, model_dir, model_type="llama" if model_type == "mistral" else None)
    assert parsed["config"]["model_type"] == model_type
    original = safetensors_weights(model_dir)
    assert set(parsed["tensors"]) == set(original)
    for name, tensor in original.items():
        assert torch.equal(parsed["tensors"][name], tensor), name


def test_rejects_unknown_file_type(starcoder2_dir, tmp_path):
    with pytest.raises(ValueError, match="file_type"):
        write_gguf(starcoder2_dir, tmp_path / "x.gguf", "Q4_0")
