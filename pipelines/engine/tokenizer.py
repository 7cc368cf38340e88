"""A model's tokenizer: text <-> token ids, plus what generation needs from the vocabulary:
the end-of-sequence ids, whether prompts start with BOS, and the fill-in-the-middle format.

A Hugging Face directory's tokenizer comes from its tokenizer.json, with the EOS and BOS
rules from its config files; a GGUF file's from its own vocabulary (gguf_vocab converts it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipelines.models.families import FimFormat, fim_format_for

BUNDLED_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "starcoder2-tokenizer"

EOS_TOKEN = "<|endoftext|>"  # StarCoder's: the EOS of a directory whose files name none


class CodeTokenizer:
    """Wraps a `tokenizers.Tokenizer` with the model's EOS ids, BOS rule and FIM format."""

    def __init__(self, tokenizer, eos_token_ids: list[int] | None = None, bos_token_id: int | None = None,
                 add_bos: bool = False):
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        ends = list(eos_token_ids) if eos_token_ids else [self.token_id(EOS_TOKEN)]
        self.eos_token_id = ends[0]  # also the padding id
        # Other ids that end a sequence (Llama 3 and chat models list several): stop tokens of every row.
        self.extra_eos_ids = frozenset(ends[1:]) - {self.eos_token_id}
        self.bos_token_id = bos_token_id if add_bos else None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.special_ids = frozenset(
            tid for tid, tok in self._tok.get_added_tokens_decoder().items() if tok.special
        )
        self.fim: FimFormat | None = fim_format_for(self._tok.get_vocab(with_added_tokens=True))

    @classmethod
    def from_file(cls, tokenizer_json: str | Path, **rules) -> "CodeTokenizer":
        from tokenizers import Tokenizer

        path = Path(tokenizer_json)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a model directory needs a tokenizer.json (the StarCoder2 one is "
                f"bundled at {BUNDLED_TOKENIZER_DIR / 'tokenizer.json'})"
            )
        return cls(Tokenizer.from_file(str(path)), **rules)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "CodeTokenizer":
        """The tokenizer of a model directory, with EOS and BOS as its own files say."""
        d = Path(model_dir)
        tokenizer = cls.from_file(d / "tokenizer.json")
        config = _read_json(d / "config.json")
        tokenizer_config = _read_json(d / "tokenizer_config.json")
        eos = _read_json(d / "generation_config.json").get("eos_token_id", config.get("eos_token_id"))
        if eos is None and isinstance(tokenizer_config.get("eos_token"), str):
            eos = tokenizer._tok.token_to_id(tokenizer_config["eos_token"])
        bos = config.get("bos_token_id")
        add_bos = tokenizer_config.get("add_bos_token")
        if add_bos is None:  # what `tokenizer(text)` does in transformers: its post-processor's rule
            with_specials = tokenizer._tok.encode("a", add_special_tokens=True).ids
            plain = tokenizer._tok.encode("a", add_special_tokens=False).ids
            add_bos = bos is not None and with_specials[:1] == [bos] != plain[:1]
        return cls(tokenizer._tok, eos_token_ids=_as_list(eos), bos_token_id=bos, add_bos=bool(add_bos))

    @classmethod
    def from_gguf(cls, path: str | Path) -> "CodeTokenizer":
        """The tokenizer a GGUF file carries (its vocabulary, merges and special-token ids)."""
        from pipelines.engine.gguf_vocab import build_tokenizer, read_gguf_vocab
        from pipelines.models.gguf_file import read_gguf_model

        vocab = read_gguf_vocab(path)
        add_bos = vocab["add_bos"]
        if add_bos is None:
            add_bos = read_gguf_model(str(path)).family.add_bos
        return cls(build_tokenizer(vocab), eos_token_ids=[vocab["eos_token_id"]],
                   bos_token_id=vocab["bos_token_id"], add_bos=add_bos)

    @classmethod
    def for_model(cls, source: str | Path) -> "CodeTokenizer":
        """The tokenizer of a resolved model source: a directory or a GGUF file."""
        from pipelines.models.gguf_file import is_gguf_file

        return cls.from_gguf(source) if is_gguf_file(source) else cls.from_dir(source)

    def token_id(self, token: str) -> int:
        tid = self._tok.token_to_id(token)
        if tid is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return tid

    def has_token(self, token: str) -> bool:
        return self._tok.token_to_id(token) is not None

    def _with_bos(self, ids: list[int]) -> list[int]:
        return [self.bos_token_id, *ids] if self.bos_token_id is not None else ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # Special tokens are added by the BOS rule, not by the tokenizer's post-processor.
        return [self._with_bos(enc.ids) if enc.ids else [] for enc in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return self._with_bos(ids) if ids else []

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _as_list(value) -> list[int] | None:
    if value is None:
        return None
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def keep_end(ids: list[int], limit: int) -> list[int]:
    """A prompt cut to its last `limit` tokens: completion happens at its end."""
    return ids[-limit:]


@lru_cache(maxsize=4)
def _tokenizer_of(source: str) -> CodeTokenizer:
    return CodeTokenizer.for_model(source)


@dataclass(frozen=True)
class CutPrompts:
    """Prompt texts -> the texts their requests are keyed by: "text:" and the prompt, or, for a
    prompt longer than `max_input_length` tokens, "ids:" and the ids of the tokens the model runs.
    Texts of fewer than max_input_length UTF-8 bytes are not tokenised: a token holds at least one
    byte, and BOS one token."""

    source: str  # the resolved model source whose tokenizer the engine runs
    max_input_length: int

    def __call__(self, texts: list[str]) -> list[str]:
        keys = []
        for text in texts:
            if text is None or len(text.encode("utf-8")) < self.max_input_length:
                keys.append(None if text is None else "text:" + text)
                continue
            ids = _tokenizer_of(self.source).encode(text)
            keys.append("text:" + text if len(ids) <= self.max_input_length else
                        "ids:" + " ".join(map(str, keep_end(ids, self.max_input_length))))
        return keys
