"""Every compute path on a device: ``benchmarks/bench_device.py --quick`` runs dictionary generation (ideal
and with the slice profile), ``predict`` (fp32 and auto precision), ``reconstruct`` with M0 and a B1 map,
matching and training on the device and checks the maps it makes. On the CPU here (the same code as on
CUDA, whose device is the only difference); on CUDA where there is one (``-m gpu``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: The quick run's slice: 1,024 paper-grid fingerprints at 0.5 % noise through the shipped model; its median
#: |error| is ≈ 1 % (T1) / 2 % (T2) — 5 % catches a path that computes on the device but returns nonsense.
MEDIAN_ERROR_PCT = 5.0


def _run(device: str, tmp_path: Path) -> dict:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench_device.py", "--device", device, "--quick", "--json", str(out)],
                          cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_path_runs_on_the_cpu(tmp_path: Path) -> None:
    result = _run("cpu", tmp_path)
    assert result["device"] == "cpu" and result["quick"]
    assert len(result["times"]) == 9 and all(v > 0 for v in result["times"].values())
    assert max(result["reconstruct_median_error_pct"]) < MEDIAN_ERROR_PCT
    assert result["training_atoms"] == 20000 and result["training_val_loss"] < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_path_runs_on_cuda(tmp_path: Path) -> None:
    result = _run("cuda", tmp_path)
    assert result["device"] == "cuda" and "gpu" in result
    assert max(result["reconstruct_median_error_pct"]) < MEDIAN_ERROR_PCT
    assert result["training_val_loss"] < 0.05


def test_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("there is a GPU here")
    proc = subprocess.run([sys.executable, "bench_device.py", "--device", "cuda", "--quick"],
                          cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no GPU here" in proc.stderr
