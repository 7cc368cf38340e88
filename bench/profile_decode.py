"""Where the time of a sampling decode step goes, on each engine (bench/decoding.py's sampling settings).

    python bench/profile_decode.py                       # 3 prompts x 10 samples, 64 new tokens, 1 thread
    python bench/profile_decode.py --prompts 3 --new-tokens 128 --threads 1

The shape of one Spark task of the sampling workload: `--prompts` HumanEval prompts x 10 samples
decoding together on `--threads` threads. Every approach runs in a fresh process, one after the other:
  pytorch, by phase   timers around the decode loop's functions: forward passes (the LM head apart,
                      timed by hooks), logits shaping, token choice (top-p, softmax, the draws), stop
                      strings, KV-cache bookkeeping (rows appended, selected, joined); the rest is the
                      loop's own Python;
  sampling vs greedy  both engines, the same rows and lengths (minOutputLength = maxOutputLength, no
                      stop strings), drawing tokens vs argmax: the difference is the cost of sampling;
  GEMM floor          the model's own linear layers alone on [rows, in] inputs: what the forward
                      pass would cost if it were its matrix products only; and the fp32 ceiling
                      (2 x parameters x rows / peak GEMM FLOP/s at this thread count).
Writes --out/profile_decode.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold import warmup_prompts  # noqa: E402

from decoding import N_PARAMS, WORKLOADS, sampling_prompts  # noqa: E402
from run import export_openvino, gemm_peak_flops, in_fresh_process  # noqa: E402


def params_for(mode: str, new_tokens: int):
    from pipelines.engine.params import GenerationParams

    sampling = WORKLOADS["sampling"]
    common = dict(max_output_length=new_tokens, min_output_length=new_tokens, n_return_sequences=10,
                  return_full_text=False, random_seed=1)
    if mode == "greedy":  # one answer per prompt: timed_run gives it ten variants of each prompt
        return GenerationParams(**{**common, "n_return_sequences": 1})
    return GenerationParams(do_sample=True, temperature=sampling["temperature"], top_p=sampling["top_p"],
                            top_k=sampling["top_k"], **common)


def timed_run(source, prompts, mode, new_tokens, threads, rows):
    """Seconds and generated tokens of one engine.complete call (after a warm-up)."""
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec

    engine = GenerationEngine.load(ModelSpec(source=source, dtype="float32", num_threads=threads))
    engine.complete(warmup_prompts(1, prompts), GenerationParams(max_output_length=2), rows)
    # As many greedy rows as sampled ones: ten variants of each prompt (0-9 trailing spaces; exact
    # duplicates would be decoded once).
    batch = prompts if mode == "sampling" else [p + " " * i for p in prompts for i in range(10)]
    params = params_for(mode, new_tokens)
    started = time.perf_counter()
    results = engine.complete(batch, params, rows)
    seconds = time.perf_counter() - started
    return seconds, sum(c.completion_tokens for row in results for c in row)


def phase_profile(model_dir, prompts, new_tokens, threads, rows, stops):
    """Seconds per phase of the PyTorch decode loop (one sampling run after a warm-up)."""
    from pipelines.engine import batch_rows, generate, sampling
    from pipelines.engine import engine as engine_module
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec

    spent = defaultdict(float)

    def timer(owner, name, phase):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - started
        setattr(owner, name, wrapped)

    engine = GenerationEngine.load(ModelSpec(source=model_dir, dtype="float32", num_threads=threads))
    engine.complete(warmup_prompts(1, prompts), GenerationParams(max_output_length=2), rows)
    timer(generate, "decode_one_token", "forward, decode steps")
    timer(generate, "prefill", "forward, prefill")
    timer(generate, "shape_logits", "logits shaping (penalties, bans)")
    timer(sampling, "next_tokens", "token choice")
    timer(sampling, "top_p_filter", "  top-p filter (sort, softmax, cumsum, scatter)")
    timer(sampling, "sample", "  draws (multinomial per row)")
    timer(engine_module.StopStrings, "__call__", "stop-string checks")
    for name in ("append_tokens", "select", "join"):
        timer(batch_rows.BatchRows, name, "KV-cache rows (append, select, join)")
    timer(engine.model.get_output_embeddings(), "forward", "  LM head (in the forward passes)")
    params = dataclasses.replace(params_for("sampling", new_tokens), min_output_length=0, stop_strings=stops)
    started = time.perf_counter()
    results = engine.complete(prompts, params, rows)
    total = time.perf_counter() - started
    steps = max(c.completion_tokens for row in results for c in row)
    accounted = sum(v for k, v in spent.items() if not k.startswith("  "))
    phases = {k: round(v, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    phases["other (the loop's Python, tokenizing, texts)"] = round(total - accounted, 3)
    return {"seconds": round(total, 3), "decode_steps": steps,
            "tokens": sum(c.completion_tokens for row in results for c in row), "phases": phases}


def gemm_floor(model_dir, rows, threads, repeats=20):
    """Seconds of one decode step's matrix products alone: each Linear of the model on [rows, in]."""
    import torch

    from pipelines.engine.model_loader import load_model
    from pipelines.engine.params import ModelSpec

    torch.set_num_threads(threads)
    model, _ = load_model(ModelSpec(source=model_dir, dtype="float32", num_threads=threads))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, m.in_features) for m in linears]
    with torch.inference_mode():
        for m, x in zip(linears, inputs):
            m(x)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for m, x in zip(linears, inputs):
                m(x)
            best = min(best, time.perf_counter() - started)
    head = model.get_output_embeddings()
    with torch.inference_mode():
        x = torch.randn(rows, head.in_features)
        started = time.perf_counter()
        for _ in range(repeats):
            head(x)
        head_s = (time.perf_counter() - started) / repeats
    return {"linears_seconds_per_step": round(best, 4), "lm_head_seconds_per_step": round(head_s, 4),
            "linear_parameters": sum(m.weight.numel() for m in linears)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3, help="HumanEval prompts, 10 samples each")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="a Spark task's: one core")
    parser.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    from devtools.model_builder import build_random_model
    from pipelines.prompts.stop_presets import stop_strings

    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    model_dir = str(build_random_model(work / "model", "bench", seed=1234))
    prompts = sampling_prompts()[:args.prompts]
    rows = 10 * len(prompts)
    result = {"settings": vars(args), "rows": rows, "model_parameters": N_PARAMS}

    log("pytorch, phases")
    result["pytorch_phases"] = in_fresh_process(phase_profile, model_dir, prompts, args.new_tokens, args.threads, rows,
                                                stop_strings(WORKLOADS["sampling"]["stop_preset"]))
    sources = {"pytorch": model_dir}
    if args.openvino:
        log("openvino export, fp32 weights")
        sources["openvino"] = export_openvino(model_dir, work / "openvino-fp32", "fp32")
    for name, source in sources.items():
        for mode in ("sampling", "greedy"):
            log(f"{name}, {mode}")
            seconds, tokens = in_fresh_process(timed_run, source, prompts, mode, args.new_tokens, args.threads, rows)
            result[f"{name}_{mode}"] = {"seconds": round(seconds, 3), "tokens": tokens,
                                        "tokens_per_s": round(tokens / seconds, 2)}
        sampled, greedy = result[f"{name}_sampling"]["seconds"], result[f"{name}_greedy"]["seconds"]
        result[f"{name}_sampling_share"] = round((sampled - greedy) / sampled, 3)
    log("GEMM floor")
    result["gemm_floor"] = in_fresh_process(gemm_floor, model_dir, rows, args.threads)
    peak = in_fresh_process(gemm_peak_flops, "float32", args.threads)
    result["gemm_peak_float32_gflops"] = round(peak / 1e9, 1)
    result["ceiling_seconds_per_step"] = round(2 * N_PARAMS * rows / peak, 4)
    result["ceiling_tokens_per_s"] = round(peak / (2 * N_PARAMS), 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile_decode.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
