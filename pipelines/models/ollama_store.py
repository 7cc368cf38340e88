"""Models named `ollama:NAME[:TAG]`: find the GGUF file that `ollama pull` left in an Ollama store.

Ollama keeps its models in a content-addressed store ($OLLAMA_MODELS, by default
~/.ollama/models):

    manifests/<host>/<namespace>/<name>/<tag>   a JSON manifest (Docker distribution v2 style)
    blobs/sha256-<hex>                          every layer, named by the sha256 of its bytes

The manifest's layer of media type `application/vnd.ollama.image.model` is the GGUF file. This
module turns a name into that blob's path, checking on the driver that the blob is complete and
uncorrupted (its size and sha256 match the manifest), so that a half-copied store fails the job at
once with a message saying what to do, not later inside a worker's GGUF reader. `write_store` lays
out a store the way Ollama does, for tests and benchmarks on machines without Ollama.

Nothing here imports Spark or torch: it is the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path

from pipelines.models.locations import ModelSourceError, to_local_path

OLLAMA_PREFIX = "ollama:"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"
LICENSE_MEDIA_TYPE = "application/vnd.ollama.image.license"

EXPECTED_FORM = "ollama:NAME[:TAG], ollama:NAMESPACE/NAME[:TAG] or ollama:HOST/NAMESPACE/NAME:TAG"

# Ollama's own rules for name parts (types/model/name.go): a letter, digit or underscore first,
# then also '-' and '.'; no '.' in a namespace; a host may carry a port. Holding to them keeps a
# name from escaping the manifests directory, since no part can be '..' or contain a '/'.
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z")
_MAX_LEN = {"host": 350, "namespace": 80, "name": 80, "tag": 80}
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})\Z")

_CHUNK = 16 * 1024 * 1024  # blobs are several GB: hash them in pieces, never whole in memory
_MAX_LISTED = 10
_MAX_CACHE_ENTRIES = 256

# Digests already verified in this process: (blob path, size, mtime_ns) -> "sha256:<hex>".
_VERIFIED: dict[tuple[str, int, int], str] = {}
_VERIFIED_LOCK = threading.Lock()


def is_ollama_name(location: str) -> bool:
    """True for a model location of the form `ollama:...`."""
    return isinstance(location, str) and location.startswith(OLLAMA_PREFIX)


def _malformed(location: str, why: str) -> ModelSourceError:
    return ModelSourceError(
        f"malformed Ollama model name {location!r}: {why}. Expected {EXPECTED_FORM} "
        "(e.g. ollama:starcoder2:3b, ollama:someuser/mymodel:q8); TAG defaults to latest"
    )


def _check_part(location: str, kind: str, value: str) -> None:
    pattern = {"host": _HOST, "namespace": _NAMESPACE}.get(kind, _PART)
    if not value:
        raise _malformed(location, f"the {kind} is empty")
    if ".." in value:
        raise _malformed(location, f"the {kind} {value!r} contains '..'")
    if len(value) > _MAX_LEN[kind]:
        raise _malformed(location, f"the {kind} is longer than {_MAX_LEN[kind]} characters")
    if not pattern.match(value):
        allowed = "letters, digits, '_' and '-'" + ("" if kind == "namespace" else ", '.'")
        allowed += ", ':'" if kind == "host" else ""
        raise _malformed(
            location, f"the {kind} {value!r} may hold only {allowed}, starting with a letter, digit or '_'"
        )


def _parse(location: str) -> tuple[str, str, str, str]:
    """(host, namespace, name, tag) of `ollama:[[HOST/]NAMESPACE/]NAME[:TAG]`."""
    if not is_ollama_name(location):
        raise _malformed(location, f"it does not start with {OLLAMA_PREFIX!r}")
    rest = location[len(OLLAMA_PREFIX):]
    if not rest:
        raise _malformed(location, "the name is empty")
    parts = rest.split("/")
    if len(parts) > 3:
        raise _malformed(location, f"it has {len(parts)} path parts; at most 3 (HOST/NAMESPACE/NAME)")
    # Only the last part carries the tag: a host may hold a port (localhost:5000/ns/name:tag).
    name, sep, tag = parts[-1].partition(":")
    if sep and not tag:
        raise _malformed(location, "the tag after ':' is empty")
    tag = tag or DEFAULT_TAG
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace = parts[0], parts[1]
    elif len(parts) == 2:
        namespace = parts[0]
    for kind, value in (("host", host), ("namespace", namespace), ("name", name), ("tag", tag)):
        _check_part(location, kind, value)
    return host, namespace, name, tag


def parse_name(location: str) -> tuple[str, str, str]:
    """(namespace path, name, tag) of an `ollama:` model name.

    The namespace path is `HOST/NAMESPACE`, the directory under the store's manifests/ that holds
    the model's manifests: `ollama:starcoder2:3b` -> ("registry.ollama.ai/library", "starcoder2",
    "3b"); `ollama:someuser/mymodel` -> ("registry.ollama.ai/someuser", "mymodel", "latest").
    """
    host, namespace, name, tag = _parse(location)
    return f"{host}/{namespace}", name, tag


def _display(host: str, namespace: str, name: str, tag: str) -> str:
    """The shortest name Ollama's CLI accepts for a model (what `ollama list` shows)."""
    if host == DEFAULT_HOST:
        if namespace == DEFAULT_NAMESPACE:
            return f"{name}:{tag}"
        return f"{namespace}/{name}:{tag}"
    return f"{host}/{namespace}/{name}:{tag}"


