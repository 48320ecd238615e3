"""CPU benchmark of DRONE dictionary generation (EPG), against torchsim, plus a 1M-atom memory check.

Run from the repository root::

    .venv/bin/python benchmarks/bench_epg.py

Options: ``--repeats N`` (timed runs per case, default 7), ``--threads N`` (``torch.set_num_threads``;
default: PyTorch's own choice), ``--json OUT`` (write every number to ``OUT``), ``--skip-1m`` (skip
the ~1-million-atom part, which takes the longest).

What it measures, all on the CPU, float32:

1. **Paper dictionary** (ideal slice: ``schedule.ideal()``) — :meth:`drone_core.dictionary.Dictionary.generate` on
   :func:`drone_core.dictionary.paper_grid` (79,900 (T1, T2) atoms) × the 25 frames of
   :func:`drone_core.schedule.default_schedule`. One warm-up run, then ``--repeats`` timed runs
   (``time.perf_counter``); the median and the minimum are reported.
2. **torchsim** (``torchsim.mrf_sim``) on the same sequence and atoms, same protocol, with
   ``states = n_frames + 1`` (enough EPG orders to be exact) and with its default ``states = 10``
   (truncated, hence inexact; for reference). torchsim has no TE and its inversion efficiency
   ``e`` means ``Mz → −e·Mz``, so it is called with ``inv_efficiency = 2η − 1`` and converted as
   ``ours = −1j · torchsim · exp(−TE/T2)``; the largest absolute difference to our atoms is printed
   (expected ~1e-6, float32 rounding). The speed ratio is torchsim median / our median (> 1: ours
   is faster).
2b. **With the slice profile** — ours (24 positions in one call) against torchsim called once per slice
   position with that position's flip angles and summed with the same weights; agreement printed.
3. **~1M-atom (T1, T2, B1) dictionary** — ``grid((1, 5000), (1, 2000), 10 ms steps, B1 = 0.70:0.05:1.30)``
   (13 B1 values, 1,038,700 atoms), generated once per configuration (default ``chunk_size`` and
   ``chunk_size=8192``), each in a fresh Python subprocess so that its peak memory is its own:
   the child reads ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` right after its imports
   (baseline) and after the generation (peak); both are reported with the increment and the size
   of the complex64 output array (``n × 25 × 8`` bytes). The increment also holds the float64 grid
   (three ``(n,)`` arrays, ~25 MB) and its temporaries.

   Caveat handled here: on Linux a child's ``ru_maxrss`` starts at the *parent's* peak RSS (the
   kernel carries the old address space's high-water mark across ``exec``), so a child started
   after the paper benchmark would report the parent's peak as its own. The 1M children are
   therefore started first, while the parent holds only its imports (the same as the child's
   baseline), and each child also reports ``VmHWM`` from ``/proc/self/status`` (the high-water
   mark of its own address space, not inherited) as a cross-check.

Until ``drone_core/schedules/epi_mrf_25.json`` exists, :func:`default_schedule` fails; the script
then falls back to a seeded random 25-frame schedule (FA ~ U(5, 90)°, TR ~ U(45, 130) ms, TE 23 ms,
TI 19 ms, η = 1), says so loudly and records ``schedule.source = "fallback-random"`` in the JSON.

Timings depend on the machine being otherwise idle; the load average at start is recorded. Our
EPG is many small PyTorch ops per frame, so with several intra-op threads it is very sensitive to
another process occupying a core (each op's thread barrier waits for a descheduled thread): on a
busy machine compare with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drone_core.dictionary import Dictionary, grid, paper_grid
from drone_core.epg import DEFAULT_CHUNK_SIZE
from drone_core.hardware import cpu_model
from drone_core.schedule import DEFAULT_SCHEDULE_NAME, Schedule, default_schedule

#: Seed of the fallback schedule (used only while the default schedule JSON is missing).
FALLBACK_SEED = 20240601
#: B1 axis of the ~1M-atom dictionary (13 values).
B1_AXIS = np.round(np.arange(0.7, 1.3001, 0.05), 3)
#: Chunk sizes compared in the 1M-atom part (None = the library default).
MEMORY_CHUNKS: tuple[int | None, ...] = (None, 8192)
#: Hidden command-line flag that makes the script a 1M-atom measurement child.
CHILD_FLAG = "--_child-1m-chunk"
MIB = 1024.0**2


# ---------------------------------------------------------------------------------------- setup
@dataclass(frozen=True)
class ScheduleInfo:
    """Which schedule was benchmarked."""

    source: str  # "default" or "fallback-random"
    name: str
    digest: str
    n_frames: int
    te_ms: float
    ti_ms: float
    inversion_efficiency: float


def load_schedule(*, quiet: bool = False) -> tuple[Schedule, ScheduleInfo]:
    """The package default schedule, or the seeded random fallback while its JSON is missing."""
    try:
        schedule, source = default_schedule(), "default"
    except OSError as exc:  # FileNotFoundError: drone_core/schedules/epi_mrf_25.json not there yet
        rng = np.random.default_rng(FALLBACK_SEED)
        schedule = Schedule(
            name=f"fallback-random-seed{FALLBACK_SEED}",
            flip_angle_deg=rng.uniform(5.0, 90.0, 25).tolist(),
            tr_ms=rng.uniform(45.0, 130.0, 25).tolist(),
            te_ms=23.0,
            ti_ms=19.0,
            inversion_efficiency=1.0,
        )
        source = "fallback-random"
        if not quiet:
            print(f"NOTE: default_schedule() failed ({type(exc).__name__}: {exc}); "
                  f"{DEFAULT_SCHEDULE_NAME} is not there yet. Using a seeded random 25-frame schedule "
                  f"(seed {FALLBACK_SEED}: FA U(5,90) deg, TR U(45,130) ms, TE 23 ms, TI 19 ms). "
                  "Rerun once the default schedule exists for the final numbers.", file=sys.stderr)
    info = ScheduleInfo(source, schedule.name, schedule.digest(), schedule.n_frames, schedule.te_ms,
                        schedule.ti_ms, schedule.inversion_efficiency)
    return schedule, info


def apply_threads(threads: int | None) -> None:
    """Set PyTorch's intra-op thread count (None: leave PyTorch's default)."""
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads: expected ≥ 1, got {threads}")
        torch.set_num_threads(threads)


def hardware_info() -> dict[str, Any]:
    """CPU, threads and library versions."""
    from importlib import metadata

    try:
        torchsim_version = metadata.version("torchsim")
    except metadata.PackageNotFoundError:
        torchsim_version = "unknown"
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": affinity,
        "torch_num_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "torchsim_version": torchsim_version,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Wall-clock times of one benchmarked case (seconds)."""

    label: str
    n_atoms: int
    repeats: int
    median_s: float
    min_s: float
    runs_s: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def atoms_per_s(self) -> float:
        """Throughput at the median time."""
        return self.n_atoms / self.median_s


