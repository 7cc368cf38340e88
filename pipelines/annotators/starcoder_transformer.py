"""StarCoderTransformer: `document` annotations in, StarCoder2 generations out.

The same params, setters, getters and defaults as Spark NLP's StarCoderTransformer, plus the
ones Spark NLP keeps in Scala (maxInputLength, stopTokenIds, randomSeed, nReturnSequences)
and a few more (stopStrings, returnFullText, device, dtype). Inference runs per partition in
the Python workers (`mapInArrow`), with the model loaded once per worker from `modelSource`.
"""

from __future__ import annotations

import random

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame

from pipelines.annotators.annotator_properties import AnnotatorProperties
from pipelines.annotators.model_params import HasModelParams, declare_param
from pipelines.engine.params import (
    GenerationParams,
    ModelSpec,
    validate_generation_value,
)
from pipelines.prompts.stop_presets import stop_strings
from pipelines.spark.annotation_schema import DOCUMENT


class StarCoderTransformer(
    Transformer, AnnotatorProperties, HasModelParams, DefaultParamsReadable, DefaultParamsWritable
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
    minOutputLength = declare_param("minOutputLength", "Minimum length of the sequence to be generated", TypeConverters.toInt)
    maxOutputLength = declare_param("maxOutputLength", "Maximum length of output text", TypeConverters.toInt)
    doSample = declare_param("doSample", "Whether or not to use sampling; use greedy decoding otherwise", TypeConverters.toBoolean)
    temperature = declare_param("temperature", "The value used to module the next token probabilities", TypeConverters.toFloat)
    topK = declare_param("topK", "The number of highest probability vocabulary tokens to keep for top-k-filtering", TypeConverters.toInt)
    topP = declare_param(
        "topP",
        "If set to float < 1, only the most probable tokens with probabilities that add up to ``top_p`` or higher are kept for generation",
        TypeConverters.toFloat,
    )
    repetitionPenalty = declare_param(
        "repetitionPenalty", "The parameter for repetition penalty. 1.0 means no penalty.", TypeConverters.toFloat
    )
    noRepeatNgramSize = declare_param(
        "noRepeatNgramSize", "If set to int > 0, all ngrams of that size can only occur once", TypeConverters.toInt
    )
    ignoreTokenIds = declare_param(
        "ignoreTokenIds", "A list of token ids which are ignored in the decoder's output", TypeConverters.toListInt
    )
    stopTokenIds = declare_param("stopTokenIds", "Token ids that end a generation", TypeConverters.toListInt)
    randomSeed = declare_param("randomSeed", "Seed for sampling; outputs are reproducible with the same seed", TypeConverters.toInt)
    nReturnSequences = declare_param("nReturnSequences", "Number of sequences to return per prompt", TypeConverters.toInt)
    stopStrings = declare_param(
        "stopStrings", "Strings that end a generation; the stop string is not returned", TypeConverters.toListString
    )
    stopPreset = declare_param(
        "stopPreset",
        "Language whose stop strings end a completion (python: a new top-level def/class/if/print/#); '' for none",
        TypeConverters.toString,
    )
    returnFullText = declare_param(
        "returnFullText", "Return prompt + completion (True, as Spark NLP) or the completion only", TypeConverters.toBoolean
    )
    outputLogProbs = declare_param(
        "outputLogProbs",
        "Add logprob (sum over the generated tokens) and mean_logprob to each generation's metadata, from the "
        "model's own distribution (before temperature, top-k/top-p and penalties)",
        TypeConverters.toBoolean,
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
            outputCol="generation",
            lazyAnnotator=False,
            minOutputLength=0,
            maxOutputLength=20,
            doSample=False,
            temperature=0.6,
            topK=50,
            topP=0.9,
            repetitionPenalty=1.0,
            noRepeatNgramSize=0,
            ignoreTokenIds=[],
            stopTokenIds=[],
            nReturnSequences=1,
            stopStrings=[],
            stopPreset="",
            returnFullText=True,
            onRowError="fail",
            maxBatchTokens=0,
            outputLogProbs=False,
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

    # --- Spark NLP setters / getters ---------------------------------------------------------
    def setConfigProtoBytes(self, b):
        return self._set(configProtoBytes=b)

    def setMinOutputLength(self, value):
        return self._set(minOutputLength=value)

    def getMinOutputLength(self):
        return self.getOrDefault(self.minOutputLength)

    def setMaxOutputLength(self, value):
        return self._set(maxOutputLength=value)

    def getMaxOutputLength(self):
        return self.getOrDefault(self.maxOutputLength)

    def setDoSample(self, value):
        return self._set(doSample=value)

    def getDoSample(self):
        return self.getOrDefault(self.doSample)

    def setTemperature(self, value):
        return self._set(temperature=value)

    def getTemperature(self):
        return self.getOrDefault(self.temperature)

    def setTopK(self, value):
        return self._set(topK=value)

    def getTopK(self):
        return self.getOrDefault(self.topK)

    def setTopP(self, value):
        return self._set(topP=value)

    def getTopP(self):
        return self.getOrDefault(self.topP)

    def setRepetitionPenalty(self, value):
        return self._set(repetitionPenalty=value)

    def getRepetitionPenalty(self):
        return self.getOrDefault(self.repetitionPenalty)

    def setNoRepeatNgramSize(self, value):
        return self._set(noRepeatNgramSize=value)

    def getNoRepeatNgramSize(self):
        return self.getOrDefault(self.noRepeatNgramSize)

    def setIgnoreTokenIds(self, value):
        return self._set(ignoreTokenIds=value)

    def getIgnoreTokenIds(self):
        return self.getOrDefault(self.ignoreTokenIds)

    # --- params Spark NLP has in Scala only, and this pipeline's own --------------------------
    def setStopTokenIds(self, value):
        return self._set(stopTokenIds=value)

    def getStopTokenIds(self):
        return self.getOrDefault(self.stopTokenIds)

    def setRandomSeed(self, value):
        return self._set(randomSeed=value)

    def getRandomSeed(self):
        return self.getOrDefault(self.randomSeed) if self.isDefined(self.randomSeed) else None

    def setNReturnSequences(self, value):
        return self._set(nReturnSequences=value)

    def getNReturnSequences(self):
        return self.getOrDefault(self.nReturnSequences)

    def setStopStrings(self, value):
        return self._set(stopStrings=value)

    def getStopStrings(self):
        return self.getOrDefault(self.stopStrings)

    def setStopPreset(self, value):
        return self._set(stopPreset=value)

    def getStopPreset(self):
        return self.getOrDefault(self.stopPreset)

    def setReturnFullText(self, value):
        return self._set(returnFullText=value)

    def getReturnFullText(self):
        return self.getOrDefault(self.returnFullText)

    def setOutputLogProbs(self, value):
        return self._set(outputLogProbs=value)

    def getOutputLogProbs(self):
        return self.getOrDefault(self.outputLogProbs)

    def setMaxBatchTokens(self, value):
        return self._set(maxBatchTokens=value)

    def getMaxBatchTokens(self):
        return self.getOrDefault(self.maxBatchTokens)

    def setOnRowError(self, value):
        return self._set(onRowError=value)

    def getOnRowError(self):
        return self.getOrDefault(self.onRowError)

    # --- the typed settings the engine runs with ----------------------------------------------
    def generation_params(self) -> GenerationParams:
        seed = self.getRandomSeed()
        if seed is None and self.getDoSample():
            # Chosen once on the driver so that retried tasks draw the same samples.
            seed = random.SystemRandom().randrange(1 << 31)
        return GenerationParams(
            max_output_length=self.getMaxOutputLength(),
            min_output_length=self.getMinOutputLength(),
            do_sample=self.getDoSample(),
            temperature=self.getTemperature(),
            top_k=self.getTopK(),
            top_p=self.getTopP(),
            repetition_penalty=self.getRepetitionPenalty(),
            no_repeat_ngram_size=self.getNoRepeatNgramSize(),
            ignore_token_ids=tuple(self.getIgnoreTokenIds()),
            stop_token_ids=tuple(self.getStopTokenIds()),
            stop_strings=stop_strings(self.getStopPreset(), self.getStopStrings()),
            max_input_length=self.getMaxInputLength(),
            random_seed=seed,
            n_return_sequences=self.getNReturnSequences(),
            return_full_text=self.getReturnFullText(),
            output_logprobs=self.getOutputLogProbs(),
        )

    def engine_params(self) -> GenerationParams:
        return self.generation_params()

    def check_memory(self, spark, spec: ModelSpec | None = None):
        """The memory plan for this session, logged; raises MemoryPlanError when it does not fit
        (memoryCheck='error'). Runs on the driver: no model is loaded."""
        rows_tokens = self.getBatchSize() * (self.getMaxInputLength() + self.getMaxOutputLength())
        return self.memory_plan(spark, spec or self.model_spec(), self.getMaxBatchTokens(), rows_tokens)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pipelines.spark.partition_generation import PartitionGenerator

        return self.map_partitions(dataset, lambda spec, memory_plan: PartitionGenerator(
            input_cols=self.getInputCols(),
            output_col=self.getOutputCol(),
            model=spec,
            params=self.generation_params(),
            batch_size=self.getBatchSize(),
            on_row_error=self.getOnRowError(),
            max_batch_tokens=self.getMaxBatchTokens(),
            memory_plan=memory_plan,
        ))
