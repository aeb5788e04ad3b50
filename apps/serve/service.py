"""One edit request, independent of the server: decode and check the upload, run it, encode the answer.

Shared by the Ray Serve deployment (apps/serve/app.py) and any other front end (the Gradio
demo), so the limits, the accepted parameters and the error messages have one source. Client
mistakes raise ClientError with the HTTP status they deserve (4xx); anything else is the server's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from deghost.runtime.directions import DEFAULT_ALPHA
from deghost.runtime.images import ImageError, TooLargeError, decode_image
from deghost.runtime.limits import MAX_ALPHA, MAX_PIXELS, MAX_UPLOAD_BYTES
from deghost.runtime.pipeline import SUPPRESS_MODES, FaceOptions, Pipeline

from .. import refusals

UPLOAD_NAME = "upload"  # how the uploaded image is named in messages


class ClientError(ValueError):
    """A request the client must change: `status` is the HTTP status (400, 413, 422)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EditParams:
    """What to do with an upload; requests with equal params share a pipeline batch."""

    attribute: str = "smile"
    alpha: float = DEFAULT_ALPHA
    suppress: str = "network"


def parse_params(query: Mapping[str, str], attributes: Sequence[str]) -> EditParams:
    """attribute / alpha / suppress from a query string → EditParams, or ClientError saying what is allowed.

    Only the manifest's attributes: a client never names a direction file on the server.
    """
    attribute = query.get("attribute", EditParams.attribute)
    if attribute not in attributes:
        raise ClientError(f"unknown attribute {attribute!r}; available: {', '.join(attributes)}")
    try:
        alpha = float(query.get("alpha", EditParams.alpha))
    except ValueError:
        raise ClientError(f"alpha must be a number; got {query.get('alpha')!r}") from None
    if not math.isfinite(alpha) or abs(alpha) > MAX_ALPHA:
        raise ClientError(refusals.alpha_out_of_range(alpha, "http"))
    suppress = query.get("suppress", EditParams.suppress)
    if suppress not in SUPPRESS_MODES:
        raise ClientError(f"unknown suppress mode {suppress!r}; available: {', '.join(SUPPRESS_MODES)}")
    return EditParams(attribute, alpha, suppress)


def decode_upload(data: bytes) -> np.ndarray:
    """An uploaded image file's bytes → RGB uint8 [H,W,3]; ClientError (413 too large, 400 not an image).

    Too many pixels is refused from the file's header, before anything is decoded (images.check_pixels)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ClientError(too_large_message(len(data)), status=413)
    if not data:
        raise ClientError("the request carries no image; send the image file as the request body", status=400)
    try:
        return decode_image(np.frombuffer(data, dtype=np.uint8), UPLOAD_NAME).rgb
    except TooLargeError as error:
        raise ClientError(refusals.too_large(error, "http", "the upload"), status=413) from None
    except ImageError as error:
        raise ClientError(str(error), status=400) from None


def too_large_message(size: int) -> str:
    return refusals.upload_too_large(size, "http")


@dataclass
class Edited:
    """One upload's answer: the edited RGB uint8 and what the client should know about it (a resized crop,
    faces left unedited), sent back in the WARNINGS_HEADER."""

    rgb: np.ndarray
    warnings: list[str]


WARNINGS_HEADER = "X-Deghost-Warnings"  # the upload's warnings, " | "-separated (latin-1, as HTTP headers are)


def warnings_header(warnings: Sequence[str]) -> dict[str, str]:
    """The response header carrying `warnings` (none when there are none)."""
    if not warnings:
        return {}
    return {WARNINGS_HEADER: " | ".join(warnings).encode("latin-1", "replace").decode("latin-1")}


def edit_many(pipe: Pipeline, photos: Sequence[np.ndarray], params: EditParams,
              aligned: bool = False) -> list[Edited | ClientError]:
    """Edit several uploads with the same params → per upload its Edited (RGB uint8 and warnings), or its
    ClientError.

    All of them go through one pipeline batch (`Pipeline.edit_inputs`): photos have every face edited and
    pasted back, `aligned` uploads are edited as the crops they are; an upload without a face or with
    unusable pixels is answered 422 alone.
    """
    done = pipe.edit_inputs(list(photos), params.attribute, params.alpha, params.suppress, FaceOptions(aligned))
    return [ClientError(refusals.word(d, "http", "the upload"), status=422) if isinstance(d, ImageError)
            else Edited(d.photos[params.suppress][0], list(d.result.warnings)) for d in done]


def encode_png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} image as PNG")
    return encoded.tobytes()


def manifest_summary(pipe: Pipeline) -> dict:
    """What the service runs: preset, side, attributes, stages, limits (the `/manifest` answer)."""
    return {
        "preset": pipe.preset.name,
        "image_size": pipe.preset.image_size,
        "attributes": pipe.attributes,
        "suppress_modes": list(SUPPRESS_MODES),
        "stages": sorted({f"{a.stage} {a.kind} {a.precision}" for a in pipe.manifest.artifacts}),
        "untrained": pipe.untrained,
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "max_alpha": MAX_ALPHA,
        "max_pixels": MAX_PIXELS,
    }
