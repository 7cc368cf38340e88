"""The job configuration: one YAML schema, validated into one typed object.

`load_config("conf/local.yaml", ["generation.max_output_length=64"])` reads the file,
applies dotted command-line overrides, and checks every key and type, naming the key and
the file on any error. The result carries the engine's own `GenerationParams` and
`ModelSpec`, so the settings the engine runs with are exactly the ones validated here.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines.engine.params import GenerationParams, InvalidParamError, ScoringParams
from pipelines.models import bundled
from pipelines.prompts.stop_presets import stop_strings

OUTPUT_MODES = ("error", "overwrite", "resume", "retry_errors")
ON_ERROR = ("fail", "keep")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the file."""


@dataclass
class SparkSettings:
    master: str | None = None  # None: whatever spark-submit or the cluster says
    # A Spark Connect server (sc://host:port, or local[N] for pyspark's own); else $SPARK_REMOTE
    remote: str | None = None
    app_name: str = "starcoder-pipelines"
    conf: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass
class InputSettings:
    path: str = ""
    id_col: str = "id"
    text_col: str = "text"
    passthrough_cols: list[str] = field(default_factory=list)
    # Fill-in-the-middle: when both are set, prompts are built from prefix and suffix.
    prefix_col: str | None = None
    suffix_col: str | None = None
    middle_col: str | None = None  # the true middle of FIM rows: scored by exact match and edit similarity
    path_col: str | None = None  # file path, given to the model as FIM context (<file_sep>path)
    language_col: str | None = None  # groups the FIM scores in the summary
    cleanup_mode: str = "disabled"


@dataclass
class ModelSettings:
    source: str = ""
    device: str = "auto"
    dtype: str = "auto"
    num_threads: int = 0
    engine: str = "auto"  # a row of pipelines.engine.backends, or auto: chosen from that table
    kv_cache_gb: int = 1  # KV cache memory per worker (GiB)
    prefix_caching: bool = True  # reuse the KV cache of shared prompt prefixes (openvino)
    memory_check: str = "error"  # a memory plan that does not fit: error (before any task) or warn
    worker_memory_gb: float = 0.0  # memory the model workers of one executor may use; 0: from the session
    # Export the model once on the driver and run the export: openvino-int8, openvino-int4 or openvino-fp16
    # (models.openvino_export), kept under export_dir (a directory every worker reads; default: a
    # cache in the driver's home, for local masters) by the model's fingerprint.
    export: str | None = None
    export_dir: str | None = None


def _config_type(annotation):
    """A GenerationParams field's type as YAML gives it (lists, not tuples)."""
    if typing.get_origin(annotation) is tuple:
        return list[typing.get_args(annotation)[0]]
    return annotation


def _generation_params(self) -> GenerationParams:
    values = dataclasses.asdict(self)
    values.pop("batch_size")
    values.pop("max_batch_tokens")
    values["stop_strings"] = stop_strings(values.pop("stop_preset"), values["stop_strings"])
    return GenerationParams(**values)


# The generation section: every GenerationParams field under its own name and default (declared
# once, in pipelines.engine.params), plus what the job adds around the engine's params.
GenerationSettings = dataclasses.make_dataclass(
    "GenerationSettings",
    [(f.name, _config_type(hint), field(default_factory=list) if isinstance(f.default, tuple) else f.default)
     for f, hint in ((f, typing.get_type_hints(GenerationParams)[f.name]) for f in dataclasses.fields(GenerationParams))]
    + [
        ("stop_preset", str, ""),  # a language of pipelines.prompts.stop_presets, combined with stop_strings
        ("batch_size", int, 8),  # rows decoding together (the annotator's batchSize)
        ("max_batch_tokens", int, 0),  # bound on rows x (longest prompt + max_output_length); 0: none
    ],
    namespace={"params": _generation_params, "__module__": __name__},
)


