"""Turn a GGUF file's vocabulary into a Hugging Face tokenizer (and `tokenizer.json`).

The one converter: the engine builds the tokenizer of a GGUF model with it, and the bundled
StarCoder2 tokenizer was written by it from llama.cpp's vocab GGUF. A GGUF file carries the
vocabulary, the merge list, which ids are control (special) tokens, and the name of the
pre-tokenizer (`tokenizer.ggml.pre`) llama.cpp splits text with before BPE. StarCoder2's
(and SmolLM's) splits every digit on its own, then applies the GPT-2 byte-level regex.
"""

from __future__ import annotations

import json
from pathlib import Path

# GGUF token types (llama.cpp's llama_token_type): 3 is a control token.
_GGUF_CONTROL_TOKEN = 3

# llama.cpp's split regexes (llama-vocab.cpp), by tokenizer.ggml.pre.
_LLAMA3_SPLIT = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
                 r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
                r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)")
# tokenizer.ggml.pre -> how text is split before BPE: "digits" (each digit alone, then the
# GPT-2 regex), "gpt2" (the GPT-2 regex), or a regex of its own followed by byte mapping.
PRE_TOKENIZERS = {
    "starcoder": "digits", "smollm": "digits", "refact": "digits", "codeshell": "digits",
    "gpt-2": "gpt2", "default": "gpt2", None: "gpt2",
    "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
}


def read_gguf_vocab(gguf_path: str | Path) -> dict:
    """Read tokens, merges, special-token ids and the tokenizer family from a GGUF file."""
    from pipelines.models.gguf_file import open_reader

    reader = open_reader(gguf_path)
    fields = reader.fields

    def value(key):
        if key not in fields:
            raise ValueError(f"{gguf_path}: GGUF field {key!r} is missing; is this a tokenizer GGUF?")
        return fields[key].contents()

    model_family = value("tokenizer.ggml.model")
    if model_family != "gpt2":
        raise ValueError(
            f"{gguf_path}: tokenizer.ggml.model is {model_family!r}; only byte-level BPE ('gpt2') "
            "vocabularies (StarCoder, SmolLM, Llama 3, Qwen2) are read from GGUF files. Use the model's "
            "Hugging Face directory, whose tokenizer.json is read as it is"
        )
    pre = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else None
    if pre not in PRE_TOKENIZERS:
        known = ", ".join(sorted(k for k in PRE_TOKENIZERS if k))
        raise ValueError(
            f"{gguf_path}: tokenizer.ggml.pre is {pre!r}, a pre-tokenizer this converter does not know "
            f"(known: {known}); use the model's Hugging Face directory instead"
        )
    tokens = list(value("tokenizer.ggml.tokens"))
    token_types = list(value("tokenizer.ggml.token_type"))
    return {
        "tokens": tokens,
        "merges": list(value("tokenizer.ggml.merges")),
        "special_ids": [i for i, t in enumerate(token_types) if t == _GGUF_CONTROL_TOKEN],
        "eos_token_id": int(value("tokenizer.ggml.eos_token_id")),
        "bos_token_id": int(value("tokenizer.ggml.bos_token_id")),
        "pre": pre,
        # None: the file does not say, and the model family's rule applies
        "add_bos": bool(fields["tokenizer.ggml.add_bos_token"].contents())
        if "tokenizer.ggml.add_bos_token" in fields else None,
    }


def build_tokenizer(vocab: dict):
    """Build the `tokenizers.Tokenizer` a GGUF vocabulary describes (StarCoder2's, for its GGUF)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    token_to_id = {tok: i for i, tok in enumerate(vocab["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in vocab["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=token_to_id, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = None
    split = PRE_TOKENIZERS[vocab.get("pre")]
    # The GPT-2 regex is ByteLevel's own; a split of the vocabulary's own goes before a plain byte mapping.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=split in ("digits", "gpt2"))
    if split == "digits":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif split == "gpt2":
        tokenizer.pre_tokenizer = byte_level
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
             pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
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
