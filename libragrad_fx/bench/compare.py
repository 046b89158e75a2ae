"""``libragrad-fx bench``: run :func:`faithfulness.run_model` on each bundled model (in parallel
processes with ``jobs``), reporting progress per model through a callback, and write the outputs of
:mod:`figures`."""
from __future__ import annotations

import json
import multiprocessing
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import figures
from .faithfulness import Config, Method, ModelResult, config_dict, run_model

__all__ = ["Outputs", "run"]


@dataclass
class Outputs:
    """What a run wrote."""

    directory: Path
    files: list[Path]
    results: list[ModelResult]


def _work(name: str, methods: list[Method], config: Config, queue) -> ModelResult:
    torch.set_num_threads(config.threads)
    return run_model(name, methods, config, progress=lambda *event: queue.put(event))


Progress = Callable[[str, int, int], None]
"""``progress(model, done, total)``: one model's (method, batch) steps done so far."""


def _measure(names: Sequence[str], methods: list[Method], config: Config, jobs: int,
             progress: Progress | None) -> list[ModelResult]:
    def update(name: str, done: int, total: int) -> None:
        if progress is not None:
            progress(name, done, total)

    if jobs <= 1:
        torch.set_num_threads(config.threads)
        return [run_model(n, methods, config, progress=update) for n in names]
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context) as pool:
        queue = manager.Queue()
        futures = [pool.submit(_work, n, methods, config, queue) for n in names]
        while not all(f.done() for f in futures):
            while not queue.empty():
                update(*queue.get())
            time.sleep(0.2)
        while not queue.empty():
            update(*queue.get())
        return [f.result() for f in futures]


def run(names: Sequence[str], methods: list[Method], config: Config, out: Path, *, jobs: int = 1,
        progress: Progress | None = None) -> Outputs:
    """Measure ``methods`` on the bundled models ``names`` and write into ``out`` (created if missing):
    ``results.csv``, ``results.md``, ``deletion_<model>.png``, ``examples_<model>.png``, ``run.json``."""
    from .data import CLASSES

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    results = _measure(names, methods, config, jobs, progress)
    files = [out / "results.csv", out / "results.md", out / "run.json"]
    figures.write_csv([row for r in results for row in r.rows], files[0])
    notes = [note for r in results for note in r.notes]
    files[1].write_text(_preamble(config, names) + figures.markdown(results) + "\nNotes:\n\n"
                        + "".join(f"- {n}\n" for n in notes))
    for r in results:
        for kind, plot in (("deletion", figures.plot_deletion), ("examples", None)):
            path = out / f"{kind}_{r.model}.png"
            if plot is not None:
                plot(r, path)
            else:
                figures.plot_examples(r, path, _labels(r.model, CLASSES))
            if path.exists():
                files.append(path)
    run_info = {"config": config_dict(config), "models": list(names), "methods": [m.name for m in methods],
                "jobs": jobs, "seconds": round(time.perf_counter() - start, 1),
                "seconds_per_model": {r.model: round(r.seconds, 1) for r in results},
                "torch": torch.__version__, "machine": platform.machine(), "notes": notes}
    files[2].write_text(json.dumps(run_info, indent=2) + "\n")
    return Outputs(out, files, results)


def _labels(model: str, classes: Sequence[str]) -> Sequence[str]:
    """How the example grid names a target: the class, or for a CLIP its prompt."""
    from . import models

    if model in models.names("clip"):
        from .captions import class_prompts

        return [f"'{p}'" for p in class_prompts()]
    return classes


def _preamble(config: Config, names: Sequence[str] = ()) -> str:
    from . import models
    from .data import HELDOUT_SEED

    seed = HELDOUT_SEED if config.seed is None else config.seed
    deleted = "zero" if config.baseline == "zero" else "each image's mean colour"
    clips = set(names) & set(models.names("clip"))
    if clips and clips == set(names):
        from .clip_bench import preamble

        return preamble(config)
    text = (f"Faithfulness of vanilla and LibraGrad attributions on the bundled models: {config.n} images per model "
            f"(libragrad_fx.bench.data, seed {seed}); the target is every class present in an image. "
            f"SRG/MIF/LIF: areas under the target's sigmoid probability as {config.patch}x{config.patch} patches are "
            f"replaced by {deleted}, 10% "
            "per step (SRG acc: the same with 'still predicted', logit > 0); AP: segmentation average precision "
            "of the map against the target object's mask (AP patch: of the map summed per patch); Point: pointing "
            "game; Disc: on two-object images, the "
            "share of the map's positive mass per pixel on the target object vs the other object; Compl. err: "
            + ("median |sum(map) - logit| / |logit| for maps meant to add up to the logit. " if config.readout == "logit"
               else "median |sum(map) - p| / |p| against the target's sigmoid probability p, which the maps explain "
                    "(readout prob: the head kept with its ordinary backward, as the reference implementation's "
                    "default readout). ")
            + 
            f"IG: {config.ig_steps} Gauss-Legendre steps from a zero baseline; SmoothGrad: {config.sg_samples} "
            f"samples, noise {config.sg_stdev} of the image range; Gradient and SmoothGrad maps are magnitudes."
            + (f" Rows `<backward>+{config.pixel_rule}`: the same method with the pixel readout `{config.pixel_rule}` "
               "on the layer that reads the image (transform(pixel_rule=...)); token-level maps (CAMs) are the "
               "same with or without it." if config.pixel_rule else "") + "\n\n")
    if clips:
        from .clip_bench import preamble

        text += preamble(config)
    return text


