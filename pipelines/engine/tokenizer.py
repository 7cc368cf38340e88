"""The StarCoder2 tokenizer: text <-> token ids, plus the special tokens generation needs."""

from __future__ import annotations

from pathlib import Path

BUNDLED_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "starcoder2-tokenizer"

EOS_TOKEN = "<|endoftext|>"
FIM_PREFIX = "<fim_prefix>"
FIM_MIDDLE = "<fim_middle>"
FIM_SUFFIX = "<fim_suffix>"
FIM_PAD = "<fim_pad>"
REPO_NAME = "<repo_name>"
FILE_SEP = "<file_sep>"


class CodeTokenizer:
    """Wraps a `tokenizers.Tokenizer` loaded from a model directory's tokenizer.json."""

    def __init__(self, tokenizer_json: str | Path):
        from tokenizers import Tokenizer

        path = Path(tokenizer_json)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a model directory needs a tokenizer.json (the StarCoder2 one is "
                f"bundled at {BUNDLED_TOKENIZER_DIR / 'tokenizer.json'})"
            )
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        self.eos_token_id = self.token_id(EOS_TOKEN)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.special_ids = frozenset(
            tid for tid, tok in self._tok.get_added_tokens_decoder().items() if tok.special
        )

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "CodeTokenizer":
        return cls(Path(model_dir) / "tokenizer.json")

    def token_id(self, token: str) -> int:
        tid = self._tok.token_to_id(token)
        if tid is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return tid

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # No BOS: StarCoder2 prompts start with the text itself.
        return [enc.ids for enc in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)
