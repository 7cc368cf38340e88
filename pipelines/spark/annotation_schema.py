"""The Spark NLP annotation schema, taken from `sparknlp.annotation.Annotation` itself."""

from __future__ import annotations

from pyspark.sql.types import ArrayType, DataType, StructType
from sparknlp.annotation import Annotation

DOCUMENT = "document"
ANNOTATION_TYPE = Annotation.dataType()
ANNOTATION_ARRAY_TYPE = Annotation.arrayType()


def annotator_metadata(annotator_type: str) -> dict:
    """Column metadata Spark NLP stages read to know what a column holds."""
    return {"annotatorType": annotator_type}


def is_annotation_array(data_type: DataType) -> bool:
    """True when a column's type is an array of annotation structs (nullability aside)."""
    if not isinstance(data_type, ArrayType) or not isinstance(data_type.elementType, StructType):
        return False
    have = {f.name: f.dataType.simpleString() for f in data_type.elementType.fields}
    want = {f.name: f.dataType.simpleString() for f in ANNOTATION_TYPE.fields}
    return have == want


def document(result: str, metadata: dict[str, str]) -> dict:
    """One `document` annotation as a plain dict, in schema order."""
    return {
        "annotatorType": DOCUMENT,
        "begin": 0,
        "end": len(result) - 1,
        "result": result,
        "metadata": metadata,
        "embeddings": [],
    }
