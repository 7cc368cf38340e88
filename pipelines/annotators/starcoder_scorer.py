"""StarCoderScorer: `document` annotations in, how likely StarCoder2 finds each document out.

One output annotation per input document: `result` is the perplexity, and metadata holds
`perplexity`, `mean_logprob`, `logprob` (natural log, summed over every token but the first),
`tokens` (the document's tokens) and `windows` (forward windows it took). A document longer
than maxInputLength is scored in windows that start every `stride` tokens. A document of fewer
than two tokens has nothing to predict: perplexity and mean_logprob are NaN, logprob 0.
Inference runs per partition in the Python workers, with the same per-worker model as
StarCoderTransformer (one model per worker, whichever annotator asks for it first).
"""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame

from pipelines.annotators.annotator_properties import AnnotatorProperties
from pipelines.annotators.model_params import HasModelParams, declare_param
from pipelines.engine.params import (
    ModelSpec,
    ScoringParams,
    validate_generation_value,
)
from pipelines.spark.annotation_schema import DOCUMENT


class StarCoderScorer(
    Transformer, AnnotatorProperties, HasModelParams, DefaultParamsReadable, DefaultParamsWritable
):
    """Perplexity and log-probabilities of documents under a StarCoder2 model."""

    name = "StarCoderScorer"
    SCORES = True
    inputAnnotatorTypes = [DOCUMENT]
    outputAnnotatorType = DOCUMENT

    stride = declare_param(
        "stride",
        "Tokens between the starts of consecutive windows of a document longer than maxInputLength; each token "
        "is scored once with at least maxInputLength - stride tokens of left context. 0: half of maxInputLength",
        TypeConverters.toInt,
    )
    maxBatchTokens = declare_param(
        "maxBatchTokens",
        "Bound on rows x longest window per forward pass; 0: 1,024 on the CPU, the model's activation budget on a GPU",
        TypeConverters.toInt,
    )
    onRowError = declare_param(
        "onRowError",
        "A row whose scoring fails: 'fail' the task, or 'keep' it with metadata error=<message>",
        TypeConverters.toString,
    )

    @keyword_only
    def __init__(self, **kwargs):
        super().__init__()
        self._setDefault(
            **self.MODEL_PARAM_DEFAULTS,
            outputCol="score",
            lazyAnnotator=False,
            stride=0,
            maxBatchTokens=0,
            onRowError="fail",
        )
        self._setDefault(batchSize=8)  # scoring has no decode steps: wider batches keep the cores busy
        self._set(**self._input_kwargs)

    def _set(self, **kwargs):
        """Set params, rejecting out-of-range values at once with the param's name."""
        super()._set(**kwargs)
        for name in kwargs:
            if kwargs[name] is not None:
                validate_generation_value(name, self.getOrDefault(name))
        return self

    def setStride(self, value):
        return self._set(stride=value)

    def getStride(self):
        return self.getOrDefault(self.stride)

    def setMaxBatchTokens(self, value):
        return self._set(maxBatchTokens=value)

    def getMaxBatchTokens(self):
        return self.getOrDefault(self.maxBatchTokens)

    def setOnRowError(self, value):
        return self._set(onRowError=value)

    def getOnRowError(self):
        return self.getOrDefault(self.onRowError)

    # --- the typed settings the engine runs with ----------------------------------------------
    def scoring_params(self) -> ScoringParams:
        return ScoringParams(
            max_input_length=self.getMaxInputLength(),
            stride=self.getStride(),
            batch_size=self.getBatchSize(),
            max_batch_tokens=self.getMaxBatchTokens(),
        )

    def check_memory(self, spark, spec: ModelSpec | None = None):
        """The memory plan for this session, logged; raises MemoryPlanError when it does not fit
        (memoryCheck='error'). Runs on the driver: no model is loaded. Scoring keeps no KV cache:
        kvCacheSizeGB is not counted."""
        rows_tokens = self.getBatchSize() * self.getMaxInputLength()
        return self.memory_plan(spark, spec or self.model_spec(), self.getMaxBatchTokens(), rows_tokens,
                                kv_cache=False)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.transform_requests(dataset)

    def transform_requests(self, dataset: DataFrame, keep_request_cols: bool = False,
                           partitions: int | None = None, keep_order: bool = True) -> DataFrame:
        """`transform`, each distinct document scored once (`keep_request_cols`: as
        StarCoderTransformer.transform_requests)."""
        from pipelines.spark.partition_scoring import PartitionScorer

        params = self.scoring_params()  # invalid combinations fail here, before any task
        return self.run_requests(dataset, params, lambda spec, memory_plan: PartitionScorer(
            input_cols=self.getInputCols(),
            output_col=self.getOutputCol(),
            model=spec,
            params=params,
            on_row_error=self.getOnRowError(),
            memory_plan=memory_plan,
        ), per_text=1, keep_request_cols=keep_request_cols, partitions=partitions,
            keep_order=keep_order)