def time_case(label: str, n_atoms: int, fn: Callable[[], Any], repeats: int, note: str = "") -> tuple[Timing, Any]:
    """One warm-up call of ``fn``, then ``repeats`` timed calls; returns the timing and the last result."""
    result = fn()  # warm-up (allocator, kernels, lazy imports)
    runs: list[float] = []
    for _ in range(repeats):
        del result
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    timing = Timing(label, n_atoms, repeats, statistics.median(runs), min(runs), runs, note)
    print(f"  {label}: median {timing.median_s:.3f} s, min {timing.min_s:.3f} s", file=sys.stderr)
    return timing, result


# ---------------------------------------------------------------------------------------- part 1 + 2
def bench_profile_dictionary(schedule: Schedule, repeats: int) -> dict[str, Any] | None:
    """With the schedule's slice profile: ours (one call, every position) against torchsim run once per slice
    position with that position's flip angles θ_j(α) and the same quadrature weights; None without a profile."""
    import torchsim

    from drone_core.epg import DEFAULT_N_POSITIONS
    from drone_core.excitation import profile_table

    if schedule.excitation is None:
        return None
    t1, t2 = paper_grid()
    fa, tr = schedule.arrays()
    table = profile_table(schedule.excitation, DEFAULT_N_POSITIONS)
    theta = table.flip_angles(torch.as_tensor(fa, dtype=torch.float64)).float()  # (N, p)
    weights = torch.as_tensor(table.weights, dtype=torch.float32)
    t1_t, t2_t = torch.as_tensor(t1, dtype=torch.float32), torch.as_tensor(t2, dtype=torch.float32)
    inv_eff = 2.0 * schedule.inversion_efficiency - 1.0

    def ours() -> np.ndarray:
        return Dictionary.generate(schedule, t1, t2).atoms

    def theirs() -> torch.Tensor:
        total = torch.zeros((t1.size, schedule.n_frames), dtype=torch.complex64)
        for j in range(table.n_positions):
            total += weights[j] * torchsim.mrf_sim(flip=theta[:, j].contiguous(), TR=tr, T1=t1_t, T2=t2_t,
                                                   TI=schedule.ti_ms, inv_efficiency=inv_eff,
                                                   states=schedule.n_frames + 1)
        return total

    n = t1.size
    print(f"Paper dictionary with the slice profile ({table.n_positions} positions): {n} atoms", file=sys.stderr)
    ours_timing, ours_atoms = time_case("drone_core Dictionary.generate, slice profile", n, ours, repeats)
    ts_timing, ts_sig = time_case(f"torchsim mrf_sim × {table.n_positions} positions", n, theirs, repeats,
                                  note="exact states, one call per slice position")
    converted = -1j * ts_sig.numpy().astype(np.complex128) * np.exp(-schedule.te_ms / t2)[:, None]
    diff = float(np.max(np.abs(converted - ours_atoms.astype(np.complex128))))
    print(f"  max |ours − torchsim (profile)|: {diff:.3g}", file=sys.stderr)
    return {"n_atoms": n, "n_positions": table.n_positions, "timings": [ours_timing, ts_timing],
            "max_abs_diff_torchsim": diff, "max_abs_signal": float(np.max(np.abs(ours_atoms))),
            "speed_ratio_torchsim_over_ours": ts_timing.median_s / ours_timing.median_s}