def store_dir() -> Path:
    """The Ollama store: $OLLAMA_MODELS when set (as Ollama reads it), else ~/.ollama/models."""
    configured = os.environ.get("OLLAMA_MODELS", "")
    if configured:
        # A store shared through DBFS is read through its FUSE mount, like model directories.
        return Path(to_local_path(configured)).expanduser()
    return Path("~/.ollama/models").expanduser()


def _stored_models(store: Path) -> list[tuple[str, str, str, str]]:
    """(host, namespace, name, tag) of every manifest in the store, sorted."""
    manifests = store / "manifests"
    # Ollama lists exactly the files four levels down (server/images.go, Manifests()).
    found = []
    for path in manifests.glob("*/*/*/*"):
        if path.is_file():
            found.append(path.relative_to(manifests).parts)
    return sorted(found)


def _listing(store: Path) -> str:
    models = [_display(*m) for m in _stored_models(store)]
    if not models:
        return f"The store at {store} holds no models."
    shown = ", ".join(models[:_MAX_LISTED])
    more = f" and {len(models) - _MAX_LISTED} more" if len(models) > _MAX_LISTED else ""
    return f"Models in the store at {store}: {shown}{more}."


def _manifest_path(store: Path, host: str, namespace: str, name: str, tag: str) -> Path:
    exact = store / "manifests" / host / namespace / name / tag
    if exact.is_file():
        return exact
    # Ollama compares names without regard to case (Name.EqualFold), so `ollama pull StarCoder2`
    # and a lookup of `starcoder2` meet; on a case-sensitive filesystem that needs a search.
    wanted = tuple(p.lower() for p in (host, namespace, name, tag))
    for parts in _stored_models(store):
        if tuple(p.lower() for p in parts) == wanted:
            return store / "manifests" / Path(*parts)
    return exact


def _missing_model(display: str, store: Path, manifest: Path) -> ModelSourceError:
    where = (
        f"the Ollama store at {store}"
        if store.is_dir()
        else f"the Ollama store at {store} (that directory does not exist)"
    )
    return ModelSourceError(
        f"Ollama model {display!r} is not in {where}: there is no manifest {manifest}. "
        f"Run `ollama pull {display}` on a machine with network access and make its store readable "
        "here (set OLLAMA_MODELS to the store that holds the model, e.g. a DBFS or volume path), "
        "or point model.source / loadSavedModel at a .gguf file instead. "
        + _listing(store)
    )


