"""``drone``: one command line tool with subcommands, each with ``--help``.

    drone simulate --out dict.safetensors         # EPG dictionary (paper grid by default)
    drone crb [--schedule S.json]                 # Cramér–Rao bounds for WM/GM/CSF
    drone design-schedule --out S.json            # CRB-optimal schedule design (--b1-cost W: B1 estimated)
    drone train --out runs/x                      # train a network (paper defaults)
    drone simulate-scan scan.h5 --phantom brain   # a phantom scan as ISMRMRD .h5 (--b1 3t: with a B1 map)
    drone sequence mrf.seq                        # the EPI-MRF sequence as a Pulseq file, for a scanner
    drone convert raw.dat raw.h5 --seq mrf.seq    # a scanner's raw data (twix) of it as ISMRMRD
    drone replay scan.h5 maps.h5 --png figs       # stream it through the gadget as Gadgetron would
    drone serve --port 9002                       # a standing server for ISMRMRD stream clients
    drone send scan.h5 maps.h5 --port 9002        # its client
    drone compare                                 # DRONE vs matching vs the Cramér–Rao bound
    drone experiments nist --out results          # a paper experiment (figures + JSON); all: every one
    drone demo                                    # 3 T-like brain scan → gadget with/without B1 map → maps

Logs and progress go to stderr; results to stdout or files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["main", "build_parser"]


def _load_schedule(path: Path | None):
    from drone_core.schedule import Schedule, default_schedule

    return default_schedule() if path is None else Schedule.load(path)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from drone_core.dictionary import Dictionary, grid, paper_grid

    schedule = _load_schedule(args.schedule)
    b1 = None
    if args.b1 is not None:
        lo, hi, step = args.b1
        b1 = np.round(np.arange(lo, hi + step / 2, step), 6)
    if args.grid == "paper" and b1 is None:
        t1, t2 = paper_grid()
        b1_atoms = None
    else:
        if args.grid == "paper":
            t1, t2, b1_atoms = grid((1, 5000), (1, 2000), t1_step_ms=10, t2_step_ms=10, b1=b1)
        else:
            t1, t2, b1_atoms = grid(tuple(args.t1_range), tuple(args.t2_range), n_t1=args.n_t1, n_t2=args.n_t2,
                                    spacing="log", b1=b1)
    t0 = time.perf_counter()
    d = Dictionary.generate(schedule, t1, t2, b1_atoms, chunk_size=args.chunk_size, device=args.device,
                            progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    if args.fold > 1:
        d = d.subsample(args.fold)
    d.save(args.out)
    print(f"{d.describe()}; simulated in {elapsed:.2f} s; written to {args.out}", file=sys.stderr)
    return 0


def _cmd_crb(args: argparse.Namespace) -> int:
    from drone_core.crb import BRAIN_TISSUES_1P5T, crb, crb_cost

    schedule = _load_schedule(args.schedule)
    if args.ideal:
        schedule = schedule.ideal()
    names = list(BRAIN_TISSUES_1P5T)
    t1 = [BRAIN_TISSUES_1P5T[n][0] for n in names]
    t2 = [BRAIN_TISSUES_1P5T[n][1] for n in names]
    r = crb(schedule, t1, t2, m0=1.0, sigma=args.sigma, b1=args.b1, n_positions=args.n_positions)
    profile = ("ideal slice profile" if schedule.excitation is None
               else f"slice profile {schedule.excitation.describe()}")
    print(f"schedule {schedule.name!r} ({schedule.digest()}), {schedule.n_frames} frames, "
          f"{schedule.duration_ms:.0f} ms, {profile}; B1 {args.b1:g}; noise σ = {args.sigma:g}·M0 per real channel")
    header = (f"{'tissue':8s} {'T1 ms':>8s} {'T2 ms':>8s} {'√CRB T1':>9s} {'√CRB T2':>9s} "
              f"{'√CRB·M0/(σT1)':>14s} {'√CRB·M0/(σT2)':>14s}")
    if args.estimate_b1:
        u = crb(schedule, t1, t2, m0=1.0, sigma=args.sigma, b1=args.b1, include_b1=True, n_positions=args.n_positions)
        print("B1 known (a B1 map) | B1 unknown (estimated from the fingerprint):")
        header += f" | {'B1 unknown: T1':>14s} {'T2':>6s} {'√CRB·M0/(σB1)':>14s} {'√CRB B1':>8s}"
    print(header)
    for i, n in enumerate(names):
        line = (f"{n:8s} {t1[i]:8.0f} {t2[i]:8.0f} {r.std[i, 1]:9.2f} {r.std[i, 2]:9.2f} "
                f"{r.relative_std[i, 1]:14.2f} {r.relative_std[i, 2]:14.2f}")
        if args.estimate_b1:
            line += (f" | {u.relative_std[i, 1]:14.2f} {u.relative_std[i, 2]:6.2f} {u.relative_std[i, 3]:14.2f} "
                     f"{u.std[i, 3]:8.4f}")
        print(line)
    cost = crb_cost(schedule, b1_values=[args.b1], n_positions=args.n_positions)
    print(f"cost Σ CRB(T1)/T1² + CRB(T2)/T2² at M0 = σ = 1, B1 {args.b1:g} known: {cost:.1f}")
    return 0


def _cmd_design(args: argparse.Namespace) -> int:
    from drone_training import schedule_design

    return schedule_design.run(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from drone_training import train as training

    return training.run(args)


def _cmd_simulate_scan(args: argparse.Namespace) -> int:
    from drone_gadgets.apps import simulate_scan

    return simulate_scan.run(args)


def _cmd_sequence(args: argparse.Namespace) -> int:
    from drone_cli import sequence

    return sequence.run(args)


def _cmd_convert(args: argparse.Namespace) -> int:
    from drone_gadgets.apps import convert

    return convert.run(args)


def _cmd_replay(args: argparse.Namespace) -> int:
    from drone_gadgets.apps import replay

    return replay.run(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from drone_gadgets.apps import server

    return server.run(args)


def _cmd_send(args: argparse.Namespace) -> int:
    from drone_gadgets.apps import client

    return client.run(args)


def _missing_extra(command: str, exc: ImportError) -> Callable[[argparse.ArgumentParser], None]:
    """Arguments of a subcommand whose modules cannot be imported: it then only says what to install."""

    def add(parser: argparse.ArgumentParser) -> None:
        parser.set_defaults(missing=f"drone {command} needs the 'serve' extra: pip install "
                                    f"'drone-gadgetron[serve]' ({exc})")
    return add


def _cmd_experiments(args: argparse.Namespace) -> int:
    from drone_training import experiments

    return experiments.run(args)


def _cmd_compare(args: argparse.Namespace) -> int:
    """Default schedule → paper dictionary → noisy WM/GM/CSF fingerprints → the shipped network and
    dictionary matching, next to the Cramér–Rao bound."""
    import torch

    from drone_core.crb import BRAIN_TISSUES_1P5T, crb
    from drone_core.dictionary import Dictionary, paper_grid
    from drone_core.epg import simulate
    from drone_core.matching import Matcher
    from drone_core.model import default_model
    from drone_core.noise import add_noise
    from drone_core.schedule import default_schedule

    schedule = default_schedule()
    model = default_model()
    print(f"DRONE vs matching — schedule {schedule.name!r}: {schedule.n_frames} frames, TE {schedule.te_ms:g} ms, "
          f"TI {schedule.ti_ms:g} ms, {schedule.duration_ms / 1000:.2f} s; model {model.network.n_parameters():,} "
          f"parameters")
    t0 = time.perf_counter()
    d = Dictionary.generate(schedule, *paper_grid())
    print(f"paper dictionary: {d.describe()} in {time.perf_counter() - t0:.2f} s")
    names = list(BRAIN_TISSUES_1P5T)
    tt1 = np.array([BRAIN_TISSUES_1P5T[n][0] for n in names])
    tt2 = np.array([BRAIN_TISSUES_1P5T[n][1] for n in names])
    clean = simulate(schedule, np.repeat(tt1, args.draws), np.repeat(tt2, args.draws), dtype=torch.float64)
    noisy = add_noise(clean, args.noise, generator=np.random.default_rng(args.seed))
    sigma = args.noise * np.abs(clean).max(axis=1)
    t0 = time.perf_counter()
    nn_t1, nn_t2 = model.predict(noisy)
    t_nn = time.perf_counter() - t0
    t0 = time.perf_counter()
    dm = Matcher(d).match(noisy)
    t_dm = time.perf_counter() - t0
    print(f"{args.draws} noisy fingerprints per tissue ({args.noise:.1%} complex noise, relative to each "
          f"fingerprint's peak); mean ± sd in ms:")
    print(f"{'tissue':7s} {'true T1/T2':>11s} | {'DRONE T1':>14s} {'DRONE T2':>12s} | {'matching T1':>14s} "
          f"{'matching T2':>12s} | {'√CRB T1/T2':>11s}")
    for i, n in enumerate(names):
        sl = slice(i * args.draws, (i + 1) * args.draws)
        bound = crb(schedule, tt1[i], tt2[i], sigma=float(sigma[sl].mean())).std[0]
        print(f"{n:7s} {tt1[i]:5.0f}/{tt2[i]:<5.0f} | {nn_t1[sl].mean():6.0f} ± {nn_t1[sl].std():<5.1f} "
              f"{nn_t2[sl].mean():5.0f} ± {nn_t2[sl].std():<4.1f} | {dm.t1_ms[sl].mean():6.0f} ± "
              f"{dm.t1_ms[sl].std():<5.1f} {dm.t2_ms[sl].mean():5.0f} ± {dm.t2_ms[sl].std():<4.1f} | "
              f"{bound[1]:5.1f}/{bound[2]:<5.1f}")
    print(f"time for {len(noisy)} fingerprints: DRONE {t_nn * 1e3:.1f} ms, matching {t_dm * 1e3:.1f} ms")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from drone_cli import demo

    return demo.run(args)


#: The subcommands, in the order of ``drone --help``.
COMMANDS = ("simulate", "crb", "design-schedule", "train", "simulate-scan", "sequence", "convert", "replay", "serve",
            "send", "experiments", "compare", "demo")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``drone`` argument parser (one subparser per subcommand).

    Args:
        command: build only this subcommand's arguments (the others are listed, without theirs): their
            modules — several import torch, ~1–2 s — are then not imported for a command that needs none
            (``drone replay``, ``drone send``). None: every subcommand's.
    """

    def wanted(name: str) -> bool:
        return command is None or command == name

    p = argparse.ArgumentParser(prog="drone", description="DRONE MR fingerprinting: simulate, train, reconstruct.")
    from drone_core import __version__

    p.add_argument("--version", action="version", version=f"drone {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("simulate", help="simulate an EPG dictionary and write it (safetensors)",
                       description="Simulate an MRF dictionary with the EPG signal model and save it.")
    s.add_argument("--out", type=Path, required=True, help="output file (.safetensors)")
    s.add_argument("--schedule", type=Path, help="schedule JSON (default: the package's epi_mrf_25)")
    s.add_argument("--grid", choices=("paper", "log"), default="paper",
                   help="paper: T1 1:10:5000 ms × T2 1:10:2000 ms, T1 > T2 (79,900 atoms); log: log-spaced")
    s.add_argument("--t1-range", type=float, nargs=2, default=(10.0, 5000.0), metavar=("LO", "HI"),
                   help="T1 range for --grid log, ms")
    s.add_argument("--t2-range", type=float, nargs=2, default=(2.0, 2000.0), metavar=("LO", "HI"),
                   help="T2 range for --grid log, ms")
    s.add_argument("--n-t1", type=int, default=300, help="T1 values for --grid log")
    s.add_argument("--n-t2", type=int, default=300, help="T2 values for --grid log")
    s.add_argument("--b1", type=float, nargs=3, metavar=("LO", "HI", "STEP"), help="add a B1 axis LO:STEP:HI")
    s.add_argument("--fold", type=int, default=1, help="keep every FOLD-th atom (stride sub-sampling)")
    s.add_argument("--chunk-size", type=int, default=32768, help="atoms per EPG chunk (bounds memory)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_simulate)

    c = sub.add_parser("crb", help="Cramér–Rao bounds of a schedule for WM/GM/CSF",
                       description="Print √CRB of T1 and T2 (M0 a nuisance parameter) for the paper's tissues.")
    c.add_argument("--schedule", type=Path, help="schedule JSON (default: the package's)")
    c.add_argument("--sigma", type=float, default=1.0, help="noise σ per real channel, in units of M0")
    c.add_argument("--b1", type=float, default=1.0, help="relative B1 of the tissues (default 1)")
    c.add_argument("--estimate-b1", action="store_true",
                   help="also the bounds with B1 a fourth unknown (no B1 map), and the bound on B1")
    c.add_argument("--ideal", action="store_true", help="ignore the schedule's excitation (ideal slice profile)")
    c.add_argument("--n-positions", type=int, default=24, help="slice positions of the profile integral")
    c.set_defaults(func=_cmd_crb)

    g = sub.add_parser("design-schedule", help="design a schedule by minimising the CRB cost",
                       description="Adam with random restarts on flip angles and TRs (drone_training.schedule_design); "
                                   "the slice profile of --schedule's excitation (default: the package's) is in the "
                                   "signal model; --b1-cost designs for B1 estimated from the fingerprint.")
    if wanted("design-schedule"):
        from drone_training.schedule_design import add_arguments as add_design_arguments

        add_design_arguments(g)
    g.set_defaults(func=_cmd_design)

    t = sub.add_parser("train", help="train a DRONE network from EPG simulations",
                       description="Train the DRONE MLP (paper defaults) and write model.safetensors, loss_curve.png, "
                                   "scatter.png and summary.json. For data parallel training use "
                                   "`torchrun --nproc_per_node N -m drone_training.train` with the same options.")
    if wanted("train"):
        from drone_training.train import add_train_arguments

        add_train_arguments(t)
    t.set_defaults(func=_cmd_train)

    ss = sub.add_parser("simulate-scan", help="simulate a phantom MRF scan as an ISMRMRD .h5 file, with its true maps",
                        description="Brain (MNI152) or ISMRM/NIST phantom → EPG frames (+ noise) → ISMRMRD .h5 "
                                    "for replay or Gadgetron.")
    if wanted("simulate-scan"):
        from drone_gadgets.apps.simulate_scan import add_arguments as add_scan_arguments

        add_scan_arguments(ss)
    ss.set_defaults(func=_cmd_simulate_scan)

    sq = sub.add_parser("sequence", help="write the EPI-MRF sequence of a schedule as a Pulseq file (.seq)",
                        description="The sequence the signal model describes (adiabatic inversion, TI, the schedule's "
                                    "slice-selective pulse, single-shot GRAPPA EPI with navigators, rewinders and one "
                                    "constant spoiler per TR, an ACS reference), checked against the gradient system; "
                                    "a schedule it cannot run is refused with the minimum TE/TR/TI it needs.")
    if wanted("sequence"):
        from drone_cli.sequence import add_arguments as add_sequence_arguments

        add_sequence_arguments(sq)
    sq.set_defaults(func=_cmd_sequence)

    cv = sub.add_parser("convert", help="a scanner's raw data (Siemens twix) of a Pulseq acquisition as ISMRMRD raw",
                        description="Match every ADC of the .seq that ran with a readout of the twix file: lines from "
                                    "the phase-encode moment (or the LIN label), reverse lines from the readout's "
                                    "sign, navigators/ACS/noise from the labels, the EPI readout into the header; "
                                    "--reference: a no-phase-encode scan's readouts as the odd/even navigators.")
    if wanted("convert"):
        from drone_gadgets.apps.convert import add_arguments as add_convert_arguments

        add_convert_arguments(cv)
    cv.set_defaults(func=_cmd_convert)

    r = sub.add_parser("replay", help="replay an ISMRMRD .h5 through the drone_mrf gadget as Gadgetron runs it",
                       description="Stream IN.h5's image frames through `python -m gadgetron … drone_gadgets.gadget "
                                   "drone_mrf` and write the T1/T2/M0 maps to OUT.h5 (/<group>/image_<series>), "
                                   "optionally PNG/NIfTI.")
    if wanted("replay"):
        from drone_gadgets.apps.replay import add_arguments as add_replay_arguments

        add_replay_arguments(r)
    r.set_defaults(func=_cmd_replay)

    sv = sub.add_parser("serve", help="a standing reconstruction server for ISMRMRD stream clients (port 9002)",
                        description="Serve MRD clients (drone send, python-ismrmrd-server's client, FIRE): each "
                                    "connection's frames go through the drone_mrf gadget's stages and its T1/T2/M0 "
                                    "maps go back. Stops cleanly on SIGTERM.")
    if wanted("serve"):
        try:
            from drone_gadgets.apps.server import add_arguments as add_serve_arguments
        except ImportError as exc:
            add_serve_arguments = _missing_extra("serve", exc)
        add_serve_arguments(sv)
    sv.set_defaults(func=_cmd_serve)

    sd = sub.add_parser("send", help="send an ISMRMRD .h5's frames to a reconstruction server, write the maps",
                        description="The client of `drone serve`: CONFIG, HEADER, the images of IN.h5, CLOSE; the "
                                    "maps it returns go to OUT.h5 (/<group>/image_<series>), optionally PNG/NIfTI.")
    if wanted("send"):
        try:
            from drone_gadgets.apps.client import add_arguments as add_send_arguments
        except ImportError as exc:
            add_send_arguments = _missing_extra("send", exc)
        add_send_arguments(sd)
    sd.set_defaults(func=_cmd_send)

    ex = sub.add_parser("experiments", help="reproduce the DRONE paper's experiments (figures + JSON)",
                        description="Run one of the paper's experiments (or all) and write its PNG figures and a "
                                    "JSON of numbers next to the paper's; --quick runs the small seeded variant.")
    if wanted("experiments"):
        from drone_training.experiments import add_arguments as add_experiment_arguments

        add_experiment_arguments(ex)
    ex.set_defaults(func=_cmd_experiments)

    c2 = sub.add_parser("compare", help="DRONE vs dictionary matching vs the Cramér–Rao bound on tissue fingerprints",
                        description="Default schedule → paper dictionary → noisy WM/GM/CSF fingerprints → DRONE and "
                                    "matching, next to √CRB.")
    c2.add_argument("--noise", type=float, default=0.01, help="noise level, fraction of each fingerprint's peak")
    c2.add_argument("--draws", type=int, default=200, help="noisy fingerprints per tissue")
    c2.add_argument("--seed", type=int, default=0)
    c2.set_defaults(func=_cmd_compare)

    d = sub.add_parser("demo", help="simulate a brain scan, replay it through the gadget, compare with the truth",
                       description="The product end to end: brain phantom under a 3 T-like B1 field → ISMRMRD scan "
                                   "with its B1 map → the drone_mrf gadget over loopback with the shipped model, with "
                                   "the B1 map (b1=stream) and without (b1=none) → maps, per-tissue accuracy side by "
                                   "side and figures.")
    if wanted("demo"):
        from drone_cli.demo import add_arguments as add_demo_arguments

        add_demo_arguments(d)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drone`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(words)
    func: Callable[[argparse.Namespace], int] = args.func
    if getattr(args, "missing", None):
        print(args.missing, file=sys.stderr)
        return 2
    from drone_core.hardware import keep_freed_memory

    keep_freed_memory()  # every command reconstructs, trains or simulates: reuse freed blocks (drone_core.hardware)
    try:
        return func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"drone {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
