import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

import memcap.stages.train as train_mod
from conftest import CPU, REPO, make_cell, runtime, small_spec, write_data
from memcap.cell import Preempted
from memcap.io import read_json
from memcap.stages.score import score_cell
from memcap.stages.train import (
    EpochSampler,
    NonFiniteLossError,
    decay_steps,
    latest_plateau,
    lr_at,
    plateau_reached,
    saturation,
    train_cell,
)


def _train_and_score(tmp_path, spec, seeds, quiet):
    train, held = write_data(tmp_path, spec, seeds)
    cell = make_cell(tmp_path, spec, seeds, train, held)
    records = train_cell(cell, CPU, echo=quiet)
    scores = score_cell(cell, CPU)
    return records, scores, [Path(d) for d in cell.run_dirs]


def test_data_limited_run_memorizes_nearly_everything(tmp_path, quiet):
    # 8 sequences × 15 × 4 bits = 480 bits, far below a 5,000-parameter model's capacity
    spec = small_spec(n=8, steps=300)
    records, scores, dirs = _train_and_score(tmp_path, spec, [0, 1], quiet)
    for rec, sc in zip(records, scores, strict=True):
        assert sc["dataset_bits"] == pytest.approx(spec.memorizable_bits)
        assert sc["mem_bits"] >= 0.9 * sc["dataset_bits"]
        assert rec["saturated"]
        # memorized, not learned: held-out sequences still cost about log2 V per token
        assert sc["heldout_loss"] > 0.9 * math.log(16)
    frame = pl.read_parquet(dirs[0] / "scores.parquet")
    assert frame.filter(pl.col("member")).height == 8
    assert frame.filter(~pl.col("member")).height == 64
    expected = (frame["ref_nll_bits"] - frame["nll_bits"]).clip(lower_bound=0)
    assert (frame["mem_bits"] - expected).abs().max() < 1e-9


def test_untrained_model_memorizes_almost_nothing(tmp_path, quiet):
    spec = small_spec(n=64, steps=0)
    records, scores, _ = _train_and_score(tmp_path, spec, [0], quiet)
    assert scores[0]["mem_bits"] < 0.01 * scores[0]["dataset_bits"]
    assert not records[0]["saturated"]


@pytest.mark.parametrize("optimizer", ["adam", "muon"])
def test_packed_training_equals_separate_runs(tmp_path, quiet, optimizer):
    spec = small_spec(n=32, steps=40, n_layer=2, optimizer=optimizer)
    train, held = write_data(tmp_path, spec, [5, 6])
    train_cell(make_cell(tmp_path, spec, [5, 6], train, held, "p", "c1.pt"), CPU, echo=quiet)
    train_cell(make_cell(tmp_path, spec, [6], train[1:], held[1:], "s", "c2.pt"), CPU,
               echo=quiet)
    packed, single = load_file(tmp_path / "p-6/model.safetensors"), load_file(
        tmp_path / "s-6/model.safetensors")
    for key in packed:
        assert torch.allclose(packed[key], single[key], atol=1e-5, rtol=0), key


def test_non_finite_loss_fails_clearly_and_writes_nothing(tmp_path, quiet):
    spec = small_spec(n=16, steps=20, lr=1e30, warmup_frac=0.0)
    train, held = write_data(tmp_path, spec, [0])
    with pytest.raises(NonFiniteLossError, match="non-finite at step"):
        train_cell(make_cell(tmp_path, spec, [0], train, held, "out", "ck.pt"), CPU,
                   echo=quiet)
    assert not (tmp_path / "out-0").exists() or not any((tmp_path / "out-0").iterdir())
    assert not (tmp_path / "ck.pt").exists()


