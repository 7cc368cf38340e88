"""Loading in every precision without two copies of the weights, and int8 layers that compute
what the float32 layers compute (within int8 error)."""

import json
import subprocess
import sys
import warnings

import pytest
import torch

from pipelines.engine.checkpoint import (
    CheckpointError,
    read_header,
    summarize_checkpoint,
)
from pipelines.engine.int8_linear import Int8Linear, packed_kernel_available
from pipelines.engine.model_loader import load_model
from pipelines.engine.params import ModelSpec

# Linear layers dominate this model (a 1,024-token vocabulary), as they do StarCoder2-3B.
LINEAR_HEAVY = dict(vocab_size=1024, hidden_size=512, intermediate_size=4096, num_hidden_layers=8,
                    num_attention_heads=8, num_key_value_heads=2)

_PEAK_SCRIPT = r"""
import json, sys
import torch, transformers.models.starcoder2.modeling_starcoder2
from pipelines.engine.model_loader import load_model
from pipelines.engine.params import ModelSpec

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
before = status("VmRSS")
model, _ = load_model(ModelSpec(source=sys.argv[1], device="cpu", dtype=sys.argv[2]))
print(json.dumps({"peak_increase": status("VmHWM") - before}))
"""


@pytest.fixture(scope="module")
def linear_heavy_dirs(tmp_path_factory):
    """The same random model saved as float32 and as bfloat16."""
    from transformers import Starcoder2ForCausalLM

    from devtools.model_builder import save_model_dir, starcoder2_config

    torch.manual_seed(0)
    model = Starcoder2ForCausalLM(starcoder2_config("tiny", **LINEAR_HEAVY))
    base = tmp_path_factory.mktemp("linear-heavy")
    fp32 = save_model_dir(model, base / "fp32")
    bf16 = save_model_dir(model.to(torch.bfloat16), base / "bf16")
    return fp32, bf16


def peak_increase(model_dir, dtype) -> int:
    """Peak RSS added by loading, measured in a fresh process (bytes)."""
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(model_dir), dtype],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_increase"]


def test_int8_loading_peaks_well_under_the_float32_weights(linear_heavy_dirs):
    fp32_dir, _ = linear_heavy_dirs
    fp32_weights = summarize_checkpoint(fp32_dir).weight_bytes("float32")
    # Quantising a loaded float32 model would peak above the float32 weights plus the int8 copy;
    # layer by layer it is the int8 weights (a quarter) plus one layer and loading's few MB.
    assert peak_increase(fp32_dir, "int8") < 0.5 * fp32_weights + 32e6


def test_float32_from_a_bfloat16_file_converts_tensor_by_tensor(linear_heavy_dirs):
    _, bf16_dir = linear_heavy_dirs
    fp32_weights = summarize_checkpoint(bf16_dir).weight_bytes("float32")
    # Converting the whole bf16 model at once would hold both: 1.5x the float32 weights.
    assert peak_increase(bf16_dir, "float32") < 1.2 * fp32_weights


def test_weights_used_as_stored_stay_mapped_from_the_file(linear_heavy_dirs):
    """Workers share such weights through the page cache: nothing is copied when loading."""
    _, bf16_dir = linear_heavy_dirs
    # A copy would add the weights (79 MB); loading itself adds a few MB of Python objects.
    assert peak_increase(bf16_dir, "bfloat16") < 0.1 * summarize_checkpoint(bf16_dir).weight_bytes("bfloat16") + 32e6


