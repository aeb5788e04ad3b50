"""A small generator and Diff-CAM-shaped classifier whose class scores are known linear functions of the latent
(the direction tests' planted model), and the sampler, scorer and sample store of a direction job around them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deghost.training.direction.samples import LatentSampler, SampleSettings, SampleStore
from deghost.training.direction.scorers import TorchScorer

STYLE, LAYERS, SIDE, CLASSES = 512, 18, 8, 17
TARGET, KEPT = 7, 16  # eyeglasses, kept: age


class PlantedGenerator(nn.Module):
    """mapping = identity; synthesis: the mean of the W+ rows, through a fixed linear map, as an 8² RGB image."""

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.register_buffer("render", torch.from_numpy(rng.standard_normal((3 * SIDE * SIDE, STYLE)) / 20).float())

    def mapping(self, z):
        return z

    def synthesis(self, wplus):
        return (wplus.mean(1) @ self.render.T).reshape(-1, 3, SIDE, SIDE)


class PlantedClassifier(nn.Module):
    """DiffCam's parts, linear: logits = fc(shared(x) − shared(x̄)) with shared and classifier the identity."""

    def __init__(self, weight: np.ndarray):
        super().__init__()
        self.shared, self.classifier = nn.Identity(), nn.Identity()
        self.fc = nn.Linear(3 * SIDE * SIDE, CLASSES, bias=False)
        self.fc.weight.data = torch.from_numpy(weight).float()

    def logits(self, features):
        return self.fc(features.flatten(1))


def planted(seed: int = 0):
    """(generator, classifier, normals [CLASSES, 512]): class c's score is normals[c]·(w − w̄) in W."""
    generator = PlantedGenerator(seed)
    rng = np.random.default_rng(seed + 1)
    weight = rng.standard_normal((CLASSES, 3 * SIDE * SIDE))
    render = generator.render.double().numpy()
    # Entangle the target with the kept attribute: its score direction is 0.6 the kept one's plus an own part.
    kept = weight[KEPT] @ render
    own = rng.standard_normal(3 * SIDE * SIDE) @ render
    own -= own @ kept / (kept @ kept) * kept
    target = 0.6 * kept / np.linalg.norm(kept) + 0.8 * own / np.linalg.norm(own)  # unit
    weight[TARGET] = np.linalg.lstsq(render.T, target, rcond=None)[0]  # the image weights giving that normal
    return generator, PlantedClassifier(weight), weight @ render


def parts(tmp_path, seed: int = 0, space: str = "w"):
    generator, classifier, normals = planted(seed)
    settings = SampleSettings(space, 1.0, seed, "planted", "test")
    mean_w = np.zeros(STYLE, np.float32)
    sampler = LatentSampler(lambda z: generator.mapping(torch.from_numpy(z)).numpy(), mean_w, LAYERS, settings)
    scorer = TorchScorer(generator, classifier, sampler.mean_wplus, SIDE)
    return sampler, scorer, SampleStore(tmp_path / "samples", settings), normals
