"""From the command line's choices to the parts of a job: weights, sampler, scorer, sample store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deghost.attributes import KNOWN_ATTRIBUTES, find_attribute
from deghost.presets import DEFAULT_PRESET, get_preset

from .learn import Target
from .samples import LatentSampler, SampleSettings, SampleStore
from .scorers import EngineScorer, TorchScorer
from .weights import DirectionWeights, load_weights


@dataclass(frozen=True)
class Sources:
    checkpoints: Path | None = None
    random_init: int | None = None
    stylegan2: Path | None = None
    diffcam: Path | None = None
    preset: str | None = None  # default: the engines' preset, else DEFAULT_PRESET
    engines: Path | None = None  # render and score through these exported graphs instead of PyTorch
    backend: str = "auto"
    device: str = "auto"
    precision: str | None = None
    threads: int | None = None


@dataclass
class Parts:
    weights: DirectionWeights
    sampler: LatentSampler
    scorer: object
    store: SampleStore


def resolve_target(name: str, class_index: int | None = None) -> Target:
    """A known attribute by deghost's or CelebA's name, "7"-style class numbers, or any name with `class_index`."""
    attribute = find_attribute(name)
    if class_index is not None:
        return Target(attribute.name if attribute else name, class_index)
    if attribute is not None:
        return Target(attribute.name, attribute.class_index)
    if name.strip().isdigit():
        return Target(f"class {int(name)}", int(name))
    known = ", ".join(f"{a.name} ({a.celeba_name})" for a in KNOWN_ATTRIBUTES.values())
    raise ValueError(f"unknown attribute {name!r}: give one of {known}, a classifier class number, or name its "
                     "class with --class-index N")


def open_parts(sources: Sources, space: str, truncation: float, seed: int, samples_dir: Path) -> Parts:
    pipeline = None
    if sources.engines is not None:
        from deghost.runtime.pipeline import Pipeline

        pipeline = Pipeline.load(sources.engines, sources.backend, sources.threads, sources.precision,
                                 device=sources.device)
        if sources.preset not in (None, pipeline.preset.name):
            raise ValueError(f"--engines {sources.engines} holds preset {pipeline.preset.name}, not --preset "
                             f"{sources.preset}; drop --preset or give engines of that preset")
    preset = pipeline.preset if pipeline else get_preset(sources.preset or DEFAULT_PRESET)
    weights = load_weights(preset, sources.checkpoints, sources.random_init, sources.stylegan2, sources.diffcam)
    settings = SampleSettings(space, truncation, seed,
                              f"generator {weights.generator_source}; classifier {weights.classifier_source}",
                              preset.name)
    sampler = LatentSampler(weights.mapping, weights.mean_w, preset.n_latent, settings)
    if pipeline is not None:
        _check_same_weights(pipeline, weights)
        scorer = EngineScorer(pipeline, sampler.mean_wplus)
    else:
        scorer = TorchScorer(weights.generator, weights.classifier, sampler.mean_wplus, preset.mask_size)
    return Parts(weights, sampler, scorer, SampleStore(samples_dir, settings))


def _check_same_weights(pipeline, weights: DirectionWeights) -> None:
    """The engines must render with the generator whose mapping draws the latents, and score with the classifier
    the job names: the build records each stage's source the same way."""
    for stage, wanted in (("generator", weights.generator_source), ("diffcam", weights.classifier_source)):
        artifact = pipeline.manifest.find(stage, "onnx", "fp32")
        if artifact is None or artifact.source != wanted:
            found = "no such stage" if artifact is None else artifact.source
            raise ValueError(f"--engines {pipeline.manifest.folder}: its {stage} was built from {found}, but this "
                             f"job's {stage} weights are {wanted}; build the engines from the same weights (same "
                             "--checkpoints or --random-init) or leave out --engines to run in PyTorch")
