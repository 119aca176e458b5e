"""The cluster profile on a real SLURM cluster: scripts/slurm-local.sh brings up a one-node
cluster on this machine (root, Debian's slurm-wlm and munge) and takes it down afterwards; the
smoke workflow runs through profiles/slurm with snakemake-executor-plugin-slurm, and a training
job preempted the way a scheduler preempts (requeued: SIGTERM, then SIGKILL after KillWait)
resumes to the weights of an uninterrupted run.

The tests use SLURM only where it is already installed: they never install system packages
(`scripts/slurm-local.sh install`, as root, does; CI runs it before the tests). Skipped, with
the reason and the command that enables them, where the cluster cannot be brought up;
MEMCAP_REQUIRE_SLURM=1 (set by CI) turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from safetensors.torch import load_file

from conftest import CPU, REPO, SNAKEMAKE, make_cell
from memcap.cell import TrainSpec
from memcap.io import read_json
from memcap.stages.data import write_synthetic
from memcap.stages.train import train_cell

SCRIPT = REPO / "scripts/slurm-local.sh"
# rules that run where Snakemake runs, never as SLURM jobs
LOCAL = {"fetch", "text_documents", "collect", "laws", "database", "figures", "report", "all"}
SLURM_ARGS = ["--profile", str(REPO / "profiles/slurm"), "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "2", "--slurm-no-account"]
SLURM_PROGRAMS = ("slurmctld", "slurmd", "sbatch", "scontrol", "munged")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
CONF_MARK = "# written by memcap scripts/slurm-local.sh"  # the script's own slurm.conf


def why_no_cluster(which=shutil.which, euid: int | None = None,
                   conf: Path = SLURM_CONF) -> str | None:
    """Why this machine cannot bring up the test cluster without changing its packages, or
    None. Installing SLURM is the user's decision, so a missing program names the command."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
    missing = [c for c in SLURM_PROGRAMS if not which(c)]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing); "
                f"`{SCRIPT.relative_to(REPO)} install` (as root: apt-get installs slurmctld, "
                "slurmd, slurm-client and munge) enables this test")
    if (os.geteuid() if euid is None else euid) != 0:
        return "bringing up SLURM needs root (it starts munged, slurmctld and slurmd)"
    if conf.exists() and CONF_MARK not in conf.read_text(errors="replace"):
        return f"{conf} belongs to another cluster; the test cluster does not replace it"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = why_no_cluster()
    if reason:
        if os.environ.get("MEMCAP_REQUIRE_SLURM") == "1":
            pytest.fail(f"MEMCAP_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    was_up = subprocess.run([SCRIPT, "check"], capture_output=True).returncode == 0
    out = subprocess.run([SCRIPT, "up"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    yield
    if not was_up:
        subprocess.run([SCRIPT, "down"], capture_output=True, timeout=60)


def test_without_slurm_the_cluster_tests_skip_and_name_the_command(tmp_path):
    """No SLURM programs: a skip that names the one command enabling the tests, never an
    install (the fixture only runs `up`, which refuses without slurmctld)."""
    reason = why_no_cluster(which=lambda _name: None, euid=0, conf=tmp_path / "slurm.conf")
    assert reason is not None and "scripts/slurm-local.sh install" in reason, reason
    assert "as root" in reason
    other = tmp_path / "slurm.conf"
    other.write_text("ClusterName=site\n")
    reason = why_no_cluster(which=lambda name: f"/usr/bin/{name}", euid=0, conf=other)
    assert reason is not None and "another cluster" in reason, reason


def test_the_local_cluster_script_never_installs_unless_asked():
    """Only `install` reaches apt-get; `down` removes the slurm.conf `up` wrote, so that the
    executor plugin's `scontrol show config` at Snakemake's start fails at once instead of
    waiting for a controller that is gone."""
    script = SCRIPT.read_text()
    body = {name: re.search(rf"(?ms)^{name}\(\) {{\n(.*?)^}}", script).group(1)
            for name in ("install", "up", "down", "check")}
    runs_apt = {name: bool(re.search(r"(?m)^\s*(\w+=\S+\s+)*apt-get\s", text))
                for name, text in body.items()}
    assert runs_apt == {"install": True, "up": False, "down": False, "check": False}, runs_apt
    assert 'rm -f "$CONF"' in body["down"] and "$MARK" in body["down"]
    assert f'MARK="{CONF_MARK}"' in script


def slurm_jobs(workdir: Path) -> list[dict]:
    """The scheduler's own record of every job submitted from workdir (slurmctld keeps
    finished jobs for an hour): JobId, JobState, Restarts, Comment (rule_<name>...), ..."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True,
                         text=True, check=True).stdout
    jobs = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line]
    return [j for j in jobs if Path(j.get("WorkDir", "/")).resolve() == workdir.resolve()]


def rule_of(job: dict) -> str:
    return re.match(r"rule_(.+?)(_wildcards_.*)?$", job["Comment"]).group(1)


def run_via_slurm(workdir: Path, configfile: Path, *args: str, timeout: int = 1500):
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile",
                           str(configfile), *SLURM_ARGS, *args],
                          capture_output=True, text=True, timeout=timeout)


def tables(db_path: Path) -> dict[str, list[tuple]]:
    """Every table and the samples view, rows sorted, timing columns left out."""
    con = duckdb.connect(str(db_path), read_only=True)
    cwd = os.getcwd()
    os.chdir(db_path.parent.parent)  # the samples view names its files from the workdir
    try:
        names = [r[0] for r in con.sql("SELECT table_name FROM information_schema.tables")
                 .fetchall()]
        out = {}
        for name in names:
            cols = [c for c in con.sql(f"SELECT * FROM {name} LIMIT 0").columns
                    if c != "train_seconds"]
            out[name] = sorted(con.sql(f"SELECT {', '.join(cols)} FROM {name}").fetchall(),
                               key=repr)
        return out
    finally:
        os.chdir(cwd)
        con.close()


@pytest.mark.e2e
def test_smoke_workflow_through_slurm_equals_the_local_run(cluster, request, tmp_path):
    # the local run (a session fixture) only once the cluster is known to be there: a skip
    # costs nothing
    smoke = request.getfixturevalue("smoke")
    workdir = tmp_path / "slurm"
    workdir.mkdir()
    t0 = time.time()
    out = run_via_slurm(workdir, REPO / "configs/smoke.yaml")
    elapsed = time.time() - t0
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    print(f"smoke workflow through SLURM: {elapsed:.0f} s")
    jobs = slurm_jobs(workdir)
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(rule_of(job), []).append(job)
    # every rule that is not local ran as SLURM jobs, all of them completed; no local rule did
    planned = {"synthetic_data", "text_tokenizer", "text_pool", "text_data", "train", "score",
               "evaluate", "quantize", "same_arch_reference", "oracle_reference"}
    assert set(by_rule) == planned, sorted(by_rule)
    assert not set(by_rule) & LOCAL
    assert all(j["JobState"] == "COMPLETED" for j in jobs), [
        (j["JobId"], j["JobState"]) for j in jobs if j["JobState"] != "COMPLETED"]
    # each model job asked for the memory its cell's shape calls for (memcap.memory)
    train_mem = {re.search(r"mem=(\d+)M", j["TRES"]).group(1) for j in by_rule["train"]}
    assert all(int(m) > 1000 for m in train_mem), train_mem
    # and the results are the local run's, table by table
    assert tables(workdir / "results/memcap.duckdb") == tables(smoke / "results/memcap.duckdb")


@pytest.mark.e2e
def test_a_preempted_training_job_is_requeued_and_resumes(cluster, tmp_path, quiet):
    """`scontrol requeue` does what a scheduler's preemption does (SIGTERM, SIGKILL after
    KillWait, then the job back in the queue): the job checkpoints on SIGTERM, SLURM reruns it
    under the same job id, it resumes, and it ends with an uninterrupted run's weights."""
    workdir = tmp_path / "preempt"
    workdir.mkdir()
    cfg = {"seeds": [0], "synthetic": {"vocab_size": 16, "seq_len": 16, "heldout": 64,
                                        "dataset_sizes": [64]},
           "architectures": [{"n_layer": 1, "d_model": 16}], "precisions": ["fp32"],
           "train": {"steps": 4000, "batch_size": 32, "lr": 0.03, "eval_every": 100},
           # no checkpoint before the end but the one the signal forces
           "runtime": {"log_every": 100, "checkpoint_every": 100000,
                       "checkpoint_minutes": 1000},
           "laws": {"bootstrap": 20}, "text": {"enabled": False}}
    configfile = tmp_path / "preempt.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    proc = subprocess.Popen([*SNAKEMAKE, "--directory", str(workdir), "--configfile",
                             str(configfile), *SLURM_ARGS, "results/runs/kind=synthetic/"
                             "vocab=16/seq=16/arch=L1-d16/precision=fp32/n=64/seed=0/run.json"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = workdir / ("results/logs/train/kind=synthetic/vocab=16/seq=16/arch=L1-d16/"
                     "precision=fp32/n=64.log")
    deadline = time.time() + 300
    while time.time() < deadline:  # the training job is running and past its first steps
        if log.exists() and re.search(r"(?m)^\s*step \d+/", log.read_text()):
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    train_job = next(j for j in slurm_jobs(workdir) if rule_of(j) == "train")
    subprocess.run(["scontrol", "requeue", train_job["JobId"]], check=True)
    # SLURM holds a requeued job for 120 s (BeginTime) before it may start again; lift the
    # hold once the job is back in the queue, so the test does not wait it out
    while time.time() < deadline:
        job = next(j for j in slurm_jobs(workdir) if j["JobId"] == train_job["JobId"])
        if job["JobState"] == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job['JobId']}", "StartTime=now"],
                           check=True)
            break
        time.sleep(0.5)
    rest, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, rest[-4000:]
    job = next(j for j in slurm_jobs(workdir) if j["JobId"] == train_job["JobId"])
    assert job["JobState"] == "COMPLETED" and int(job["Restarts"]) >= 1, job
    resumed = re.search(r"resumed from checkpoint at step (\d+)/4000", log.read_text())
    assert resumed and 0 < int(resumed.group(1)) < 4000, log.read_text()[-2000:]
    # the same cell (the spec its run record states) trained without interruption, here
    run = workdir / "results/runs/kind=synthetic/vocab=16/seq=16/arch=L1-d16/precision=fp32/n=64"
    record = read_json(run / "seed=0/run.json")
    spec = TrainSpec(**{f: record[f] for f in TrainSpec.__dataclass_fields__})
    write_synthetic(tmp_path / "train.parquet", seed=0, split="train", n=64, seq_len=16,
                    vocab_size=16)
    train_cell(make_cell(tmp_path, spec, [0], [tmp_path / "train.parquet"],
                         [tmp_path / "train.parquet"], "ref"), CPU,
               echo=quiet)
    a = load_file(run / "seed=0/model.safetensors")
    b = load_file(tmp_path / "ref-0/model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
