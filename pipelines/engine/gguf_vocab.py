"""Convert a vocab-only StarCoder2 GGUF file into a Hugging Face `tokenizer.json`.

StarCoder2's tokenizer is a byte-level BPE whose pre-tokenizer first splits every digit
on its own, then applies the GPT-2 byte-level regex. The GGUF file carries the vocabulary,
the merge list and which ids are control (special) tokens; this module turns those into
the `tokenizers` objects and writes the files a model directory needs.
"""

from __future__ import annotations

import json
from pathlib import Path

# GGUF token types (llama.cpp's llama_token_type): 3 is a control token.
_GGUF_CONTROL_TOKEN = 3


def read_gguf_vocab(gguf_path: str | Path) -> dict:
    """Read tokens, merges, special-token ids and the tokenizer family from a GGUF file."""
    import gguf  # only needed when converting, never at inference time

    reader = gguf.GGUFReader(str(gguf_path))
    fields = reader.fields

    def value(key):
        if key not in fields:
            raise ValueError(f"{gguf_path}: GGUF field {key!r} is missing; is this a tokenizer GGUF?")
        return fields[key].contents()

    model_family = value("tokenizer.ggml.model")
    if model_family != "gpt2":
        raise ValueError(
            f"{gguf_path}: tokenizer.ggml.model is {model_family!r}; only byte-level BPE ('gpt2') "
            "vocabularies such as StarCoder2's can be converted"
        )
    tokens = list(value("tokenizer.ggml.tokens"))
    token_types = list(value("tokenizer.ggml.token_type"))
    return {
        "tokens": tokens,
        "merges": list(value("tokenizer.ggml.merges")),
        "special_ids": [i for i, t in enumerate(token_types) if t == _GGUF_CONTROL_TOKEN],
        "eos_token_id": int(value("tokenizer.ggml.eos_token_id")),
        "bos_token_id": int(value("tokenizer.ggml.bos_token_id")),
        "pre": fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else None,
    }


def build_tokenizer(vocab: dict):
    """Build a `tokenizers.Tokenizer` equal to StarCoder2's from the GGUF vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    token_to_id = {tok: i for i, tok in enumerate(vocab["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in vocab["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=token_to_id, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [vocab["tokens"][i] for i in vocab["special_ids"]]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for token in specials:
        if tokenizer.token_to_id(token) != token_to_id[token]:
            raise ValueError(f"special token {token!r} did not keep its id {token_to_id[token]}")
    return tokenizer


def write_tokenizer_files(vocab: dict, out_dir: str | Path) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab)
    tokenizer.save(str(out / "tokenizer.json"))
    eos = vocab["tokens"][vocab["eos_token_id"]]
    bos = vocab["tokens"][vocab["bos_token_id"]]
    specials = [vocab["tokens"][i] for i in vocab["special_ids"]]
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": eos,
        "pad_token": eos,
        "additional_special_tokens": [t for t in specials if t not in (eos, bos)],
        "clean_up_tokenization_spaces": False,
        "model_max_length": 16384,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special_map["additional_special_tokens"] = config["additional_special_tokens"]
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Convert a StarCoder2 vocab GGUF into tokenizer.json")
    parser.add_argument("gguf", help="path to the vocab-only GGUF file")
    parser.add_argument("out_dir", help="directory to write tokenizer.json and its config into")
    args = parser.parse_args(argv)
    out = write_tokenizer_files(read_gguf_vocab(args.gguf), args.out_dir)
    print(f"wrote {out / 'tokenizer.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