def _read_rows(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in figures.COLUMNS:
            if key not in ("model", "method", "variant", "key"):
                value = row.get(key, "")
                row[key] = float(value) if value not in ("", "nan") else float("nan")
    return rows


def _settings(config: dict) -> dict:
    """A run's recorded config as Config fields (a setting added since the run has its default)."""
    defaults = asdict(Config())
    return {**defaults, **{k: v for k, v in config.items() if k in defaults}}


def _write(into: Path, info: dict, rows: list[dict], notes: list[str], models: list[str]) -> None:
    """Rewrite results.csv, results.md and run.json of the results at ``into``."""
    results = [ModelResult(m, [r for r in rows if r["model"] == m], {}, notes=[]) for m in models]
    config = Config(**_settings(info["config"]))
    text = _preamble(config, models) + figures.markdown(results) + "\nNotes:\n\n" + "".join(f"- {n}\n" for n in notes)
    figures.write_csv(rows, into / "results.csv")
    (into / "results.md").write_text(text)
    info["notes"], info["models"] = notes, models
    (into / "run.json").write_text(json.dumps(info, indent=2) + "\n")


def drop(into: Path, names: Sequence[str]) -> list[Path]:
    """Take models out of the results at ``into`` (a model no longer bundled): their rows, notes,
    timings and figures. Returns the files it rewrote."""
    info = json.loads((into / "run.json").read_text())
    unknown = [n for n in names if n not in info["models"]]
    if unknown:
        raise ValueError(f"{into} has no results for {unknown}; its models: {info['models']}")
    rows = [r for r in _read_rows(into / "results.csv") if r["model"] not in names]
    notes = [n for n in info["notes"] if n.split(":")[0] not in names]
    for n in names:
        info["seconds_per_model"].pop(n, None)
        for kind in ("deletion", "examples"):
            (into / f"{kind}_{n}.png").unlink(missing_ok=True)
    _write(into, info, rows, notes, [m for m in info["models"] if m not in names])
    return [into / "results.csv", into / "results.md", into / "run.json"]


def _same_settings(into: Path, source: Path) -> tuple[dict, dict]:
    """The run.json of both results, refused unless they were measured with the same settings."""
    info, extra = (json.loads((folder / "run.json").read_text()) for folder in (into, source))
    if _settings(info["config"]) != _settings(extra["config"]):
        raise ValueError(f"{source} and {into} were measured with different settings; rerun instead")
    return info, extra


def add_methods(into: Path, source: Path) -> list[Path]:
    """Add to the results at ``into`` the methods ``source`` measured on the same models with the same
    settings (a run with more ``--methods``, e.g. further methods under ``--pixel-rule``): each row joins its
    model's table in method order; a row both have is refused. Returns what it rewrote."""
    from .faithfulness import METHODS
    from .methods import with_pixel_rule

    new = _read_rows(source / "results.csv")
    old = _read_rows(into / "results.csv")
    info, extra = _same_settings(into, source)
    missing = sorted({r["model"] for r in new} - set(info["models"]))
    if missing:
        raise ValueError(f"{into} has no results for {missing}: merge a model's run with compare.merge")
    both = {(r["model"], r["method"], r["variant"]) for r in old} & {(r["model"], r["method"], r["variant"]) for r in new}
    if both:
        raise ValueError(f"{into} already has {sorted(both)[:3]}...: use compare.merge to replace rows")
    rule = info["config"].get("pixel_rule")
    order = {(m.label, m.variant): i for i, m in enumerate(with_pixel_rule(METHODS, rule))}  # the bench's row order
    models = info["models"]
    rows = sorted(old + new, key=lambda r: (models.index(r["model"]), order.get((r["method"], r["variant"]), 1e9)))
    notes = info["notes"] + [n for n in extra["notes"] if n not in info["notes"]]
    for m, seconds in extra["seconds_per_model"].items():
        info["seconds_per_model"][m] = info["seconds_per_model"].get(m, 0.0) + seconds
    info["seconds"] = info.get("seconds", 0.0) + extra.get("seconds", 0.0)
    info["methods"] = list(dict.fromkeys(info.get("methods", []) + extra.get("methods", [])))
    info.setdefault("added", []).append({"from": str(source), "methods": extra.get("methods", [])})
    _write(into, info, rows, notes, models)
    return [into / "results.csv", into / "results.md", into / "run.json"]


def merge(into: Path, source: Path) -> list[Path]:
    """Replace the rows, notes and figures of ``source``'s models in the results at ``into`` (two runs
    with the same settings, e.g. one model re-run after its weights changed). Returns what it rewrote."""
    import shutil

    new = _read_rows(source / "results.csv")
    redone = list(dict.fromkeys(r["model"] for r in new))
    old = [r for r in _read_rows(into / "results.csv") if r["model"] not in redone]
    info, extra = _same_settings(into, source)
    models = list(dict.fromkeys([*info["models"], *redone]))  # a model measured only in ``source`` joins
    rows = sorted(old + new, key=lambda r: models.index(r["model"]))
    notes = [n for n in info["notes"] if n.split(":")[0] not in redone] + extra["notes"]
    info["seconds_per_model"].update(extra["seconds_per_model"])
    info["merged"] = {"from": str(source), "models": redone}
    _write(into, info, rows, notes, models)
    written = [into / "results.csv", into / "results.md", into / "run.json"]
    for m in redone:
        for kind in ("deletion", "examples"):
            png = source / f"{kind}_{m}.png"
            if png.exists():
                shutil.copyfile(png, into / png.name)
                written.append(into / png.name)
    return written
