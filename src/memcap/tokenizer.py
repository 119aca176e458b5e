"""Tokenizers: a trained byte-level BPE (HF tokenizers) or GPT-2's (tiktoken), behind one
interface, loaded from the folder the text stage writes (manifest.json + the files)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from memcap.config import GPT2_VOCAB_SIZE

# tiktoken's r50k pattern (the GPT-2 pre-tokenizer); the files' hashes are the ones tiktoken
# pins for "gpt2", so a wrong file fails loudly.
GPT2_PATTERN = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


@dataclass
class Tokenizer:
    """A trained byte-level BPE (HF tokenizers) or GPT-2's (tiktoken), behind one interface."""

    kind: str
    vocab_size: int
    _impl: object

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "gpt2":
            return self._impl.encode_ordinary_batch(texts)
        return [e.ids for e in self._impl.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self._impl.decode(list(map(int, ids)))


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer saved in folder `path` by train_bpe or install_gpt2."""
    path = Path(path)
    manifest = path / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"tokenizer folder {path} has no manifest.json")
    info = json.loads(manifest.read_text())
    if info["kind"] == "gpt2":
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(path / "vocab.bpe"), encoder_json_file=str(path / "encoder.json"),
            vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256, encoder_json_hash=GPT2_ENCODER_JSON_SHA256)
        enc = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                special_tokens={"<|endoftext|>": 50256},
                                explicit_n_vocab=GPT2_VOCAB_SIZE)
        return Tokenizer("gpt2", GPT2_VOCAB_SIZE, enc)
    if info["kind"] == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return Tokenizer("bpe", int(info["vocab_size"]),
                         HFTokenizer.from_file(str(path / "tokenizer.json")))
    raise ValueError(f"{manifest}: unknown tokenizer kind {info['kind']!r}")
