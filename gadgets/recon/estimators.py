"""The estimator a gadget uses, built from its settings: the DRONE network or dictionary matching.

An estimator is a :class:`drone_core.model.DroneModel` (``estimator=network``) or a
:class:`drone_core.matching.Matcher` (``estimator=dictionary``); both know their schedule
(``.schedule``) and frame count (``.n_frames``), which the stream is checked against.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Union

import numpy as np
import torch

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.hardware import keep_freed_memory
from drone_core.matching import Matcher
from drone_core.model import DroneModel, default_model
from drone_core.reconstruct import OPTIONAL_MAPS
from drone_core.schedule import Schedule

from .errors import SettingsError
from .settings import UNCERTAINTY_MAPS, GadgetSettings

__all__ = ["Estimator", "b1_capability", "b1_range", "build_estimator", "check_map_support", "describe_estimator",
           "estimator_kind", "estimator_schedule", "resolve_device", "warm_up"]

log = logging.getLogger(__name__)

#: What :func:`drone_core.reconstruct.reconstruct` accepts.
Estimator = Union[DroneModel, Matcher]


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when available else ``"cpu"``; a CUDA device without CUDA is refused.

    Raises:
        SettingsError: naming the ``device`` property.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SettingsError(f"property 'device': {device!r} requested but CUDA is not available "
                                f"(torch {torch.__version__}); use 'auto' or 'cpu'")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise SettingsError(f"property 'device': {device!r} requested but only {torch.cuda.device_count()} "
                                f"CUDA device(s) exist")
    return device


def _load_model(settings: GadgetSettings, device: str) -> DroneModel:
    try:
        if settings.model == "default":
            return default_model(device=device)
        return DroneModel.load(settings.model, device=device)
    except (ValueError, FileNotFoundError) as exc:
        raise SettingsError(f"property 'model': cannot load {settings.model!r}: {exc}") from None


def build_estimator(settings: GadgetSettings) -> Estimator:
    """The estimator of ``settings``, on its device, checked against ``frames_per_fingerprint``.

    Raises:
        SettingsError: a model or dictionary that cannot be loaded, an unavailable device, or a
            frame count that differs from ``frames_per_fingerprint``.
    """
    device = resolve_device(settings.device)
    start = time.perf_counter()
    keep_freed_memory()  # a process that reconstructs slice after slice: reuse freed blocks (drone_core.hardware)
    estimator: Estimator
    if settings.estimator == "network":
        if settings.dictionary:
            log.warning("property 'dictionary' (%r) is ignored with estimator=network", settings.dictionary)
        estimator = _load_model(settings, device)
    else:
        if settings.dictionary:
            try:
                dictionary = Dictionary.load(settings.dictionary)
            except (ValueError, OSError) as exc:
                raise SettingsError(f"property 'dictionary': cannot load {settings.dictionary!r}: {exc}") from None
        else:
            schedule = _load_model(settings, "cpu").schedule
            log.info("simulating the paper-grid dictionary for schedule %r (set property 'dictionary' to a "
                     "saved dictionary to skip this)", schedule.name)
            dictionary = Dictionary.generate(schedule, *paper_grid(), device=device)
        estimator = Matcher(dictionary, device=device)
    n = estimator.n_frames
    if settings.frames_per_fingerprint is not None and settings.frames_per_fingerprint != n:
        raise SettingsError(f"property 'frames_per_fingerprint': {settings.frames_per_fingerprint} but the "
                            f"{describe_estimator(estimator)} has {n} frames per fingerprint")
    warm_up(estimator, optional_maps=any(name in settings.maps for name in OPTIONAL_MAPS))
    log.info("estimator: %s on %s (%.2f s to prepare)", describe_estimator(estimator), device,
             time.perf_counter() - start)
    return estimator


def check_map_support(settings: GadgetSettings, estimator: Any) -> None:
    """Refuse maps the estimator cannot give: ``t1_sd``/``t2_sd`` need a DRONE model with an uncertainty table.

    Raises:
        SettingsError: naming the ``maps`` property and what would serve it.
    """
    wanted = [name for name in settings.maps if name in UNCERTAINTY_MAPS]
    if wanted and getattr(estimator, "uncertainty_table", None) is None:
        what = ("dictionary matching has none" if isinstance(estimator, Matcher)
                else f"the model {settings.model!r} has none")
        raise SettingsError(f"property 'maps': {', '.join(wanted)} need a DRONE network model with an uncertainty "
                            f"table, and {what}; use estimator=network with the shipped model, or add a table to "
                            f"the model file (DroneModel.load(path).with_uncertainty_table().save(path), seconds)")


def warm_up(estimator: Estimator, *, optional_maps: bool = False) -> None:
    """Run the estimator once on a tiny synthetic slice, so that the first real slice does not pay the
    libraries' one-time set-up (thread pools, kernel dispatch, the model's folded layers and M0 table on
    the device): done while the scan's first frames are still being acquired. ``optional_maps``: also the
    atoms' simulation that the t1_sd/t2_sd/fit maps use (its slice-profile table: ≈ 0.3 s once)."""
    from drone_core.reconstruct import reconstruct

    rng = np.random.default_rng(0)
    frames = rng.uniform(0.5, 1.0, (estimator.n_frames, 4, 4)).astype(np.float32)
    reconstruct(frames, estimator)
    if optional_maps and getattr(estimator, "schedule", None) is not None:
        from drone_core.goodness_of_fit import residual_norms

        residual_norms(estimator.schedule, frames.reshape(estimator.n_frames, -1).T[:2], np.array([800.0, 1200.0]),
                       np.array([60.0, 90.0]))


