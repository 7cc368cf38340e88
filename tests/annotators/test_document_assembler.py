"""DocumentAssembler: Spark NLP's output, params and cleanup modes."""

import pytest
from pyspark.sql.types import (
    ArrayType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from pipelines import DocumentAssembler
from pipelines.spark.annotation_schema import ANNOTATION_ARRAY_TYPE, is_annotation_array


def assemble(spark, texts, **params):
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, text string")
    return DocumentAssembler(inputCol="text", **params).transform(df).orderBy("id")


def test_one_document_per_row_with_spark_nlp_fields(spark):
    out = assemble(spark, ["def add(a, b):", "x"]).collect()
    doc = out[0].document
    assert len(doc) == 1
    a = doc[0]
    assert (a.annotatorType, a.begin, a.end, a.result) == ("document", 0, 13, "def add(a, b):")
    assert a.metadata == {"sentence": "0"} and a.embeddings == []
    assert out[1].document[0].end == 0


def test_defaults_match_spark_nlp():
    da = DocumentAssembler()
    assert da.getOutputCol() == "document" and da.getCleanupMode() == "disabled"
    assert not da.isDefined(da.idCol) and not da.isDefined(da.metadataCol)


def test_output_schema_is_the_annotation_schema_with_annotator_type_metadata(spark):
    out = assemble(spark, ["a"])
    field = out.schema["document"]
    assert is_annotation_array(field.dataType)
    assert field.dataType.elementType.fieldNames() == ANNOTATION_ARRAY_TYPE.elementType.fieldNames()
    assert field.metadata == {"annotatorType": "document"}


def test_null_text_gives_an_empty_document_as_spark_nlp(spark):
    (row,) = assemble(spark, [None]).collect()
    a = row.document[0]
    assert (a.result, a.begin, a.end) == ("", 0, -1)


def test_id_and_metadata_columns_go_into_metadata(spark):
    df = spark.createDataFrame(
        [(7, "code", {"lang": "python", "id": "overridden"})], "key int, text string, meta map<string,string>"
    )
    out = DocumentAssembler().setInputCol("text").setIdCol("key").setMetadataCol("meta").transform(df)
    assert out.first().document[0].metadata == {"lang": "python", "id": "7", "sentence": "0"}


def test_array_input_gives_one_document_per_element(spark):
    df = spark.createDataFrame([(["a b", "cd"],)], StructType([StructField("text", ArrayType(StringType()))]))
    docs = DocumentAssembler().setInputCol("text").transform(df).first().document
    assert [(d.result, d.metadata["sentence"]) for d in docs] == [("a b", "0"), ("cd", "1")]


@pytest.mark.parametrize(
    "mode,text,expected",
    [
        ("disabled", "  a\n\tb  ", "  a\n\tb  "),
        ("inplace", " a\n\tb ", " a  b "),
        ("inplace_full", "a\\nb\nc", "a b c"),
        ("shrink", "  a \n\n  b\t ", "a b"),
        ("shrink_full", " a\\n\\nb  c ", "a b c"),
        ("each", "a \nb \tc\nd", "a b c\nd"),
        ("each_full", "a \\nb \nc", "a b c"),
        ("delete_full", " a\\nb\\tc ", "abc"),
    ],
)
def test_cleanup_modes_follow_spark_nlp(spark, mode, text, expected):
    assert assemble(spark, [text], cleanupMode=mode).first().document[0].result == expected


def test_unknown_cleanup_mode_is_rejected_at_set_time():
    with pytest.raises(Exception, match="supports only: disabled"):
        DocumentAssembler().setCleanupMode("squash")


def test_missing_column_lists_the_columns(spark):
    df = spark.createDataFrame([(1, "x")], "id int, code string")
    with pytest.raises(ValueError, match=r"'text' does not exist.*\['id', 'code'\]"):
        DocumentAssembler().setInputCol("text").transform(df)


def test_wrong_column_type_says_how_to_fix(spark):
    df = spark.createDataFrame([(1,)], StructType([StructField("text", IntegerType())]))
    with pytest.raises(ValueError, match="type int; expected string.*cast"):
        DocumentAssembler().setInputCol("text").transform(df)


def test_runs_without_python_workers(spark):
    plan = assemble(spark, ["a"])._jdf.queryExecution().executedPlan().toString()
    assert "Python" not in plan and "ArrowEval" not in plan


def test_saves_and_loads(spark, tmp_path):
    da = DocumentAssembler().setInputCol("code").setOutputCol("doc").setCleanupMode("shrink").setIdCol("id")
    da.save(str(tmp_path / "da"))
    loaded = DocumentAssembler.load(str(tmp_path / "da"))
    assert (loaded.getInputCol(), loaded.getOutputCol(), loaded.getCleanupMode(), loaded.getIdCol()) == (
        "code", "doc", "shrink", "id"
    )