@dataclass
class ScoringSettings:
    """What jobs/score.py runs with (the generation job ignores it)."""

    max_input_length: int = 4096  # window: longer documents are scored in strided windows of this many tokens
    stride: int = 0  # tokens between window starts; 0: half the window
    batch_size: int = 8  # windows per forward pass
    max_batch_tokens: int = 0  # bound on rows x longest window per forward pass; 0: 1,024 on CPU, else the activation budget

    def params(self) -> ScoringParams:
        return ScoringParams(**dataclasses.asdict(self))


@dataclass
class OutputSettings:
    path: str = ""
    mode: str = "error"
    shards: int = 8  # units of commit and of resume; each is written and committed on its own
    partitions_per_shard: int = 0  # 0: Spark's default parallelism
    on_error: str = "keep"  # a row whose generation fails: keep it with its error, or fail the job


@dataclass
class CacheSettings:
    """The result cache (spark.result_cache): requests it holds for this model and these settings are
    served from it, new ones are added to it. Unset: none (equal requests of one run still run once)."""

    path: str | None = None


@dataclass
class EvaluationSettings:
    """jobs/evaluate.py's sandbox (the other jobs ignore this section)."""

    # Without kernel isolation (no bubblewrap, no usable unshare) generated code is refused unless
    # this is true: then it runs with the in-process guard only, and the summary says so.
    allow_weak_sandbox: bool = False
    hidden_paths: list[str] = field(default_factory=list)  # hidden from the checks besides the defaults


@dataclass
class JobConfig:
    spark: SparkSettings = field(default_factory=SparkSettings)
    input: InputSettings = field(default_factory=InputSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_type_ok(k, args[0]) and _type_ok(v, args[1]) for k, v in value.items())
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _build(cls, data, where: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where or 'the top level'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{source}: unknown key {key!r}; the keys of {where or 'the config'} are {names}")
    values = {}
    for name in names:
        if name not in data:
            continue
        key = f"{where}.{name}" if where else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            values[name] = _build(annotation, data[name], key, source)
        elif not _type_ok(data[name], annotation):
            raise ConfigError(
                f"{source}: {key} must be {_type_name(annotation)}, got {data[name]!r} ({type(data[name]).__name__})"
            )
        else:
            values[name] = float(data[name]) if annotation is float else data[name]
    return cls(**values)


def apply_override(data: dict, override: str) -> None:
    """Apply `section.key=value` (value in YAML syntax) to a nested dict."""
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected section.key=value, e.g. generation.max_output_length=64")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    node, cls = data, JobConfig
    for i, k in enumerate(keys[:-1]):
        hint = typing.get_type_hints(cls).get(k) if cls is not None else None
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {override!r}: {k} is not a section")
        if typing.get_origin(hint) is dict:
            # A map such as spark.conf: the rest of the dotted name is one key (spark.task.cpus).
            keys = keys[: i + 1] + [".".join(keys[i + 1:])]
            break
        cls = hint if dataclasses.is_dataclass(hint) else None
    node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def config_from_dict(data: dict, source: str = "<dict>") -> JobConfig:
    config = _build(JobConfig, resolve_bundled_paths(data), "", source)
    check_values(config, source)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> JobConfig:
    """Read a YAML config (or start from the defaults), apply overrides, validate."""
    data: dict = {}
    source = "command line"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        source = str(p)
    for override in overrides:
        apply_override(data, override)
    data = resolve_bundled_paths(data)
    if overrides:
        source += " (with --set " + ", ".join(overrides) + ")"
    return config_from_dict(data, source)


def resolve_bundled_paths(data: dict) -> dict:
    """`bundled:` paths point into the installed package (the embedded model and corpus)."""
    for section, key in (("input", "path"), ("model", "source")):
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str):
            data[section][key] = bundled.resolve(value)
    return data


