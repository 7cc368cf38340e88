"""File operations through Spark's Hadoop FileSystem, so local, dbfs:/, s3a:// and abfss:// paths all work."""

from __future__ import annotations

from pyspark.sql import SparkSession


class HadoopFS:
    def __init__(self, spark: SparkSession):
        self._spark = spark
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

    def check_writable(self, directory: str) -> None:
        """Create `directory` and a probe file in it; raise PermissionError naming it if that fails."""
        probe = directory.rstrip("/") + "/._write_probe"
        try:
            self.mkdirs(directory)
            self.write_text(probe, "probe")
            self.delete(probe)
        except Exception as e:  # Py4J wraps the Java IOException
            java = getattr(e, "java_exception", None)
            reason = str(java.toString()) if java is not None else str(e).splitlines()[0]
            raise PermissionError(
                f"output path {directory} is not writable ({reason[:300]}); "
                "choose a directory this job can write to"
            ) from None
