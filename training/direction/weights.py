"""The generator and the classifier a direction is learned from: the official checkpoints, the project's own
trained ones (same file names: `train psp` writes psp_ffhq_encode.pt, `train diffcam` diff_cam_weight.pt, `train
chain` both into its checkpoints/ folder), a `train stylegan2` checkpoint, or seeded random weights (untrained) —
the same networks `deghost build` exports from the same inputs, so the exported graphs can do the rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deghost.files import sha256_of
from deghost.manifest import untrained_label
from deghost.presets import Preset

MEAN_LATENT_SAMPLES = 4096  # z draws averaged into w̄ where the checkpoint stores none (rosinality's default)


@dataclass
class DirectionWeights:
    generator: object  # training.models.stylegan2.Generator
    classifier: object  # training.models.diffcam.DiffCam
    mean_w: np.ndarray  # [512] w̄, the truncation centre and the reference face
    generator_source: str  # "sha256:<file>" or "untrained: seed N", as the build records it
    classifier_source: str

    @property
    def untrained(self) -> bool:
        return any(s.startswith("untrained") for s in (self.generator_source, self.classifier_source))

    def mapping(self, z: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.generator.mapping(torch.from_numpy(z)).numpy()


def load_weights(preset: Preset, checkpoints: Path | None = None, random_init: int | None = None,
                 stylegan2: Path | None = None, diffcam: Path | None = None) -> DirectionWeights:
    """From `checkpoints` (psp_ffhq_encode.pt's generator, diff_cam_weight.pt), each file replaceable by
    `stylegan2` / `diffcam`, or from `random_init` (seeded, untrained: zoo.build, as the build)."""
    import torch

    from deghost.training import checkpoints as files
    from deghost.training.models import zoo
    from deghost.training.train_diffcam import WEIGHTS_FILE
    from deghost.training.train_psp import PSP_FILE

    generator_file = stylegan2 or (checkpoints / PSP_FILE if checkpoints else None)
    classifier_file = diffcam or (checkpoints / WEIGHTS_FILE if checkpoints else None)
    if random_init is not None:
        generator = classifier = None
        if generator_file is None:
            generator = zoo.build("generator", preset, random_init)
            mean_w = generator.mean_latent(MEAN_LATENT_SAMPLES, torch.Generator().manual_seed(random_init))[0]
        if classifier_file is None:
            classifier = zoo.build("diffcam", preset, random_init)
    elif generator_file is None or classifier_file is None:
        raise FileNotFoundError("give --checkpoints DIR (or --stylegan2 FILE and --diffcam FILE), or --random-init "
                                "SEED for untrained weights")
    for path in (generator_file, classifier_file):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist; pass the checkpoint file (see --help for the names)")
    if generator_file is not None:
        generator, mean_w = _generator(Path(generator_file), preset, stylegan2 is not None)
    if classifier_file is not None:
        classifier = files.load_diffcam(classifier_file, preset.n_classes)

    def source(path: Path | None) -> str:
        return untrained_label(random_init) if path is None else f"sha256:{sha256_of(path)}"

    return DirectionWeights(generator, classifier, np.asarray(mean_w, np.float32).reshape(-1),
                            source(generator_file), source(classifier_file))


def _generator(path: Path, preset: Preset, rosinality: bool):
    """(generator, w̄) of a pSp file (its decoder and latent_avg) or a rosinality StyleGAN2 checkpoint."""
    import torch

    from deghost.training import checkpoints as files

    if not rosinality:
        psp = files.load_psp(path, preset.name)
        return psp.generator, psp.latent_avg[0]
    found = files.load_stylegan2(path, preset.image_size)
    if found.latent_avg is not None:
        return found.generator, found.latent_avg.reshape(-1, preset.style_dim)[0]
    return found.generator, found.generator.mean_latent(MEAN_LATENT_SAMPLES, torch.Generator().manual_seed(0))[0]
