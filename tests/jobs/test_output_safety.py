"""Never destroy data the job did not write: overwrite, resume and the retry of failed rows."""

import os
import shutil
import subprocess
import threading
import time
from collections import Counter

import pytest

from pipelines.jobs import generate as generation_job
from pipelines.jobs.config import config_from_dict
from pipelines.jobs.output_guard import (
    OutputRefusedError,
    check_apart,
    check_replaceable,
    normalised,
    overlaps,
)
from pipelines.jobs.output_swap import ReplaceableOutput
from pipelines.spark.filesystem import ArrowFS
from pipelines.spark.worker_failures import WorkerCrashError

# --- paths compared as normalised URIs (no Spark) ---


@pytest.mark.parametrize("output, data, overlapping", [
    ("/data/in", "/data/in", True),
    ("/data/in/", "file:///data/in", True),
    ("file:/data/in/out", "/data/in", True),          # inside the input
    ("/data", "/data/in", True),                      # contains the input
    ("/data/in-out", "/data/in", False),              # a sibling in the same directory
    ("/data/out", "/data/in", False),
    ("dbfs:/tables/in", "/dbfs/tables/in", True),
    ("dbfs:/Volumes/c/s/v/in/x", "/Volumes/c/s/v/in", True),
    ("s3a://Bucket/tables//in/", "s3://bucket/tables/in", True),
    ("s3://bucket/tables/out", "s3a://bucket/tables/in", False),
    ("abfss://c@acct.dfs.core.windows.net/t", "abfs://c@acct.dfs.core.windows.net/t/in", True),
    ("/data/out", "/data/*.parquet", False),          # a glob that cannot match the output
    ("/data/out", "/data/*", True),                   # a glob that reads the output too
    ("/data/part-2", "/data/part-{1,2}", True),
    ("s3://bucket/in", "/bucket/in", False),          # another filesystem
])
def test_overlap_of_output_and_input(output, data, overlapping):
    assert overlaps(output, data) is overlapping


def test_relative_and_symlinked_paths_are_resolved(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    assert normalised("in") == normalised(f"file:{tmp_path}/in/") == str((tmp_path / "in").resolve())
    with pytest.raises(OutputRefusedError, match=r"output.path link/out .* is inside input.path in"):
        check_apart("link/out", {"input.path": "in"})


def test_refusal_names_both_paths_and_what_to_do():
    with pytest.raises(OutputRefusedError) as refused:
        check_apart("/data", {"input.path": "/data/in"})
    message = str(refused.value)
    assert "output.path /data (/data) contains input.path /data/in" in message
    assert "Choose an output.path outside the input (a sibling directory such as /data-out is fine)" in message
    with pytest.raises(OutputRefusedError, match=r"is inside input.path /data/\*: .* such as /data-out is fine"):
        check_apart("/data/in/x", {"input.path": "/data/*"})
    with pytest.raises(OutputRefusedError, match=r"output.path /data/out \(/data/out\) is matched by input.path /data/\*"):
        check_apart("/data/out", {"input.path": "/data/*"})


def test_only_an_output_of_ours_is_replaceable(tmp_path):
    fs = ArrowFS()
    check_replaceable(fs, str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    check_replaceable(fs, str(tmp_path / "empty"))
    ours = tmp_path / "ours"
    (ours / "shard=00000").mkdir(parents=True)
    for name in ("_job.json", "_SUCCESS", "_summary.json", "._SUCCESS.crc"):
        (ours / name).write_text("")
    check_replaceable(fs, str(ours))
    (ours / "notes.txt").write_text("mine")
    with pytest.raises(OutputRefusedError, match=r"holds files this project's jobs did not write: notes.txt\. "
                                                 r"Nothing was deleted"):
        check_replaceable(fs, str(ours))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for i in range(7):
        (foreign / f"f{i}.csv").write_text("x")
    with pytest.raises(OutputRefusedError, match=r"foreign is not an output of this project \(it has no _job.json\): "
                                                 r"f0.csv, f1.csv, f2.csv, f3.csv, f4.csv and 2 more.*delete it by hand"):
        check_replaceable(fs, str(foreign))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputRefusedError, match=r"file \(a file, not a directory\)"):
        check_replaceable(fs, str(tmp_path / "file"))


def _output(root, marker):
    root.mkdir(parents=True)
    (root / "_job.json").write_text("{}")
    (root / "_SUCCESS").write_text("")
    (root / "shard=00000").mkdir()
    (root / "shard=00000" / "rows.txt").write_text(marker)


def test_a_swap_interrupted_by_a_crash_is_finished_by_the_next_run(tmp_path):
    target = ReplaceableOutput(ArrowFS(), str(tmp_path / "out"))
    # Died between the two renames: the old output set aside, the complete new one still staged.
    _output(tmp_path / ".out.replaced", "old")
    _output(tmp_path / ".out.staging", "new")
    target.recover()
    assert (tmp_path / "out" / "shard=00000" / "rows.txt").read_text() == "new"
    assert not (tmp_path / ".out.replaced").exists() and not (tmp_path / ".out.staging").exists()


def test_the_staging_directory_is_beside_the_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ReplaceableOutput(ArrowFS(), "out").staging == "./.out.staging"
    assert ReplaceableOutput(ArrowFS(), "file:/data/out/").staging == "file:/data/.out.staging"
    assert ReplaceableOutput(ArrowFS(), "s3://bucket/t/out").replaced == "s3://bucket/t/.out.replaced"
    with pytest.raises(OutputRefusedError, match="must name a directory below its parent"):
        ReplaceableOutput(ArrowFS(), "/")


def test_a_staging_directory_that_was_never_complete_gives_the_old_output_back(tmp_path):
    target = ReplaceableOutput(ArrowFS(), str(tmp_path / "out"))
    _output(tmp_path / ".out.replaced", "old")
    (tmp_path / ".out.staging").mkdir()
    (tmp_path / ".out.staging" / "_job.json").write_text("{}")
    target.recover()
    assert (tmp_path / "out" / "shard=00000" / "rows.txt").read_text() == "old"
    assert not (tmp_path / ".out.replaced").exists()


# --- the corpus and evaluation jobs' outputs, refused before a Spark session starts ---


def test_corpus_job_refuses_an_output_inside_its_sources(tmp_path, capsys):
    from pipelines.jobs import prepare_corpus

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    assert prepare_corpus.main(["--source-dir", str(tmp_path / "src"), "--out", str(tmp_path / "src" / "c")]) == 1
    assert "--out " + str(tmp_path / "src" / "c") in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "src")) == ["a.py"]


