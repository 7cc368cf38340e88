"""What differs between the decoder-only code model families the engine runs, in one table.

The engine drives every family the same way (transformers' causal-LM class, our decode loop,
left padding, a dynamic KV cache), so a family is only: the transformers class, the name
llama.cpp gives its architecture in GGUF files, whether a GGUF's prompts start with a BOS token
when the file does not say (a directory's tokenizer files always say), and config settings a
GGUF file does not carry. Fill-in-the-middle is a property of the
vocabulary, not of the architecture (a Llama-architecture model may or may not have FIM
tokens), so the FIM formats are a second table, matched against the tokenizer's tokens.
Nothing here imports torch or Spark.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelFamily:
    model_type: str  # config.json's model_type
    transformers_class: str  # the causal-LM class transformers builds it with
    gguf_architectures: tuple[str, ...]  # general.architecture values of its GGUF files; () if none loads
    add_bos: bool  # a GGUF file's prompts start with BOS when the file does not say (llama.cpp's default)
    # Settings GGUF files of this family leave out, as {config key: value}: the model's own.
    gguf_config_defaults: dict = field(default_factory=dict)
    # config.json names of this family -> the names the memory plan reads (Llama's).
    config_aliases: dict = field(default_factory=dict)


FAMILIES = {
    f.model_type: f
    for f in (
        # llama.cpp writes no sliding-window key for StarCoder2; every StarCoder2 model uses 4,096.
        ModelFamily("starcoder2", "Starcoder2ForCausalLM", ("starcoder2",), add_bos=False,
                    gguf_config_defaults={"sliding_window": 4096, "use_bias": True}),
        # StarCoder, StarCoderBase, SantaCoder. transformers reads no GGUF of this architecture
        # (llama.cpp's "starcoder"), so only Hugging Face directories load.
        ModelFamily("gpt_bigcode", "GPTBigCodeForCausalLM", (), add_bos=False,
                    config_aliases={"n_embd": "hidden_size", "n_layer": "num_hidden_layers",
                                    "n_head": "num_attention_heads", "n_inner": "intermediate_size",
                                    "n_positions": "max_position_embeddings"}),
        ModelFamily("llama", "LlamaForCausalLM", ("llama",), add_bos=True),
        ModelFamily("qwen2", "Qwen2ForCausalLM", ("qwen2",), add_bos=False),
        # llama.cpp writes Mistral models as architecture "llama" (transformers tells them apart
        # by general.name); a GGUF of either loads as what its name says.
        # No window key: full attention, as llama.cpp runs it (Mistral 7B v0.2 on have no window).
        ModelFamily("mistral", "MistralForCausalLM", ("llama",), add_bos=True,
                    gguf_config_defaults={"sliding_window": None}),
    )
}

# Families that cannot run here, with the reason: said instead of "unsupported".
REFUSED_MODEL_TYPES = {
    "t5": "an encoder-decoder model", "bart": "an encoder-decoder model", "mt5": "an encoder-decoder model",
    "codet5": "an encoder-decoder model", "t5gemma": "an encoder-decoder model",
    "bert": "an encoder (it does not generate text)", "roberta": "an encoder (it does not generate text)",
}


def standard_config(config: dict) -> dict:
    """A config dict with the sizes under the names the memory plan reads: hidden_size,
    intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads."""
    out = dict(config)
    family = FAMILIES.get(config.get("model_type"))
    for name, standard in (family.config_aliases if family else {}).items():
        if out.get(name) is not None:
            out.setdefault(standard, out[name])
    if out.get("multi_query"):  # StarCoder/SantaCoder: one key/value head
        out.setdefault("num_key_value_heads", 1)
    if out.get("intermediate_size") is None and out.get("hidden_size"):
        out["intermediate_size"] = 4 * out["hidden_size"]  # GPT-2's default when n_inner is unset
    return out


class UnsupportedModelError(ValueError):
    """A model family, architecture or FIM request this pipeline cannot run; says what can."""


def accepted_families() -> str:
    return ", ".join(FAMILIES)


def family_for(model_type: str | None, where: str) -> ModelFamily:
    """The family of a config's model_type; `where` names the file it came from."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    why = REFUSED_MODEL_TYPES.get(model_type, "not a decoder-only family this pipeline drives")
    raise UnsupportedModelError(
        f"{where}: model_type {model_type!r} is {why}. This pipeline runs decoder-only causal language "
        f"models of these families: {accepted_families()}. Models that need trust_remote_code are refused"
    )


