"""Fill-in-the-middle prompts (the generation job builds the same text as a Spark column).

StarCoder2 was trained on `<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>` (PSM order), with
optional repository context before it: `<repo_name>{repo}<file_sep>{path}\\n`. Other vocabularies
have tokens of their own (models.families.FIM_FORMATS); the format is the model's
(`CodeTokenizer.fim`), StarCoder's by default. A prompt that ends with the middle token is
answered with the middle alone, and generation stops at end-of-text and the format's stop tokens.
"""

from __future__ import annotations

from pipelines.models.families import FIM_FORMATS, FimFormat

STARCODER_FIM = FIM_FORMATS[0]


def fim_prompt(prefix: str, suffix: str, repo_name: str | None = None, file_path: str | None = None,
               fim: FimFormat = STARCODER_FIM) -> str:
    return fim.prompt(prefix, suffix, repo_name, file_path)
