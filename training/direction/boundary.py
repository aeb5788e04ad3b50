"""InterFaceGAN's boundary (genforce/interfacegan utils/manipulator.py train_boundary, project_boundary), in
numpy and torch: no scikit-learn.

The samples with the highest scores are positives and those with the lowest negatives (`ratio` of all samples
each, 0.02 by default as InterFaceGAN); 70 % of each side train a linear SVM, the rest measure its accuracy.
The boundary's unit normal points towards the positives. InterFaceGAN fits sklearn's SVC(kernel='linear'),
hinge loss with C = 1; here the primal squared hinge with C = 1 (LinearSVC's loss) is minimised by L-BFGS,
which is smooth, deterministic and needs only torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATIO = 0.02  # InterFaceGAN's chosen_num_or_ratio: positives (and negatives) per sample
SPLIT = 0.7  # InterFaceGAN's split_ratio: the share of each side the SVM is fitted on


class BoundaryError(ValueError):
    """Too few samples to fit or test a boundary; the message says how many are needed."""


@dataclass(frozen=True)
class Boundary:
    normal: np.ndarray  # [D] float64, unit norm, towards higher scores
    accuracy: float  # on the held-out extremes
    train_count: int  # per side
    held_out_count: int  # per side


def chosen_count(n_samples: int, ratio: float) -> int:
    """Positives (= negatives) kept: `ratio`·N for a ratio in (0, 1], else the number itself; at most N/2."""
    if ratio <= 0:
        raise BoundaryError(f"the ratio of samples kept must be positive; got {ratio}")
    chosen = int(n_samples * ratio) if ratio <= 1 else int(ratio)
    return min(chosen, n_samples // 2)


def train_boundary(latents: np.ndarray, scores: np.ndarray, ratio: float = RATIO, split: float = SPLIT,
                   seed: int = 0) -> Boundary:
    """latents [N, D], scores [N] → the boundary between the most and least confident samples."""
    latents = np.asarray(latents, np.float64).reshape(len(latents), -1)
    scores = np.asarray(scores, np.float64)
    if len(scores) != len(latents):
        raise BoundaryError(f"{len(latents)} latents but {len(scores)} scores")
    chosen = chosen_count(len(scores), ratio)
    train = int(chosen * split)
    if train < 2 or chosen - train < 1:
        raise BoundaryError(
            f"{len(scores)} samples at ratio {ratio} keep {chosen} per side, {train} to train on and {chosen - train} "
            f"to test: too few; give more samples (at least {int(np.ceil(4 / ratio / (1 - split)))} at this ratio) "
            "or a larger ratio"
        )
    order = np.argsort(-scores, kind="stable")
    rng = np.random.default_rng(seed)
    positives = order[:chosen][rng.permutation(chosen)]
    negatives = order[len(order) - chosen:][rng.permutation(chosen)]
    x_train = np.concatenate([latents[positives[:train]], latents[negatives[:train]]])
    y_train = np.concatenate([np.ones(train), -np.ones(train)])
    weight, bias = fit_linear_svm(x_train, y_train)
    x_test = np.concatenate([latents[positives[train:]], latents[negatives[train:]]])
    y_test = np.concatenate([np.ones(chosen - train), -np.ones(chosen - train)])
    accuracy = float(np.mean(np.sign(x_test @ weight + bias) == y_test))
    return Boundary(weight / np.linalg.norm(weight), accuracy, train, chosen - train)


def fit_linear_svm(x: np.ndarray, y: np.ndarray, c: float = 1.0, max_iter: int = 500) -> tuple[np.ndarray, float]:
    """Primal L2-regularised squared-hinge SVM: min ½‖w‖² + C·Σ max(0, 1 − y(w·x + b))² → (w, b); y ∈ {−1, 1}."""
    import torch

    xs, ys = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    weight = torch.zeros(xs.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        margin = torch.clamp(1 - ys * (xs @ weight + bias), min=0)
        loss = 0.5 * weight.dot(weight) + c * margin.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    w = weight.detach().numpy()
    if not np.all(np.isfinite(w)) or not np.any(w):
        raise BoundaryError("the linear SVM found no boundary (its normal is zero or not finite): are the scores "
                            "constant, i.e. does the classifier see no difference between the samples?")
    return w, float(bias.detach())


def project_out(primal: np.ndarray, conditions: list[np.ndarray]) -> np.ndarray:
    """InterFaceGAN's conditional boundary for any number of conditions: the primal normal minus its projection
    on the span of the condition normals, renormalised; orthogonal to every condition (for one or two conditions
    this equals project_boundary's closed form)."""
    primal = np.asarray(primal, np.float64).ravel()
    if not conditions:
        return primal / np.linalg.norm(primal)
    basis, _ = np.linalg.qr(np.stack([np.asarray(c, np.float64).ravel() for c in conditions], axis=1))
    new = primal - basis @ (basis.T @ primal)
    norm = np.linalg.norm(new)
    if norm < 1e-8 * np.linalg.norm(primal):
        raise BoundaryError("the attribute's normal lies in the span of the kept attributes' normals: nothing is "
                            "left to edit once they are projected out; keep fewer attributes")
    return new / norm
