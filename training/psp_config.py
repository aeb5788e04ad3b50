"""`deghost train psp`'s settings (torch-free: the command line is built from them without importing torch).

Defaults are pSp's `ffhq_encode` command (eladrich/pixel2style2pixel README and options/train_options.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from deghost.presets import DEFAULT_PRESET

from .config import RunControl, _option

# pSp's ArcFace file and where it comes from (its README, "IR-SE50 Model").
ARCFACE_FILE = "model_ir_se50.pth"
ARCFACE_URL = "https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view"


@dataclass
class PSPConfig(RunControl):
    """`deghost train psp`: the pSp encoder against a frozen StyleGAN2 generator."""

    data: str = _option("", "folder of aligned face images (recursive); unreadable ones are skipped and listed "
                        "in <out>/skipped.json", required=True)
    stylegan2: str = _option("", "rosinality StyleGAN2 checkpoint (g_ema; its latent_avg if stored) whose size is "
                             "the preset's image size", required=True)
    out: str = _option("runs/psp", "run folder: checkpoints/, psp_ffhq_encode.pt, log.csv, samples/")
    preset: str = _option(DEFAULT_PRESET, "network sizes: ffhq1024 (18 W+ layers) or tiny (256², 14)")
    iterations: int = _option(500_000, "optimizer steps of the whole run (pSp's max_steps)")
    batch_size: int = _option(8, "images per step and process (pSp's ffhq_encode command: 8)")
    optimizer: str = _option("ranger", "ranger (pSp's default: RAdam + Lookahead + gradient centralisation) or "
                             "adam", choices=("ranger", "adam"))
    lr: float = _option(1e-4, "learning rate (pSp's)")
    l2_weight: float = _option(1.0, "weight of the pixel L2 loss (pSp: 1.0)")
    lpips_weight: float = _option(0.8, "weight of LPIPS (AlexNet, v0.1) (pSp: 0.8)")
    id_weight: float = _option(0.1, "weight of the ArcFace identity loss (pSp: 0.1)")
    w_norm_weight: float = _option(0.0, "weight of the w-norm loss ‖w − latent_avg‖ (pSp: 0, off)")
    arcface: str | None = _option(None, f"pSp's {ARCFACE_FILE} (identity loss and the encoder "
                                  f"trunk's start) from {ARCFACE_URL}", type=str)
    lpips_alexnet: str | None = _option(None, "torchvision alexnet-owt-7be5be79.pth for LPIPS", type=str)
    lpips_linear: str | None = _option(None, "LPIPS v0.1 alex.pth linear layers", type=str)
    id_loss: bool = _option(True, "the identity loss; --no-id-loss trains WITHOUT it (no ArcFace file; the encoder "
                            "trunk starts random): not the paper's recipe, recorded in the checkpoint's opts")
    lpips: bool = _option(True, "LPIPS; --no-lpips trains WITHOUT it (no AlexNet files): not the paper's recipe, "
                          "recorded in the checkpoint's opts")
    flip: bool = _option(True, "random horizontal flips (pSp's RandomHorizontalFlip(0.5))")
    seed: int = _option(0, "seed of the style blocks' initial weights, the data order and the flips")
    sample_every: int = _option(1000, "write a sample grid (target | output) every this many steps")
