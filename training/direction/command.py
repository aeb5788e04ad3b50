"""`deghost train direction`: learn a direction (learn.py) or measure direction files (entanglement.py)."""

from __future__ import annotations

import argparse
import json

from deghost.attributes import class_names
from deghost.files import atomic_write_bytes
from deghost.runtime.directions import direction_class, load_direction

from . import entanglement
from .learn import DirectionJob, learn_direction
from .samples import collect
from .setup import Sources, open_parts, resolve_target


def run_direction_command(args: argparse.Namespace) -> int:
    if (args.attribute is None) == (args.measure is None):
        raise ValueError("give --attribute NAME to learn a direction, or --measure NPY... to measure direction files")
    if args.checkpoints is None and args.random_init is None and not (args.stylegan2 and args.diffcam):
        raise ValueError("say where the weights come from: --checkpoints DIR (official or your own trained files), "
                         "--stylegan2 FILE with --diffcam FILE, or --random-init SEED (untrained)")
    if args.attribute is not None:  # names checked before minutes of loading weights
        target = resolve_target(args.attribute, args.class_index)
        keep = tuple(resolve_target(name) for name in args.keep)
        if target.class_index in {k.class_index for k in keep}:
            raise ValueError(f"--keep names {target.label} itself: a direction cannot keep its own attribute "
                             "unchanged")
    sources = Sources(args.checkpoints, args.random_init, args.stylegan2, args.diffcam, args.preset, args.engines,
                      args.backend, args.device, None if args.precision == "auto" else args.precision, args.threads)
    parts = open_parts(sources, args.space, args.truncation, args.seed, args.samples_dir or args.out / "samples")
    untrained = parts.weights.untrained
    if args.measure is not None:
        return _measure(args, parts, untrained)
    job = DirectionJob(target, keep, args.samples, args.ratio, alpha=args.alpha,
                       entanglement_samples=args.entanglement_samples, batch_size=args.batch_size)
    learned = learn_direction(job, parts.sampler, parts.scorer, parts.store, args.out, args.name or target.label,
                              untrained, args.overwrite, progress=not args.quiet)
    print(learned.table)
    print(f"wrote {learned.path} and {learned.path.with_suffix('.json').name}"
          + (" (UNTRAINED weights: plumbing only)" if untrained else ""))
    return 0


def _measure(args: argparse.Namespace, parts, untrained: bool) -> int:
    written = [args.out / "entanglement.md", args.out / "entanglement.json"]
    if any(path.exists() for path in written) and not args.overwrite:
        raise FileExistsError(f"{written[0]} exists; give another --out, or --overwrite to replace it")
    n_latent = parts.sampler.n_latent
    directions = {path.stem: load_direction(path, n_latent) for path in args.measure}
    classes = {direction_class(path) for path in args.measure}
    target = classes.pop() if len(classes) == 1 else None  # one attribute measured: mark its row
    latents, scores = collect(parts.store, parts.sampler, parts.scorer, args.entanglement_samples, args.batch_size,
                              progress=not args.quiet)
    changes = entanglement.measure(parts.scorer, parts.sampler.wplus(latents), scores, directions, args.alpha,
                                   args.batch_size)
    names = class_names(parts.scorer.n_classes)
    table = entanglement.table(changes, names, target, args.alpha, len(latents), untrained)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"alpha": args.alpha, "samples": len(latents), "classes": names, "untrained": untrained,
              "directions": {label: change.as_dict() for label, change in changes.items()}}
    atomic_write_bytes(written[0], table.encode())
    atomic_write_bytes(written[1], (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {written[0]} and {written[1].name}")
    return 0
