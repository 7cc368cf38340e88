"""What dtype auto computes in: the checkpoint's own dtype where the hardware runs it natively, else float32."""

import pytest

from pipelines.engine import precision
from pipelines.engine.precision import auto_dtype, compute_dtype

SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
COOPER_LAKE = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
AMX_ONLY = frozenset({"avx2", "amx_bf16"})
SKYLAKE = frozenset({"avx2", "avx512f", "avx512_vnni"})
ZEN2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, COOPER_LAKE, AMX_ONLY], ids=["amx+avx512bf16", "avx512bf16", "amx"])
def test_bfloat16_weights_run_in_bfloat16_on_a_cpu_that_computes_in_it(flags):
    dtype, why = auto_dtype("bfloat16", "cpu", flags)
    assert dtype == "bfloat16" and why.startswith("the checkpoint is stored in bfloat16, which this CPU runs natively (")


@pytest.mark.parametrize("flags", [SKYLAKE, ZEN2], ids=["avx512 without bf16", "avx2"])
def test_bfloat16_weights_run_in_float32_on_a_cpu_that_would_emulate_it(flags):
    dtype, why = auto_dtype("bfloat16", "cpu", flags)
    assert dtype == "float32" and "neither AVX512-BF16 nor AMX" in why


def test_a_gpu_runs_half_precision_weights_as_stored():
    assert auto_dtype("bfloat16", "cuda")[0] == "bfloat16"
    assert auto_dtype("float16", "cuda")[0] == "float16"
    assert auto_dtype("bfloat16", "cuda", gpu_runs_bfloat16=False)[0] == "float16"


def test_float32_float16_on_cpu_and_quantised_files_compute_in_float32():
    assert auto_dtype("float32", "cuda")[0] == "float32"  # as stored: auto never lowers precision
    assert auto_dtype("float32", "cpu", SAPPHIRE_RAPIDS)[0] == "float32"
    assert auto_dtype("float16", "cpu", SAPPHIRE_RAPIDS)[0] == "float32"
    assert auto_dtype("Q4_0", "cpu", SAPPHIRE_RAPIDS) == ("float32", "the model's Q4_0 weights are dequantised to float32")


def test_int8_is_never_chosen_by_auto_and_computes_in_float32_when_asked():
    for stored in ("float32", "bfloat16", "float16", "Q8_0"):
        for flags in (SAPPHIRE_RAPIDS, ZEN2):
            assert compute_dtype("auto", stored, "cpu", flags) != "int8"
    assert compute_dtype("int8", "bfloat16", "cpu", SAPPHIRE_RAPIDS) == "float32"
    assert compute_dtype("float16", "float32", "cuda") == "float16"


def test_the_cpu_flags_are_this_machines():
    flags = precision.cpu_flags()
    with open("/proc/cpuinfo") as f:
        first = next(line for line in f if line.startswith("flags"))
    assert flags == frozenset(first.split(":", 1)[1].split()) and "sse2" in flags


def test_an_engine_that_chooses_its_own_dtype_says_so_in_the_log_line():
    """vLLM resolves dtype auto itself (the checkpoint's dtype, a float32 one in half precision), so
    its log line gives vLLM's rule, not the float32 this CPU would get on the pytorch engine. (The
    bundled model, stored in float16: no model is built, which fails once vLLM has patched
    transformers in the same process.)"""
    from pipelines.engine.backends import BACKENDS
    from pipelines.models.bundled import DEMO_MODEL

    said = precision.describe_dtype(str(DEMO_MODEL), BACKENDS["vllm"], "auto", "auto")
    assert said.startswith("dtype auto: the checkpoint is stored in float16; vLLM's own choice")
    assert "bfloat16 on CPUs" in said
    assert precision.describe_dtype(str(DEMO_MODEL), BACKENDS["pytorch"], "auto", "auto").startswith(
        "dtype auto: float32 on this machine's CPU, since the checkpoint is stored in float16")
    assert precision.describe_dtype(str(DEMO_MODEL), BACKENDS["vllm"], "bfloat16", "auto") == "dtype bfloat16"