@pytest.mark.parametrize("job", ["prepare_corpus", "evaluate"])
def test_corpus_and_evaluation_jobs_refuse_a_foreign_output(job, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"pipelines.jobs.{job}").main
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("precious")
    conf = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "local.yaml")
    args = ["--source-table", str(tmp_path / "files.parquet")] if job == "prepare_corpus" else [
        "--conf", conf, "--canonical"]
    assert main([*args, "--out", str(out)]) == 1
    assert "is not an output of this project (it has no _job.json): summary.json" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "precious"


def test_a_whole_output_is_written_beside_an_earlier_one_and_swapped_in(tmp_path):
    from pipelines.jobs.output_swap import WholeOutput

    first = WholeOutput(None, str(tmp_path / "c"), "prepare_corpus", {}, "--out")
    assert first.path == str(tmp_path / "c")
    (tmp_path / "c" / "prompts.parquet").mkdir()
    first.commit()
    second = WholeOutput(None, str(tmp_path / "c"), "prepare_corpus", {}, "--out")
    assert second.path == str(tmp_path / ".c.staging")
    (tmp_path / ".c.staging" / "fim.parquet").mkdir()
    assert sorted(os.listdir(tmp_path / "c")) == ["_SUCCESS", "_job.json", "prompts.parquet"]  # until the swap
    second.commit()
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert sorted(os.listdir(tmp_path / "c")) == ["_SUCCESS", "_job.json", "fim.parquet"]


# --- the generation job on real Spark ---


def write_table(spark, path, rows):
    spark.createDataFrame(rows, "id string, prompt string").write.parquet(str(path))
    return path


def job(input_path, output_path, model_dir, mode="error", on_error="keep", shards=2, max_output_length=2):
    return config_from_dict({
        "input": {"path": str(input_path), "id_col": "id", "text_col": "prompt"},
        "model": {"source": str(model_dir)},
        "generation": {"max_output_length": max_output_length, "batch_size": 8},
        "output": {"path": str(output_path), "mode": mode, "shards": shards, "on_error": on_error},
    })


