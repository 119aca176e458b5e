"""Causal language models saved by Hugging Face `transformers` (`save_pretrained` folders), for
the audit (docs/science.md#audit).

`check_model_dir` inspects a folder without loading its weights (config, weight files,
tokenizer), so bad input stops before any scoring; `load_causal_lm` loads it for scoring:

- GPT-2 checkpoints whose layout is memcap's own ((in, out) Conv1D weights, tied embeddings,
  tanh GELU, LayerNorm ε 1e-5, 4d MLP) load onto memcap.models.gpt2.PackedGPT (one packed
  model), the model memcap trains and scores;
- any other causal LM scores through `transformers` itself (AutoModelForCausalLM).

Both give code lengths in bits of t = 2..S (the first token is never predicted:
docs/science.md#code-length) and greedy extraction. `transformers` is an optional dependency
(`pip install "memcap[audit]"`), imported only here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from memcap import device as dev
from memcap.cell import spec_from_record
from memcap.loss import sequence_scores, sequences_per_chunk
from memcap.models import build
from memcap.models.gpt2 import PackedGPT, hf_names
from memcap.shapes import Shape

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
EXPECTED = ("a folder saved with save_pretrained: config.json, the weights (" +
            ", ".join(WEIGHT_FILES) + ") and the tokenizer files")
# a text both tokenizers must split alike (besides equal vocabularies)


class ModelDirError(ValueError):
    """A model folder that cannot be audited (missing, unloadable, mismatched)."""


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ModelDirError("auditing a model needs transformers: pip install "
                            "'memcap[audit]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def check_model_dir(path: str | Path, key: str) -> dict:
    """Check a model folder without loading its weights; returns its config as a dict.

    key: the config key that names the folder (it appears in every message)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"config key '{key}': model folder {path} does not exist; expected "
                            f"{EXPECTED}")
    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelDirError(f"config key '{key}': {config_file} does not exist; expected "
                            f"{EXPECTED}")
    tf = _transformers()
    try:
        config = tf.AutoConfig.from_pretrained(str(path))
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as err:
        raise ModelDirError(f"config key '{key}': transformers cannot load {config_file} "
                            f"({err}); expected the config.json of a causal language model "
                            "saved with save_pretrained") from None
    weights = [path / f for f in WEIGHT_FILES if (path / f).exists()]
    if not weights:
        raise ModelDirError(f"config key '{key}': {path} has no weights; expected one of "
                            f"{', '.join(WEIGHT_FILES)}")
    if weights[0].name == "model.safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights[0]), "pt") as fh:
                if not list(fh.keys()):
                    raise ModelDirError(f"config key '{key}': {weights[0]} holds no tensors")
        except (SafetensorError, OSError) as err:
            raise ModelDirError(f"config key '{key}': {weights[0]} is not a readable "
                                f"safetensors file ({err}); expected the weights saved by "
                                "save_pretrained") from None
    return config.to_dict()


def load_tokenizer(path: str | Path, key: str):
    """The tokenizer saved in a model folder (transformers' AutoTokenizer)."""
    tf = _transformers()
    try:
        return tf.AutoTokenizer.from_pretrained(str(path))
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise ModelDirError(f"config key '{key}': transformers cannot load a tokenizer from "
                            f"{path} ({err}); expected its tokenizer files (tokenizer.json or "
                            "the vocabulary files save_pretrained writes)") from None


def memcap_layout(config: dict) -> bool:
    """Whether a checkpoint's config is memcap's GPT-2 (it then loads onto PackedGPT)."""
    d = config.get("n_embd", 0)
    return (config.get("model_type") == "gpt2"
            and config.get("activation_function") in ("gelu_new", "gelu_pytorch_tanh")
            and config.get("tie_word_embeddings", True)
            and config.get("layer_norm_epsilon") == 1e-5
            and config.get("n_inner") in (None, 4 * d)
            and config.get("scale_attn_weights", True)
            and not config.get("scale_attn_by_inverse_layer_idx", False)
            and not config.get("add_cross_attention", False)
            and d % config.get("n_head", 1) == 0)


