"""Bad input stops before any work with one clear message (key, value, valid choices), exit 2,
no traceback; and the commands that should work, work."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Runs write under tmp_path; nothing reaches the repository's results/ or reports/."""
    monkeypatch.chdir(tmp_path)


def test_unknown_variant_names_choices(capsys):
    code, _, err = run_cli(capsys, "run", "attention=refrence")
    assert_clear_error(code, err, "attention='refrence'", "did you mean 'reference'", "valid choices:", "sdpa")


def test_unknown_experiment(capsys):
    code, _, err = run_cli(capsys, "run", "+experiment=quickstrat")
    assert_clear_error(code, err, "'quickstrat'", "did you mean 'quickstart'")


def test_misspelled_top_level_key(capsys):
    code, _, err = run_cli(capsys, "run", "atention=reference")
    assert_clear_error(code, err, "'atention'", "did you mean 'attention'")


def test_misspelled_variant_key(capsys):
    code, _, err = run_cli(capsys, "run", "model=tiny", "attention=mla", "attention.rnak=8")
    assert_clear_error(code, err, "attention=mla has no key 'rnak'", "did you mean 'rank'")


def test_wrong_value_type(capsys):
    code, _, err = run_cli(capsys, "run", "model=tiny", "seed=abc")
    assert_clear_error(code, err, "seed=abc")


def test_cuda_on_cpu_only_machine(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(capsys, "run", "model=tiny", "device=cuda")
    assert_clear_error(code, err, "device=cuda", "no CUDA GPU")


def test_triton_variant_on_cpu_without_interpreter(capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    code, _, err = run_cli(capsys, "run", "model=tiny", "attention=flash")
    assert_clear_error(code, err, "attention=flash cannot run here", "TRITON_INTERPRET=1")


def test_head_counts_that_do_not_divide(capsys):
    # SmolLM2 has 9 query heads over 3 KV heads. Fewer groups are mean-pooled (uneven is allowed);
    # more must repeat the 3 heads evenly and divide the 9 query heads: 4 does neither.
    code, _, err = run_cli(capsys, "run", "attention=gqa", "attention.groups=4")
    assert_clear_error(code, err, "groups=4", "3 KV heads", "9 query heads", "[9]")


def test_missing_corpus_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "model=tiny", f"corpus.path={tmp_path}/nope.txt")
    assert_clear_error(code, err, "corpus.path=", "no such file")


def test_missing_checkpoint_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "model=hf", f"model.path={tmp_path}/no-checkpoint")
    assert_clear_error(code, err, "no-checkpoint")


def test_sweep_without_multirun_flag(capsys):
    code, _, err = run_cli(capsys, "run", "model=tiny", "attention=reference,sdpa")
    assert_clear_error(code, err, "-m")


def test_unknown_command(capsys):
    code, _, err = run_cli(capsys, "frobnicate")
    assert_clear_error(code, err, "frobnicate", "run, list, report, check, baseline")


def test_bad_input_does_no_work(capsys, tmp_path):
    """A sweep whose second point is bad writes nothing, not even the first point."""
    code, _, err = run_cli(capsys, "run", "-m", "model=tiny", "attention=reference,nope")
    assert_clear_error(code, err, "'nope'")
    assert not (tmp_path / "results").exists()


def test_list_shows_every_axis_and_availability(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for axis in ("attention:", "position:", "sampler:", "kv:", "quant:", "spec:", "scenario:", "model:", "experiment"):
        assert axis in out
    assert "(reference)" in out and "quickstart" in out


def test_entry_point_subprocess(tmp_path):
    """The real `python -m lab` entry: exit status and stderr as a user sees them."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "lab", "run", "attention=nope"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "attention='nope'" in p.stderr


def test_model_too_large_for_the_device(capsys):
    """The Llama-3-8B shape in float32 (32 GB) does not fit a 24 GB CPU machine: said before loading."""
    import torch

    from lab.config import available_memory

    have = available_memory(torch.device("cpu"))
    if have is None or have > 30e9:
        pytest.skip("this machine has room for 32 GB of weights")
    code, _, err = run_cli(capsys, "run", "model=llama3_8b", "device=cpu", "scenario=decode")
    assert_clear_error(code, err, "model=llama3_8b needs 32.1 GB of float32 weights", "GB available")