def test_every_precision_loads_the_same_weights(linear_heavy_dirs):
    fp32_dir, bf16_dir = linear_heavy_dirs
    ids = torch.tensor([[5, 17, 300, 999, 3, 42]])
    reference, _ = load_model(ModelSpec(source=str(fp32_dir), device="cpu", dtype="float32"))
    from_bf16, _ = load_model(ModelSpec(source=str(bf16_dir), device="cpu", dtype="float32"))
    with torch.no_grad():
        ref_logits = reference(ids).logits
        # bf16 storage rounds the weights once; the float32 model computed from them agrees closely.
        assert torch.allclose(from_bf16(ids).logits, ref_logits, atol=0.05)
        assert from_bf16.model.embed_tokens.weight.dtype == torch.float32
        int8, _ = load_model(ModelSpec(source=str(fp32_dir), device="cpu", dtype="int8"))
        assert all(not isinstance(m, torch.nn.Linear) for m in int8.modules())
        int8_logits = int8(ids).logits
        assert (int8_logits - ref_logits).abs().max() < 0.1 * ref_logits.abs().max()
        assert torch.nn.functional.cosine_similarity(int8_logits.flatten(), ref_logits.flatten(), dim=0) > 0.99


KERNELS = [pytest.param(True, id="packed", marks=pytest.mark.skipif(
               not packed_kernel_available(), reason="PyTorch built without oneDNN's quantised linear")),
           pytest.param(False, id="int_mm")]


@pytest.mark.parametrize("packed", KERNELS)
@pytest.mark.parametrize("rows", [1, 3, 16, 65])
def test_int8_linear_matches_float32_within_quantisation_error(rows, packed):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(2, rows, 96)
    quantised = Int8Linear.from_weight(linear.weight.data, linear.bias.data, packed=packed)
    with torch.no_grad():
        expected = linear(x)
        got = quantised(x)
    assert got.shape == expected.shape
    # Per-row int8 of weights and activations: error a small fraction of the output's scale.
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()


@pytest.mark.skipif(not packed_kernel_available(), reason="PyTorch built without oneDNN's quantised linear")
def test_int8_kernels_agree_and_a_row_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 320)
    x = torch.randn(33, 256) * torch.logspace(-2, 2, 33)[:, None]  # rows of very different scales
    packed = Int8Linear.from_weight(linear.weight.data, linear.bias.data, packed=True)
    plain = Int8Linear.from_weight(linear.weight.data, linear.bias.data, packed=False)
    with torch.no_grad():
        both = packed(x)
        # The same integers either way: only float rounding of the scaling differs.
        torch.testing.assert_close(both, plain(x), rtol=1e-5, atol=1e-5)
        # Activation scales are per row: a row alone gives what it gives inside the batch.
        for row in (0, 16, 32):
            torch.testing.assert_close(packed(x[row:row + 1]), both[row:row + 1], rtol=1e-5, atol=1e-6)


def test_int8_loading_uses_no_deprecated_api(tiny_model_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)
        model, _ = load_model(ModelSpec(source=str(tiny_model_dir), device="cpu", dtype="int8"))
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]))


def test_a_truncated_weights_file_is_named(tmp_path, tiny_model_dir):
    weights = tiny_model_dir / "model.safetensors"
    cut = tmp_path / "model.safetensors"
    cut.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{cut}.*truncated"):
        read_header(cut)


@pytest.mark.parametrize("flags, expected", [(frozenset({"avx512_bf16"}), torch.bfloat16),
                                             (frozenset({"avx2"}), torch.float32)], ids=["native bf16", "avx2"])
def test_auto_loads_bfloat16_weights_as_stored_only_where_the_cpu_computes_in_bfloat16(
        linear_heavy_dirs, monkeypatch, flags, expected):
    from pipelines.engine import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    fp32_dir, bf16_dir = linear_heavy_dirs
    model, _ = load_model(ModelSpec(source=str(bf16_dir), device="cpu"))
    assert {p.dtype for p in model.parameters()} == {expected}
    explicit, _ = load_model(ModelSpec(source=str(bf16_dir), device="cpu", dtype=str(expected).split(".")[1]))
    ids = torch.tensor([[5, 17, 300, 999, 3, 42]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, explicit(ids).logits)  # auto is that dtype, nothing else
    fp32_model, _ = load_model(ModelSpec(source=str(fp32_dir), device="cpu"))
    assert {p.dtype for p in fp32_model.parameters()} == {torch.float32}
