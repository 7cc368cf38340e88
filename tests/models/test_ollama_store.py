"""Ollama store names (`ollama:NAME[:TAG]`): resolution to the GGUF blob, verification, and errors."""

import hashlib
import json
import os

import pytest

from pipelines.models import ollama_store
from pipelines.models.ollama_store import (
    is_ollama_name,
    parse_name,
    resolve_ollama_model,
    store_dir,
    write_store,
)
from pipelines.models.source import ModelSourceError

GGUF_BYTES = b"GGUF" + bytes(range(256)) * 64  # resolution never parses GGUF: any bytes do


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test gets its own verified-digest cache file and an empty in-process cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    ollama_store._VERIFIED.clear()
    yield
    ollama_store._VERIFIED.clear()


@pytest.fixture
def gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(GGUF_BYTES)
    return path


@pytest.fixture
def store(tmp_path, gguf):
    """A store holding starcoder2:3b, as `ollama pull starcoder2:3b` leaves it."""
    root = tmp_path / "ollama-models"
    write_store(root, "starcoder2", "3b", gguf)
    return root


def cache_file(tmp_path):
    return tmp_path / "xdg-cache" / "starcoder-pipelines" / "ollama-verified.json"


def manifest_of(store, name="starcoder2", tag="3b", namespace="library", host="registry.ollama.ai"):
    return store / "manifests" / host / namespace / name / tag


def test_write_store_lays_out_what_ollama_writes(store):
    sha = hashlib.sha256(GGUF_BYTES).hexdigest()
    manifest = json.loads(manifest_of(store).read_text())
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    types = [layer["mediaType"] for layer in manifest["layers"]]
    assert types[0] == "application/vnd.ollama.image.model"
    assert "application/vnd.ollama.image.params" in types
    assert manifest["layers"][0] == {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": f"sha256:{sha}",
        "size": len(GGUF_BYTES),
    }
    # Every layer and the config are blobs named sha256-<hex> holding bytes of that digest.
    for layer in [manifest["config"], *manifest["layers"]]:
        blob = store / "blobs" / layer["digest"].replace(":", "-")
        data = blob.read_bytes()
        assert len(data) == layer["size"]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
    params = store / "blobs" / next(
        layer["digest"] for layer in manifest["layers"] if layer["mediaType"].endswith(".params")
    ).replace(":", "-")
    assert isinstance(json.loads(params.read_text()), dict)


def test_resolves_through_ollama_models(store, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    assert store_dir() == store
    blob = resolve_ollama_model("ollama:starcoder2:3b")
    assert blob == store / "blobs" / f"sha256-{hashlib.sha256(GGUF_BYTES).hexdigest()}"
    assert blob.read_bytes() == GGUF_BYTES


def test_resolves_through_the_default_store_in_home(tmp_path, gguf, monkeypatch):
    home = tmp_path / "home"
    write_store(home / ".ollama" / "models", "starcoder2", "3b", gguf)
    monkeypatch.setenv("HOME", str(home))
    assert store_dir() == home / ".ollama" / "models"
    blob = resolve_ollama_model("ollama:starcoder2:3b")
    assert blob.parent == home / ".ollama" / "models" / "blobs"
    assert blob.read_bytes() == GGUF_BYTES


def test_an_explicit_store_wins_over_the_environment(store, tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "elsewhere"))
    assert resolve_ollama_model("ollama:starcoder2:3b", store=store).read_bytes() == GGUF_BYTES


def test_the_tag_defaults_to_latest(tmp_path, gguf):
    root = tmp_path / "store"
    latest = write_store(root, "starcoder2", "latest", gguf)
    assert parse_name("ollama:starcoder2") == ("registry.ollama.ai/library", "starcoder2", "latest")
    assert resolve_ollama_model("ollama:starcoder2", store=root) == latest
    with pytest.raises(ModelSourceError, match="ollama pull starcoder2:3b"):
        resolve_ollama_model("ollama:starcoder2:3b", store=root)


