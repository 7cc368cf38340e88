"""Params every annotator shares, with Spark NLP's names, setters and checks."""

from __future__ import annotations

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.sql.types import StructType

from pipelines.spark.annotation_schema import is_annotation_array


class AnnotatorProperties(Params):
    """inputCols / outputCol / lazyAnnotator, as Spark NLP's AnnotatorProperties."""

    inputAnnotatorTypes: list[str] = []
    outputAnnotatorType: str | None = None

    inputCols = Param(
        Params._dummy(), "inputCols", "previous annotations columns, if renamed", typeConverter=TypeConverters.toListString
    )
    outputCol = Param(
        Params._dummy(), "outputCol", "output annotation column. can be left default.", typeConverter=TypeConverters.toString
    )
    lazyAnnotator = Param(
        Params._dummy(),
        "lazyAnnotator",
        "Whether this AnnotatorModel acts as lazy in RecursivePipelines",
        typeConverter=TypeConverters.toBoolean,
    )

    def setInputCols(self, *value):
        """Sets column names of input annotations: setInputCols("a") or setInputCols(["a"])."""
        if not value or not isinstance(value[0], (str, list)):
            raise TypeError("InputCols datatype not supported. It must be either str or list")
        cols = value[0] if len(value) == 1 and isinstance(value[0], list) else list(value)
        if len(cols) != len(self.inputAnnotatorTypes):
            raise TypeError(
                f"setInputCols in {self.uid} expecting {len(self.inputAnnotatorTypes)} columns. "
                f"Provided column amount: {len(cols)}. "
                f"Which should be columns from the following annotators: {self.inputAnnotatorTypes}"
            )
        return self._set(inputCols=cols)

    def getInputCols(self):
        return self.getOrDefault(self.inputCols)

    def setOutputCol(self, value):
        return self._set(outputCol=value)

    def getOutputCol(self):
        return self.getOrDefault(self.outputCol)

    def setLazyAnnotator(self, value):
        return self._set(lazyAnnotator=value)

    def getLazyAnnotator(self):
        return self.getOrDefault(self.lazyAnnotator)

    def check_input_columns(self, schema: StructType) -> None:
        """Fail before any work if an input column is missing or holds no annotations."""
        if not self.isDefined(self.inputCols):
            raise ValueError(f"{type(self).__name__}: inputCols is not set; call setInputCols([...])")
        names = schema.fieldNames()
        for col in self.getInputCols():
            if col not in names:
                raise ValueError(
                    f"{type(self).__name__}: input column {col!r} does not exist; the columns are {names}"
                )
            if not is_annotation_array(schema[col].dataType):
                raise ValueError(
                    f"{type(self).__name__}: input column {col!r} has type {schema[col].dataType.simpleString()}, "
                    "not an array of annotations; put a DocumentAssembler in front of it"
                )


class HasBatchedAnnotate(Params):
    batchSize = Param(Params._dummy(), "batchSize", "Size of every batch", TypeConverters.toInt)

    def setBatchSize(self, v):
        return self._set(batchSize=v)

    def getBatchSize(self):
        return self.getOrDefault(self.batchSize)
