"""The output's small files (markers, manifests, summaries) from the driver's Python, for classic
and Spark Connect sessions alike.

A Spark Connect client has no JVM, so these files cannot go through Spark's Hadoop FileSystem
there. The filesystem is chosen by the path: local paths, `file:`, `dbfs:/` (its FUSE mount
/dbfs) and Unity Catalog volumes (/Volumes/..., a FUSE mount) are opened locally; object stores
(s3://, s3a://, gs://, abfs[s]://, hdfs://) through pyarrow's filesystems, with the credentials
of the driver's environment. On a classic session an object-store path keeps going through the
JVM's Hadoop FileSystem, which has the cluster's own credentials for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.models.locations import to_local_path
from pipelines.spark.cluster import is_spark_connect

SUCCESS = "_SUCCESS"  # the marker Spark's commit protocol writes once a directory's files are all there

# URI scheme -> the scheme pyarrow knows it by (Hadoop's s3a/s3n are S3).
OBJECT_STORE_SCHEMES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs", "abfs": "abfs",
                        "abfss": "abfss", "hdfs": "hdfs", "viewfs": "hdfs"}


def scheme_of(path: str) -> str | None:
    head, sep, _ = path.partition("://")
    return head.lower() if sep and "/" not in head else None


def output_filesystem(spark, path: str):
    """The filesystem for `path` from this session's driver (see the module docstring)."""
    scheme = scheme_of(path)
    if scheme in (None, "file", "dbfs") or path.startswith(("dbfs:/", "file:")):
        return ArrowFS()
    if scheme not in OBJECT_STORE_SCHEMES:
        raise ValueError(
            f"output path {path}: scheme {scheme}:// is not one the driver can write its marker files to "
            f"({', '.join(sorted(OBJECT_STORE_SCHEMES))}, a local, dbfs:/ or /Volumes/ path)"
        )
    return ArrowFS() if is_spark_connect(spark) else HadoopFS(spark)


# Causes of a failed write, as the JVM or the OS words them, and what to tell the user of each.
IO_FAILURES = {
    "No space left on device": "the disk ran out of space",
    "Disk quota exceeded": "the disk quota was exceeded",
    "Read-only file system": "the file system is read-only",
    "Input/output error": "the disk reported an input/output error",
    "Permission denied": "permission was denied",
}


def failure_reason(error: BaseException) -> str:
    """The first line of an error, from the Java exception of a Py4J error when there is one."""
    java = getattr(error, "java_exception", None)
    return str(java.toString()) if java is not None else (str(error).splitlines() or [repr(error)])[0]


def io_failure(error: BaseException) -> str | None:
    """In words, why a write failed when the error says it was the disk or its permissions; else None."""
    text = str(error)
    for sign, cause in IO_FAILURES.items():
        if sign in text:
            return f"{cause} ({sign})"
    return None


class MarkerFiles:
    """What the output needs of a filesystem: small files and directories by path."""

    def check_writable(self, directory: str) -> None:
        """Create `directory` and a probe file in it; raise PermissionError naming it if that fails."""
        probe = directory.rstrip("/") + "/._write_probe"
        try:
            self.mkdirs(directory)
            self.write_text(probe, "probe")
            self.delete(probe)
        except Exception as e:  # pyarrow's OSError, or Py4J's wrapper of the Java IOException
            reason = failure_reason(e)
            raise PermissionError(
                f"output path {directory} is not writable ({reason[:300]}); choose a directory this job can write to"
            ) from None


class ArrowFS(MarkerFiles):
    """pyarrow's filesystems: local (and FUSE mounts) or an object store, by the path."""

    @staticmethod
    def _resolve(path: str):
        from pyarrow import fs

        scheme = scheme_of(path)
        if scheme in OBJECT_STORE_SCHEMES:
            uri = OBJECT_STORE_SCHEMES[scheme] + path[len(scheme):]
            return fs.FileSystem.from_uri(uri)
        return fs.LocalFileSystem(), os.path.abspath(to_local_path(path))

    def _info(self, path: str):
        filesystem, p = self._resolve(path)
        return filesystem, p, filesystem.get_file_info(p)

    def exists(self, path: str) -> bool:
        from pyarrow import fs

        return self._info(path)[2].type != fs.FileType.NotFound

    def is_empty_dir(self, path: str) -> bool:
        return not self.list_names(path)

    def is_dir(self, path: str) -> bool:
        from pyarrow import fs

        return self._info(path)[2].type == fs.FileType.Directory

    def rename(self, source: str, target: str) -> None:
        """Move a file or directory to a name that does not exist yet (one rename on local disks)."""
        filesystem, src = self._resolve(source)
        filesystem.move(src, self._resolve(target)[1])

    def delete(self, path: str) -> None:
        from pyarrow import fs

        filesystem, p, info = self._info(path)
        if info.type == fs.FileType.Directory:
            filesystem.delete_dir(p)
        elif info.type != fs.FileType.NotFound:
            filesystem.delete_file(p)

    def mkdirs(self, path: str) -> None:
        filesystem, p = self._resolve(path)
        filesystem.create_dir(p, recursive=True)

    def list_names(self, path: str) -> list[str]:
        from pyarrow import fs

        filesystem, p, info = self._info(path)
        if info.type != fs.FileType.Directory:
            return []
        return sorted(Path(i.path).name for i in filesystem.get_file_info(fs.FileSelector(p)))

    def write_text(self, path: str, text: str) -> None:
        """Write a small file in one go (write to a temporary name, then move over)."""
        filesystem, p = self._resolve(path)
        tmp = p + ".tmp"
        with filesystem.open_output_stream(tmp) as out:
            out.write(text.encode("utf-8"))
        filesystem.move(tmp, p)

    def read_text(self, path: str) -> str:
        filesystem, p = self._resolve(path)
        with filesystem.open_input_stream(p) as f:
            return f.read().decode("utf-8")


class HadoopFS(MarkerFiles):
    """Spark's Hadoop FileSystem through the JVM of a classic session: every scheme the cluster
    is configured for, with its credentials."""

    def __init__(self, spark):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str):
        return self._path(path).getFileSystem(self._conf)

    def exists(self, path: str) -> bool:
        return self._fs(path).exists(self._path(path))

    def is_empty_dir(self, path: str) -> bool:
        return len(self._fs(path).listStatus(self._path(path))) == 0

    def is_dir(self, path: str) -> bool:
        return self.exists(path) and self._fs(path).getFileStatus(self._path(path)).isDirectory()

    def rename(self, source: str, target: str) -> None:
        """Move a file or directory to a name that does not exist yet."""
        if not self._fs(source).rename(self._path(source), self._path(target)):
            raise OSError(f"could not rename {source} to {target}")

    def delete(self, path: str) -> None:
        self._fs(path).delete(self._path(path), True)

    def mkdirs(self, path: str) -> None:
        self._fs(path).mkdirs(self._path(path))

    def list_names(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        return sorted(status.getPath().getName() for status in self._fs(path).listStatus(self._path(path)))

    def write_text(self, path: str, text: str) -> None:
        """Write a small file in one go (write to a temporary name, then rename over)."""
        tmp = path + ".tmp"
        stream = self._fs(tmp).create(self._path(tmp), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        fs = self._fs(path)
        if fs.exists(self._path(path)):
            fs.delete(self._path(path), False)
        fs.rename(self._path(tmp), self._path(path))

    def read_text(self, path: str) -> str:
        stream = self._fs(path).open(self._path(path))
        try:
            reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()
