"""Write a Hugging Face model directory as a GGUF file, the way llama.cpp's converter does.

`write_gguf` follows llama.cpp's `convert_hf_to_gguf.py` (`TextModel.set_gguf_parameters`,
`prepare_tensors`, `_set_vocab_gpt2`, and the `StarCoder2Model` / `LlamaModel` / `Qwen2Model`
classes) for the model families the project uses, so that llama.cpp and transformers' GGUF loader
(`transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint`) read the result:

- tensors get llama.cpp's names (`gguf.get_tensor_name_map`); tied embeddings write no
  `output.weight`; for llama (and mistral, which llama.cpp writes as arch `llama`) the attn_q / attn_k
  weights and biases are permuted as llama.cpp's `LlamaModel.permute` does (transformers'
  `LlamaTensorProcessor._reverse_permute_weights` undoes it on load);
- types: 1-D tensors (norms, biases) and `*_norm.weight` stay F32; every other weight is F32, F16 or
  Q8_0 as `file_type` says, the token embedding included; a matrix whose rows Q8_0 cannot split into
  blocks of 32 falls back to F16, as in llama.cpp;
- the architecture keys llama.cpp writes, plus `{arch}.attention.sliding_window` when the model uses
  one; the byte-level BPE vocabulary from tokenizer.json (`tokenizer.ggml.*`).

Weights are read one tensor at a time (`safetensors.safe_open`) and written as soon as converted, so
converting needs about one tensor's memory, not the model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.models.families import FAMILIES

# model_type -> GGUF architecture name, as llama.cpp converts them (mistral is written as llama).
ARCHITECTURES = {t: f.gguf_architectures[0] for t, f in FAMILIES.items() if f.gguf_architectures}
# Families written by llama.cpp's LlamaModel, which permutes attn_q / attn_k (undo_permute).
_PERMUTED = {t for t, arch in ARCHITECTURES.items() if arch == "llama"}

FILE_TYPES = ("F32", "F16", "Q8_0")

# llama.cpp's token types (gguf.TokenType): NORMAL 1, CONTROL 3, USER_DEFINED 4, UNUSED 5.
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5

# Tensors llama.cpp's prepare_tensors drops.
_SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


def write_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    file_type: str = "F32",
    *,
    pre: str = "starcoder",
    name: str | None = None,
) -> Path:
    """Convert `model_dir` (config.json, *.safetensors, tokenizer.json) into the GGUF file `out_path`.

    file_type: "F32", "F16" or "Q8_0" (llama.cpp's --outtype). pre: tokenizer.ggml.pre, the
    pre-tokenizer llama.cpp applies ("starcoder" for StarCoder2's tokenizer, which splits digits one
    by one). name: general.name; by default the model's name (config `_name_or_path`, else the
    directory's name). For mistral it must contain "mistral" so that readers tell it from llama;
    transformers even needs it to be exactly "mistral", so that is the default there.
    """
    import gguf

    model_dir = Path(model_dir)
    out_path = Path(out_path)
    if file_type not in FILE_TYPES:
        raise ValueError(f"file_type must be one of {FILE_TYPES}, not {file_type!r}")
    hparams = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    model_type = hparams.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{model_dir}: model_type {model_type!r} is not one of {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[model_type]
    model_arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    ftype = {
        "F32": gguf.LlamaFileType.ALL_F32,
        "F16": gguf.LlamaFileType.MOSTLY_F16,
        "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[file_type]

    if name is None:
        name = Path(str(hparams.get("_name_or_path") or "")).name or model_dir.resolve().name
        if model_type == "mistral":
            name = "mistral"
    if model_type == "mistral" and "mistral" not in name.lower():
        raise ValueError(f"general.name {name!r} of a mistral model must contain 'mistral'")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")  # renamed once complete
    writer = gguf.GGUFWriter(str(partial), arch)  # writes general.architecture
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        _add_model_parameters(writer, hparams, model_type, int(ftype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_vocab(writer, model_dir, hparams, model_type, pre)

        plan = _tensor_plan(model_dir, hparams, model_arch, file_type)
        for tensor in plan:
            writer.add_tensor_info(
                tensor["name"], tensor["shape"], np.dtype(np.float32), tensor["nbytes"], raw_dtype=tensor["qtype"]
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        _write_tensor_data(writer, plan, hparams, model_type)
        writer.close()
        partial.replace(out_path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    return out_path


def _add_model_parameters(writer, hparams: dict, model_type: str, ftype: int) -> None:
    """TextModel.set_gguf_parameters plus the family's additions (LlamaModel: vocab size, rope dims)."""
    import gguf

    writer.add_block_count(hparams["num_hidden_layers"])
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_head_count_kv(hparams.get("num_key_value_heads", hparams["num_attention_heads"]))

    rope = dict(hparams.get("rope_parameters") or hparams.get("rope_scaling") or {})
    rope_theta = hparams.get("rope_theta", rope.get("rope_theta"))
    rope_type = rope.get("rope_type", rope.get("type"))
    factor = rope.get("factor")
    if rope_type == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    elif rope_type == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    elif rope_type not in (None, "default"):
        # llama3 needs llama.cpp's rope_freqs tensor, longrope its factor tensors: not written here.
        raise NotImplementedError(f"RoPE scaling {rope_type!r} is not supported by write_gguf")
    if rope_theta is not None:
        writer.add_rope_freq_base(rope_theta)

    if model_type == "starcoder2":
        writer.add_layer_norm_eps(hparams["norm_epsilon"])
    else:
        writer.add_layer_norm_rms_eps(hparams["rms_norm_eps"])
    if hparams.get("head_dim") is not None:
        writer.add_key_length(hparams["head_dim"])
        writer.add_value_length(hparams["head_dim"])
    window = hparams.get("sliding_window")
    if window is not None and hparams.get("use_sliding_window", True):
        writer.add_sliding_window(window)
    writer.add_file_type(ftype)

    if model_type in _PERMUTED:
        writer.add_vocab_size(hparams["vocab_size"])
        rope_dim = hparams.get("head_dim") or hparams["hidden_size"] // hparams["num_attention_heads"]
        writer.add_rope_dimension_count(rope_dim)


# -- vocabulary ---------------------------------------------------------------------------------


def _looks_special(token: str) -> bool:
    """llama.cpp's TextModel.does_token_look_special."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def read_vocab(model_dir: str | Path, vocab_size: int | None = None) -> tuple[list[str], list[int]]:
    """Tokens in id order and their GGUF token types from a byte-level BPE tokenizer.json.

    As llama.cpp's get_vocab_base: ids the tokenizer lacks become "[PAD{id}]" (unused), added
    tokens are control tokens when special (or when they look special), else user-defined.
    """
    tokenizer = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{model_dir}: tokenizer.json holds a {model.get('type')!r} model, not a byte-level BPE")
    by_id = {int(i): tok for tok, i in model["vocab"].items()}
    added = {int(t["id"]): t for t in tokenizer.get("added_tokens", [])}
    for i, entry in added.items():
        by_id[i] = entry["content"]
    size = max(by_id) + 1 if vocab_size is None else vocab_size
    if max(by_id) >= size:
        raise ValueError(f"{model_dir}: token id {max(by_id)} does not fit a vocabulary of {size}")
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(_UNUSED)
        elif i in added:
            token = by_id[i]
            if added[i].get("special") or _looks_special(token):
                types.append(_CONTROL)
            else:
                token = token.replace("\u2581", " ")  # pre-normalised user-defined spaces
                types.append(_USER_DEFINED)
            tokens.append(token)
        else:
            tokens.append(by_id[i])
            types.append(_NORMAL)
    return tokens, types


def _add_vocab(writer, model_dir: Path, hparams: dict, model_type: str, pre: str) -> None:
    """llama.cpp's _set_vocab_gpt2 (and LlamaModel.set_vocab's additions)."""
    import gguf

    vocab_size = hparams.get("vocab_size")
    tokens, types = read_vocab(model_dir, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    # Merges (both tokenizer.json layouts), bos/eos/unk/pad ids from tokenizer_config.json, then
    # config.json, and add_*_token flags: gguf's SpecialVocab, which llama.cpp's converter uses.
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise ValueError(f"{model_dir}: tokenizer.json has no BPE merges")
    if model_type == "starcoder2" or (model_type in _PERMUTED and vocab_size == 49152):
        # StarCoder2 prepends no BOS; llama.cpp's LlamaModel says so too for 49,152-token vocabularies.
        special.add_special_token["bos"] = False
    if model_type in _PERMUTED:
        config_file = model_dir / "tokenizer_config.json"
        if config_file.is_file():
            tokenizer_config = json.loads(config_file.read_text(encoding="utf-8"))
            if (add_prefix_space := tokenizer_config.get("add_prefix_space")) is not None:
                writer.add_add_space_prefix(add_prefix_space)
    special.add_to_gguf(writer, quiet=True)


# -- tensors ------------------------------------------------------------------------------------


def _safetensors_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("model*.safetensors")) or sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    return files


def _llama_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: rotary halves -> interleaved pairs, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensor_plan(model_dir: Path, hparams: dict, model_arch, file_type: str) -> list[dict]:
    """Name, GGUF name, shape, type and size of every tensor to write, in writing order."""
    import gguf
    from safetensors import safe_open

    tensor_map = gguf.get_tensor_name_map(model_arch, hparams["num_hidden_layers"])
    tied = hparams.get("tie_word_embeddings") is True
    wanted = gguf.GGMLQuantizationType[file_type]
    plan, seen = [], set()
    for path in _safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for hf_name in f.keys():
                if hf_name.endswith(_SKIPPED_SUFFIXES) or (tied and hf_name == "lm_head.weight"):
                    continue
                gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ValueError(f"{path.name}: cannot map tensor {hf_name!r} to a GGUF name")
                if gguf_name in seen:
                    raise ValueError(f"{path.name}: tensor {hf_name!r} maps to {gguf_name!r} twice")
                seen.add(gguf_name)
                shape = tuple(int(n) for n in f.get_slice(hf_name).get_shape())
                # prepare_tensors: 1-D tensors, norms and non-weights stay F32.
                if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
                    qtype = gguf.GGMLQuantizationType.F32
                else:
                    qtype = wanted
                    block, _ = gguf.GGML_QUANT_SIZES[qtype]
                    if shape[-1] % block:  # gguf.quants.quantize would raise QuantError
                        qtype = gguf.GGMLQuantizationType.F16
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                nbytes = int(np.prod(shape)) // block * type_size
                plan.append(dict(file=path, hf_name=hf_name, name=gguf_name, shape=shape, qtype=qtype, nbytes=nbytes))
    if hparams.get("tie_word_embeddings") is False and "output.weight" not in seen:
        raise ValueError(f"{model_dir}: tie_word_embeddings is false but there is no lm_head.weight")
    return plan


def _write_tensor_data(writer, plan: list[dict], hparams: dict, model_type: str) -> None:
    import gguf
    from safetensors import safe_open

    n_head = hparams["num_attention_heads"]
    n_head_kv = hparams.get("num_key_value_heads", n_head)
    for path in dict.fromkeys(t["file"] for t in plan):  # the plan lists each file's tensors together
        with safe_open(str(path), framework="pt") as f:
            for tensor in (t for t in plan if t["file"] == path):
                hf_name = tensor["hf_name"]
                data = f.get_tensor(hf_name).float().numpy()
                if model_type in _PERMUTED:
                    if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                        data = _llama_permute(data, n_head, n_head)
                    elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                        data = _llama_permute(data, n_head, n_head_kv)
                data = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), tensor["qtype"])
                writer.write_tensor_data(data)
                del data
