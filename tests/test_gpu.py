"""The CUDA training path: a step replayed as a CUDA graph trains exactly as the eager step.

These run only where torch sees a CUDA GPU (benchmarks/gpu.sh runs them there)."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_cell, runtime, small_spec, write_data
from memcap.stages.train import train_cell

CUDA = runtime(device="cuda")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("precision, optimizer",
                         [("fp32", "adam"), ("bf16", "adam"), ("fp32", "muon")])
def test_cuda_graph_training_matches_eager(tmp_path, quiet, precision, optimizer):
    spec = small_spec(vocab_size=64, n_layer=2, d_model=32, n=64, steps=200, batch_size=16,
                      lr=0.01, precision=precision, optimizer=optimizer)
    train, held = write_data(tmp_path, spec, [0, 1])
    recs = {}
    for graph in (False, True):
        recs[graph] = train_cell(make_cell(tmp_path, spec, [0, 1], train, held, str(graph),
                                           f"ck-{graph}.pt"),
                                 runtime(device="cuda", cuda_graphs=graph), echo=quiet)
    assert recs[True][0]["cuda_graph"] and not recs[False][0]["cuda_graph"]
    for s in (0, 1):
        diff = _max_diff(_weights(tmp_path / f"False-{s}"), _weights(tmp_path / f"True-{s}"))
        assert diff < (1e-4 if precision == "fp32" else 2e-2), diff
        eager, graphed = (recs[g][s]["final_mem_bits_estimate"] for g in (False, True))
        assert graphed == pytest.approx(eager, rel=0.02)
        assert graphed > 0.2 * spec.memorizable_bits  # it really trained


def test_cuda_graph_run_resumes_from_its_checkpoint(tmp_path, quiet):
    spec = small_spec(vocab_size=64, n=64, steps=60, batch_size=16, lr=0.01)
    train, held = write_data(tmp_path, spec, [0])
    train_cell(make_cell(tmp_path, spec, [0], train, held, "whole", "a.pt"), CUDA, echo=quiet)
    resumed = make_cell(tmp_path, spec, [0], train, held, "resumed", "b.pt")
    every_20 = runtime(device="cuda", log_every=20, checkpoint_every=20)

    def crash_at_40(line: str) -> None:
        if "step 40/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cell(resumed, every_20, echo=crash_at_40)
    assert (tmp_path / "b.pt").exists()
    lines = []
    train_cell(resumed, every_20, echo=lines.append)
    assert any("resumed from checkpoint at step 20/" in line for line in lines), lines
    assert _max_diff(_weights(tmp_path / "whole-0"), _weights(tmp_path / "resumed-0")) < 1e-4


@pytest.mark.parametrize("family", ["llama", "mamba"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_family_trains_on_cuda_as_on_the_cpu(tmp_path, quiet, family, precision):
    """Each family's CUDA step (bf16 autocast or fp32, eager and as a CUDA graph) memorizes
    as its CPU step does: the same data, seeds and steps, final estimates within 10 %."""
    spec = small_spec(family=family, options={}, vocab_size=64, n_layer=2, d_model=32, n=64,
                      steps=150, batch_size=16, lr=0.01, precision=precision)
    train, held = write_data(tmp_path, spec, [0, 1])
    recs = {}
    for name, rt in (("cpu", runtime()), ("cuda", CUDA),
                     ("graph", runtime(device="cuda", cuda_graphs=True))):
        recs[name] = train_cell(make_cell(tmp_path, spec, [0, 1], train, held, name,
                                          f"ck-{name}.pt"), rt, echo=quiet)
    for s in (0, 1):
        cpu = recs["cpu"][s]["final_mem_bits_estimate"]
        assert cpu > 0.2 * spec.memorizable_bits  # it really trained
        for name in ("cuda", "graph"):
            assert recs[name][s]["final_mem_bits_estimate"] == pytest.approx(cpu, rel=0.1)
