"""The run summary: computed from the committed output, printed as a table, written as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.jobs.config import JobConfig


def render_table(rows: list[tuple[str, str]]) -> str:
    """Two columns of text in a box, for the console."""
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (max(len(v) for _, v in rows) + 2) + "+"
    body = [f"| {k.ljust(width)} | {v.ljust(len(line) - width - 6)}|" for k, v in rows]
    return "\n".join([line, *body, line])


def output_totals(written: DataFrame, shards_written, tokens_col: str, sums: dict[str, Column],
                  by: str | None = None) -> tuple[dict, dict]:
    """One pass over the output, request by request (the rows of a request share its result, so
    `by`, a column of the result, is the same for all of them): each of `sums` (name -> a per-row
    value) summed over the rows, in all and for each value of `by`; and what the summary says of
    the requests: how many are distinct, served from the result cache and run, the model time saved
    (each row's request time, less that of the requests run), and the `tokens_col` tokens this
    run's shards generated (each request run once, cached rows not counted; equal requests share a
    shard, as the jobs shard by the prompt)."""
    from pipelines.jobs.sharded_output import SHARD_COL

    cached, seconds = F.col("cached"), F.coalesce(F.col("request_seconds"), F.lit(0.0))
    ran_here = F.col(SHARD_COL).isin(list(shards_written)) & ~cached
    per_request = written.groupBy("request").agg(
        F.max(cached.cast("int")).alias("hit"),
        F.max((~cached).cast("int")).alias("run"),
        F.sum(seconds).alias("rows_seconds"),
        F.max(F.when(~cached, seconds)).alias("spent"),
        F.max(F.when(ran_here, F.col(tokens_col))).alias("tokens_here"),
        *[F.sum(value).alias(name) for name, value in sums.items()],
        (F.first(by) if by else F.lit(None)).alias("by"),
    )
    names = ["hit", "run", "rows_seconds", "spent", "tokens_here", *sums]
    groups = per_request.groupBy("by").agg(F.count(F.lit(1)).alias("distinct"),
                                           *[F.sum(n).alias(n) for n in names]).collect()
    totals = {n: sum(g[n] or 0 for g in groups) for n in ["distinct", *names]}
    requests = dict(requests_distinct=totals["distinct"], cache_hits=int(totals["hit"]),
                    requests_generated=int(totals["run"]),
                    model_seconds_saved=round(max(totals["rows_seconds"] - totals["spent"], 0.0), 2))
    return ({**{n: totals[n] for n in sums}, "tokens_this_run": int(totals["tokens_here"]), "requests": requests},
            {g["by"]: {n: g[n] or 0 for n in sums} for g in groups})


class _JobSummary:
    """What both jobs' summaries do: the console table around their own rows, and the JSON file."""

    def _request_row(self) -> tuple[str, str]:
        return ("requests", f"{self.requests_distinct:,} distinct: {self.cache_hits:,} from the cache, "
                            f"{self.requests_generated:,} run ({self.model_seconds_saved:.1f}s of model time saved)")

    def _rows(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def table(self) -> str:
        return render_table([
            ("rows in / out", f"{self.rows_in} / {self.rows_out}"),
            ("rows with errors", str(self.rows_with_errors)),
            *self._rows(),
            ("model", self.model),
            ("spark master", self.master),
            ("output", self.output),
        ])


@dataclass
class Summary(_JobSummary):
    rows_in: int
    rows_out: int
    rows_with_errors: int
    prompt_tokens: int
    completion_tokens: int
    completion_tokens_this_run: int
    shards_written_this_run: int
    shards_total: int
    generation_seconds: float
    wall_seconds: float
    tokens_per_second: float
    finish_reasons: dict[str, int]
    requests_distinct: int
    cache_hits: int
    requests_generated: int
    model_seconds_saved: float
    model: str
    master: str
    output: str
    params: dict = field(default_factory=dict)
    # Fill-in-the-middle runs with a true middle: {language: {rows, exact_match, edit_similarity}}
    fim_scores: dict = field(default_factory=dict)

    def _rows(self) -> list[tuple[str, str]]:
        rows = [
            ("prompt tokens", f"{self.prompt_tokens:,}"),
            ("completion tokens", f"{self.completion_tokens:,}"),
            ("generated this run", f"{self.completion_tokens_this_run:,} tokens in {self.shards_written_this_run}"
                                   f"/{self.shards_total} shards"),
            ("tokens/s", f"{self.tokens_per_second:,.1f}"),
            ("wall time", f"{self.wall_seconds:.1f}s (generation {self.generation_seconds:.1f}s)"),
            ("finish reasons", ", ".join(f"{k}={v}" for k, v in sorted(self.finish_reasons.items()))),
            self._request_row(),
        ]
        for language, score in sorted(self.fim_scores.items()):
            rows.append((f"FIM {language}", f"exact match {score['exact_match']:.3f}, edit similarity "
                                            f"{score['edit_similarity']:.3f} ({score['rows']} rows)"))
        return rows


def summarize(written: DataFrame, config: JobConfig, *, rows_in, shards_written, model_seconds, seconds,
              master, model_path) -> Summary:

    totals, by_reason = output_totals(written, shards_written, "completion_tokens", {
        "rows": F.lit(1),
        "errors": F.col("error").isNotNull().cast("int"),
        "prompt_tokens": F.col("prompt_tokens"),
        "completion_tokens": F.col("completion_tokens"),
    }, by="finish_reason")
    reasons = {reason or "none": sums["rows"] for reason, sums in by_reason.items()}
    this_run, requests = totals["tokens_this_run"], totals["requests"]
    fim = {}
    if "edit_similarity" in written.columns:
        language = F.col(config.input.language_col) if config.input.language_col else F.lit("all")
        for r in written.groupBy(language.alias("language")).agg(
            F.count(F.lit(1)).alias("rows"),
            F.avg(F.col("exact_match").cast("double")).alias("exact_match"),
            F.avg("edit_similarity").alias("edit_similarity"),
        ).collect():
            fim[r["language"] or "unknown"] = {
                "rows": r["rows"], "exact_match": round(r["exact_match"], 4), "edit_similarity": round(r["edit_similarity"], 4)
            }
    return Summary(
        rows_in=rows_in,
        rows_out=totals["rows"],
        rows_with_errors=totals["errors"],
        prompt_tokens=int(totals["prompt_tokens"]),
        completion_tokens=int(totals["completion_tokens"]),
        completion_tokens_this_run=int(this_run),
        shards_written_this_run=len(shards_written),
        shards_total=config.output.shards,
        generation_seconds=round(model_seconds, 2),
        wall_seconds=round(seconds, 2),
        tokens_per_second=round(this_run / model_seconds, 2) if model_seconds > 0 else 0.0,
        finish_reasons=reasons,
        **requests,
        model=model_path,
        master=master,
        output=config.output.path,
        params=asdict(config.generation),
        fim_scores=fim,
    )


# Perplexity quantiles in the scoring summary: name -> probability.
PERPLEXITY_QUANTILES = {"min": 0.0, "p01": 0.01, "p10": 0.1, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9,
                        "p99": 0.99, "max": 1.0}


@dataclass
class ScoringSummary(_JobSummary):
    rows_in: int
    rows_out: int
    rows_with_errors: int
    rows_without_perplexity: int  # fewer than two tokens (nothing to predict) or an error
    tokens: int
    tokens_this_run: int
    shards_written_this_run: int
    shards_total: int
    scoring_seconds: float
    wall_seconds: float
    tokens_per_second: float
    # exp(-sum of log-probabilities / tokens scored) over the whole corpus: long documents weigh more
    corpus_perplexity: float | None
    perplexity_quantiles: dict[str, float]  # of the documents' perplexities (PERPLEXITY_QUANTILES)
    requests_distinct: int
    cache_hits: int
    requests_generated: int
    model_seconds_saved: float
    model: str
    master: str
    output: str
    params: dict = field(default_factory=dict)

    def _rows(self) -> list[tuple[str, str]]:
        q = self.perplexity_quantiles
        return [
            ("rows without perplexity", f"{self.rows_without_perplexity} (fewer than 2 tokens, or an error)"),
            ("tokens", f"{self.tokens:,}"),
            ("scored this run", f"{self.tokens_this_run:,} tokens in {self.shards_written_this_run}"
                                f"/{self.shards_total} shards"),
            ("tokens/s", f"{self.tokens_per_second:,.1f}"),
            ("wall time", f"{self.wall_seconds:.1f}s (scoring {self.scoring_seconds:.1f}s)"),
            ("corpus perplexity", "none" if self.corpus_perplexity is None else f"{self.corpus_perplexity:.3f}"),
            ("perplexity quantiles", ", ".join(f"{k} {v:.3f}" for k, v in q.items()) if q else "none"),
            self._request_row(),
        ]


def summarize_scores(written: DataFrame, config: JobConfig, *, rows_in, shards_written, model_seconds, seconds,
                     master, model_path) -> ScoringSummary:
    import math


    scored = F.greatest(F.col("tokens") - 1, F.lit(0))
    totals, _ = output_totals(written, shards_written, "tokens", {
        "rows": F.lit(1),
        "errors": F.col("error").isNotNull().cast("int"),
        "with_perplexity": F.col("perplexity").isNotNull().cast("int"),
        "tokens": F.col("tokens"),
        "logprob": F.when(F.col("error").isNull(), F.col("logprob")),
        "scored": F.when(F.col("error").isNull(), scored),
    })
    this_run, requests = totals["tokens_this_run"], totals["requests"]
    # Within 0.1% of rank: exact on small tables, and bounded memory on any corpus (nulls are skipped).
    values = written.stat.approxQuantile("perplexity", list(PERPLEXITY_QUANTILES.values()), 0.001)
    defined = values and not any(math.isnan(v) for v in values)  # no document with a perplexity: none
    quantiles = {name: round(v, 4) for name, v in zip(PERPLEXITY_QUANTILES, values)} if defined else {}
    corpus = math.exp(-totals["logprob"] / totals["scored"]) if totals["scored"] else None
    return ScoringSummary(
        rows_in=rows_in,
        rows_out=totals["rows"],
        rows_with_errors=totals["errors"],
        rows_without_perplexity=totals["rows"] - totals["with_perplexity"],
        tokens=int(totals["tokens"]),
        tokens_this_run=int(this_run),
        shards_written_this_run=len(shards_written),
        shards_total=config.output.shards,
        scoring_seconds=round(model_seconds, 2),
        wall_seconds=round(seconds, 2),
        tokens_per_second=round(this_run / model_seconds, 2) if model_seconds > 0 else 0.0,
        corpus_perplexity=round(corpus, 4) if corpus is not None else None,
        perplexity_quantiles=quantiles,
        **requests,
        model=model_path,
        master=master,
        output=config.output.path,
        params=asdict(config.scoring),
    )
