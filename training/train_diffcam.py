"""Diff-CAM classifier training (`deghost train diffcam`), the EOGI recipe.

For each image I: w = E(I) (pSp, frozen), one random direction c of the N given, I' = G(w) and
T = G(w + α·n̂_c) (generator frozen); the classifier learns c from shared(T₂₅₆) − shared(I'₂₅₆)
with N-way cross-entropy. Adam 1e-4 (0.9, 0.99), cosine annealing with warm restarts. The CAM of
the trained classifier is the editing mask (docs/design.md §1).

Under torchrun, N processes with batch b equal one with batch N·b: the directions are drawn for the
global batch from a stream seeded by (seed, step), each process keeping its rows, and the classifier's
BatchNorm uses the global batch's statistics (distributed.wrap).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deghost.stages import CHECKPOINT_FILES

from . import distributed
from .config import DiffCamConfig
from .data import CheckedImageFolder, report_skipped
from .loop import RunLog, batch_stream, check_finite, step_stream
from .models.diffcam import DiffCam
from .models.psp import add_latent_avg
from .resume import atomic_save, resume_or_seed, write_checkpoint

# The name `deghost export --checkpoints DIR` looks for (a bare state_dict, as EOGI publishes it).
WEIGHTS_FILE = CHECKPOINT_FILES["diffcam"]  # the name `deghost build --checkpoints DIR` looks for


class PSPInversion(nn.Module):
    """pSp encoder + latent_avg: image [B,3,256,256] in [-1,1] → w [B,n_latent,512]."""

    def __init__(self, encoder: nn.Module, latent_avg: Tensor):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("latent_avg", latent_avg)

    def forward(self, image: Tensor) -> Tensor:
        return add_latent_avg(self.encoder(image), self.latent_avg)


def train_diffcam(config: DiffCamConfig, encoder: nn.Module, generator: nn.Module, directions: Tensor,
                  classes: Sequence[int] | None = None, classifier: DiffCam | None = None) -> Path:
    """Train the Diff-CAM classifier; returns the last checkpoint written.

    encoder: image [B,3,E,E] in [-1,1] → w [B,n_latent,512] (latent_avg included), E = config.encoder_size.
    generator: w [B,n_latent,512] → image [B,3,S,S]; has `.size` = S.
    directions: [N,n_latent,512], each of Frobenius norm 1 (runtime.directions.load_direction).
    classes: the classifier class of each direction (default 0 … N−1).
    classifier: the DiffCam to train, e.g. EOGI's weights to fine-tune (default: new, seeded, max(classes)+1 classes).
    Both frozen networks stay in eval mode and get no gradient.
    """
    classes = list(range(len(directions))) if classes is None else list(classes)
    if len(classes) != len(directions) or not directions.ndim == 3:
        raise ValueError(f"give one class per direction [N,n_latent,512]: {len(classes)} classes for directions "
                         f"{list(directions.shape)}")
    if classifier is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            classifier = DiffCam(n_classes=max(classes) + 1)
    if max(classes) >= classifier.n_classes:
        raise ValueError(f"class {max(classes)} does not exist in a {classifier.n_classes}-class classifier")
    return distributed.run(_train, config, encoder, generator, directions, classes, classifier)


def _train(config, encoder, generator, directions, classes, classifier, context) -> Path:
    run, device = Path(config.out), context.device
    encoder, generator = (m.eval().requires_grad_(False).to(device) for m in (encoder, generator))
    directions, labels = directions.float().to(device), torch.tensor(classes, device=device)
    classifier = classifier.train().to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), config.lr, betas=tuple(config.betas))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, config.restart_every,
                                                                     config.restart_mult)
    parts = {"model": classifier, "optimizer": optimizer, "scheduler": scheduler}
    start, last = resume_or_seed(config, parts, context)
    ddp_classifier = distributed.wrap(classifier, context)
    dataset = CheckedImageFolder(config.data, generator.size, progress=context.is_main)
    if context.is_main:
        report_skipped(dataset, run)
    end = min(config.iterations, config.stop_at or config.iterations)
    with RunLog(run / "log.csv", ("step", "lr", "loss", "accuracy"), start, config.iterations, context.is_main) as log:
        batches = batch_stream(dataset, config.batch_size, context, start, config.seed, config.workers)
        for step in range(start, end):
            images = next(batches).to(device, non_blocking=True)
            drawn = draw_directions(len(classes), config.batch_size, config.seed, step, context)
            recon, edit = edit_pairs(encoder, generator, directions[drawn], images, config)
            logits = ddp_classifier(recon, edit)
            loss = F.cross_entropy(logits, labels[drawn])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            accuracy = (logits.detach().argmax(1) == labels[drawn]).float().mean()
            values = check_finite({"loss": loss.detach(), "accuracy": accuracy}, step + 1, last, context)
            log.update(step + 1, {"lr": scheduler.get_last_lr()[0], **values}, (step + 1) % config.log_every == 0)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
                last = write_checkpoint(run / "checkpoints", step + 1, parts, config, context)
    if context.is_main:
        atomic_save(classifier.state_dict(), run / WEIGHTS_FILE)
    return last


def draw_directions(count: int, batch_size: int, seed: int, step: int, context: distributed.Context) -> Tensor:
    """Which of `count` directions edits each of this process's `batch_size` images at `step` (indices [b])."""
    drawn = torch.randint(count, (batch_size * context.world_size,), generator=step_stream(seed, step))
    return distributed.own_rows(drawn, context).to(context.device)


@torch.no_grad()
def edit_pairs(encoder: nn.Module, generator: nn.Module, directions: Tensor, images: Tensor,
               config: DiffCamConfig) -> tuple[Tensor, Tensor]:
    """images [B,3,S,S] in [-1,1], unit directions [B,n_latent,512] (one per image)
    → (I', T) at the classifier's side: [B,3,m,m] each, m = config.mask_size."""
    w = encoder(_resize(images, config.encoder_size))
    rendered = generator(torch.cat([w, w + config.alpha * directions]))
    return _resize(rendered, config.mask_size).chunk(2)


def _resize(images: Tensor, side: int) -> Tensor:
    """[B,3,H,W] → [B,3,side,side], area-averaged (the pipeline's downsampling)."""
    return images if images.shape[-1] == side else F.interpolate(images, size=(side, side), mode="area")
