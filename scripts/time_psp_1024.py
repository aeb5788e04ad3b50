"""Seconds per pSp training step at the paper's resolution (1024² generator, 18 styles) on this CPU.

Random weights (time does not depend on them): PSPEncoder(18) + Generator(1024) frozen + ArcFace +
LPIPS, Ranger, the recipe's full loss. Usage: python scripts/time_psp_1024.py [batch] [steps]
"""

import sys
import time

import torch

from deghost.training.evaluation.lpips import LPIPS
from deghost.training.models.arcface import ArcFace
from deghost.training.models.psp import PSPEncoder
from deghost.training.models.stylegan2 import Generator
from deghost.training.psp_config import PSPConfig
from deghost.training.psp_losses import IdentityLoss
from deghost.training.ranger import Ranger
from deghost.training.train_psp import PSPModel, psp_losses

batch, steps = (int(a) for a in (sys.argv[1:] + ["1", "3"])[:2]) if len(sys.argv) > 1 else (1, 3)
torch.manual_seed(0)
generator = Generator(1024)
model = PSPModel(PSPEncoder(n_styles=18), generator, generator.mean_latent(1000)[0].repeat(18, 1)).train()
identity, lpips = IdentityLoss(ArcFace()), LPIPS().requires_grad_(False)
optimizer = Ranger(model.encoder.parameters(), lr=1e-4)
config = PSPConfig(data="x", stylegan2="x")
images = torch.rand(batch, 3, 256, 256) * 2 - 1
times = []
for step in range(steps + 1):
    started = time.perf_counter()
    output, w = model(images)
    terms = psp_losses(output, images, w, model.latent_avg, identity, lpips, config)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    times.append(time.perf_counter() - started)
    print(f"step {step}: {times[-1]:.1f} s (total loss {float(terms['total'].detach()):.3f})", flush=True)
mean = sum(times[1:]) / steps
print(f"batch {batch}: {mean:.1f} s/step after warm-up on {torch.get_num_threads()} threads; "
      f"500k steps (pSp's max_steps) = {mean * 500_000 / 86400:.0f} days")