def bench_paper_dictionary(schedule: Schedule, repeats: int) -> dict[str, Any]:
    """Time our generation and torchsim on the paper grid (ideal slice) and check they agree."""
    import torchsim

    schedule = schedule.ideal()
    t1, t2 = paper_grid()
    n = t1.size
    fa, tr = schedule.arrays()
    t1_t = torch.as_tensor(t1, dtype=torch.float32)
    t2_t = torch.as_tensor(t2, dtype=torch.float32)
    # Our η: Mz → (1 − 2η)·Mz. torchsim's e: Mz → −e·Mz. Hence e = 2η − 1.
    inv_eff = 2.0 * schedule.inversion_efficiency - 1.0
    exact_states = schedule.n_frames + 1

    def ours() -> np.ndarray:
        return Dictionary.generate(schedule, t1, t2).atoms

    def torchsim_run(states: int) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            return torchsim.mrf_sim(flip=fa, TR=tr, T1=t1_t, T2=t2_t, TI=schedule.ti_ms,
                                    inv_efficiency=inv_eff, states=states)
        return run

    print(f"Paper dictionary: {n} atoms × {schedule.n_frames} frames, {repeats} repeats", file=sys.stderr)
    ours_timing, ours_atoms = time_case("drone_core Dictionary.generate", n, ours, repeats)
    ts_timing, ts_sig = time_case(f"torchsim mrf_sim states={exact_states}", n, torchsim_run(exact_states),
                                  repeats, note="exact")
    ts10_timing, ts10_sig = time_case("torchsim mrf_sim states=10", n, torchsim_run(10), repeats,
                                      note="default states; truncated, inexact")

    te_decay = np.exp(-schedule.te_ms / t2)[:, None]

    def max_abs_diff(sig: torch.Tensor) -> float:
        converted = -1j * sig.detach().cpu().numpy().astype(np.complex128) * te_decay
        return float(np.max(np.abs(converted - ours_atoms.astype(np.complex128))))

    diff_exact = max_abs_diff(ts_sig)
    diff_10 = max_abs_diff(ts10_sig)
    max_signal = float(np.max(np.abs(ours_atoms)))
    print(f"  max |ours − (−1j·torchsim·exp(−TE/T2))|: states={exact_states}: {diff_exact:.3g}, "
          f"states=10: {diff_10:.3g} (max |signal| {max_signal:.3g})", file=sys.stderr)
    return {
        "n_atoms": n,
        "n_frames": schedule.n_frames,
        "timings": [ours_timing, ts_timing, ts10_timing],
        "max_abs_diff_torchsim_exact": diff_exact,
        "max_abs_diff_torchsim_states10": diff_10,
        "max_abs_signal": max_signal,
        "torchsim_exact_states": exact_states,
        "speed_ratio_torchsim_exact_over_ours": ts_timing.median_s / ours_timing.median_s,
        "speed_ratio_torchsim_states10_over_ours": ts10_timing.median_s / ours_timing.median_s,
    }


# ---------------------------------------------------------------------------------------- part 3
def maxrss_bytes() -> int:
    """This process's peak resident set size so far, bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def vmhwm_bytes() -> int | None:
    """Peak RSS of this process's own address space (``VmHWM``, Linux only; else None)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    return None


