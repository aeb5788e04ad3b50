"""BiSeNet face parser against the official implementation's reference outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deghost.training.models.bisenet import BiSeNet, parse_labels
from deghost.training.models.imagenet import imagenet_normalize
from tests.helpers.reference import load_reference

LOGIT_TOLERANCE = {"atol": 2e-4, "rtol": 1e-5}
MAX_LABEL_MISMATCH = 5e-4  # near-ties in the reference: 1.3e-4 of the pixels have a top-2 margin < 1e-4


@pytest.fixture(scope="module")
def reference():
    return load_reference("bisenet")


@pytest.fixture(scope="module")
def parser(reference):
    model = BiSeNet(n_classes=19)
    model.load_state_dict(reference.state_dict(), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def outputs(parser, reference):
    x = torch.from_numpy(reference.io["x"])
    with torch.no_grad():
        return parser.head_logits(x), parser(x)


def test_bisenet_state_dict_layout_equals_official_checkpoint(parser, reference):
    layout = {key: (tuple(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in
              parser.state_dict().items()}
    assert list(layout) == [key for key, _, _ in reference.entries]
    assert layout == reference.layout()


def test_bisenet_parameter_count_is_the_official_13300416(parser, reference):
    assert sum(p.numel() for p in parser.parameters()) == reference.manifest["total_params"] == 13_300_416


@pytest.mark.parametrize("index, name", [(0, "logits8"), (1, "aux16_logits"), (2, "aux32_logits")])
def test_bisenet_head_logits_match_official_reference(outputs, reference, index, name):
    heads, _ = outputs
    np.testing.assert_allclose(heads[index].numpy(), reference.io[name], **LOGIT_TOLERANCE)


def test_bisenet_upsampled_logits_match_official_reference_grid(outputs, reference):
    _, (out, out16, out32) = outputs
    assert out.shape == out16.shape == out32.shape == (1, 19, 512, 512)
    grid = out[:, :, reference.io["grid_rows"]][:, :, :, reference.io["grid_cols"]]
    np.testing.assert_allclose(grid.numpy(), reference.io["logits_grid"], **LOGIT_TOLERANCE)


def test_bisenet_labels_match_official_reference_except_near_ties(outputs, reference):
    _, (out, _, _) = outputs
    mismatch = (out.argmax(1).numpy() != reference.io["labels"]).mean()
    assert mismatch <= MAX_LABEL_MISMATCH


def test_parse_labels_of_the_reference_image_in_minus1_1_gives_the_official_labels(parser, reference):
    # The reference input is an ImageNet-normalised [0,1] image: undo that and map it to [-1,1]. The statistics
    # are written here as face-parsing.PyTorch's test.py gives them to transforms.Normalize, not imported.
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    image01 = torch.from_numpy(reference.io["x"]) * std + mean
    torch.testing.assert_close(imagenet_normalize(image01, (0.0, 1.0)), torch.from_numpy(reference.io["x"]))
    with torch.no_grad():
        labels = parse_labels(parser, image01 * 2 - 1)
    assert labels.dtype == torch.int64 and labels.shape == (1, 512, 512)
    assert (labels.numpy() != reference.io["labels"]).mean() <= MAX_LABEL_MISMATCH


@pytest.mark.parametrize("height, width", [(96, 160), (100, 150)])
def test_bisenet_parses_non_square_and_odd_sized_images(parser, height, width):
    torch.manual_seed(0)
    image = torch.rand(2, 3, height, width) * 2 - 1
    with torch.no_grad():
        out, out16, out32 = parser(imagenet_normalize(image, (-1.0, 1.0)))
        labels = parse_labels(parser, image)
    assert out.shape == out16.shape == out32.shape == (2, 19, height, width)
    assert torch.isfinite(out).all()
    assert labels.shape == (2, height, width) and int(labels.max()) < 19
