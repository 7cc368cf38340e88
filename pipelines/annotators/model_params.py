"""The params that say which model runs and how, shared by every annotator that runs StarCoder2.

StarCoderTransformer and StarCoderScorer take the same model sources, devices, dtypes,
engines, thread counts and memory settings, and build the same ModelSpec from them, so that
both reuse one model per worker (the cache is keyed by the spec).
"""

from __future__ import annotations

import dataclasses
import logging

from pyspark.ml.param import Param, Params, TypeConverters

from pipelines.annotators.annotator_properties import HasBatchedAnnotate
from pipelines.engine.backends import (
    backend_choice,
    choose_backend,
    engine_names,
    exports_unavailable,
)
from pipelines.engine.params import ModelSpec
from pipelines.engine.precision import describe_dtype
from pipelines.models.pretrained import DEFAULT_PRETRAINED, resolve_pretrained
from pipelines.models.source import resolve_model

log = logging.getLogger("pipelines.model")
_LOGGED_CHOICES: set = set()  # (annotator, (spec, backend, why)) already logged by this process


def declare_param(name, doc, converter):
    """A class-level Param of an annotator (pyspark.ml's own way to declare one)."""
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class HasModelParams(HasBatchedAnnotate):
    """modelSource, device, dtype, numThreads, engine, kvCacheSizeGB, prefixCaching, memoryCheck,
    workerMemoryGB, batchSize and maxInputLength, with their setters, getters and the ModelSpec they make."""

    MODEL_PARAM_DEFAULTS = dict(
        engine="auto",
        batchSize=1,
        maxInputLength=4096,
        device="auto",
        dtype="auto",
        numThreads=0,
        kvCacheSizeGB=1,
        prefixCaching=True,
        memoryCheck="error",
        workerMemoryGB=0.0,
        cachePath="",
    )

    engine = declare_param(
        "engine", f"Deep Learning engine used for this model: {', '.join(engine_names()[1:])}, or auto (chosen by what the "
        "model holds, the device and the params)",
        TypeConverters.toString,
    )
    maxInputLength = declare_param(
        "maxInputLength",
        "Most tokens of one text per forward pass: longer prompts keep their last tokens (StarCoderTransformer), "
        "longer documents are scored in strided windows of this many tokens (StarCoderScorer)",
        TypeConverters.toInt,
    )
    modelSource = declare_param(
        "modelSource", "Directory (local, dbfs:/, /Volumes/...) or hub id of the StarCoder2 model", TypeConverters.toString
    )
    device = declare_param("device", "Where to run the model: auto, cpu or cuda", TypeConverters.toString)
    dtype = declare_param("dtype", "Weights precision: auto, float32, bfloat16, float16 or int8 (CPU)", TypeConverters.toString)
    numThreads = declare_param(
        "numThreads", "Inference threads per task; 0 uses the cores Spark gives each task (spark.task.cpus)", TypeConverters.toInt
    )
    kvCacheSizeGB = declare_param(
        "kvCacheSizeGB",
        "KV cache memory per worker in GiB: openvino allocates it once, pytorch keeps each batch within it",
        TypeConverters.toInt,
    )
    prefixCaching = declare_param(
        "prefixCaching",
        "Reuse the KV cache of prompt prefixes already computed (openvino: the samples of a prompt, FIM holes "
        "of one file, prompts behind the same repository context); greedy output is unchanged",
        TypeConverters.toBoolean,
    )
    memoryCheck = declare_param(
        "memoryCheck",
        "When the model's memory plan does not fit the workers' memory: 'error' (fail before any task) or 'warn'",
        TypeConverters.toString,
    )
    workerMemoryGB = declare_param(
        "workerMemoryGB",
        "Memory (GiB) the model workers of one executor may use together; 0 reads it from the session",
        TypeConverters.toFloat,
    )

    cachePath = declare_param(
        "cachePath",
        "Result cache (a directory: local, dbfs:/, a volume, an object store): requests it holds for this model "
        "and these settings are served from it, new ones are added to it; '' for none (equal requests of one "
        "transform still run once)",
        TypeConverters.toString,
    )

    def setEngine(self, value):
        """A backend of engine.backends.BACKENDS (pytorch: safetensors or GGUF; openvino: an OpenVINO
        export), or auto: the first that runs the model on the device with the params."""
        return self._set(engine=value)

    def getEngine(self):
        return self.getOrDefault(self.engine)

    def setMaxInputLength(self, value):
        return self._set(maxInputLength=value)

    def getMaxInputLength(self):
        return self.getOrDefault(self.maxInputLength)

    def setModelSource(self, value):
        return self._set(modelSource=value)

    def getModelSource(self):
        return self.getOrDefault(self.modelSource)

    def setDevice(self, value):
        return self._set(device=value)

    def getDevice(self):
        return self.getOrDefault(self.device)

    def setDtype(self, value):
        return self._set(dtype=value)

    def getDtype(self):
        return self.getOrDefault(self.dtype)

    def setNumThreads(self, value):
        return self._set(numThreads=value)

    def getNumThreads(self):
        return self.getOrDefault(self.numThreads)

    def setKvCacheSizeGB(self, value):
        return self._set(kvCacheSizeGB=value)

    def getKvCacheSizeGB(self):
        return self.getOrDefault(self.kvCacheSizeGB)

    def setPrefixCaching(self, value):
        return self._set(prefixCaching=value)

    def getPrefixCaching(self):
        return self.getOrDefault(self.prefixCaching)

    def setMemoryCheck(self, value):
        return self._set(memoryCheck=value)

    def getMemoryCheck(self):
        return self.getOrDefault(self.memoryCheck)

    def setWorkerMemoryGB(self, value):
        return self._set(workerMemoryGB=value)

    def getWorkerMemoryGB(self):
        return self.getOrDefault(self.workerMemoryGB)

    def setCachePath(self, value):
        return self._set(cachePath=value)

    def getCachePath(self):
        return self.getOrDefault(self.cachePath)

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def loadSavedModel(cls, folder, spark_session=None, use_openvino=False):
        """An annotator for a model: a Hugging Face directory or a .gguf file (local, dbfs:/ or a
        volume), or ollama:NAME[:TAG] from the local Ollama store.

        The model is checked here, on the driver: a directory's config.json (a family of
        models.families.FAMILIES), safetensors weights or an OpenVINO export, and tokenizer.json;
        a GGUF file's header (architecture, tensor types, whole file). Tasks load the model from
        the path it resolved to. A directory holding only an OpenVINO export
        (scripts/export_openvino.sh), or use_openvino=True, runs on OpenVINO; otherwise on PyTorch.
        """
        resolved = resolve_model(folder)
        engine = "openvino" if use_openvino else choose_backend(resolved.path).name
        annotator = cls(modelSource=resolved.path, engine=engine)
        annotator.model_spec()  # an engine the directory cannot run fails here, on the driver
        return annotator

    @classmethod
    def pretrained(cls, name=DEFAULT_PRETRAINED, lang="en", remote_loc=None):
        """Resolve a Spark NLP model name (e.g. starcoder2_3b_int8) or a hub id to a model: the
        names Spark NLP ships as OpenVINO exports run those exports on the openvino engine, or,
        where openvino-genai is not installed, the model's safetensors on PyTorch (the log says so).

        Without network access this fails at once and says how to point at a directory instead.
        """
        resolved = resolve_pretrained(name, lang, remote_loc, exports_unavailable())
        if resolved.note:
            log.info(resolved.note)
        return cls(modelSource=resolved.path, dtype=resolved.dtype)

    # --- the typed settings the engine runs with ----------------------------------------------
    def model_spec(self) -> ModelSpec:
        name = type(self).__name__
        if not self.isDefined(self.modelSource):
            raise ValueError(
                f"{name} has no model: create it with {name}.loadSavedModel(dir, spark) "
                "or .pretrained(name), or call setModelSource(dir)"
            )
        source = resolve_model(self.getModelSource()).path  # fails here, on the driver, if it is gone
        spec = ModelSpec(source=source, device=self.getDevice(), dtype=self.getDtype(),
                         num_threads=self.getNumThreads(), engine=self.getEngine(),
                         kv_cache_gb=self.getKvCacheSizeGB(), prefix_caching=self.getPrefixCaching())
        # The engine is chosen here, on the driver: a model it cannot run or a param it refuses
        # fails now, before any model loads, and every task loads that same engine.
        backend, why = backend_choice(source, spec.engine, spec.device, self.engine_params(),
                                      type(self).__name__ if self.SCORES else None, spec.dtype)
        self._choice = (spec, backend, why)
        return dataclasses.replace(spec, engine=backend.name)

    def log_choice(self) -> None:
        """Say which engine and dtype run the model, and why: once per driver process for each
        model and setting (a job builds its stage again for every shard; it is said once)."""
        choice = getattr(self, "_choice", None)
        if choice and (type(self).__name__, choice) not in _LOGGED_CHOICES:
            spec, backend, why = choice
            log.info("%s runs %s: %s; %s", type(self).__name__, spec.source, why,
                     describe_dtype(spec.source, backend, spec.dtype, spec.device))
            _LOGGED_CHOICES.add((type(self).__name__, choice))

    SCORES = False  # the annotator scores documents: its engine must return prompt logits

    def engine_params(self):
        """The generation params the engine must honour (the generator's); None: none."""
        return None

    def memory_plan(self, spark, spec: ModelSpec, max_batch_tokens: int, rows_tokens: int, kv_cache: bool = True):
        """The memory plan for this session, logged; raises MemoryPlanError when it does not fit
        (memoryCheck='error'). Runs on the driver: no model is loaded."""
        from pipelines.spark.memory_check import check_memory

        return check_memory(spark, spec, max_batch_tokens, self.getWorkerMemoryGB(), self.getMemoryCheck(),
                            rows_tokens, kv_cache)

    def request_settings(self, spec: ModelSpec, params) -> str:
        """What besides its texts and the model decides a row's result, as JSON: the annotator, its
        params, the engine that runs them and this package's version."""
        import json

        import pipelines

        backend = getattr(self, "_choice", (None, None, None))[1]
        settings = {
            "annotator": type(self).__name__,
            "params": {k: v for k, v in dataclasses.asdict(params).items() if k not in self.RESULT_NEUTRAL},
            "engine": backend.name if backend is not None else spec.engine,
            "dtype": spec.dtype,
            "device": spec.device,
            "package": pipelines.__version__,
        }
        return json.dumps(settings, sort_keys=True, default=list)

    # Params that change how rows are batched, not their results: not part of a request.
    RESULT_NEUTRAL = ("batch_size", "max_batch_tokens")

    def run_requests(self, dataset, params, make_runner, per_text: int, keep_request_cols: bool = False,
                     partitions: int | None = None, keep_order: bool = True, cut=None):
        """`_transform` for a model annotator: every distinct request of `dataset` runs once
        (spark.distinct_requests), served from and added to the result cache when cachePath is set.
        `make_runner(spec, memory_plan_text)` makes the partition mapper; `params` are the typed
        settings it runs with (made once: an unset randomSeed is drawn once per transform). The
        requests run in `partitions` partitions (default: as many as `dataset` has); `keep_order`:
        rows come back in their input partitions' order; `cut(spec)`: the texts -> request texts
        function (spark.distinct_requests.with_request_key), where what the model runs of a text is its request."""
        from pipelines.spark.annotation_schema import annotator_metadata
        from pipelines.spark.cluster import default_parallelism, is_spark_connect
        from pipelines.spark.distinct_requests import SECONDS_COL, run_distinct
        from pipelines.spark.result_cache import ResultCache

        self.check_input_columns(dataset.schema)
        spark = dataset.sparkSession
        spec = self.model_spec()
        settings = self.request_settings(spec, params)
        cache = None
        if self.getCachePath():
            from pipelines.models.fingerprint import model_fingerprint

            cache = ResultCache(spark, self.getCachePath(), scope=model_fingerprint(spec.source))
        if partitions is None:
            partitions = default_parallelism(spark) if is_spark_connect(spark) else dataset.rdd.getNumPartitions()
        return run_distinct(
            dataset, input_cols=self.getInputCols(), output_col=self.getOutputCol(), per_text=per_text,
            settings=settings, partitions=partitions, cache=cache, keep_request_cols=keep_request_cols,
            keep_order=keep_order, column_metadata=annotator_metadata(self.outputAnnotatorType),
            rows_per_partition=self.getBatchSize(), cut=cut(spec) if cut is not None else None,
            run=lambda requests: self.map_partitions(requests, make_runner, seconds_col=SECONDS_COL),
        )

    def map_partitions(self, dataset, make_runner, seconds_col: str | None = None):
        """The driver's part of `_transform`, the same for every model annotator: check the input
        columns, the model, the workers' Python and the memory plan before any task, then run
        `make_runner(spec, memory_plan_text)` (a picklable callable over Arrow batches) on every
        partition, appending the output column of annotations (and `seconds_col`, each row's model
        time)."""
        from pyspark.sql.types import DoubleType, StructField, StructType

        from pipelines.spark.annotation_schema import (
            ANNOTATION_ARRAY_TYPE,
            annotator_metadata,
        )
        from pipelines.spark.worker_failures import (
            check_worker_python,
            enable_crash_reports,
        )

        self.check_input_columns(dataset.schema)
        spec = self.model_spec()
        self.log_choice()
        spark = dataset.sparkSession
        check_worker_python(spark)
        plan = self.check_memory(spark, spec)
        enable_crash_reports(spark)
        out_col = self.getOutputCol()
        fields = [f for f in dataset.schema.fields if f.name not in (out_col, seconds_col)]
        fields.append(StructField(out_col, ANNOTATION_ARRAY_TYPE, True))
        runner = make_runner(spec, plan.describe() if plan is not None else "")
        if seconds_col:
            fields.append(StructField(seconds_col, DoubleType(), True))
            runner = dataclasses.replace(runner, seconds_col=seconds_col)
        result = dataset.mapInArrow(runner, StructType(fields))
        return result.withColumn(out_col, result[out_col].alias(out_col, metadata=annotator_metadata(self.outputAnnotatorType)))