def gpt2_to_packed(hf_model, seq_len: int) -> PackedGPT:
    """A transformers GPT2LMHeadModel as a PackedGPT of one model over the first seq_len
    positions. GPT-2's Conv1D weights are (in, out), as memcap's."""
    c = hf_model.config
    state = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    model = PackedGPT(1, Shape(c.vocab_size, seq_len, c.n_layer, c.n_embd,
                               c.n_embd // c.n_head))
    ours = {k: state[v][:seq_len] if k == "wpe" else state[v]
            for k, v in hf_names(c.n_layer).items()}
    model.load_state_dict({k: v.detach().float().unsqueeze(0) for k, v in ours.items()})
    return model


HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
              "mamba": "MambaForCausalLM"}


def to_transformers(shape: Shape, state: dict[str, torch.Tensor]):
    """One model's state (memcap's layout) as the equivalent transformers model of its family
    (memcap.models.base.PackedLM.hf_config / hf_state), in fp32 and eval mode."""
    tf = _transformers()
    packed = build(shape, 1)
    model = getattr(tf, HF_CLASSES[shape.family])(packed.hf_config(tf))
    missing, unexpected = model.load_state_dict(packed.hf_state(state), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise ModelDirError(f"a {shape.family} state does not map onto {HF_CLASSES[shape.family]} "
                            f"(missing {sorted(set(missing) - tied)}, unexpected "
                            f"{sorted(unexpected)})")
    if tied:
        model.tie_weights()
    return model.float().eval()


def export_run(run_dir: str | Path, out_dir: str | Path,
               tokenizer_dir: str | Path | None = None) -> dict:
    """A memcap run (run.json, model.safetensors) as a transformers checkpoint of its family
    (GPT2LMHeadModel, LlamaForCausalLM, MambaForCausalLM): config.json and model.safetensors
    in out_dir, loadable by any tool (and by the audit; a GPT-2 it scores on memcap's model
    again), with the tokenizer files of a text run's tokenizer folder (the text stage's) when
    given. Returns the run's record."""
    from safetensors.torch import load_file

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for f in ("run.json", "model.safetensors"):
        if not (run_dir / f).exists():
            raise ModelDirError(f"{run_dir / f} does not exist; expected a memcap run folder "
                                "(results/runs/...: run.json and model.safetensors)")
    run = json.loads((run_dir / "run.json").read_text())
    tokenizer = None
    if tokenizer_dir is not None:
        tok_dir = Path(tokenizer_dir)
        manifest = tok_dir / "manifest.json"
        if not manifest.exists():
            raise ModelDirError(f"{manifest} does not exist; expected the tokenizer folder the "
                                "text stage writes (results/text/.../tokenizer)")
        tf = _transformers()
        if json.loads(manifest.read_text())["kind"] == "gpt2":
            tokenizer = tf.GPT2TokenizerFast(vocab_file=str(tok_dir / "encoder.json"),
                                             merges_file=str(tok_dir / "vocab.bpe"))
        else:
            tokenizer = tf.PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    shape = spec_from_record(run).shape
    try:
        model = to_transformers(shape, load_file(str(run_dir / "model.safetensors")))
    except ModelDirError as err:
        raise ModelDirError(f"{run_dir}: {err}") from None
    model.save_pretrained(str(out_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return run


def export_documents(data_path: str | Path, tokenizer_dir: str | Path,
                     out_path: str | Path) -> int:
    """A memcap dataset file's samples decoded to text, one JSON object per line
    ({"id": sample_id, "text": ...}): documents the audit (or any tool) can read. Returns the
    number of samples."""
    from memcap.io import atomic_path
    from memcap.tokenizer import load_tokenizer as load_memcap_tokenizer
    from memcap.tokens import read_tokens

    ids, tokens = read_tokens(data_path)
    decode = load_memcap_tokenizer(Path(tokenizer_dir)).decode
    with atomic_path(Path(out_path)) as tmp:
        tmp.write_text("".join(json.dumps({"id": int(i), "text": decode(t.tolist())}) + "\n"
                               for i, t in zip(ids, tokens, strict=True)))
    return len(ids)


@dataclass
class CausalLM:
    """A loaded model that scores token sequences (N, S) of one length."""

    path: str
    loader: str  # "memcap" (GPT-2 on PackedGPT) or "transformers"
    model_type: str
    params: int
    vocab_size: int
    device: torch.device
    model: torch.nn.Module
    # the record of the quantization scheme its weights were put through (memcap.quantization),
    # None for the weights as saved
    quantization: dict | None = None

    @torch.no_grad()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V)."""
        if self.loader == "memcap":
            return self.model(x.unsqueeze(0))[0]
        return self.model(input_ids=x, use_cache=False).logits

    def _batch(self, seq_len: int, batch_size: int) -> int:
        return min(batch_size, sequences_per_chunk(1, seq_len, self.vocab_size))

    @torch.no_grad()
    def nll_bits(self, tokens: np.ndarray, batch_size: int) -> np.ndarray:
        """Code length in bits of every sequence (t = 2..S): tokens (N, S) -> (N,) fp64."""
        return self.scores(tokens, batch_size)[0]

    @torch.no_grad()
    def scores(self, tokens: np.ndarray, batch_size: int,
               min_k_frac: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(code length in bits of every sequence, t = 2..S, and with min_k_frac the mean code
        length of its ⌈k·(S−1)⌉ least likely tokens): tokens (N, S) -> (N,) fp64 each."""
        toks = dev.to_device_tokens(tokens, self.device)
        if self.loader == "memcap":
            nll, low = sequence_scores(self.model, toks.unsqueeze(0), batch_size,
                                       min_k_frac=min_k_frac)
            return nll[0].cpu().numpy(), None if low is None else low[0].cpu().numpy()
        k = None if min_k_frac is None else max(1, math.ceil(min_k_frac * (tokens.shape[1] - 1)))
        nll_out, low_out = [], []
        step = self._batch(tokens.shape[1], batch_size)
        for start in range(0, len(toks), step):
            x = toks[start:start + step].long()
            logits = self._logits(x)[:, :-1].float()
            per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                        x[:, 1:].reshape(-1), reduction="none"
                                        ).view(len(x), -1).double() / math.log(2)
            nll_out.append(per_token.sum(-1))
            if k is not None:
                low_out.append(per_token.topk(k, dim=-1).values.mean(-1))
        nll = torch.cat(nll_out).cpu().numpy() if nll_out else np.zeros(0)
        if k is None:
            return nll, None
        return nll, torch.cat(low_out).cpu().numpy() if low_out else np.zeros(0)

    @torch.no_grad()
    def extracted(self, tokens: np.ndarray, prefix_len: int, batch_size: int) -> np.ndarray:
        """Whether greedy decoding from the first k tokens reproduces each whole sequence:
        tokens (N, S) -> bool (N,)."""
        toks = dev.to_device_tokens(tokens, self.device)
        out = []
        for start in range(0, len(toks), batch_size):
            chunk = toks[start:start + batch_size].long()
            x = chunk[:, :prefix_len]
            for _ in range(chunk.shape[1] - prefix_len):
                nxt = self._logits(x)[:, -1].argmax(-1, keepdim=True)
                x = torch.cat([x, nxt], dim=-1)
            out.append((x == chunk).all(-1))
        return torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=bool)


def load_causal_lm(path: str | Path, key: str, seq_len: int, device: torch.device,
                   native: bool = True, scheme: str | None = None) -> CausalLM:
    """Load a checkpoint folder for scoring S-token samples on `device` in fp32. GPT-2 in
    memcap's layout loads onto PackedGPT unless native is False (then transformers scores it,
    as every other architecture). With a quantization scheme, its weights are quantized
    (memcap.quantization.quantize_module) before it scores anything."""
    config = check_model_dir(path, key)
    max_len = config.get("n_positions") or config.get("max_position_embeddings")
    if max_len is not None and seq_len > max_len:
        raise ModelDirError(f"config key '{key}': {path} takes at most {max_len} positions; "
                            f"audit.seq_len is {seq_len}")
    tf = _transformers()
    try:
        hf_model = tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        raise ModelDirError(f"config key '{key}': transformers cannot load the model in {path} "
                            f"({err}); expected {EXPECTED}") from None
    params = hf_model.num_parameters()
    if native and memcap_layout(config):
        model, loader = gpt2_to_packed(hf_model, seq_len), "memcap"
        del hf_model
    else:
        model, loader = hf_model, "transformers"
    model.eval()
    record = None
    if scheme:
        from memcap.quantization import Scheme, SchemeError, quantize_module
        try:
            record = quantize_module(model, Scheme.parse(scheme), f"{path} ({key})")
        except SchemeError as err:
            raise ModelDirError(f"config key 'audit.quantize': {err}") from None
    return CausalLM(path=str(path), loader=loader, model_type=config["model_type"],
                    params=params, vocab_size=config["vocab_size"], device=device,
                    model=model.to(device), quantization=record)
