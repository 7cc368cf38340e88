"""What `dtype: auto` computes in: the checkpoint's own dtype where the hardware runs it natively,
else float32 (as `dtype="auto"` means in transformers, plus the hardware check).

A GPU runs bfloat16 and float16 natively. A CPU runs bfloat16 natively with AVX512-BF16 or AMX
(its matrix multiplies then move half of float32's bytes: the job ran 2.35x float32's speed at
StarCoder2-3B on a 2-core AVX512-BF16 CPU); without them bfloat16 is emulated and slower than float32, and no CPU kernel
PyTorch uses runs float16 natively, so both compute in float32 there. A float32 checkpoint runs in
float32 everywhere, and int8/int4 are never chosen by auto: they change outputs, so they run only
when asked for. The choice is made where the model loads (each worker, on its own hardware); the
driver makes it too, with its own hardware, for the memory plan and the log. Nothing here imports
torch.
"""

from __future__ import annotations

from functools import lru_cache

from pipelines.engine.checkpoint import summarize_model

# CPU flags (as /proc/cpuinfo names them) of the instructions that compute in bfloat16.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# Stored dtypes that are compute dtypes; anything else (a GGUF file's GGML types, Q4_0, Q8_0, ...)
# is dequantised into float32 when it loads.
FLOATING = ("float32", "bfloat16", "float16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (Linux: the first processor of /proc/cpuinfo; elsewhere none known)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_dtype(stored: str, device_type: str, flags: frozenset[str] | None = None,
               gpu_runs_bfloat16: bool = True) -> tuple[str, str]:
    """The compute dtype `auto` means for weights stored as `stored` on `device_type` ("cpu" or
    "cuda"), and why, in words for the log. `flags`: the CPU's flags (default: this machine's)."""
    if stored not in FLOATING:
        return "float32", f"the model's {stored} weights are dequantised to float32"
    if stored == "float32":
        return "float32", "the checkpoint is stored in float32"
    if device_type == "cuda":
        if stored == "bfloat16" and not gpu_runs_bfloat16:
            return "float16", "the checkpoint is stored in bfloat16, which this GPU does not run; float16 is its half precision"
        return stored, f"the checkpoint is stored in {stored}, which the GPU runs natively"
    flags = cpu_flags() if flags is None else flags
    native = [f for f in NATIVE_BFLOAT16_FLAGS if f in flags]
    if stored == "bfloat16" and native:
        return "bfloat16", f"the checkpoint is stored in bfloat16, which this CPU runs natively ({native[0]})"
    if stored == "bfloat16":
        return "float32", ("the checkpoint is stored in bfloat16, and this CPU has neither AVX512-BF16 nor AMX "
                           "to run it natively, so float32 is faster")
    return "float32", f"the checkpoint is stored in {stored}, which CPUs do not compute in natively"


def compute_dtype(dtype: str, stored: str, device_type: str, flags: frozenset[str] | None = None,
                  gpu_runs_bfloat16: bool = True) -> str:
    """The dtype the model's arithmetic runs in for a requested `dtype` (int8 weights compute in float32)."""
    if dtype == "auto":
        return auto_dtype(stored, device_type, flags, gpu_runs_bfloat16)[0]
    return "float32" if dtype == "int8" else dtype


def describe_dtype(source: str, backend, dtype: str, device: str) -> str:
    """What `dtype` computes in on `backend` (a row of engine.backends.BACKENDS) and why, in words
    for the driver's log; for `auto` on the model's own engine, as this machine would choose."""
    if backend.weights_file:  # an export: its weights' precision was chosen when it was exported
        if dtype == "auto":
            return ("dtype auto: the export's own weights, computed in the OpenVINO CPU plugin's default precision "
                    "(bfloat16 on CPUs with AVX512-BF16 or AMX, else float32)")
        return f"dtype {dtype}: the export's own weights, computed in {compute_dtype(dtype, 'float32', 'cpu')}"
    if backend.weights_as_file:  # dtype auto only: the table allows no other
        return "dtype auto: the file's own quantised weights, as llama.cpp computes with them"
    if dtype != "auto":
        return f"dtype {dtype}" + (" (int8 weights, computed in float32)" if dtype == "int8" else "")
    if backend.own_auto_dtype:
        return f"dtype auto: the checkpoint is stored in {summarize_model(source).stored_dtype}; {backend.own_auto_dtype}"
    device_type = "cuda" if device == "cuda" else "cpu"
    chosen, why = auto_dtype(summarize_model(source).stored_dtype, device_type)
    where = "on a GPU" if device_type == "cuda" else "on this machine's CPU"
    return (f"dtype auto: {chosen} {where}, since {why}"
            + "; each worker chooses the same way for its own hardware")