def test_namespaced_and_fully_qualified_names(tmp_path, gguf):
    root = tmp_path / "store"
    other = tmp_path / "other.gguf"
    other.write_bytes(b"another model")
    user_blob = write_store(root, "mymodel", "q8", gguf, namespace="someuser")
    host_blob = write_store(root, "mymodel", "q4", other, namespace="team", host="models.example.com")
    assert (root / "manifests/registry.ollama.ai/someuser/mymodel/q8").is_file()

    assert parse_name("ollama:someuser/mymodel:q8") == ("registry.ollama.ai/someuser", "mymodel", "q8")
    assert parse_name("ollama:models.example.com/team/mymodel:q4") == ("models.example.com/team", "mymodel", "q4")
    assert resolve_ollama_model("ollama:someuser/mymodel:q8", store=root) == user_blob
    assert resolve_ollama_model("ollama:models.example.com/team/mymodel:q4", store=root) == host_blob
    assert host_blob.read_bytes() == b"another model"
    # The namespace is part of the name: the library has no mymodel.
    with pytest.raises(ModelSourceError, match="ollama pull mymodel:q8"):
        resolve_ollama_model("ollama:mymodel:q8", store=root)


def test_is_ollama_name():
    assert is_ollama_name("ollama:starcoder2:3b")
    assert not is_ollama_name("bigcode/starcoder2-3b")
    assert not is_ollama_name("/models/starcoder2-3b.gguf")
    assert not is_ollama_name("starcoder2_3b_int8")


def test_a_missing_model_says_how_to_get_it_and_lists_what_is_there(tmp_path, gguf):
    root = tmp_path / "store"
    write_store(root, "codellama", "7b", gguf)
    write_store(root, "mymodel", "q8", gguf, namespace="someuser")
    with pytest.raises(ModelSourceError) as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=root)
    message = str(e.value)
    assert "ollama pull starcoder2:3b" in message
    assert str(root) in message
    assert "OLLAMA_MODELS" in message
    assert ".gguf" in message
    assert "codellama:7b" in message
    assert "someuser/mymodel:q8" in message


def test_a_missing_model_in_an_empty_or_absent_store(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=tmp_path / "absent")
    assert "ollama pull starcoder2:3b" in str(e.value)
    assert "holds no models" in str(e.value)


def test_the_listing_of_present_models_is_capped_at_ten(tmp_path, gguf):
    root = tmp_path / "store"
    for i in range(12):
        write_store(root, f"model{i:02d}", "latest", gguf)
    with pytest.raises(ModelSourceError) as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=root)
    message = str(e.value)
    assert "model09:latest" in message
    assert "model10:latest" not in message
    assert "and 2 more" in message


def test_a_corrupt_blob_is_refused_with_its_path(store):
    blob = resolve_ollama_model("ollama:starcoder2:3b", store=store)
    ollama_store._VERIFIED.clear()
    cache_file(store.parent).unlink()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0x01  # one bit, same size
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match="corrupt") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=store)
    message = str(e.value)
    assert str(blob) in message
    assert hashlib.sha256(GGUF_BYTES).hexdigest() in message  # expected
    assert hashlib.sha256(bytes(data)).hexdigest() in message  # found
    assert "ollama pull starcoder2:3b" in message
    assert "ollama rm starcoder2:3b" in message


def test_a_truncated_blob_is_refused_by_size(store):
    blob = store / "blobs" / f"sha256-{hashlib.sha256(GGUF_BYTES).hexdigest()}"
    blob.write_bytes(GGUF_BYTES[:1000])
    with pytest.raises(ModelSourceError, match="wrong size") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=store)
    message = str(e.value)
    assert str(blob) in message
    assert f"1000 bytes, its manifest expects {len(GGUF_BYTES)}" in message
    assert "ollama pull starcoder2:3b" in message


def test_a_missing_blob_is_refused_with_its_path(store):
    blob = store / "blobs" / f"sha256-{hashlib.sha256(GGUF_BYTES).hexdigest()}"
    blob.unlink()
    with pytest.raises(ModelSourceError, match="missing") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=store)
    assert str(blob) in str(e.value)
    assert "ollama pull starcoder2:3b" in str(e.value)


def test_a_manifest_without_a_model_layer(store):
    manifest = manifest_of(store)
    data = json.loads(manifest.read_text())
    data["layers"] = [layer for layer in data["layers"] if layer["mediaType"] != "application/vnd.ollama.image.model"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelSourceError, match="no GGUF model layer") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=store)
    assert str(manifest) in str(e.value)
    assert "application/vnd.ollama.image.params" in str(e.value)  # what it does hold


