"""pSp's encoder losses besides L2 and LPIPS: identity (ArcFace) and w-norm (eladrich/pixel2style2pixel
`criteria/id_loss.py`, `criteria/w_norm.py`).

Identity: both images are 256² (the decoder output face-pooled to 256, and the target); the face
region rows 35:223, columns 32:220 (188², FFHQ alignment) is adaptive-average-pooled to 112² and
embedded by the frozen ArcFace; the loss is the mean over the batch of 1 − cos(output, target).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .models.arcface import INPUT_SIZE, ArcFace

# pSp's "interesting region" of an FFHQ-aligned 256² face: rows 35:223, columns 32:220.
FACE_ROWS = (35, 223)
FACE_COLUMNS = (32, 220)
FACE_IMAGE_SIZE = 256


def face_region(images: Tensor) -> Tensor:
    """[B,3,256,256] → the ArcFace input [B,3,112,112]: the face crop, adaptive-average-pooled."""
    assert images.ndim == 4 and images.shape[-2:] == (FACE_IMAGE_SIZE, FACE_IMAGE_SIZE), (
        f"the identity loss crops FFHQ-aligned {FACE_IMAGE_SIZE}² faces, got {list(images.shape)}"
    )
    crop = images[:, :, FACE_ROWS[0] : FACE_ROWS[1], FACE_COLUMNS[0] : FACE_COLUMNS[1]]
    return F.adaptive_avg_pool2d(crop, INPUT_SIZE)


class IdentityLoss(nn.Module):
    """mean_b (1 − ⟨ArcFace(face(output_b)), ArcFace(face(target_b))⟩); ArcFace frozen, in eval mode.

    output, target: [B,3,256,256] in [-1,1]; the gradient flows to `output` only.
    """

    def __init__(self, arcface: ArcFace):
        super().__init__()
        self.arcface = arcface.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> IdentityLoss:
        return self  # ArcFace stays in eval mode (BatchNorm statistics, no dropout)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        target_features = self.arcface(face_region(target)).detach()
        output_features = self.arcface(face_region(output))
        return (1 - (output_features * target_features).sum(1)).mean()


def w_norm_loss(wplus: Tensor, latent_avg: Tensor) -> Tensor:
    """pSp's w-norm (start_from_latent_avg): mean over the batch of ‖w − latent_avg‖ over all layers and
    channels. wplus: [B,L,512]; latent_avg: [L,512]."""
    return (wplus - latent_avg).flatten(1).norm(dim=1).mean()