def test_killed_job_resumes_from_its_checkpoint(tmp_path, quiet):
    spec = small_spec(n=64, steps=3000, eval_every=100)
    train, held = write_data(tmp_path, spec, [0])
    # the command a rule runs (and a user reruns by hand from its log line)
    cmd = [sys.executable, "-m", "memcap", "train", "--cell",
           make_cell(tmp_path, spec, [0], train, held, "run", "ck.pt").to_json(),
           "--device", "cpu", "--checkpoint-every", "200", "--log-every", "200"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not (tmp_path / "ck.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "ck.pt").exists() and not (tmp_path / "run-0/run.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = [line for line in done.stdout.splitlines() if "resumed from checkpoint" in line]
    assert resumed, done.stdout
    step = int(resumed[0].split("at step ")[1].split("/")[0])
    assert 0 < step < spec.steps
    progress = re.findall(r"(?m)^\s*step (\d+)/", done.stdout)
    assert int(progress[0]) > step  # it did not start again from the beginning
    # and it ends where an uninterrupted run ends: the batch at step t depends on t alone
    train_cell(make_cell(tmp_path, spec, [0], train, held, "ref", "ck2.pt"), CPU, echo=quiet)
    a = load_file(tmp_path / "run-0/model.safetensors")
    b = load_file(tmp_path / "ref-0/model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert read_json(tmp_path / "run-0/run.json")["steps"] == spec.steps
    assert not (tmp_path / "ck.pt").exists()


def test_preempted_job_checkpoints_on_sigterm_and_resumes_to_the_same_weights(tmp_path, quiet):
    """A scheduler preempts with SIGTERM (then SIGKILL after a grace period): training saves a
    checkpoint at once, exits 143, and the rerun ends with an uninterrupted run's weights."""
    spec = small_spec(n=64, steps=3000, eval_every=100)
    train, held = write_data(tmp_path, spec, [0])
    # no step-count checkpoint before the end: the only checkpoint is the signal's
    cmd = [sys.executable, "-m", "memcap", "train", "--cell",
           make_cell(tmp_path, spec, [0], train, held, "run", "ck.pt").to_json(),
           "--device", "cpu", "--checkpoint-every", "100000", "--log-every", "100"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:  # the first progress line: training is under way
        if re.match(r"\s*step \d+/", line):
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 143, rest
    assert "stopped by a signal" in rest and (tmp_path / "ck.pt").exists(), rest
    assert not (tmp_path / "run-0").exists() or not any((tmp_path / "run-0").iterdir())
    stopped = int(re.search(r"at step (\d+)/", rest).group(1))
    assert 100 <= stopped < spec.steps
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resumed from checkpoint at step {stopped}/" in done.stdout
    train_cell(make_cell(tmp_path, spec, [0], train, held, "ref", "ck2.pt"), CPU, echo=quiet)
    a = load_file(tmp_path / "run-0/model.safetensors")
    b = load_file(tmp_path / "ref-0/model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


def test_checkpoints_follow_wall_time_as_well_as_steps(tmp_path, quiet, monkeypatch):
    """With a step interval longer than the run, a time interval still checkpoints."""
    spec = small_spec(n=64, steps=400, eval_every=100)
    train, held = write_data(tmp_path, spec, [0])
    saved = []
    original = train_mod._Training.save_checkpoint

    def record(self):
        saved.append(self.step)
        original(self)

    monkeypatch.setattr(train_mod._Training, "save_checkpoint", record)
    cell = make_cell(tmp_path, spec, [0], train, held, "run", "ck.pt")
    train_cell(cell, runtime(checkpoint_every=10**6, checkpoint_minutes=1e-9), echo=quiet)
    assert saved == list(range(1, spec.steps))  # every step: the interval is always exceeded


def test_epoch_sampler_visits_every_sample_once_per_epoch():
    s = EpochSampler([0, 1], n=10, batch=4)
    seen = torch.cat([s.indices(t) for t in range(5)], dim=1)  # 20 positions = 2 epochs
    for m in range(2):
        assert sorted(seen[m, :10].tolist()) == list(range(10))
        assert sorted(seen[m, 10:].tolist()) == list(range(10))
    assert not torch.equal(seen[0], seen[1])
    # a step's batch is a pure function of (seed, step): a fresh sampler jumping straight to
    # step 3 (which straddles epochs 1 and 2) draws the same indices
    assert torch.equal(EpochSampler([0, 1], n=10, batch=4).indices(3), seen[:, 12:16])
    with pytest.raises(ValueError, match="batch 11"):
        EpochSampler([0], n=10, batch=11)


def test_lr_schedule_warms_up_and_decays():
    spec = small_spec(steps=1000, lr=0.01, warmup_frac=0.1, min_lr_frac=0.1)
    assert lr_at(spec, 0) == pytest.approx(0.01 / 100)
    assert lr_at(spec, 99) == pytest.approx(0.01)
    assert lr_at(spec, 999) == pytest.approx(0.001, rel=1e-3)
    assert lr_at(small_spec(schedule="constant", warmup_frac=0), 500) == 0.03


def test_saturation_rule():
    steps = 1000
    flat = pl.DataFrame({"step": [0, 800, 900, 1000], "mem_bits": [0.0, 990.0, 999.0, 1000.0]})
    assert saturation(flat, steps, 0.1, 0.01) == (True, pytest.approx(0.001))
    rising = pl.DataFrame({"step": [0, 900, 1000], "mem_bits": [0.0, 900.0, 1000.0]})
    sat, growth = saturation(rising, steps, 0.1, 0.01)
    assert not sat and growth == pytest.approx(0.1)


def test_plateau_schedule_warms_up_holds_then_decays():
    spec = small_spec(steps=1000, lr=0.01, warmup_frac=0.1, min_lr_frac=0.1,
                      schedule="plateau", decay_frac=0.2)
    assert lr_at(spec, 0) == pytest.approx(0.01 / 100)
    assert lr_at(spec, 500) == 0.01  # no plateau yet: the constant rate
    assert lr_at(spec, 500, plateau_at=500) == pytest.approx(0.01)
    assert decay_steps(spec, 500) == 100
    assert lr_at(spec, 550, plateau_at=500) == pytest.approx(0.001 + 0.009 * 0.5)
    assert lr_at(spec, 599, plateau_at=500) == pytest.approx(0.001, rel=1e-2)
    # the decay is cut to end on the step cap; without a plateau it starts where it just fits
    assert decay_steps(spec, 900) == 100 and decay_steps(spec, 950) == 50
    p = latest_plateau(spec)
    assert p + math.ceil(0.2 * p) <= 1000 < p + 1 + math.ceil(0.2 * (p + 1))


def test_plateau_rule():
    spec = small_spec(steps=10_000, warmup_frac=0.05, plateau_window=0.25, plateau_growth=0.01,
                      n=64)  # 64 × 15 × 4 = 3,840 memorizable bits
    steps = list(range(0, 2100, 100))

    def log(mem):
        return pl.DataFrame({"step": steps, "mem_bits": [float(mem(t)) for t in steps]})

    # noisy but flat since step 1,000: the window means (1,000-1,500 and 1,500-2,000) agree
    flat = log(lambda t: min(t, 1000) + (15 if t % 200 else -15))
    assert plateau_reached(flat, spec, 2000)
    assert not plateau_reached(flat, spec, 1200)  # 600-900 against 900-1,200: still rising
    assert not plateau_reached(log(lambda t: t), spec, 2000)  # rising steadily
    # the earlier window must start after the warmup (500 steps)
    assert not plateau_reached(log(lambda t: 100), spec, 800)
    assert plateau_reached(log(lambda t: 100), spec, 1100)
    assert not plateau_reached(log(lambda t: 0), spec, 2000)  # nothing memorized: no plateau
    # every memorizable bit held: a plateau at once
    assert plateau_reached(log(lambda t: 3840 if t >= 300 else 0), spec, 300)
    assert not plateau_reached(flat, spec, 1950)  # not an evaluation step


def test_plateau_schedule_stops_a_data_limited_run_early_and_keeps_the_bits(tmp_path, quiet):
    # 8 sequences (480 bits) are memorized long before 1,500 steps end
    full_spec = small_spec(n=8, steps=1500, eval_every=50)
    plateau_spec = small_spec(n=8, steps=1500, eval_every=50, schedule="plateau")
    full, full_scores, _ = _train_and_score(tmp_path / "full", full_spec, [0, 1], quiet)
    run, scores, dirs = _train_and_score(tmp_path / "plateau", plateau_spec, [0, 1], quiet)
    rec = run[0]
    assert rec["plateau_by_rule"] and rec["saturated"] and rec["schedule"] == "plateau"
    assert rec["plateau_step"] % 50 == 0 and rec["plateau_step"] < 1000
    assert rec["decay_steps"] == math.ceil(plateau_spec.decay_frac * rec["plateau_step"])
    assert rec["steps_run"] == rec["plateau_step"] + rec["decay_steps"]
    assert rec["compute_saved_frac"] == pytest.approx(1 - rec["steps_run"] / 1500)
    assert rec["tokens_per_model"] == rec["steps_run"] * 8 * 16
    assert rec["decay_gain_bits_estimate"] == pytest.approx(
        rec["final_mem_bits_estimate"] - rec["plateau_mem_bits_estimate"])
    assert full[0]["steps_run"] == 1500 and full[0]["plateau_step"] is None
    for sc, ref in zip(scores, full_scores, strict=True):
        assert sc["mem_bits"] >= 0.97 * ref["mem_bits"]
    log = pl.read_parquet(dirs[0] / "train_log.parquet")
    assert log["step"].max() == rec["steps_run"]
    assert log.filter(pl.col("step") == rec["steps_run"])["lr"][0] < 0.01 * 0.03


@pytest.mark.parametrize("optimizer", ["adam", "muon"])
def test_plateau_schedule_resumes_mid_decay_to_the_same_weights(tmp_path, quiet, monkeypatch,
                                                                 optimizer):
    """Preempted during the decay, the rerun restores where the plateau was declared (and the
    optimizer's state, Muon's momentum included) and ends with the weights of an
    uninterrupted run."""
    spec = small_spec(n=8, steps=1500, eval_every=50, schedule="plateau", optimizer=optimizer)
    train, held = write_data(tmp_path, spec, [0])
    ref = train_cell(make_cell(tmp_path, spec, [0], train, held, "ref", "ck0.pt"), CPU,
                     echo=quiet)[0]
    target = ref["plateau_step"] + ref["decay_steps"] // 2
    event = threading.Event()
    monkeypatch.setattr(train_mod, "stop_signals", lambda: contextlib.nullcontext(event))
    original = train_mod._Training.check_plateau

    fired = []

    def stop_mid_decay(self, step):
        original(self, step)
        if step == target and not fired:
            fired.append(step)
            event.set()

    monkeypatch.setattr(train_mod._Training, "check_plateau", stop_mid_decay)
    cell = make_cell(tmp_path, spec, [0], train, held, "run", "ck.pt")
    with pytest.raises(Preempted, match=f"at step {target}/"):
        train_cell(cell, CPU, echo=quiet)
    event.clear()
    lines = []
    rec = train_cell(cell, CPU, echo=lines.append)[0]
    assert any(f"resumed from checkpoint at step {target}/" in line for line in lines)
    assert (rec["plateau_step"], rec["steps_run"]) == (ref["plateau_step"], ref["steps_run"])
    a = load_file(tmp_path / "run-0/model.safetensors")
    b = load_file(tmp_path / "ref-0/model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


def test_compiled_training_matches_eager(tmp_path, quiet):
    spec = small_spec(n=32, steps=20)
    train, held = write_data(tmp_path, spec, [0])
    train_cell(make_cell(tmp_path, spec, [0], train, held, "eager", "c1.pt"), CPU, echo=quiet)
    train_cell(make_cell(tmp_path, spec, [0], train, held, "compiled", "c2.pt"),
               runtime(compile="true"), echo=quiet)
    # fused kernels round differently, and Adam's normalised steps turn a rounding-level
    # gradient difference into up to one learning rate per step on near-zero gradients; the
    # training curves must agree
    curves = [pl.read_parquet(tmp_path / d / "train_log.parquet")["eval_nll_bits"]
              for d in ("eager-0", "compiled-0")]
    assert (curves[0] - curves[1]).abs().max() < 1e-3 * curves[0].abs().max()
    eager = load_file(str(tmp_path / "eager-0" / "model.safetensors"))
    compiled = load_file(str(tmp_path / "compiled-0" / "model.safetensors"))
    worst = max(float((w - compiled[k]).abs().max()) for k, w in eager.items())
    assert worst < 20 * spec.lr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_cuda_job_without_a_gpu_fails_at_once_naming_its_host(tmp_path):
    """device: cuda on a machine without one: the job fails before it reads any data (here the
    data does not even exist), naming the host, instead of training on a CPU."""
    spec = small_spec()
    cell = make_cell(tmp_path, spec, [0], [tmp_path / "missing.parquet"],
                     [tmp_path / "missing-h.parquet"])
    out = subprocess.run([sys.executable, "-m", "memcap", "train", "--cell", cell.to_json(),
                          "--device", "cuda"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    error = out.stderr.strip().splitlines()[-1]  # after the logged command line
    assert out.returncode == 1
    assert f"no CUDA GPU on host {socket.gethostname()}" in error, out.stderr
    assert "missing.parquet" not in error
    assert not (tmp_path / "ckpt.pt").exists()
