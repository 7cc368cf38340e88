"""Fill-in-the-middle prompts, as text and as a Spark column expression.

StarCoder2 was trained on `<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>` (PSM order), with
optional repository context before it: `<repo_name>{repo}<file_sep>{path}\\n`. Other vocabularies
have tokens of their own (model_families.FIM_FORMATS); the format is the model's
(`CodeTokenizer.fim`), StarCoder's by default. A prompt that ends with the middle token is
answered with the middle alone, and generation stops at end-of-text and the format's stop tokens.
"""

from __future__ import annotations

from pipelines.model_families import FIM_FORMATS, FimFormat

STARCODER_FIM = FIM_FORMATS[0]


def fim_prompt(prefix: str, suffix: str, repo_name: str | None = None, file_path: str | None = None,
               fim: FimFormat = STARCODER_FIM) -> str:
    return fim.prompt(prefix, suffix, repo_name, file_path)


def fim_prompt_column(prefix_col: str, suffix_col: str, repo_col: str | None = None, path_col: str | None = None,
                      fim: FimFormat = STARCODER_FIM):
    """The same prompt built by Spark SQL, for a DataFrame with prefix and suffix columns."""
    from pyspark.sql import functions as F

    parts = []
    if repo_col is not None and fim.repo_token:
        parts += [F.lit(fim.repo_token), F.coalesce(F.col(repo_col), F.lit(""))]
    if path_col is not None and fim.file_token:
        parts += [F.lit(fim.file_token), F.coalesce(F.col(path_col), F.lit("")), F.lit("\n")]
    parts += [
        F.lit(fim.prefix_token), F.coalesce(F.col(prefix_col), F.lit("")),
        F.lit(fim.suffix_token), F.coalesce(F.col(suffix_col), F.lit("")),
        F.lit(fim.middle_token),
    ]
    return F.concat(*parts)