def completions(spark, path):
    return Counter((r.id, r.completion, r.error) for r in spark.read.parquet(str(path)).collect())


ROWS = [(f"r{i}", f"def f{i}(x):\n    return x * {i}") for i in range(10)]


@pytest.fixture
def table(spark, tmp_path):
    return write_table(spark, tmp_path / "data" / "in", ROWS)


@pytest.mark.parametrize("output, where", [("data/in", "is"), ("data", "contains"), ("data/in/out", "is inside")])
def test_output_overlapping_the_input_is_refused_before_any_read(spark, tiny_model_dir, table, tmp_path, output,
                                                                  where):
    before = sorted(os.listdir(table))
    for mode in ("overwrite", "resume", "error"):
        with pytest.raises(OutputRefusedError, match=f"output.path {tmp_path / output} .* {where} input.path"):
            generation_job.run(spark, job(table, tmp_path / output, tiny_model_dir, mode=mode))
    assert sorted(os.listdir(table)) == before
    assert spark.read.parquet(str(table)).count() == len(ROWS)


def test_output_beside_the_input_is_written(spark, tiny_model_dir, table, tmp_path):
    generation_job.run(spark, job(table, tmp_path / "data" / "out", tiny_model_dir))
    assert spark.read.parquet(str(tmp_path / "data" / "out")).count() == len(ROWS)
    assert spark.read.parquet(str(table)).count() == len(ROWS)


def test_overwrite_refuses_a_directory_it_did_not_write(spark, tiny_model_dir, table, tmp_path):
    foreign = tmp_path / "reports"
    foreign.mkdir()
    (foreign / "q3.csv").write_text("revenue\n1\n")
    with pytest.raises(OutputRefusedError, match=r"reports is not an output of this project .*: q3.csv"):
        generation_job.run(spark, job(table, foreign, tiny_model_dir, mode="overwrite"))
    assert os.listdir(foreign) == ["q3.csv"] and (foreign / "q3.csv").read_text() == "revenue\n1\n"


def test_overwrite_replaces_an_earlier_output_of_ours(spark, tiny_model_dir, table, tmp_path):
    out = tmp_path / "out"
    generation_job.run(spark, job(table, out, tiny_model_dir, shards=3))
    generation_job.run(spark, job(table, out, tiny_model_dir, mode="overwrite", max_output_length=3))
    assert sorted(os.listdir(tmp_path)) == ["data", "out"]  # no staging or replaced directory left
    assert sorted(p for p in os.listdir(out) if p.startswith("shard=")) == ["shard=00000", "shard=00001"]
    written = spark.read.parquet(str(out)).collect()
    assert len(written) == len(ROWS) and max(r.completion_tokens for r in written) == 3