def check_values(config: JobConfig, source: str) -> None:
    def fail(key, msg):
        raise ConfigError(f"{source}: {key} {msg}")

    if not config.input.path:
        fail("input.path", "is required: a Parquet file, directory or glob")
    if not config.output.path:
        fail("output.path", "is required: the Parquet directory to write")
    if not config.model.source:
        fail("model.source", "is required: a model directory, dbfs:/ path or hub id")
    if config.output.mode not in OUTPUT_MODES:
        fail("output.mode", f"must be one of {', '.join(OUTPUT_MODES)}, got {config.output.mode!r}")
    if config.output.on_error not in ON_ERROR:
        fail("output.on_error", f"must be one of {', '.join(ON_ERROR)}, got {config.output.on_error!r}")
    if config.output.shards < 1:
        fail("output.shards", f"must be >= 1, got {config.output.shards}")
    if config.output.partitions_per_shard < 0:
        fail("output.partitions_per_shard", f"must be >= 0, got {config.output.partitions_per_shard}")
    if config.generation.batch_size < 1:
        fail("generation.batch_size", f"must be >= 1, got {config.generation.batch_size}")
    if config.generation.max_batch_tokens < 0:
        fail("generation.max_batch_tokens", f"must be >= 0, got {config.generation.max_batch_tokens}")
    if (config.input.prefix_col is None) != (config.input.suffix_col is None):
        fail("input.prefix_col", "and input.suffix_col must be set together (fill-in-the-middle)")
    if config.input.middle_col is not None and config.input.prefix_col is None:
        fail("input.middle_col", "is scored against fill-in-the-middle output: set input.prefix_col/suffix_col too")
    from pipelines.engine.backends import engine_names
    from pipelines.engine.params import DEVICES, DTYPES, MEMORY_CHECKS

    if config.model.device not in DEVICES:
        fail("model.device", f"must be one of {', '.join(DEVICES)}, got {config.model.device!r}")
    if config.model.dtype not in DTYPES:
        fail("model.dtype", f"must be one of {', '.join(DTYPES)}, got {config.model.dtype!r}")
    if config.model.engine not in engine_names():
        fail("model.engine", f"must be one of {', '.join(engine_names())}, got {config.model.engine!r}")
    if config.model.memory_check not in MEMORY_CHECKS:
        fail("model.memory_check", f"must be one of {', '.join(MEMORY_CHECKS)}, got {config.model.memory_check!r}")
    from pipelines.models.openvino_export import EXPORT_FORMATS

    if config.model.export is not None and config.model.export not in EXPORT_FORMATS:
        fail("model.export", f"must be one of {', '.join(EXPORT_FORMATS)} (or unset), got {config.model.export!r}")
    if config.model.worker_memory_gb < 0:
        fail("model.worker_memory_gb", f"must be >= 0 (0 reads it from the session), got {config.model.worker_memory_gb}")
    for path in config.evaluation.hidden_paths:
        if not path.startswith("/"):
            fail("evaluation.hidden_paths", f"must hold absolute paths, got {path!r}")
    if config.model.kv_cache_gb < 1:
        fail("model.kv_cache_gb", f"must be a whole number of GiB >= 1, got {config.model.kv_cache_gb!r}")
    try:
        stop_strings(config.generation.stop_preset)
    except ValueError as e:
        fail("generation.stop_preset", str(e).split(" ", 1)[1])
    try:
        config.generation.params()
    except InvalidParamError as e:
        # The engine names params as the annotator does; say which config key that is.
        reverse = {v: k for k, v in GenerationParams.PARAM_NAMES.items()}
        name = str(e).split(" ", 1)[0]
        raise ConfigError(f"{source}: generation.{reverse.get(name, name)}: {e}") from e
    try:
        config.scoring.params()
    except InvalidParamError as e:
        reverse = {v: k for k, v in ScoringParams.PARAM_NAMES.items()}
        name = str(e).split(" ", 1)[0]
        raise ConfigError(f"{source}: scoring.{reverse.get(name, name)}: {e}") from e
