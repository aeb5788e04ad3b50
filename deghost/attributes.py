"""The attributes deghost edits and their Diff-CAM classes (torch-free); the one table of both.

Class indices are those of the 17-way classifier of the public EOGI weights, as its inference script
maps its direction files to classes (HaoruiSong622/Editing-Out-of-Domain, image_process.py,
`direction2idx`): Bushy_Eyebrows 6, Eyeglasses 7, Mouth_Open 10, Narrow_Eyes 11, Beard 12, Smiling 15,
Old 16. The names of the other ten classes are not published; a direction for one of them names its
class by number (`deghost train direction --class-index N`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attribute:
    name: str  # CLI / API name, also the direction file stem: <name>.npy
    celeba_name: str  # the CelebA attribute the classifier was trained on
    class_index: int  # its Diff-CAM classifier class

    @property
    def direction_files(self) -> tuple[str, str]:
        """File names a direction may have: deghost's `<name>.npy`, then EOGI's, which uses the CelebA name."""
        return f"{self.name}.npy", f"{self.celeba_name}.npy"


ATTRIBUTES = {  # the paper's four, in its order: the directions every build needs
    a.name: a
    for a in (
        Attribute("smile", "Smiling", 15),
        Attribute("age", "Old", 16),
        Attribute("beard", "Beard", 12),
        Attribute("bushy_eyebrows", "Bushy_Eyebrows", 6),
    )
}
# The EOGI release's other directions: optional in a build, learnable with `deghost train direction`.
EXTRA_ATTRIBUTES = {
    a.name: a
    for a in (
        Attribute("eyeglasses", "Eyeglasses", 7),
        Attribute("mouth_open", "Mouth_Open", 10),
        Attribute("narrow_eyes", "Narrow_Eyes", 11),
    )
}
KNOWN_ATTRIBUTES = {**ATTRIBUTES, **EXTRA_ATTRIBUTES}  # every attribute whose classifier class is known


def find_attribute(name: str) -> Attribute | None:
    """The known attribute called `name` in deghost's spelling or CelebA's, any case ("age", "Old"); else None."""
    key = name.strip().lower()
    return next((a for a in KNOWN_ATTRIBUTES.values() if key in (a.name, a.celeba_name.lower())), None)


def class_names(n_classes: int) -> list[str]:
    """A label per classifier class: the known attribute's name, else "class N"."""
    by_class = {a.class_index: a.name for a in KNOWN_ATTRIBUTES.values()}
    return [by_class.get(index, f"class {index}") for index in range(n_classes)]
