"""Overwrite without a moment in which the output is half old, half new.

A new output that replaces an old one is written beside it, in `<parent>/.<name>.staging`, and
swapped in only when it is complete: the old output is renamed to `<parent>/.<name>.replaced`,
the staging directory to the output's name, and the old one is deleted. A reader of the output
path sees the whole old output until the swap and the whole new one after it (for an instant
between the two renames, no output at all). A run that dies before the swap leaves the old
output as it was; one that dies during it is finished by the next run on that path (`recover`).
On object stores a rename is a copy: there the swap is not atomic, and `_SUCCESS` is the signal.
"""

from __future__ import annotations

import json
import posixpath

from pipelines.jobs.output_guard import (
    MANIFEST,
    OutputRefusedError,
    check_apart,
    check_replaceable,
)
from pipelines.spark.filesystem import (
    OBJECT_STORE_SCHEMES,
    SUCCESS,
    ArrowFS,
    output_filesystem,
    scheme_of,
)


class ReplaceableOutput:
    def __init__(self, fs, path: str, output_key: str = "output.path"):
        self.fs = fs
        self.target = path.rstrip("/")
        self.output_key = output_key
        parent, name = posixpath.split(self.target)
        if not name or name in (".", ".."):
            raise OutputRefusedError(f"{output_key} {path} must name a directory below its parent")
        parent = parent or "."  # a relative name: beside it in the working directory
        self.staging = f"{parent}/.{name}.staging"
        self.replaced = f"{parent}/.{name}.replaced"

    def holds_output(self, path: str) -> bool:
        return self.fs.exists(path) and (not self.fs.is_dir(path) or not self.fs.is_empty_dir(path))

    def recover(self) -> None:
        """Finish a swap that a crash interrupted, so the output path holds one whole output again."""
        if not self.fs.exists(self.replaced):
            return
        check_replaceable(self.fs, self.replaced, self.output_key)
        if not self.fs.exists(self.target):
            if self.fs.exists(f"{self.staging}/{SUCCESS}"):
                self.fs.rename(self.staging, self.target)  # died between the two renames
            else:
                self.fs.rename(self.replaced, self.target)
                return
        self.fs.delete(self.replaced)

    def discard_staging(self) -> None:
        """Delete what an interrupted replacement left (refused when it is not ours)."""
        if self.fs.exists(self.staging):
            check_replaceable(self.fs, self.staging, f"{self.output_key}'s staging directory")
            self.fs.delete(self.staging)

    def staging_started(self) -> bool:
        return self.fs.exists(f"{self.staging}/{MANIFEST}")

    def swap(self) -> None:
        """Put the complete staging directory in the old output's place, then delete the old one."""
        if self.fs.exists(self.target):
            # Checked again: files added to the old output since the run started are not ours to delete.
            check_replaceable(self.fs, self.target, self.output_key)
            self.fs.rename(self.target, self.replaced)
        self.fs.rename(self.staging, self.target)
        if self.fs.exists(self.replaced):
            self.fs.delete(self.replaced)


class WholeOutput:
    """The output of a job that writes it in one run (the evaluation and corpus jobs): apart from
    the inputs, replacing only an output of ours, written in staging and swapped in by `commit`."""

    def __init__(self, spark, path: str, job: str, inputs: dict[str, str], output_key: str):
        check_apart(path, inputs, output_key)
        self.fs = output_filesystem(spark, path)
        self.replaceable = ReplaceableOutput(self.fs, path, output_key)
        self.replaceable.recover()
        self.replaceable.discard_staging()  # these jobs have no resume: an interrupted run starts again
        self.path = self.replaceable.target
        if self.replaceable.holds_output(self.path):
            check_replaceable(self.fs, self.path, output_key)
            self.path = self.replaceable.staging
        self.fs.check_writable(self.path)
        self.fs.write_text(f"{self.path}/{MANIFEST}", json.dumps({"job": job}, indent=2) + "\n")

    @staticmethod
    def check(path: str, inputs: dict[str, str], output_key: str) -> None:
        """What can be checked without a Spark session: apart from the inputs, and for a path
        opened locally, empty or an output of ours (object stores are checked with the session)."""
        check_apart(path, inputs, output_key)
        if scheme_of(path) not in OBJECT_STORE_SCHEMES:
            check_replaceable(ArrowFS(), path, output_key)

    def commit(self) -> None:
        self.fs.write_text(f"{self.path}/{SUCCESS}", "")
        if self.path != self.replaceable.target:
            self.replaceable.swap()
            self.path = self.replaceable.target
