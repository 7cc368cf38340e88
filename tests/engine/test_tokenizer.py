"""The bundled StarCoder2 tokenizer, built from the vocab GGUF by the project's converter."""

import json

import pytest
from conftest import DATA

from pipelines.engine.gguf_vocab import build_tokenizer, read_gguf_vocab
from pipelines.engine.tokenizer import BUNDLED_TOKENIZER_DIR, CodeTokenizer

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