def child_1m(chunk: int | None) -> dict[str, Any]:
    """Generate the ~1M-atom dictionary in this (fresh) process; time and peak memory.

    Runs inside the subprocess started by :func:`measure_1m`. The baseline is read first thing,
    right after the module imports (numpy, torch, drone_core, already done at import time).
    """
    baseline, baseline_hwm = maxrss_bytes(), vmhwm_bytes()
    schedule, _ = load_schedule(quiet=True)
    t1, t2, b1 = grid((1, 5000), (1, 2000), t1_step_ms=10, t2_step_ms=10, b1=B1_AXIS)
    assert b1 is not None
    peak_after_grid = maxrss_bytes()
    kwargs: dict[str, Any] = {} if chunk is None else {"chunk_size": chunk}
    t0 = time.perf_counter()
    dictionary = Dictionary.generate(schedule, t1, t2, b1, **kwargs)
    elapsed = time.perf_counter() - t0
    peak, peak_hwm = maxrss_bytes(), vmhwm_bytes()
    n = len(dictionary)
    return {
        "chunk_size": DEFAULT_CHUNK_SIZE if chunk is None else chunk,
        "chunk_is_default": chunk is None,
        "n_atoms": n,
        "n_frames": dictionary.n_frames,
        "time_s": elapsed,
        "atoms_per_s": n / elapsed,
        "baseline_maxrss_bytes": baseline,
        "maxrss_after_grid_bytes": peak_after_grid,
        "peak_maxrss_bytes": peak,
        "increment_bytes": peak - baseline,
        "baseline_vmhwm_bytes": baseline_hwm,
        "peak_vmhwm_bytes": peak_hwm,
        "vmhwm_increment_bytes": None if peak_hwm is None or baseline_hwm is None else peak_hwm - baseline_hwm,
        "output_bytes": int(dictionary.atoms.nbytes),
        "grid_input_bytes": int(t1.nbytes + t2.nbytes + b1.nbytes),
        "torch_num_threads": torch.get_num_threads(),
    }


