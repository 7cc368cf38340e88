"""What a job may replace: never its own input, and never a directory it did not write.

Every job output holds our manifest, `_job.json`. Overwrite replaces a directory only when it
holds that manifest and nothing but the entries our jobs write; a directory holding anything else
is refused, named, with what was found in it. An output path equal to an input, inside one or
containing one is refused in every mode, before anything is read or written. Paths are compared
as normalised URIs: `file:` and relative paths as absolute local paths with symbolic links
resolved, `dbfs:/` as its FUSE mount, object stores by one scheme per store (s3a:// is s3://).
"""

from __future__ import annotations

import os
import posixpath
import re

from pipelines.models.locations import to_local_path
from pipelines.spark.filesystem import OBJECT_STORE_SCHEMES, scheme_of

MANIFEST = "_job.json"
# Every entry a job of ours leaves at the top of its output: the shards and markers of the
# generation and scoring jobs, the tables of the evaluation and corpus jobs, Hadoop's checksum
# files of the markers, a marker's temporary name, and the retry of failed rows' scratch space.
OWN_ENTRIES = re.compile(
    r"(shard=\d+|_job\.json|_SUCCESS|_summary\.json|_retry|summary\.json"
    r"|(samples|problems|prompts|fim)\.parquet|\._write_probe)(\.tmp)?"
    r"|\.(_job\.json|_SUCCESS|_summary\.json|summary\.json)(\.tmp)?\.crc"
)
GLOB_CHARS = re.compile(r"[*?\[{]")


class OutputRefusedError(FileExistsError):
    """The output path cannot be written or replaced as asked; the message says why and what to do."""


def normalised(path: str) -> str:
    """One spelling per location (see the module docstring); globs are kept as they are."""
    scheme = scheme_of(path)
    if scheme in OBJECT_STORE_SCHEMES:
        store = {"abfss": "abfs"}.get(OBJECT_STORE_SCHEMES[scheme], OBJECT_STORE_SCHEMES[scheme])
        authority, _, key = path.split("://", 1)[1].partition("/")
        key = posixpath.normpath("/" + key).lstrip("/")
        return f"{store}://{authority.lower()}/{key}".rstrip("/")
    local = to_local_path(path)
    if local.startswith("/dbfs/Volumes/"):  # dbfs:/Volumes/... is the volume's own mount
        local = local[len("/dbfs"):]
    return os.path.realpath(os.path.abspath(local))


def _segments(uri: str) -> list[str]:
    head, sep, rest = uri.partition("://")
    parts = [p for p in (rest if sep else uri).split("/") if p]
    return ([head + "://"] if sep else ["/"]) + parts


def _segment_pattern(segment: str) -> re.Pattern:
    """A Hadoop glob segment (*, ?, [abc], {a,b}) as a regular expression."""
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = segment[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
                i = end
        elif c == "{":
            end = segment.find("}", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                out.append("(" + "|".join(re.escape(a) for a in segment[i + 1:end].split(",")) + ")")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def overlaps(output: str, data: str) -> bool:
    """True when `output` is `data`, lies inside it or contains it; `data` may be a glob."""
    out, other = _segments(normalised(output)), _segments(normalised(data))
    for a, b in zip(out, other):
        if not (_segment_pattern(b).fullmatch(a) if GLOB_CHARS.search(b) else a == b):
            return False
    return True


def check_apart(output: str, inputs: dict[str, str], output_key: str = "output.path") -> None:
    """Refuse an output path that is, lies inside or contains any input (named by its setting)."""
    out = normalised(output)
    for key, path in inputs.items():
        if not path or not overlaps(output, path):
            continue
        data = normalised(path)
        if len(_segments(out)) < len(_segments(data)):
            where = "contains"
        elif len(_segments(out)) > len(_segments(data)):
            where = "is inside"
        else:
            where = "is matched by" if GLOB_CHARS.search(data) else "is"
        # A suggestion outside the input: beside the shorter of the two, without its glob segments.
        shorter = out if where == "contains" else data
        beside = "/".join(s for s in shorter.split("/") if not GLOB_CHARS.search(s)).rstrip("/") + "-out"
        raise OutputRefusedError(
            f"{output_key} {output} ({out}) {where} {key} {path}: writing there would destroy or mix with the "
            f"input. Choose an {output_key} outside the input (a sibling directory such as {beside} is fine)"
        )


def foreign_entries(fs, path: str) -> list[str]:
    """What in `path` our jobs did not write; every entry when it holds no manifest of ours."""
    if not fs.exists(path):
        return []
    if not fs.is_dir(path):
        return [posixpath.basename(path.rstrip("/")) + " (a file, not a directory)"]
    names = fs.list_names(path)
    if MANIFEST not in names:
        return names
    return [n for n in names if not OWN_ENTRIES.fullmatch(n)]


def check_replaceable(fs, path: str, output_key: str = "output.path") -> None:
    """Refuse to replace a non-empty directory that is not wholly an output of ours."""
    foreign = foreign_entries(fs, path)
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    what = ("holds files this project's jobs did not write" if MANIFEST in fs.list_names(path)
            else f"is not an output of this project (it has no {MANIFEST})")
    raise OutputRefusedError(
        f"{output_key} {path} {what}: {shown}. Nothing was deleted. Choose another {output_key}, or, if "
        "nothing there is needed, delete it by hand and run again"
    )
