"""DocumentAssembler: text column -> `document` annotations, as Spark NLP's.

Built from Spark SQL expressions only (no Python UDF), so it costs no Python round trip.
Spark's regexes are Java regexes, so the cleanup modes use Spark NLP's patterns verbatim.
"""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType

from pipelines.spark.annotation_schema import (
    ANNOTATION_TYPE,
    DOCUMENT,
    annotator_metadata,
)

# Java's String.trim() strips every char <= U+0020; Spark's trim() strips spaces only.
_JAVA_TRIM = r"^[\x00-\x20]+|[\x00-\x20]+$"

# mode -> (trim first?, Java regex, replacement)
CLEANUP_MODES = {
    "disabled": None,
    "inplace": (False, r"\s", " "),
    "inplace_full": (False, r"\s|(?:\\r)?(?:\\n)|(?:\\t)", " "),
    "shrink": (True, r"\s+", " "),
    "shrink_full": (True, r"\s+|(?:\\r)*(?:\\n)+|(?:\\t)+", " "),
    "each": (False, r"\s[\n\t]", " "),
    "each_full": (False, r"\s(?:\n|\t|(?:\\r)?(?:\\n)|(?:\\t))", " "),
    "delete_full": (True, r"(?:\\r)?(?:\\n)|(?:\\t)", ""),
}


def _check_cleanup_mode(value):
    value = TypeConverters.toString(value).strip().lower()
    if value not in CLEANUP_MODES:
        raise ValueError(
            "Special Character Cleanup supports only: " + ", ".join(CLEANUP_MODES) + f". Received: {value}"
        )
    return value


class DocumentAssembler(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Prepares data into a format that is processable by the annotators (one `document` per row)."""

    outputAnnotatorType = DOCUMENT
    name = "DocumentAssembler"

    inputCol = Param(Params._dummy(), "inputCol", "input column name", typeConverter=TypeConverters.toString)
    outputCol = Param(Params._dummy(), "outputCol", "output column name", typeConverter=TypeConverters.toString)
    idCol = Param(
        Params._dummy(), "idCol", "column for setting an id to such string in row", typeConverter=TypeConverters.toString
    )
    metadataCol = Param(
        Params._dummy(), "metadataCol", "String to String map column to use as metadata", typeConverter=TypeConverters.toString
    )
    cleanupMode = Param(
        Params._dummy(),
        "cleanupMode",
        "possible values: " + ", ".join(CLEANUP_MODES),
        typeConverter=_check_cleanup_mode,
    )

    @keyword_only
    def __init__(self, inputCol=None, outputCol=None, idCol=None, metadataCol=None, cleanupMode=None):
        super().__init__()
        self._setDefault(outputCol="document", cleanupMode="disabled")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, inputCol=None, outputCol=None, idCol=None, metadataCol=None, cleanupMode=None):
        return self._set(**self._input_kwargs)

    def setInputCol(self, value):
        return self._set(inputCol=value)

    def getInputCol(self):
        return self.getOrDefault(self.inputCol)

    def setOutputCol(self, value):
        return self._set(outputCol=value)

    def getOutputCol(self):
        return self.getOrDefault(self.outputCol)

    def setIdCol(self, value):
        return self._set(idCol=value)

    def getIdCol(self):
        return self.getOrDefault(self.idCol)

    def setMetadataCol(self, value):
        return self._set(metadataCol=value)

    def getMetadataCol(self):
        return self.getOrDefault(self.metadataCol)

    def setCleanupMode(self, value):
        return self._set(cleanupMode=value)

    def getCleanupMode(self):
        return self.getOrDefault(self.cleanupMode)

    def _cleaned(self, text: Column) -> Column:
        mode = CLEANUP_MODES[self.getCleanupMode()]
        if mode is None:
            return text
        trim_first, pattern, replacement = mode
        if trim_first:
            text = F.regexp_replace(text, _JAVA_TRIM, "")
        return F.regexp_replace(text, pattern, replacement)

    def _annotation(self, text: Column, metadata: Column) -> Column:
        return F.struct(
            F.lit(DOCUMENT).alias("annotatorType"),
            F.lit(0).alias("begin"),
            (F.char_length(text) - 1).cast("int").alias("end"),
            text.alias("result"),
            metadata.alias("metadata"),
            F.array().cast(ANNOTATION_TYPE["embeddings"].dataType).alias("embeddings"),
        )

    def _metadata(self, dataset: DataFrame, extra: dict[str, Column]) -> Column:
        fixed = F.create_map(*[x for k, v in extra.items() for x in (F.lit(k), v)])
        if not self.isDefined(self.metadataCol):
            return fixed
        col = self.getMetadataCol()
        self._require(dataset, col, "metadataCol")
        if not isinstance(dataset.schema[col].dataType, MapType):
            raise ValueError(f"DocumentAssembler: metadataCol {col!r} must be a map<string,string> column")
        # The row's own metadata first; id and sentence win on a clash, as in Spark NLP.
        keys = list(extra)
        user = F.map_filter(
            dataset[col].cast("map<string,string>"), lambda k, v: ~k.isin(keys)
        )
        return F.map_concat(F.coalesce(user, F.create_map().cast("map<string,string>")), fixed)

    @staticmethod
    def _require(dataset: DataFrame, col: str, param: str) -> None:
        if col not in dataset.columns:
            raise ValueError(
                f"DocumentAssembler: {param} column {col!r} does not exist; the columns are {dataset.columns}"
            )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        if not self.isDefined(self.inputCol):
            raise ValueError("DocumentAssembler: inputCol is not set; call setInputCol('text')")
        col = self.getInputCol()
        self._require(dataset, col, "inputCol")
        data_type = dataset.schema[col].dataType
        extra = {}
        if self.isDefined(self.idCol):
            self._require(dataset, self.getIdCol(), "idCol")
            extra["id"] = dataset[self.getIdCol()].cast("string")

        if isinstance(data_type, ArrayType) and isinstance(data_type.elementType, StringType):
            # One document per element, numbered by `sentence`, as Spark NLP does for array input.
            annotations = F.transform(
                dataset[col],
                lambda text, idx: self._annotation(
                    self._cleaned(F.make_valid_utf8(F.coalesce(text, F.lit("")))),
                    self._metadata(dataset, {**extra, "sentence": idx.cast("string")}),
                ),
            )
        elif isinstance(data_type, StringType):
            # Bytes that are not UTF-8 (possible in Parquet written by other tools) become U+FFFD.
            text = self._cleaned(F.make_valid_utf8(F.coalesce(dataset[col], F.lit(""))))
            annotations = F.array(self._annotation(text, self._metadata(dataset, {**extra, "sentence": F.lit("0")})))
        else:
            raise ValueError(
                f"DocumentAssembler: inputCol {col!r} has type {data_type.simpleString()}; expected string "
                f"or array<string>. Cast it first, e.g. df.withColumn({col!r}, df[{col!r}].cast('string'))"
            )
        out = self.getOutputCol()
        return dataset.withColumn(out, annotations.alias(out, metadata=annotator_metadata(DOCUMENT)))
