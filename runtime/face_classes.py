"""The face parser's classes (BiSeNet trained on CelebAMask-HQ, face-parsing.PyTorch): one table for the
Poisson suppressor's face mask and the paste-back region that keeps occluders.

    0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 eye_g, 7 l_ear, 8 r_ear, 9 ear_r,
    10 nose, 11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 neck_l, 16 cloth, 17 hair, 18 hat

CelebAMask-HQ has no class for what covers a face: its labels are composed from one mask per part, so a
hand or a microphone in front of the face lies in no part's mask and is background (0). Whatever is not
the person's own head is an occluder to the paste. How reliably BiSeNet finds a hand is its training
data's matter: CelebA-HQ has few occlusions (FaceOcc, Yin & Chen 2022, labelled a dedicated set for
that reason, and FaceFusion runs a separate occluder model).
"""

from __future__ import annotations

import numpy as np

# Inside the face contour except the eyes: the Poisson suppressor's mask (docs/design.md §1).
FACE_CLASSES = (1, 2, 3, 10, 11, 12, 13)
# The head's own parts an edit may repaint (an older face greys its hair and brows, a beard grows on the
# skin of chin and neck); left out: background (occluders), earrings, necklace, clothes and hats, which
# the generator cannot draw and the source keeps.
HEAD_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 17)


def head_region(labels: np.ndarray) -> np.ndarray:
    """Where the parsed crop shows the head itself: int class maps [..., P, P] → float32 {0, 1} of that shape."""
    return np.isin(labels, HEAD_CLASSES).astype(np.float32)
