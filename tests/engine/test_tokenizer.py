"""The bundled StarCoder2 tokenizer, built from the vocab GGUF by the project's converter."""

import json

import pytest
from conftest import DATA

from pipelines.engine.gguf_vocab import build_tokenizer, read_gguf_vocab
from pipelines.engine import tokenizer as tokenizer_module
from pipelines.engine.tokenizer import BUNDLED_TOKENIZER_DIR, CodeTokenizer, CutPrompts

VOCAB_DIR = DATA / "starcoder2-vocab"
SEPARATOR = "\n__ggml_vocab_test__\n"


def reference_cases():
    texts = (VOCAB_DIR / "ggml-vocab-starcoder.gguf.inp").read_text(encoding="utf-8")
    assert texts.endswith(SEPARATOR)
    inputs = texts[: -len(SEPARATOR)].split(SEPARATOR)
    outputs = (VOCAB_DIR / "ggml-vocab-starcoder.gguf.out").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(inputs) == len(outputs) == 46
    return [(text, [int(t) for t in ids.split()]) for text, ids in zip(inputs, outputs)]


@pytest.fixture(scope="module")
def tokenizer():
    return CodeTokenizer.from_file(BUNDLED_TOKENIZER_DIR / "tokenizer.json")


@pytest.mark.parametrize("text,expected", reference_cases())
def test_bundled_tokenizer_reproduces_reference_encoding(tokenizer, text, expected):
    assert tokenizer.encode(text) == expected


def test_reference_encodings_decode_back_to_their_text(tokenizer):
    for text, ids in reference_cases():
        assert tokenizer.decode(ids) == text


def test_fim_and_control_tokens_are_single_special_tokens(tokenizer):
    ids = tokenizer.encode("<fim_prefix>def f():<fim_suffix>\n    return 1<fim_middle>")
    assert ids[0] == 1 and 3 in ids and ids[-1] == 2
    assert tokenizer.encode("<file_sep>") == [6]
    assert tokenizer.encode("<|endoftext|>") == [0]
    assert tokenizer.eos_token_id == 0
    assert tokenizer.special_ids == frozenset(range(38))
    assert tokenizer.vocab_size == 49152


def test_digits_are_split_one_per_token(tokenizer):
    ids = tokenizer.encode("12345")
    assert len(ids) == 5


def test_committed_tokenizer_equals_a_fresh_conversion_of_the_gguf():
    fresh = json.loads(build_tokenizer(read_gguf_vocab(VOCAB_DIR / "ggml-vocab-starcoder.gguf")).to_str())
    committed = json.loads((BUNDLED_TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    assert fresh == committed


def test_converter_refuses_a_non_bpe_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "a"])
    writer.add_token_types([2, 1])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ValueError, match="only byte-level BPE"):
        read_gguf_vocab(path)


def test_prompts_are_keyed_by_what_the_model_runs_of_them(monkeypatch):
    """Texts too short to pass maxInputLength are keyed as they are, untokenised; longer prompts by
    their last maxInputLength token ids, so that prompts differing only in what is cut share a key."""
    cut = CutPrompts(str(BUNDLED_TOKENIZER_DIR), 12)
    tail = "def f(x):\n    return x * 2\n" * 3
    tok = CodeTokenizer.from_dir(BUNDLED_TOKENIZER_DIR)
    assert len(tok.encode(tail)) > 12
    a, b = cut(["import os\n" + tail, "x = [1, 2]\n" + tail])
    assert a == b == "ids:" + " ".join(map(str, tok.encode(tail)[-12:]))
    assert cut(["x = 1\n" + tail])[0] != cut(["x = 1\n" + tail[:-3]])[0]
    # 12 bytes or more but at most 12 tokens: not cut, keyed by its text
    assert len(tok.encode("a" * 24)) <= 12 and cut(["a" * 24]) == ["text:" + "a" * 24]

    def no_tokenizer(source):
        raise AssertionError("a text of fewer bytes than maxInputLength was tokenised")

    monkeypatch.setattr(tokenizer_module, "_tokenizer_of", no_tokenizer)
    assert cut(["def g(y):\n", None]) == ["text:def g(y):\n", None]
