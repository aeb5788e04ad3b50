"""The paper's four editable attributes and their Diff-CAM classes (torch-free).

Class indices are those of the 17-way classifier of the public EOGI weights (docs/design.md §1).
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


ATTRIBUTES = {
    a.name: a
    for a in (
        Attribute("smile", "Smiling", 15),
        Attribute("age", "Old", 16),
        Attribute("beard", "Beard", 12),
        Attribute("bushy_eyebrows", "Bushy_Eyebrows", 6),
    )
}

