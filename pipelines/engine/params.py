"""Typed, validated settings of one generation run: what to generate and with which model.

These objects are the one way settings reach the engine, whether they come from an
annotator's Params, a YAML file or the command line. Each field is checked with a message
that names it by the annotator param a user sets (`maxOutputLength`, `topP`, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from pipelines.engine.backends import InvalidParamError, engine_names

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
# What happens when the memory plan does not fit: fail before any task, or log a warning.
MEMORY_CHECKS = ("error", "warn")


def check_param(name: str, ok: bool, expected: str, value) -> None:
    if not ok:
        raise InvalidParamError(f"{name} must be {expected}, got {value!r}")


def validate_generation_value(name: str, value) -> None:
    """Check one generation param by its annotator name; raise InvalidParamError if it is out of range."""
    rules = {
        "maxOutputLength": (lambda v: v >= 1, "an integer >= 1"),
        "minOutputLength": (lambda v: v >= 0, "an integer >= 0"),
        "temperature": (lambda v: v > 0, "a number > 0"),
        "topK": (lambda v: v >= 0, "an integer >= 0 (0 disables top-k)"),
        "topP": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
        "repetitionPenalty": (lambda v: v > 0, "a number > 0 (1.0 means no penalty)"),
        "noRepeatNgramSize": (lambda v: v >= 0, "an integer >= 0 (0 disables it)"),
        "maxInputLength": (lambda v: v >= 1, "an integer >= 1"),
        "nReturnSequences": (lambda v: v >= 1, "an integer >= 1"),
        "batchSize": (lambda v: v >= 1, "an integer >= 1"),
        "maxBatchTokens": (lambda v: v >= 0, "an integer >= 0 (0: no bound)"),
        "ignoreTokenIds": (lambda v: all(i >= 0 for i in v), "a list of token ids >= 0"),
        "stopTokenIds": (lambda v: all(i >= 0 for i in v), "a list of token ids >= 0"),
        "stopStrings": (lambda v: all(isinstance(s, str) and s for s in v), "a list of non-empty strings"),
        "device": (lambda v: v in DEVICES, f"one of {', '.join(DEVICES)}"),
        "dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
        "engine": (lambda v: v in engine_names(), f"one of {', '.join(engine_names())}"),
        "onRowError": (lambda v: v in ("fail", "keep"), "'fail' or 'keep'"),
        "kvCacheSizeGB": (lambda v: isinstance(v, int) and v >= 1, "a whole number of GiB >= 1"),
        "memoryCheck": (lambda v: v in MEMORY_CHECKS, "'error' or 'warn'"),
        "workerMemoryGB": (lambda v: v >= 0, "a number of GiB >= 0 (0 reads it from the session)"),
        "stride": (lambda v: v >= 0, "an integer >= 0 (0: half of maxInputLength)"),
    }
    if name in rules:
        ok, expected = rules[name]
        check_param(name, ok(value), expected, value)


def setting(default, param: str, doc: str):
    """A generation setting, declared once: its default, the annotator param that sets it (Spark
    NLP's name) and that param's doc. The annotators' Params and the config's generation section
    are made from these declarations."""
    return field(default=default, metadata={"param": param, "doc": doc})


@dataclass(frozen=True)
class GenerationParams:
    """How to generate. Defaults are Spark NLP's StarCoderTransformer defaults."""

    max_output_length: int = setting(20, "maxOutputLength", "Maximum length of output text")
    min_output_length: int = setting(0, "minOutputLength", "Minimum length of the sequence to be generated")
    do_sample: bool = setting(False, "doSample", "Whether or not to use sampling; use greedy decoding otherwise")
    temperature: float = setting(0.6, "temperature", "The value used to module the next token probabilities")
    top_k: int = setting(50, "topK", "The number of highest probability vocabulary tokens to keep for top-k-filtering")
    top_p: float = setting(0.9, "topP", "If set to float < 1, only the most probable tokens with probabilities that "
                                        "add up to ``top_p`` or higher are kept for generation")
    repetition_penalty: float = setting(1.0, "repetitionPenalty",
                                        "The parameter for repetition penalty. 1.0 means no penalty.")
    no_repeat_ngram_size: int = setting(0, "noRepeatNgramSize",
                                        "If set to int > 0, all ngrams of that size can only occur once")
    ignore_token_ids: tuple[int, ...] = setting((), "ignoreTokenIds",
                                                "A list of token ids which are ignored in the decoder's output")
    stop_token_ids: tuple[int, ...] = setting((), "stopTokenIds", "Token ids that end a generation")
    stop_strings: tuple[str, ...] = setting((), "stopStrings",
                                            "Strings that end a generation; the stop string is not returned")
    max_input_length: int = setting(4096, "maxInputLength", "Most tokens of a prompt: longer prompts keep their "
                                                            "last tokens")
    random_seed: int | None = setting(None, "randomSeed", "Seed for sampling; outputs are reproducible with the "
                                                          "same seed")
    n_return_sequences: int = setting(1, "nReturnSequences", "Number of sequences to return per prompt")
    return_full_text: bool = setting(True, "returnFullText",
                                     "Return prompt + completion (True, as Spark NLP) or the completion only")
    # Log-probabilities of the generated tokens under the model's own distribution (log-softmax of
    # the logits before temperature, top-k/top-p and penalties); off: nothing is computed.
    output_logprobs: bool = setting(False, "outputLogProbs",
                                    "Add logprob (sum over the generated tokens) and mean_logprob to each "
                                    "generation's metadata, from the model's own distribution (before "
                                    "temperature, top-k/top-p and penalties)")

    # field name -> annotator param name, for messages users can act on (from the declarations above)
    PARAM_NAMES: ClassVar[dict[str, str]]

    @property
    def cut_prompt_is_request(self) -> bool:
        """Whether what the model runs of a prompt (its last maxInputLength tokens) is the row's
        request, so that prompts equal after the cut share a result: for greedy rows whose result
        holds no prompt text. With returnFullText the result holds the whole prompt; a sampled row's
        seed comes from its whole prompt."""
        return not self.do_sample and not self.return_full_text

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            validate_generation_value(self.PARAM_NAMES[f.name], getattr(self, f.name))
        if self.min_output_length > self.max_output_length:
            raise InvalidParamError(
                f"minOutputLength ({self.min_output_length}) must not exceed "
                f"maxOutputLength ({self.max_output_length})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


GenerationParams.PARAM_NAMES = {f.name: f.metadata["param"] for f in fields(GenerationParams)}


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run and how: a resolved local directory (or hub id) plus device and dtype."""

    source: str
    device: str = "auto"
    dtype: str = "auto"
    # Threads per Python worker; 0 means "the cores Spark gave the task" (or all, outside Spark).
    num_threads: int = 0
    engine: str = "auto"  # a row of engine.backends.BACKENDS, or auto: chosen from the table
    # Memory for the KV cache per worker: openvino allocates it once; pytorch keeps every batch's
    # rows x (longest prompt + new tokens) within it.
    kv_cache_gb: int = 1
    # Reuse the KV cache of a prompt prefix already computed (openvino: the pipeline's prefix cache;
    # the samples of one prompt share its prefill on both engines whatever this says).
    prefix_caching: bool = True

    def __post_init__(self):
        check_param("model source", bool(self.source), "a model directory or hub id", self.source)
        validate_generation_value("device", self.device)
        validate_generation_value("dtype", self.dtype)
        validate_generation_value("engine", self.engine)
        check_param("num_threads", self.num_threads >= 0, "an integer >= 0", self.num_threads)
        validate_generation_value("kvCacheSizeGB", self.kv_cache_gb)

    def cache_key(self) -> tuple:
        return (self.source, self.device, self.dtype, self.engine, self.kv_cache_gb, self.prefix_caching)


@dataclass(frozen=True)
class ScoringParams:
    """How to score documents: the window (maxInputLength), its stride and the batch bounds.

    A document longer than the window is scored in windows that start every `stride` tokens
    (the transformers perplexity guide's strided evaluation): each token is scored once, in the
    first window that reaches it, with at least `max_input_length - stride` tokens of left
    context. The default stride, half the window, gives every token half a window of context.
    """

    max_input_length: int = 4096
    stride: int = 0  # 0: max_input_length // 2
    batch_size: int = 8  # windows per forward pass
    max_batch_tokens: int = 0  # rows x longest window per forward pass; 0: the activation budget only

    PARAM_NAMES = {
        "max_input_length": "maxInputLength",
        "stride": "stride",
        "batch_size": "batchSize",
        "max_batch_tokens": "maxBatchTokens",
    }

    def __post_init__(self):
        for f in fields(self):
            validate_generation_value(self.PARAM_NAMES[f.name], getattr(self, f.name))
        check_param("maxInputLength", self.max_input_length >= 2,
                    "an integer >= 2 for scoring (a token is scored from the tokens before it)", self.max_input_length)
        if self.stride >= self.max_input_length:
            raise InvalidParamError(
                f"stride ({self.stride}) must be smaller than maxInputLength ({self.max_input_length}): windows "
                "overlap so that the first token a window scores has left context; 0 picks half the window"
            )

    @property
    def window_stride(self) -> int:
        return self.stride or max(1, self.max_input_length // 2)