def test_a_manifest_that_is_not_json(store):
    manifest = manifest_of(store)
    manifest.write_text("{not json")
    with pytest.raises(ModelSourceError, match="not valid JSON") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=store)
    assert str(manifest) in str(e.value)


def test_a_manifest_digest_that_is_not_sha256_is_not_followed(store):
    manifest = manifest_of(store)
    data = json.loads(manifest.read_text())
    data["layers"][0]["digest"] = "sha256:../../../etc/passwd"
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelSourceError, match="malformed model layer") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=store)
    assert str(manifest) in str(e.value)


@pytest.mark.parametrize(
    "location",
    [
        "ollama:",
        "ollama:starcoder2:",
        "ollama:star coder2:3b",
        "ollama:..:3b",
        "ollama:a..b:3b",
        "ollama:../starcoder2:3b",
        "ollama:starcoder2:3b:extra",
        "ollama:a/b/c/d:3b",
        "ollama:/starcoder2:3b",
        "ollama:some.user/mymodel:q8",
        "ollama:starcoder2:3b@sha256-abc",
        "starcoder2:3b",
    ],
)
def test_malformed_names_are_refused(location, tmp_path):
    with pytest.raises(ModelSourceError, match="malformed Ollama model name") as e:
        resolve_ollama_model(location, store=tmp_path)
    message = str(e.value)
    assert repr(location) in message
    assert "ollama:NAME[:TAG]" in message


def test_verified_digests_are_cached_on_disk_and_skip_hashing(store, tmp_path):
    blob = resolve_ollama_model("ollama:starcoder2:3b", store=store)
    st = blob.stat()
    cached = json.loads(cache_file(tmp_path).read_text())
    assert cached == {
        str(blob.absolute()): [st.st_size, st.st_mtime_ns, f"sha256:{hashlib.sha256(GGUF_BYTES).hexdigest()}"]
    }

    # Rewrite the bytes but keep size and mtime: a resolve that hashed would refuse this blob,
    # so success shows the cached digest was used, here from the file (the process cache is empty).
    ollama_store._VERIFIED.clear()
    data = bytearray(GGUF_BYTES)
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert resolve_ollama_model("ollama:starcoder2:3b", store=store) == blob

    # A new mtime means the file may have changed: it is hashed again and the damage found.
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelSourceError, match="corrupt") as e:
        resolve_ollama_model("ollama:starcoder2:3b", store=store)
    assert str(blob) in str(e.value)
    # The failed blob did not replace the verified entry's key with a wrong digest.
    entry = json.loads(cache_file(tmp_path).read_text())[str(blob.absolute())]
    assert entry[1] == st.st_mtime_ns


def test_the_process_cache_works_when_the_cache_file_cannot_be_written(store, tmp_path, monkeypatch):
    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_dir))
    blob = resolve_ollama_model("ollama:starcoder2:3b", store=store)  # the failed write is ignored
    st = blob.stat()
    data = bytearray(GGUF_BYTES)
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert resolve_ollama_model("ollama:starcoder2:3b", store=store) == blob  # from memory
    ollama_store._VERIFIED.clear()
    with pytest.raises(ModelSourceError, match="corrupt"):
        resolve_ollama_model("ollama:starcoder2:3b", store=store)


def test_a_garbled_cache_file_is_ignored(store, tmp_path):
    path = cache_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("[not a dict")
    blob = resolve_ollama_model("ollama:starcoder2:3b", store=store)
    assert str(blob.absolute()) in json.loads(path.read_text())


def test_blobs_larger_than_one_hashing_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(ollama_store, "_CHUNK", 1000)  # several chunks, with a short last one
    big = tmp_path / "big.gguf"
    big.write_bytes(GGUF_BYTES * 3)
    root = tmp_path / "store"
    blob = write_store(root, "starcoder2", "3b", big)
    assert resolve_ollama_model("ollama:starcoder2:3b", store=root) == blob
    assert blob.read_bytes() == GGUF_BYTES * 3
