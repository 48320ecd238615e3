"""CPU benchmark of dictionary matching (:class:`drone_core.matching.Matcher`): speed and accuracy.

Run from the repository root::

    .venv/bin/python benchmarks/bench_matching.py

Options: ``--repeats N`` (timed runs per case after one warm-up, default 5), ``--threads LIST``
(comma-separated ``torch.set_num_threads`` values, each case is run at each; default ``1,2``),
``--json OUT`` (write every number to ``OUT``), ``--full-gemm`` (also time one unchunked
16,384 × 79,900 GEMM: a 5.2 GB output, off by default).

What it measures, float32:

1. **Speed** — a 128 × 128 slice (16,384 voxels) of noisy fingerprints (random atoms of the paper
   dictionary, 0.5 % complex noise as below, random M0 in [0.5, 2]) matched against the full paper
   dictionary (:func:`~drone_core.dictionary.paper_grid` × :func:`~drone_core.schedule.default_schedule`,
   79,900 atoms × 25 frames) by the default :class:`Matcher` and with ``svd_rank`` 5 and 10; at each
   thread count. Seconds per slice (median and min of ``--repeats``) and the achieved GFLOP/s,
   ``2 · n_vox · n_atoms · k / t`` with ``k = 25`` for the full search and ``k = svd_rank`` for the
   compressed one (the nominal work; on a CPU the compressed GEMM is executed zero-padded to
   :data:`~drone_core.matching.MIN_CPU_GEMM_WIDTH` = 16 inner terms, which MKL runs faster than
   k < 16 — the table gives that executed width too).

   Beside each: a **plain GEMM** of the same shapes with the same chunking (``torch.mm`` of every
   ``(1024, k) @ (k, 2048)`` block into a reused buffer, no reduction), the same plus the first
   search level's ``amax`` (no refinement, no host work), the same plus a naive ``torch.max(dim=1)``
   (max and argmax of every block row, what a one-level search would do), and one block's GEMM
   alone times the number of blocks — so the reader sees how much of the time is GEMM, reduction
   and the rest (normalisation, second search level, float64 score/M0).
2. **Accuracy** at 0.5 % noise: a random 20,000-atom subset of the paper dictionary, complex
   Gaussian noise σ = 0.005·max|atom| per atom added to the complex atom before taking the
   magnitude (seeded), matched against the full dictionary with the full search and with SVD ranks
   3, 5, 8, 10: RMSE of T1 and T2 (ms) against the true values, the fraction of voxels matched to
   their own atom, and the same noise-free.

Timings depend on the machine being otherwise idle: the load average is recorded at start and
end. With 2 threads each GEMM block ends at a thread barrier, so a competing process on one of the
two cores slows the 2-thread runs most; on a busy machine trust the 1-thread rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.hardware import cpu_model
from drone_core.matching import DEFAULT_CPU_CHUNKS, MIN_CPU_GEMM_WIDTH, Matcher
from drone_core.noise import add_noise
from drone_core.schedule import default_schedule
from timing import runs

#: Seeds of the slice signals, the accuracy subset and its noise.
SLICE_SEED = 20240613
SUBSET_SEED = 20240614
#: Voxels of a 128 × 128 slice.
N_VOXELS = 128 * 128
#: Relative noise: complex Gaussian σ = NOISE · max|atom| per atom.
NOISE = 0.005
#: Atoms in the accuracy subset.
N_SUBSET = 20_000
#: SVD ranks of the speed part and of the accuracy part.
SPEED_RANKS: tuple[int | None, ...] = (None, 5, 10)
ACCURACY_RANKS: tuple[int | None, ...] = (None, 3, 5, 8, 10)


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def noisy(atoms: np.ndarray, rng: np.random.Generator, noise: float = NOISE) -> np.ndarray:
    """Magnitudes of ``atoms`` with the project's noise (:func:`drone_core.noise.add_noise`): complex
    Gaussian, σ = noise·max|atom| in each of the real and imaginary channels."""
    return add_noise(atoms.astype(np.complex128), noise, generator=rng)


def time_fn(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """One warm-up call, then ``repeats`` timed calls (``time.perf_counter``)."""
    times = runs(fn, repeats, warmup=1)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs_s": times}


def plain_gemm_cases(n_vox: int, n_atoms: int, width: int, repeats: int) -> dict[str, Any]:
    """Chunked plain GEMM (and GEMM + amax) of the Matcher's default block shape, ``width`` inner terms."""
    chunk, atom_chunk = DEFAULT_CPU_CHUNKS
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((n_vox, width), generator=gen)
    n_pad = -(-n_atoms // atom_chunk) * atom_chunk
    a = torch.rand((width, n_pad), generator=gen)
    buf = torch.empty((chunk, atom_chunk))
    sub = 128
    sub_max = torch.empty((chunk, n_pad // sub))
    n_blocks = -(-n_vox // chunk) * (n_pad // atom_chunk)

    n_ablocks = n_pad // atom_chunk
    vals = torch.empty((n_ablocks, chunk))
    idx = torch.empty((n_ablocks, chunk), dtype=torch.int64)

    def gemm(reduction: str) -> Callable[[], None]:
        def run() -> None:
            for v0 in range(0, n_vox, chunk):
                xv = x[v0:v0 + chunk]
                m = xv.shape[0]
                b = buf[:m]
                for j in range(n_ablocks):
                    torch.mm(xv, a[:, j * atom_chunk:(j + 1) * atom_chunk], out=b)
                    if reduction == "amax":
                        torch.amax(b.view(m, -1, sub), dim=2,
                                   out=sub_max[:m, j * atom_chunk // sub:(j + 1) * atom_chunk // sub])
                    elif reduction == "max":  # the naive search: max + argmax of every block row
                        torch.max(b, dim=1, out=(vals[j, :m], idx[j, :m]))
        return run

    def one_block() -> None:
        torch.mm(x[:chunk], a[:, :atom_chunk], out=buf)

    chunked = time_fn(gemm("none"), repeats)
    with_amax = time_fn(gemm("amax"), repeats)
    with_max = time_fn(gemm("max"), repeats)
    single = time_fn(lambda: [one_block() for _ in range(20)], repeats)
    per_block = single["median_s"] / 20
    return {"width": width, "chunk": chunk, "atom_chunk": atom_chunk, "n_blocks": n_blocks,
            "chunked_gemm": chunked, "chunked_gemm_amax": with_amax, "chunked_gemm_max_argmax": with_max,
            "one_block_s": per_block, "one_block_times_n_blocks_s": per_block * n_blocks}


def full_gemm_case(n_vox: int, n_atoms: int, width: int, repeats: int) -> dict[str, Any]:
    """One unchunked ``(n_vox, width) @ (width, n_atoms)`` GEMM (allocates the whole output)."""
    x = torch.rand((n_vox, width))
    a = torch.rand((width, n_atoms))
    out = torch.empty((n_vox, n_atoms))
    return time_fn(lambda: torch.mm(x, a, out=out), repeats)


def gflops(n_vox: int, n_atoms: int, k: int, seconds: float) -> float:
    return 2.0 * n_vox * n_atoms * k / seconds / 1e9


def speed_part(dictionary: Dictionary, threads: list[int], repeats: int, full_gemm: bool) -> dict[str, Any]:
    rng = np.random.default_rng(SLICE_SEED)
    idx = rng.integers(0, len(dictionary), N_VOXELS)
    m0 = rng.uniform(0.5, 2.0, (N_VOXELS, 1))
    signals = noisy(dictionary.atoms[idx] * m0, rng).astype(np.float32)
    n_atoms, n_frames = len(dictionary), dictionary.n_frames
    out: dict[str, Any] = {"n_voxels": N_VOXELS, "n_atoms": n_atoms, "n_frames": n_frames, "cases": [],
                           "plain_gemm": []}
    for nthreads in threads:
        torch.set_num_threads(nthreads)
        for rank in SPEED_RANKS:
            t0 = time.perf_counter()
            matcher = Matcher(dictionary, device="cpu", svd_rank=rank)
            build_s = time.perf_counter() - t0
            timing = time_fn(lambda: matcher.match(signals), repeats)
            k = n_frames if rank is None else rank
            case = {"threads": nthreads, "svd_rank": rank, "k": k, "executed_width": matcher._width,
                    "build_s": build_s, **timing,
                    "gflops_nominal": gflops(N_VOXELS, n_atoms, k, timing["median_s"]),
                    "svd_energy": matcher.svd_energy}
            out["cases"].append(case)
            print(f"  threads {nthreads}, svd_rank {rank}: median {timing['median_s']:.3f} s "
                  f"(min {timing['min_s']:.3f}), build {build_s:.3f} s", file=sys.stderr)
        for width in sorted({n_frames, MIN_CPU_GEMM_WIDTH}, reverse=True):
            g = plain_gemm_cases(N_VOXELS, n_atoms, width, repeats)
            g["threads"] = nthreads
            if full_gemm:
                g["full_gemm"] = full_gemm_case(N_VOXELS, n_atoms, width, repeats)
            out["plain_gemm"].append(g)
            print(f"  threads {nthreads}, plain GEMM width {width}: chunked {g['chunked_gemm']['median_s']:.3f} s, "
                  f"+amax {g['chunked_gemm_amax']['median_s']:.3f} s, +max/argmax "
                  f"{g['chunked_gemm_max_argmax']['median_s']:.3f} s, one block × {g['n_blocks']} "
                  f"{g['one_block_times_n_blocks_s']:.3f} s", file=sys.stderr)
    return out


def accuracy_part(dictionary: Dictionary) -> dict[str, Any]:
    rng = np.random.default_rng(SUBSET_SEED)
    subset = np.sort(rng.choice(len(dictionary), N_SUBSET, replace=False))
    clean = dictionary.atoms[subset]
    signals = noisy(clean, rng)
    t1_true, t2_true = dictionary.t1_ms[subset], dictionary.t2_ms[subset]
    rows = []
    for rank in ACCURACY_RANKS:
        matcher = Matcher(dictionary, device="cpu", svd_rank=rank)
        row: dict[str, Any] = {"svd_rank": rank, "svd_energy": matcher.svd_energy}
        for label, sig in (("noisy", signals), ("noise_free", np.abs(clean))):
            r = matcher.match(sig)
            row[label] = {
                "rmse_t1_ms": float(np.sqrt(np.mean((r.t1_ms - t1_true) ** 2))),
                "rmse_t2_ms": float(np.sqrt(np.mean((r.t2_ms - t2_true) ** 2))),
                "own_atom_fraction": float(np.mean(r.index == subset)),
            }
        rows.append(row)
        print(f"  accuracy svd_rank {rank}: noisy RMSE T1 {row['noisy']['rmse_t1_ms']:.2f} ms, "
              f"T2 {row['noisy']['rmse_t2_ms']:.2f} ms", file=sys.stderr)
    return {"n_subset": N_SUBSET, "noise": NOISE, "rows": rows}


def markdown(hw: dict[str, Any], speed: dict[str, Any], acc: dict[str, Any], repeats: int) -> str:
    n_vox, n_atoms, n = speed["n_voxels"], speed["n_atoms"], speed["n_frames"]
    lines = [f"- CPU: {hw['cpu_model']} ({hw['logical_cpus']} logical CPUs); torch {hw['torch_version']}; "
             f"load average at start {hw['load_start']}, at end {hw['load_end']}",
             f"- schedule {hw['schedule']!r}; dictionary {n_atoms:,} atoms × {n} frames; slice {n_vox:,} voxels; "
             f"1 warm-up + {repeats} timed runs, median (min)", "",
             "| threads | search | s / slice | GFLOP/s (nominal k) | executed GEMM width | build (s) |",
             "|---:|---|---:|---:|---:|---:|"]
    for c in speed["cases"]:
        name = f"full (k = {n})" if c["svd_rank"] is None else f"SVD k = {c['svd_rank']} (energy {c['svd_energy']:.5f})"
        lines.append(f"| {c['threads']} | {name} | {c['median_s']:.3f} ({c['min_s']:.3f}) | "
                     f"{c['gflops_nominal']:.0f} | {c['executed_width']} | {c['build_s']:.3f} |")
    has_full = any("full_gemm" in g for g in speed["plain_gemm"])
    lines += ["", "Plain GEMM of the same shapes and chunking (1024 × 2048 blocks), for comparison:", "",
              "| threads | width | chunked GEMM (s) | GFLOP/s | + amax of sub-blocks (s) | + max/argmax, naive (s) "
              "| one block × n_blocks (s) |" + (" unchunked GEMM (s) |" if has_full else ""),
              "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_full else "")]
    for g in speed["plain_gemm"]:
        t = g["chunked_gemm"]["median_s"]
        row = (f"| {g['threads']} | {g['width']} | {t:.3f} | {gflops(n_vox, n_atoms, g['width'], t):.0f} | "
               f"{g['chunked_gemm_amax']['median_s']:.3f} | {g['chunked_gemm_max_argmax']['median_s']:.3f} | "
               f"{g['one_block_times_n_blocks_s']:.3f} |")
        if "full_gemm" in g:
            row += f" {g['full_gemm']['median_s']:.3f} |"
        lines.append(row)
    lines += ["", f"Accuracy: {acc['n_subset']:,} random atoms of the paper dictionary, complex noise "
              f"σ = {acc['noise']:g}·max|atom|, matched against all {n_atoms:,} atoms:", "",
              "| search | SVD energy | RMSE T1 (ms) | RMSE T2 (ms) | own atom | noise-free RMSE T1 / T2 (ms) | "
              "noise-free own atom |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in acc["rows"]:
        name = "full" if r["svd_rank"] is None else f"SVD k = {r['svd_rank']}"
        a, b = r["noisy"], r["noise_free"]
        lines.append(f"| {name} | {r['svd_energy']:.5f} | {a['rmse_t1_ms']:.2f} | {a['rmse_t2_ms']:.2f} | "
                     f"{a['own_atom_fraction']:.1%} | {b['rmse_t1_ms']:.2f} / {b['rmse_t2_ms']:.2f} | "
                     f"{b['own_atom_fraction']:.1%} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case after one warm-up (default 5)")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated torch.set_num_threads values to run every case at (default 1,2)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write all numbers to this JSON file")
    parser.add_argument("--full-gemm", action="store_true",
                        help="also time one unchunked 16384 x 79900 GEMM (5.2 GB output)")
    parser.add_argument("--skip-accuracy", action="store_true", help="skip the accuracy part")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected ≥ 1, got {args.repeats}")
    try:
        args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads: expected comma-separated ints, got {args.threads!r}")
    if not args.thread_list or min(args.thread_list) < 1:
        parser.error(f"--threads: expected ints ≥ 1, got {args.threads!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    schedule = default_schedule()
    hw: dict[str, Any] = {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "torch_version": torch.__version__,
                          "numpy_version": np.__version__, "python_version": platform.python_version(),
                          "default_torch_threads": torch.get_num_threads(), "load_start": load_average(),
                          "schedule": schedule.name, "schedule_digest": schedule.digest()}
    t1, t2 = paper_grid()
    dictionary = Dictionary.generate(schedule, t1, t2)
    print(f"Paper dictionary {len(dictionary)} × {dictionary.n_frames}; load {hw['load_start']}", file=sys.stderr)
    speed = speed_part(dictionary, args.thread_list, args.repeats, args.full_gemm)
    torch.set_num_threads(max(args.thread_list))
    acc = accuracy_part(dictionary) if not args.skip_accuracy else {"n_subset": 0, "noise": NOISE, "rows": []}
    hw["load_end"] = load_average()
    print(markdown(hw, speed, acc, args.repeats))
    if args.json is not None:
        payload = {"hardware": hw, "repeats": args.repeats, "speed": speed, "accuracy": acc}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