def family_for_gguf(architecture: str, model_name: str, where: str) -> ModelFamily:
    """The family of a GGUF file from its general.architecture (and general.name, which is how
    a Mistral model written as 'llama' is told apart, as transformers does)."""
    matches = [f for f in FAMILIES.values() if architecture in f.gguf_architectures]
    if not matches:
        readable = sorted({a for f in FAMILIES.values() for a in f.gguf_architectures})
        hint = (" transformers cannot load GGUF files of StarCoder/SantaCoder (gpt_bigcode): use its "
                "Hugging Face directory instead.") if architecture in ("starcoder", "gpt_bigcode") else ""
        raise UnsupportedModelError(
            f"{where}: GGUF architecture {architecture!r} is not one this pipeline loads "
            f"(GGUF architectures: {', '.join(readable)}).{hint}"
        )
    if len(matches) > 1:
        return next((f for f in matches if f.model_type in model_name.lower()), FAMILIES[architecture])
    return matches[0]


@dataclass(frozen=True)
class FimFormat:
    """How a vocabulary's fill-in-the-middle prompt is written (prefix-suffix-middle order):
    `{prefix_token}{prefix}{suffix_token}{suffix}{middle_token}`, answered by the middle."""

    name: str
    prefix_token: str
    suffix_token: str
    middle_token: str
    # Tokens that end a middle when generated: the model has moved to another segment or file.
    stop_tokens: tuple[str, ...] = ()
    # Repository context before the FIM prompt, when the format has it: {repo}{name}{file}{path}\n
    repo_token: str | None = None
    file_token: str | None = None

    def prompt(self, prefix: str, suffix: str, repo_name: str | None = None, file_path: str | None = None) -> str:
        return self.context(repo_name, file_path) + \
            f"{self.prefix_token}{prefix}{self.suffix_token}{suffix}{self.middle_token}"

    def context(self, repo_name: str | None, file_path: str | None) -> str:
        context = ""
        if repo_name is not None and self.repo_token:
            context += f"{self.repo_token}{repo_name}"
        if file_path is not None and self.file_token:
            context += f"{self.file_token}{file_path}\n"
        return context

    @property
    def tokens(self) -> tuple[str, ...]:
        return (self.prefix_token, self.suffix_token, self.middle_token)


FIM_FORMATS = (
    FimFormat("StarCoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
              stop_tokens=("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>", "<repo_name>"),
              repo_token="<repo_name>", file_token="<file_sep>"),
    FimFormat("SantaCoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>",
              stop_tokens=("<fim-prefix>", "<fim-suffix>", "<fim-middle>", "<fim-pad>")),
    FimFormat("Qwen2.5-Coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
              stop_tokens=("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|file_sep|>",
                           "<|repo_name|>", "<|endoftext|>"),
              repo_token="<|repo_name|>", file_token="<|file_sep|>"),
    FimFormat("DeepSeek-Coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
              stop_tokens=("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")),
)


def fim_format_for(vocabulary) -> FimFormat | None:
    """The FIM format whose three tokens the vocabulary (a container of token strings) holds."""
    return next((f for f in FIM_FORMATS if all(t in vocabulary for t in f.tokens)), None)


def no_fim_error(model: str) -> UnsupportedModelError:
    formats = "; ".join(f"{f.name} {''.join(f.tokens)}" for f in FIM_FORMATS)
    return UnsupportedModelError(
        f"fill-in-the-middle needs FIM tokens in the model's vocabulary, and {model} has none of the "
        f"known formats ({formats}). Give left-to-right prompts (no prefix/suffix columns) or use a "
        "model trained for fill-in-the-middle"
    )