def estimator_schedule(estimator: Any) -> Schedule:
    """The schedule an estimator was made for."""
    schedule = getattr(estimator, "schedule", None)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"estimator {type(estimator).__name__} has no schedule")
    return schedule


def estimator_kind(estimator: Any) -> str:
    """``"the DRONE network"`` or ``"the dictionary (<n> atoms)"``, for messages."""
    if isinstance(estimator, Matcher):
        return f"the dictionary ({estimator.n_atoms} atoms)"
    return "the DRONE network"


def b1_range(estimator: Any) -> tuple[float, float] | None:
    """The relative-B1 range ``(low, high)`` an estimator covers (a model's ``b1.range``, a B1 axis), or None."""
    if isinstance(estimator, Matcher):
        b1 = getattr(estimator, "b1", None)
        if b1 is None or not np.size(b1):
            return None
        return float(np.min(b1)), float(np.max(b1))
    use = getattr(estimator, "b1", None)
    if use is not None and (getattr(use, "input", False) or getattr(use, "output", False)):
        lo, hi = use.range
        return float(lo), float(hi)
    return None


def b1_capability(estimator: Any) -> str:
    """What an estimator does with B1, as a phrase for messages (``"takes a B1 map (B1 0.5–1.5)"`` …)."""
    span = b1_range(estimator)
    text = "" if span is None else f" (B1 {span[0]:g}–{span[1]:g})"
    if isinstance(estimator, Matcher):
        return f"has a B1 axis{text} and takes a B1 map" if span is not None else "has no B1 axis (B1 = 1)"
    use = getattr(estimator, "b1", None)
    if getattr(use, "input", False):
        return f"takes a B1 map{text}"
    if getattr(use, "output", False):
        return f"estimates B1 from the fingerprints{text} and takes no B1 map"
    return "was trained at B1 = 1 (no B1 input or output)"


def describe_estimator(estimator: Any) -> str:
    """A short description naming the estimator kind and its schedule, for messages and meta."""
    schedule = getattr(estimator, "schedule", None)
    name = schedule.name if isinstance(schedule, Schedule) else "?"
    if isinstance(estimator, Matcher):
        return f"dictionary matching ({estimator.n_atoms} atoms, schedule {name!r})"
    return f"DRONE network (schedule {name!r})"
