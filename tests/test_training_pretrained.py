"""Pretrained pieces of the suppressor recipe (VGG-16, StyleGAN2 discriminator, ResNet-34 encoder):
loaded from files in the official layouts, refused loudly when missing.

The files are written here with random tensors under the official key names and shapes, the
torchvision ones spelled out independently of the project's models.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deghost.training.checkpoints import CheckpointError, load_resnet34_stem_encoder
from deghost.training.config import SuppressorConfig
from deghost.training.distributed import Context
from deghost.training.models.maresunet import MAResUNet
from deghost.training.models.stylegan2 import Discriminator
from deghost.training.suppressor import build_networks

pytestmark = pytest.mark.filterwarnings("ignore:--random-vgg")
CPU = Context(rank=0, world_size=1, device=torch.device("cpu"))
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512), (512, 512),
               (512, 512), (512, 512), (512, 512), (512, 512)]
VGG16_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's `features` numbering


def torchvision_vgg16(path: Path) -> dict:
    generator = torch.Generator().manual_seed(1)
    state = {}
    for index, (cin, cout) in zip(VGG16_CONV_INDEX, VGG16_CONVS, strict=True):
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=generator) * 0.05
        state[f"features.{index}.bias"] = torch.randn(cout, generator=generator) * 0.05
    state["classifier.6.bias"] = torch.zeros(1000)  # the classifier is ignored (the real one is 500 MB)
    torch.save(state, path)
    return state


def torchvision_resnet34(path: Path) -> dict:
    generator = torch.Generator().manual_seed(2)

    def bn(prefix: str, channels: int) -> dict:
        return {f"{prefix}.weight": torch.rand(channels, generator=generator) + 0.5,
                f"{prefix}.bias": torch.randn(channels, generator=generator),
                f"{prefix}.running_mean": torch.randn(channels, generator=generator),
                f"{prefix}.running_var": torch.rand(channels, generator=generator) + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(7)}

    state = {"conv1.weight": torch.randn(64, 3, 7, 7, generator=generator), **bn("bn1", 64)}
    channels = 64
    for layer, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), 1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}"
            cin = channels if block == 0 else width
            state[f"{prefix}.conv1.weight"] = torch.randn(width, cin, 3, 3, generator=generator)
            state |= bn(f"{prefix}.bn1", width)
            state[f"{prefix}.conv2.weight"] = torch.randn(width, width, 3, 3, generator=generator)
            state |= bn(f"{prefix}.bn2", width)
            if block == 0 and layer > 1:
                state[f"{prefix}.downsample.0.weight"] = torch.randn(width, cin, 1, 1, generator=generator)
                state |= bn(f"{prefix}.downsample.1", width)
        channels = width
    state |= {"fc.weight": torch.randn(1000, 512, generator=generator), "fc.bias": torch.zeros(1000)}
    torch.save(state, path)
    return state


def config(tmp_path: Path, **changes) -> SuppressorConfig:
    values = dict(data="d", out=str(tmp_path), width=16, disc_size=8, adversarial_weight=0.1)
    return SuppressorConfig(**{**values, **changes})


def test_the_perceptual_loss_runs_on_the_given_vgg16_file(tmp_path):
    state = torchvision_vgg16(tmp_path / "vgg16-397923af.pth")
    _, _, perceptual = build_networks(config(tmp_path, vgg=str(tmp_path / "vgg16-397923af.pth")), 32, CPU)
    assert torch.equal(perceptual.vgg.features[28].weight, state["features.28.weight"])


def test_a_missing_vgg16_file_names_it_and_where_it_comes_from(tmp_path):
    with pytest.raises(CheckpointError) as refused:
        build_networks(config(tmp_path, vgg=str(tmp_path / "vgg16.pth")), 32, CPU)
    assert "vgg16.pth does not exist" in str(refused.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in str(refused.value)


def test_the_discriminator_starts_from_a_rosinality_checkpoints_d(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        official = Discriminator(8).state_dict()
    torch.save({"d": official, "g_ema": {}}, tmp_path / "stylegan2.pt")
    init = str(tmp_path / "stylegan2.pt")
    _, discriminator, _ = build_networks(config(tmp_path, random_vgg=True, discriminator_init=init), 32, CPU)
    assert discriminator.training
    for key, value in official.items():
        assert torch.equal(discriminator.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="16² discriminator expected"):
        build_networks(config(tmp_path, random_vgg=True, disc_size=16,
                              discriminator_init=str(tmp_path / "stylegan2.pt")), 32, CPU)
    with pytest.raises(CheckpointError, match="stylegan2-ffhq-config-f.pt"):
        build_networks(config(tmp_path, random_vgg=True, discriminator_init=str(tmp_path / "no.pt")), 32, CPU)


def test_the_encoder_starts_from_torchvisions_resnet34_with_the_stem_shared_by_both_images(tmp_path):
    official = torchvision_resnet34(tmp_path / "resnet34-b627a593.pth")
    model, _, _ = build_networks(config(tmp_path, random_vgg=True, width=64, adversarial_weight=0.0,
                                        encoder_init=str(tmp_path / "resnet34-b627a593.pth")), 32, CPU)
    weights = model.state_dict()
    assert torch.equal(weights["encoder4.2.bn2.running_var"], official["layer4.2.bn2.running_var"])
    assert torch.equal(weights["encoder2.0.downsample.0.weight"], official["layer2.0.downsample.0.weight"])
    assert torch.equal(weights["firstbn.weight"], official["bn1.weight"])
    # Two identical images through the 6-channel stem give the ImageNet stem's response on one.
    image = torch.randn(1, 3, 32, 32)
    stem = torch.nn.functional.conv2d(torch.cat([image, image], 1), weights["firstconv.weight"], stride=2, padding=3)
    expected = torch.nn.functional.conv2d(image, official["conv1.weight"], stride=2, padding=3)
    torch.testing.assert_close(stem, expected, rtol=1e-4, atol=1e-4)
    # The decoder and attention keep their own initialisation.
    assert "attention1.PAM.gamma" in weights and "fc.weight" not in weights


def test_a_file_that_is_not_a_resnet34_is_refused(tmp_path):
    torch.save(MAResUNet(width=16).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="resnet34-b627a593.pth"):
        load_resnet34_stem_encoder(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="download.pytorch.org/models/resnet34"):
        load_resnet34_stem_encoder(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="--encoder-init needs --width 64"):
        from deghost.training.suppressor import check_config
        check_config(config(tmp_path, random_vgg=True, encoder_init="r.pth"))