def _read_model_layer(display: str, manifest: Path) -> tuple[str, int]:
    """The model layer's hex digest and size, from a manifest."""
    try:
        data = json.loads(manifest.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelSourceError(
            f"the manifest of Ollama model {display!r} is not valid JSON: {manifest} ({e}). "
            f"Run `ollama pull {display}` again to rewrite it"
        ) from e
    except OSError as e:
        raise ModelSourceError(f"cannot read the manifest of Ollama model {display!r}: {manifest} ({e})") from e
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ModelSourceError(
            f"the manifest of Ollama model {display!r} has no list of layers: {manifest}. "
            f"Run `ollama pull {display}` again to rewrite it"
        )
    models = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == MODEL_MEDIA_TYPE]
    if not models:
        kinds = sorted({str(layer.get("mediaType")) for layer in layers if isinstance(layer, dict)})
        raise ModelSourceError(
            f"the manifest of Ollama model {display!r} has no GGUF model layer "
            f"(mediaType {MODEL_MEDIA_TYPE}): {manifest} holds {', '.join(kinds) or 'no layers'}. "
            "Only GGUF models can be run from an Ollama store; point model.source / loadSavedModel "
            "at a .gguf file or a Hugging Face model directory instead"
        )
    if len(models) > 1:
        # Ollama merges split GGUFs into one layer; several would mean an unknown layout.
        raise ModelSourceError(
            f"the manifest of Ollama model {display!r} has {len(models)} model layers: {manifest}. "
            "One GGUF file is expected; point model.source / loadSavedModel at a .gguf file instead"
        )
    layer = models[0]
    match = _DIGEST.match(str(layer.get("digest", "")))
    size = layer.get("size")
    if not match or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        # The digest becomes a file name: anything but sha256:<64 hex> is refused, not followed.
        raise ModelSourceError(
            f"the manifest of Ollama model {display!r} has a malformed model layer "
            f"(digest {layer.get('digest')!r}, size {size!r}; expected sha256:<64 hex digits> and a "
            f"byte count): {manifest}. Run `ollama pull {display}` again to rewrite it"
        )
    return match.group(1), size


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "starcoder-pipelines" / "ollama-verified.json"


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent, unreadable or garbled: verify again rather than fail
    return data if isinstance(data, dict) else {}


def _cached_digest(blob: str, size: int, mtime_ns: int) -> str | None:
    with _VERIFIED_LOCK:
        digest = _VERIFIED.get((blob, size, mtime_ns))
    if digest:
        return digest
    entry = _load_cache(_cache_file()).get(blob)
    if (
        isinstance(entry, list)
        and len(entry) == 3
        and entry[0] == size
        and entry[1] == mtime_ns
        and isinstance(entry[2], str)
    ):
        with _VERIFIED_LOCK:
            _VERIFIED[(blob, size, mtime_ns)] = entry[2]
        return entry[2]
    return None


def _remember(blob: str, size: int, mtime_ns: int, digest: str) -> None:
    with _VERIFIED_LOCK:
        _VERIFIED[(blob, size, mtime_ns)] = digest
    path = _cache_file()
    try:
        entries = _load_cache(path)
        entries[blob] = [size, mtime_ns, digest]
        # Keep the file small: forget blobs that are gone, then the oldest beyond the cap.
        entries = {k: v for k, v in entries.items() if os.path.exists(k)}
        entries = dict(list(entries.items())[-_MAX_CACHE_ENTRIES:])
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary file and renamed, so a reader never sees half a file, even
        # with several drivers sharing a home directory.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ollama-verified-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only home only costs hashing again in the next process