def test_an_interrupted_overwrite_leaves_the_old_output_whole_and_resume_finishes_it(
        spark, tiny_model_dir, tmp_path, inject_faults):
    rows = ROWS + [("boom", "BOOM = 1")]
    table = write_table(spark, tmp_path / "in", rows)
    out = tmp_path / "out"
    generation_job.run(spark, job(table, out, tiny_model_dir, shards=3))
    old = completions(spark, out)
    inject_faults(fail_prompt_containing="BOOM")
    with pytest.raises(Exception, match="generation failed for the row with id boom"):
        generation_job.run(spark, job(table, out, tiny_model_dir, mode="overwrite", on_error="fail", shards=3,
                                      max_output_length=3))
    # Readers of the output still see the whole old output, marked complete.
    assert completions(spark, out) == old and (out / "_SUCCESS").exists()
    assert (tmp_path / ".out.staging" / "_job.json").exists()
    inject_faults()
    new = job(table, out, tiny_model_dir, mode="resume", on_error="fail", shards=3, max_output_length=3)
    generation_job.run(spark, new)
    generation_job.run(spark, job(table, tmp_path / "clean", tiny_model_dir, on_error="fail", shards=3,
                                  max_output_length=3))
    assert completions(spark, out) == completions(spark, tmp_path / "clean") != old
    assert sorted(os.listdir(tmp_path)) == ["clean", "in", "out"]


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs: a disk that can be filled (needs root, as in CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill_when(path_to_appear, disk, stop):
    """Fill `disk` as soon as `path_to_appear` exists: the disk runs out in the middle of the job."""
    while not stop.is_set() and not path_to_appear.exists():
        time.sleep(0.01)
    try:
        with open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError:
        pass


@pytest.mark.slow
def test_a_full_disk_fails_with_a_sentence_keeps_committed_shards_and_resume_completes(
        spark, tiny_model_dir, tmp_path, small_disk, inject_faults):
    table = write_table(spark, tmp_path / "in", ROWS)
    out = small_disk / "out"
    inject_faults(slow_partition_s=1.0)  # time for the filler to land between two shards
    stop = threading.Event()
    # Filled once shard 1's write has begun (Spark makes its directory before the tasks start), so
    # that shard 0 is committed whole, its checksum files included.
    filler = threading.Thread(target=fill_when, args=(out / "shard=00001", small_disk, stop))
    filler.start()
    try:
        with pytest.raises(WorkerCrashError) as failed:
            generation_job.run(spark, job(table, out, tiny_model_dir, shards=3))
    finally:
        stop.set()
        filler.join()
    message = str(failed.value)
    assert message.startswith(f"shard 1 was not written: writing to {out} failed: the disk ran out of space "
                              "(No space left on device). Shards committed so far are kept")
    assert "output.mode=resume" in message and "at org.apache" not in message
    assert not (out / "_SUCCESS").exists() and (out / "shard=00000" / "_SUCCESS").exists()
    committed = sorted(os.listdir(out / "shard=00000"))

    (small_disk / "filler").unlink()
    inject_faults()
    resumed = generation_job.run(spark, job(table, out, tiny_model_dir, mode="resume", shards=3))
    assert resumed.shards_written_this_run == 2
    assert sorted(os.listdir(out / "shard=00000")) == committed
    generation_job.run(spark, job(table, tmp_path / "clean", tiny_model_dir, shards=3))
    assert completions(spark, out) == completions(spark, tmp_path / "clean")


def shard_files(out):
    return {shard: {f: os.stat(out / shard / f).st_mtime_ns for f in os.listdir(out / shard)}
            for shard in os.listdir(out) if shard.startswith("shard=")}


def test_retry_errors_regenerates_only_the_failed_rows_shard_by_shard(spark, tiny_model_dir, tmp_path, inject_faults):
    rows = ROWS + [("dup", "BOOM = 1"), ("dup", "y = 2"), ("bad", "BOOM = 3")]
    table = write_table(spark, tmp_path / "in", rows)
    out = tmp_path / "out"
    inject_faults(fail_prompt_containing="BOOM")
    first = generation_job.run(spark, job(table, out, tiny_model_dir, shards=4))
    assert first.rows_with_errors == 2
    failed_shards = {r.shard for r in spark.read.parquet(str(out)).where("error is not null").collect()}
    before = shard_files(out)

    inject_faults()
    retried = generation_job.run(spark, job(table, out, tiny_model_dir, mode="retry_errors", shards=4))
    assert retried.rows_with_errors == 0 and retried.rows_out == len(rows)
    assert retried.shards_written_this_run == len(failed_shards)
    after = shard_files(out)
    for shard in before:  # shards without a failed row are not touched; the others are replaced whole
        assert (after[shard] == before[shard]) is (int(shard[6:]) not in failed_shards)
    assert (out / "_SUCCESS").exists() and not (out / "_retry").exists()
    generation_job.run(spark, job(table, tmp_path / "clean", tiny_model_dir, shards=4))
    assert completions(spark, out) == completions(spark, tmp_path / "clean")


def test_retry_errors_needs_a_finished_output_of_the_same_job(spark, tiny_model_dir, table, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputRefusedError, match="regenerates the failed rows of a finished output.*holds no output"):
        generation_job.run(spark, job(table, out, tiny_model_dir, mode="retry_errors"))
    generation_job.run(spark, job(table, out, tiny_model_dir))
    shutil.rmtree(out / "shard=00001")
    with pytest.raises(OutputRefusedError, match=r"1 unfinished shards \(\[1\]\).*output.mode=resume"):
        generation_job.run(spark, job(table, out, tiny_model_dir, mode="retry_errors"))
    with pytest.raises(OutputRefusedError, match="cannot retry errors .*generation was"):
        generation_job.run(spark, job(table, out, tiny_model_dir, mode="retry_errors", max_output_length=5))