def measure_1m(chunk: int | None, threads: int | None) -> dict[str, Any]:
    """Run :func:`child_1m` in a fresh interpreter (this script with the hidden flag); its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, "default" if chunk is None else str(chunk)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    label = "default" if chunk is None else str(chunk)
    print(f"1M-atom dictionary, chunk_size={label} (fresh subprocess)…", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"1M-atom child (chunk {label}) failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {result['time_s']:.2f} s, peak RSS {result['peak_maxrss_bytes'] / MIB:.0f} MiB "
          f"(+{result['increment_bytes'] / MIB:.0f} MiB over baseline; output {result['output_bytes'] / MIB:.0f} MiB)",
          file=sys.stderr)
    own = result["baseline_vmhwm_bytes"]
    if own is not None and result["baseline_maxrss_bytes"] > own + 32 * MIB:
        print(f"  WARNING: the child's baseline ru_maxrss ({result['baseline_maxrss_bytes'] / MIB:.0f} MiB) exceeds "
              f"its own VmHWM ({own / MIB:.0f} MiB): inherited from the parent; trust the VmHWM column.",
              file=sys.stderr)
    return result


# ---------------------------------------------------------------------------------------- report
def markdown_report(hw: dict[str, Any], sched: ScheduleInfo, paper: dict[str, Any],
                    memory: list[dict[str, Any]] | None) -> str:
    """The results as markdown tables."""
    lines = ["## Hardware", "",
             f"- CPU: {hw['cpu_model']} ({hw['logical_cpus']} logical CPUs, {hw['cpus_available']} available)",
             f"- torch.get_num_threads(): {hw['torch_num_threads']}",
             f"- torch {hw['torch_version']}, numpy {hw['numpy_version']}, torchsim {hw['torchsim_version']}, "
             f"Python {hw['python_version']}",
             f"- load average at start: {', '.join(f'{x:.2f}' for x in hw['load_average_at_start'] or [])}",
             f"- schedule: {sched.name!r} ({sched.source}, digest {sched.digest}), {sched.n_frames} frames, "
             f"TE {sched.te_ms:g} ms, TI {sched.ti_ms:g} ms, η {sched.inversion_efficiency:g}",
             "",
             f"## Paper dictionary ({paper['n_atoms']:,} atoms × {paper['n_frames']} frames, float32)", "",
             "| Simulator | median (s) | min (s) | atoms/s (median) | torchsim / ours | note |",
             "|---|---:|---:|---:|---:|---|"]
    ours_median = paper["timings"][0].median_s
    for t in paper["timings"]:
        ratio = t.median_s / ours_median
        lines.append(f"| {t.label} | {t.median_s:.3f} | {t.min_s:.3f} | {t.atoms_per_s:,.0f} | "
                     f"{ratio:.2f}× | {t.note} |")
    lines += ["",
              f"Runs: 1 warm-up + {paper['timings'][0].repeats} timed. Ratio = median time / our median time "
              "(> 1: ours faster).",
              f"Agreement, max |ours − (−1j·torchsim·exp(−TE/T2))|: "
              f"{paper['max_abs_diff_torchsim_exact']:.3g} with states={paper['torchsim_exact_states']}, "
              f"{paper['max_abs_diff_torchsim_states10']:.3g} with states=10 "
              f"(max |signal| {paper['max_abs_signal']:.3g}).", ""]
    if memory:
        m0 = memory[0]
        lines += [f"## ~1M-atom (T1, T2, B1) dictionary ({m0['n_atoms']:,} atoms × {m0['n_frames']} frames), "
                  "fresh subprocess per row", "",
                  "| chunk_size | time (s) | atoms/s | baseline RSS (MiB) | peak RSS (MiB) | increment (MiB) "
                  "| VmHWM increment (MiB) | output array (MiB) | increment / output |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in memory:
            chunk = f"{m['chunk_size']} (default)" if m["chunk_is_default"] else str(m["chunk_size"])
            hwm = "n/a" if m["vmhwm_increment_bytes"] is None else f"{m['vmhwm_increment_bytes'] / MIB:.0f}"
            lines.append(f"| {chunk} | {m['time_s']:.2f} | {m['atoms_per_s']:,.0f} | "
                         f"{m['baseline_maxrss_bytes'] / MIB:.0f} | {m['peak_maxrss_bytes'] / MIB:.0f} | "
                         f"{m['increment_bytes'] / MIB:.0f} | {hwm} | {m['output_bytes'] / MIB:.0f} | "
                         f"{m['increment_bytes'] / m['output_bytes']:.2f} |")
        lines += ["",
                  "Baseline = ru_maxrss right after imports; peak = ru_maxrss after generation (MiB = 2^20 "
                  "bytes); VmHWM increment = the same from /proc/self/status (cross-check); the increment "
                  f"includes the float64 grid inputs ({m0['grid_input_bytes'] / MIB:.0f} MiB) and their "
                  "temporaries. One timed run per row (no warm-up).", ""]
    return "\n".join(lines)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy scalars and containers → plain JSON types."""
    if isinstance(obj, Timing):
        return {**asdict(obj), "atoms_per_s": obj.atoms_per_s}
    if isinstance(obj, ScheduleInfo):
        return asdict(obj)
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case after one warm-up (default 7)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads value (default: PyTorch's default)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write all numbers to this JSON file")
    parser.add_argument("--skip-1m", action="store_true", help="skip the ~1M-atom time/memory part")
    parser.add_argument(CHILD_FLAG, dest="child_chunk", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected ≥ 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_threads(args.threads)

    if args.child_chunk is not None:  # 1M-atom measurement child: one JSON line on stdout
        chunk = None if args.child_chunk == "default" else int(args.child_chunk)
        print(json.dumps(child_1m(chunk)))
        return 0

    schedule, sched_info = load_schedule()
    hw = hardware_info()
    # The 1M children run first, while this process holds only its imports: a child's ru_maxrss
    # starts at its parent's peak RSS (see the module docstring).
    memory = None if args.skip_1m else [measure_1m(chunk, args.threads) for chunk in MEMORY_CHUNKS]
    paper = bench_paper_dictionary(schedule, args.repeats)
    profile = bench_profile_dictionary(schedule, max(1, args.repeats // 2))

    print(markdown_report(hw, sched_info, paper, memory))
    if profile is not None:
        print(f"\nWith the slice profile ({profile['n_positions']} positions): ours "
              f"{profile['timings'][0].median_s:.3f} s, torchsim {profile['timings'][1].median_s:.3f} s — "
              f"torchsim / ours = {profile['speed_ratio_torchsim_over_ours']:.2f}; max |difference| "
              f"{profile['max_abs_diff_torchsim']:.2g}")
    if args.json is not None:
        payload = {"hardware": hw, "schedule": sched_info, "repeats": args.repeats, "threads_arg": args.threads,
                   "paper_dictionary": paper, "paper_dictionary_slice_profile": profile, "dictionary_1m": memory}
        args.json.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
