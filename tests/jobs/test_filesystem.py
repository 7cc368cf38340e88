"""The output's marker files from the driver's Python: pyarrow's filesystems for local, dbfs:/
and volume paths (and object stores on Spark Connect), the JVM's on classic sessions for object
stores."""

import pytest

from pipelines.spark.filesystem import ArrowFS, HadoopFS, output_filesystem, scheme_of


def test_local_paths_go_through_pyarrow_and_object_stores_through_the_jvm_on_classic(spark, tmp_path):
    for path in (str(tmp_path / "out"), f"file:{tmp_path}/out", "dbfs:/tmp/out", "/Volumes/c/s/v/out", "out"):
        assert isinstance(output_filesystem(spark, path), ArrowFS), path
    for path in ("s3a://bucket/out", "abfss://c@acct.dfs.core.windows.net/out", "gs://bucket/out"):
        assert isinstance(output_filesystem(spark, path), HadoopFS), path
    with pytest.raises(ValueError, match="scheme ftp:// is not one the driver can write"):
        output_filesystem(spark, "ftp://host/out")
    assert scheme_of("S3A://b/k") == "s3a" and scheme_of("/a/b://c") is None and scheme_of("out") is None


def test_arrow_fs_writes_reads_lists_and_deletes_small_files(tmp_path):
    fs = ArrowFS()
    out = str(tmp_path / "out")
    assert not fs.exists(out) and fs.list_names(out) == []
    fs.check_writable(out)
    assert fs.exists(out) and fs.is_empty_dir(out)  # the probe is gone
    fs.write_text(f"{out}/_job.json", '{"a": 1}')
    fs.write_text(f"{out}/_job.json", '{"a": 2}')  # replaced whole
    fs.mkdirs(f"{out}/shard=00000")
    assert fs.read_text(f"{out}/_job.json") == '{"a": 2}'
    assert fs.list_names(out) == ["_job.json", "shard=00000"]
    fs.delete(f"{out}/_job.json")
    fs.delete(out)
    assert not fs.exists(out)


def test_arrow_fs_reads_file_uris_as_local_paths(tmp_path):
    fs = ArrowFS()
    fs.write_text(f"file:{tmp_path}/marker", "x")
    assert (tmp_path / "marker").read_text() == "x" and fs.exists(f"file://{tmp_path}/marker")


def test_unwritable_directory_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="file/out is not writable"):
        ArrowFS().check_writable(str(blocker / "out"))
