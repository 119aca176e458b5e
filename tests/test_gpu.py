"""The CUDA training path: a step replayed as a CUDA graph trains exactly as the eager step.

These run only where torch sees a CUDA GPU (benchmarks/gpu.sh runs them there)."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import small_spec, write_data
from memcap.train import train_cell

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_training_matches_eager(tmp_path, quiet, precision):
    spec = small_spec(vocab_size=64, n_layer=2, d_model=32, n=64, steps=200, batch_size=16,
                      lr=0.01, precision=precision)
    train, _ = write_data(tmp_path, spec, [0, 1])
    recs = {}
    for graph in (False, True):
        recs[graph] = train_cell(spec, [0, 1], train, [tmp_path / f"{graph}-{s}" for s in (0, 1)],
                                 tmp_path / f"ck-{graph}.pt", device="cuda", echo=quiet,
                                 cuda_graph=graph)
    assert recs[True][0]["cuda_graph"] and not recs[False][0]["cuda_graph"]
    for s in (0, 1):
        diff = _max_diff(_weights(tmp_path / f"False-{s}"), _weights(tmp_path / f"True-{s}"))
        assert diff < (1e-4 if precision == "fp32" else 2e-2), diff
        eager, graphed = (recs[g][s]["final_mem_bits_estimate"] for g in (False, True))
        assert graphed == pytest.approx(eager, rel=0.02)
        assert graphed > 0.2 * spec.memorizable_bits  # it really trained


def test_cuda_graph_run_resumes_from_its_checkpoint(tmp_path, quiet):
    spec = small_spec(vocab_size=64, n=64, steps=60, batch_size=16, lr=0.01)
    train, _ = write_data(tmp_path, spec, [0])
    train_cell(spec, [0], train, [tmp_path / "whole"], tmp_path / "a.pt", device="cuda",
               echo=quiet)

    def crash_at_40(line: str) -> None:
        if "step 40/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cell(spec, [0], train, [tmp_path / "resumed"], tmp_path / "b.pt", device="cuda",
                   echo=crash_at_40, log_every=20, checkpoint_every=20)
    assert (tmp_path / "b.pt").exists()
    lines = []
    train_cell(spec, [0], train, [tmp_path / "resumed"], tmp_path / "b.pt", device="cuda",
               echo=lines.append, log_every=20, checkpoint_every=20)
    assert any("resumed from checkpoint at step 20/" in line for line in lines), lines
    assert _max_diff(_weights(tmp_path / "whole"), _weights(tmp_path / "resumed")) < 1e-4
