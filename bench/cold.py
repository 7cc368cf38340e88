"""Cold timed runs: every timed run recomputes every prompt.

A warm-up (loading the model into the workers, compiling) runs on the prompts here, which are in
no timed set and share no prefix with one: OpenVINO GenAI keeps the KV blocks of every prompt it
has seen across `generate` calls in one process, so a warm-up on timed prompts would hand the timed
run their prefills. Each timed run is a fresh process or a fresh Spark session (fresh workers).
"""

WARMUP_PROMPTS = (
    "# warm-up prompt, in no timed set\nx = 1\n",
    "-- warm-up prompt, in no timed set\nSELECT 1;\n",
    "// warm-up prompt, in no timed set\nint w = 0;\n",
    "<!-- warm-up prompt, in no timed set -->\n<p>\n",
)


def warmup_prompts(n: int, timed: list[str]) -> list[str]:
    """`n` warm-up prompts; none of them begins any timed prompt, or is begun by one."""
    chosen = list(WARMUP_PROMPTS[:n])
    assert len(chosen) == n, f"at most {len(WARMUP_PROMPTS)} warm-up prompts"
    shared = [w for w in chosen for t in timed if t.startswith(w[:16]) or w.startswith(t[:16])]
    assert not shared, f"warm-up prompts share a beginning with timed prompts: {shared[:1]}"
    return chosen
