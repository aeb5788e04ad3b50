"""The words of every refusal, chosen by where it is shown: one place.

The library refuses with numbers (limits.LimitError, images.TooLargeError, faces.NoFaceError); each
front end shows them in its own terms: the terminal names command-line flags ("cli"), the service names
query parameters and HTTP ("http"), the web demo names the controls on its page ("web").
"""

from __future__ import annotations

from deghost.runtime.faces import NoFaceError
from deghost.runtime.images import TooLargeError
from deghost.runtime.limits import MAX_ALPHA, MAX_PIXELS, MAX_UPLOAD_BYTES

FRONT_ENDS = ("cli", "http", "web")
# How each front end names the things a person can change.
_ALPHA = {"cli": "--alpha", "http": "the query parameter alpha", "web": "the α slider"}
_SMALLER_FACE = {"cli": "a smaller --min-face", "http": "a photo whose face is larger",
                 "web": "a photo whose face is larger"}
_ALIGNED = {"cli": "--aligned for an already aligned face crop",
            "http": "a service started with --aligned for aligned face crops",
            "web": "a demo started with --aligned for aligned face crops"}
_SEND = {"cli": "resize it first", "http": "send a smaller image", "web": "upload a smaller photo"}


def too_large(error: TooLargeError, front: str, name: str) -> str:
    """`name` (a file, "the upload", "the photo") is over the pixel or byte limit."""
    if error.what == "bytes":
        limit = MAX_UPLOAD_BYTES if front != "cli" else error.limit
        return f"{name} is {error.amount:,} bytes, more than the {limit:,} allowed; {_SEND[front]}"
    claimed = f"is {error.size[0]}×{error.size[1]} pixels," if error.size else "decodes to"
    return f"{name} {claimed} more than the {MAX_PIXELS:,} pixels allowed; {_SEND[front]}"


def upload_too_large(size: int, front: str) -> str:
    """An upload of `size` bytes, over MAX_UPLOAD_BYTES (seen before it is decoded)."""
    return f"the upload is {size:,} bytes, more than the {MAX_UPLOAD_BYTES:,} allowed; {_SEND[front]}"


def no_face(error: NoFaceError, front: str, name: str) -> str:
    if error.size is None:  # a face number asked for that is not there: its message says so already
        return f"{name}: {error}"
    width, height = error.size
    return (f"no face of at least {error.min_face:g} px found in {name} ({width}×{height}); use a photo with a "
            f"visible frontal face, {_SMALLER_FACE[front]}, or {_ALIGNED[front]}")


def alpha_out_of_range(alpha: object, front: str) -> str:
    return f"{_ALPHA[front]} must be a finite number in [-{MAX_ALPHA:g}, {MAX_ALPHA:g}]; got {alpha}"


def word(error: BaseException, front: str, name: str) -> str:
    """The message for `error` as `front` shows it, or str(error) for errors without front-end wording."""
    if isinstance(error, TooLargeError):
        return too_large(error, front, name)
    if isinstance(error, NoFaceError):
        return no_face(error, front, name)
    return str(error)
