"""StarCoder2 fill-in-the-middle prompts, as text and as a Spark column expression.

The model was trained on `<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>` (PSM order), with
optional repository context before it: `<repo_name>{repo}<file_sep>{path}\\n`. A prompt that
ends with `<fim_middle>` is answered with the middle alone, and generation stops at the
end-of-text, file-separator and FIM tokens.
"""

from __future__ import annotations

from pipelines.engine.tokenizer import FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME


def fim_prompt(prefix: str, suffix: str, repo_name: str | None = None, file_path: str | None = None) -> str:
    context = ""
    if repo_name is not None:
        context += f"{REPO_NAME}{repo_name}"
    if file_path is not None:
        context += f"{FILE_SEP}{file_path}\n"
    return f"{context}{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"


def fim_prompt_column(prefix_col: str, suffix_col: str, repo_col: str | None = None, path_col: str | None = None):
    """The same prompt built by Spark SQL, for a DataFrame with prefix and suffix columns."""
    from pyspark.sql import functions as F

    parts = []
    if repo_col is not None:
        parts += [F.lit(REPO_NAME), F.coalesce(F.col(repo_col), F.lit(""))]
    if path_col is not None:
        parts += [F.lit(FILE_SEP), F.coalesce(F.col(path_col), F.lit("")), F.lit("\n")]
    parts += [
        F.lit(FIM_PREFIX), F.coalesce(F.col(prefix_col), F.lit("")),
        F.lit(FIM_SUFFIX), F.coalesce(F.col(suffix_col), F.lit("")),
        F.lit(FIM_MIDDLE),
    ]
    return F.concat(*parts)