def file_sha256(path: Path) -> str:
    """'sha256:<hex>' of a file, read in chunks (model files are several GB)."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return "sha256:" + h.hexdigest()


def _verify_blob(display: str, store: Path, blob: Path, digest: str, size: int) -> None:
    redo = f"Run `ollama pull {display}` again, or `ollama rm {display}` then `ollama pull {display}`"
    try:
        st = blob.stat()
    except FileNotFoundError:
        st = None
    if st is None or not blob.is_file():
        raise ModelSourceError(
            f"the model blob of Ollama model {display!r} is missing from the store at {store}: "
            f"expected {blob} ({size} bytes, {digest}), found {'no such file' if st is None else 'a directory'}. "
            f"The store is incomplete (an interrupted pull or a partial copy). {redo}"
        )
    if st.st_size != size:
        raise ModelSourceError(
            f"the model blob of Ollama model {display!r} has the wrong size: {blob} is "
            f"{st.st_size} bytes, its manifest expects {size} (a truncated download or copy). {redo}"
        )
    key = str(blob.absolute())
    # (size, mtime_ns) stands for the content: a rewritten file gets a new mtime and is hashed
    # again, while an untouched multi-GB blob is hashed once, not on every job start.
    found = _cached_digest(key, st.st_size, st.st_mtime_ns)
    if found is None:
        try:
            found = file_sha256(blob)
        except OSError as e:
            raise ModelSourceError(
                f"cannot read the model blob of Ollama model {display!r}: {blob} ({e}). "
                "Make the store readable by this user"
            ) from e
        if found == digest:
            _remember(key, st.st_size, st.st_mtime_ns, found)
    if found != digest:
        raise ModelSourceError(
            f"the model blob of Ollama model {display!r} is corrupt: {blob} has {found}, "
            f"its manifest expects {digest}. {redo}"
        )


def resolve_ollama_model(location: str, store: Path | None = None) -> Path:
    """The verified GGUF blob of an `ollama:` model name in the store (default: `store_dir()`)."""
    host, namespace, name, tag = _parse(location)
    display = _display(host, namespace, name, tag)
    store = Path(store) if store is not None else store_dir()
    manifest = _manifest_path(store, host, namespace, name, tag)
    if not manifest.is_file():
        raise _missing_model(display, store, manifest)
    hexdigest, size = _read_model_layer(display, manifest)
    # Ollama names blob files sha256-<hex>: a ':' is not allowed in Windows file names.
    blob = store / "blobs" / f"sha256-{hexdigest}"
    _verify_blob(display, store, blob, f"sha256:{hexdigest}", size)
    return blob


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add_blob(blobs: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    target = blobs / f"sha256-{digest}"
    if not target.is_file():
        _write_atomic(target, data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _add_file_blob(blobs: Path, source: Path, media_type: str) -> tuple[dict, Path]:
    blobs.mkdir(parents=True, exist_ok=True)
    # Copied and hashed in one pass, then renamed to its digest, as Ollama's NewLayer does.
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix="sha256-", suffix=".partial")
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
        target = blobs / f"sha256-{h.hexdigest()}"
        if target.is_file():
            Path(tmp).unlink()
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"mediaType": media_type, "digest": f"sha256:{h.hexdigest()}", "size": size}, target


def write_store(
    store: Path,
    name: str,
    tag: str,
    gguf_path: Path,
    namespace: str = DEFAULT_NAMESPACE,
    host: str = DEFAULT_HOST,
) -> Path:
    """Lay out `gguf_path` as model HOST/NAMESPACE/NAME:TAG in an Ollama store, as `ollama create`
    does, and return the model blob's path.

    The manifest lists the GGUF file as the model layer, plus a params and a license layer and a
    config blob, like the manifests Ollama writes (server/images.go, server/manifest.go).
    """
    location = f"{OLLAMA_PREFIX}{host}/{namespace}/{name}:{tag}"
    for kind, value in (("host", host), ("namespace", namespace), ("name", name), ("tag", tag)):
        _check_part(location, kind, value)
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelSourceError(f"cannot add {gguf_path} to an Ollama store: it is not a file")
    store = Path(store)
    blobs = store / "blobs"
    model_layer, blob = _add_file_blob(blobs, gguf_path, MODEL_MEDIA_TYPE)
    layers = [
        model_layer,
        _add_blob(blobs, b"StarCoder2 is released under the BigCode OpenRAIL-M license.\n", LICENSE_MEDIA_TYPE),
        _add_blob(blobs, json.dumps({"stop": ["<|endoftext|>"]}).encode(), PARAMS_MEDIA_TYPE),
    ]
    config = {
        "model_format": "gguf",
        "model_family": "",
        "model_families": None,
        "model_type": "",
        "file_type": "",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_layer = _add_blob(blobs, json.dumps(config, separators=(",", ":")).encode(), CONFIG_MEDIA_TYPE)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_layer,
        "layers": layers,
    }
    # Go's json.Encoder writes compact JSON and a newline; the same bytes here.
    text = json.dumps(manifest, separators=(",", ":")) + "\n"
    _write_atomic(store / "manifests" / host / namespace / name / tag, text.encode())
    return blob
