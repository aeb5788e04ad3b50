"""Seconds per iteration of `deghost train stylegan2` (config F) at 1024² on this machine.

    flock /tmp/deghost-heavy.lock python benchmarks/stylegan2_training_speed.py [BATCH]

Runs the real trainer for 3 iterations (the first has R1 and path length) on crops of the bundled
photo in a temporary folder and prints each iteration's seconds and the peak resident memory.
"""

import csv
import resource
import sys
import tempfile
from pathlib import Path

import torch

from deghost.runtime.images import read_image, write_image
from deghost.training.config import StyleGAN2Config
from deghost.training.train_stylegan2 import train_stylegan2

PHOTO = Path(__file__).parents[1] / "tests" / "data" / "images" / "astronaut.png"


def main(batch: int = 2, steps: int = 3) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        photo = read_image(PHOTO).rgb
        for i in range(max(4, batch)):
            write_image(root / "faces" / f"{i}.png", photo[20 * i : 20 * i + 400, 30 * i : 30 * i + 400])
        config = StyleGAN2Config(data=str(root / "faces"), out=str(root / "run"), size=1024, batch_size=batch,
                                 iterations=steps, workers=0, log_every=1, checkpoint_every=10**6,
                                 sample_every=10**6, latent_avg_samples=1000)
        print(f"torch threads: {torch.get_num_threads()}")
        train_stylegan2(config)
        with open(root / "run" / "log.csv") as file:
            seconds = [float(row["seconds"]) for row in csv.DictReader(file)]
    per_step = [seconds[0]] + [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"seconds per iteration: {[round(s, 1) for s in per_step]}; peak resident memory {peak:.1f} GB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
