"""ArcFace IR-SE-50, the face-identity network of pSp's identity loss (TreB1eN/InsightFace_Pytorch,
as eladrich/pixel2style2pixel `models/encoders/model_irse.py` builds it: `Backbone(112, 50, 'ir_se')`).

Key names equal those of pSp's `model_ir_se50.pth`: `input_layer.*`, `body.<unit>.*` (the same IR-SE
units as the pSp encoder's trunk, which pSp initialises from this file) and `output_layer.*`:

    output_layer.0  BatchNorm2d(512)
    output_layer.1  Dropout (no weights; training only)
    output_layer.2  Flatten
    output_layer.3  Linear(512·7·7, 512)
    output_layer.4  BatchNorm1d(512) (affine, as pSp's IDLoss builds it)

face [B,3,112,112] in [-1,1] → embedding [B,512] of unit L2 norm.
"""

from __future__ import annotations

from torch import Tensor, nn

from .psp import STAGE_UNITS, ir_body

INPUT_SIZE = 112
EMBEDDING_DIM = 512
_FINAL_SIDE = INPUT_SIZE // 16  # four stride-2 stages: 112 → 7


class ArcFace(nn.Module):
    """IR(-SE) ArcFace backbone at 112².

    num_layers: 50 (pSp's file), 100 or 152; mode: "ir_se" (pSp's file) or "ir";
    drop_ratio: dropout before the linear layer (inactive in eval mode, which is how the loss uses it).
    """

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", drop_ratio: float = 0.6):
        super().__init__()
        assert num_layers in STAGE_UNITS, f"num_layers must be one of {sorted(STAGE_UNITS)}, got {num_layers}"
        assert mode in ("ir", "ir_se"), f"mode must be 'ir' or 'ir_se', got {mode!r}"
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.body = ir_body(num_layers, mode)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * _FINAL_SIDE * _FINAL_SIDE, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM),
        )

    def forward(self, face: Tensor) -> Tensor:
        """face: [B,3,112,112] in [-1,1] → unit-norm embedding [B,512]."""
        assert face.ndim == 4 and tuple(face.shape[1:]) == (3, INPUT_SIZE, INPUT_SIZE), (
            f"ArcFace input must be [B,3,{INPUT_SIZE},{INPUT_SIZE}], got {list(face.shape)}"
        )
        embedding = self.output_layer(self.body(self.input_layer(face)))
        # the official l2_norm: x / ‖x‖ (no epsilon)
        return embedding / embedding.norm(dim=1, keepdim=True)
