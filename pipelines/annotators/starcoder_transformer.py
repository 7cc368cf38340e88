"""StarCoderTransformer: `document` annotations in, StarCoder2 generations out.

The same params, setters, getters and defaults as Spark NLP's StarCoderTransformer, plus the
ones Spark NLP keeps in Scala (maxInputLength, stopTokenIds, randomSeed, nReturnSequences)
and a few more (stopStrings, returnFullText, device, dtype). Inference runs per partition in
the Python workers (`mapInArrow`), with the model loaded once per worker from `modelSource`.
"""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame

from pipelines.annotators.annotator_properties import AnnotatorProperties
from pipelines.annotators.generation_params import (
    HasGenerationParams,
    generation_defaults,
)
from pipelines.annotators.model_params import HasModelParams, declare_param
from pipelines.engine.params import (
    GenerationParams,
    ModelSpec,
    validate_generation_value,
)
from pipelines.prompts.stop_presets import stop_strings
from pipelines.spark.annotation_schema import DOCUMENT


class StarCoderTransformer(
    Transformer, AnnotatorProperties, HasModelParams, HasGenerationParams, DefaultParamsReadable, DefaultParamsWritable
):
    """StarCoder2 code generation over `document` annotations."""

    name = "StarCoderTransformer"
    inputAnnotatorTypes = [DOCUMENT]
    outputAnnotatorType = DOCUMENT

    configProtoBytes = declare_param(
        "configProtoBytes",
        "ConfigProto from tensorflow, serialized into byte array (accepted for compatibility; unused)",
        TypeConverters.toListInt,
    )
    stopPreset = declare_param(
        "stopPreset",
        "Language whose stop strings end a completion (python: a new top-level def/class/if/print/#); '' for none",
        TypeConverters.toString,
    )
    maxBatchTokens = declare_param(
        "maxBatchTokens",
        "Bound on rows x (longest prompt + maxOutputLength) per forward pass; 0 for none (batchSize only)",
        TypeConverters.toInt,
    )
    onRowError = declare_param(
        "onRowError",
        "A row whose generation fails: 'fail' the task, or 'keep' it with metadata error=<message>",
        TypeConverters.toString,
    )

    @keyword_only
    def __init__(self, **kwargs):
        super().__init__()
        self._setDefault(
            **self.MODEL_PARAM_DEFAULTS,
            **generation_defaults(),
            outputCol="generation",
            lazyAnnotator=False,
            stopPreset="",
            onRowError="fail",
            maxBatchTokens=0,
        )
        self._set(**self._input_kwargs)

    def _set(self, **kwargs):
        """Set params, rejecting out-of-range values at once with the param's name."""
        super()._set(**kwargs)
        for name in kwargs:
            if kwargs[name] is not None:
                validate_generation_value(name, self.getOrDefault(name))
        if kwargs.get("stopPreset") is not None:
            stop_strings(kwargs["stopPreset"])  # raises on an unknown language
        return self

    # --- setters and getters of the params above (the generation params' are made from their
    # declarations: pipelines.annotators.generation_params) ------------------------------------
    def setConfigProtoBytes(self, b):
        return self._set(configProtoBytes=b)

    def setStopPreset(self, value):
        return self._set(stopPreset=value)

    def getStopPreset(self):
        return self.getOrDefault(self.stopPreset)

    def setMaxBatchTokens(self, value):
        return self._set(maxBatchTokens=value)

    def getMaxBatchTokens(self):
        return self.getOrDefault(self.maxBatchTokens)

    def setOnRowError(self, value):
        return self._set(onRowError=value)

    def getOnRowError(self):
        return self.getOrDefault(self.onRowError)

    # --- the typed settings the engine runs with ----------------------------------------------
    def engine_params(self) -> GenerationParams:
        return self.generation_params()

    def check_memory(self, spark, spec: ModelSpec | None = None):
        """The memory plan for this session, logged; raises MemoryPlanError when it does not fit
        (memoryCheck='error'). Runs on the driver: no model is loaded."""
        rows_tokens = self.getBatchSize() * (self.getMaxInputLength() + self.getMaxOutputLength())
        return self.memory_plan(spark, spec or self.model_spec(), self.getMaxBatchTokens(), rows_tokens)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.transform_requests(dataset)

    def transform_requests(self, dataset: DataFrame, keep_request_cols: bool = False,
                           partitions: int | None = None, keep_order: bool = True) -> DataFrame:
        """`transform`, each distinct prompt generated once (`keep_request_cols`: with the request
        key, its model time and whether it came from the result cache: spark.distinct_requests)."""
        from pipelines.engine.tokenizer import CutPrompts
        from pipelines.spark.partition_generation import PartitionGenerator

        params = self.generation_params()
        return self.run_requests(dataset, params, lambda spec, memory_plan: PartitionGenerator(
            input_cols=self.getInputCols(),
            output_col=self.getOutputCol(),
            model=spec,
            params=params,
            batch_size=self.getBatchSize(),
            on_row_error=self.getOnRowError(),
            max_batch_tokens=self.getMaxBatchTokens(),
            memory_plan=memory_plan,
        ), per_text=params.n_return_sequences, keep_request_cols=keep_request_cols, partitions=partitions,
            keep_order=keep_order,
            cut=(lambda spec: CutPrompts(spec.source, params.max_input_length)) if params.cut_prompt_is_request else None)
