"""The paper's tables from per-image scores: Markdown layout, CSV contents, missing metrics."""

from __future__ import annotations

import csv
import math

import pytest

from deghost.training.evaluation.tables import GroupResult, format_markdown, write_tables


def groups() -> list[GroupResult]:
    return [
        GroupResult("Smiling", "eogi", ["a", "b"], {"psnr": [20.0, 24.0], "ssim": [0.5, 0.7], "mae": [0.1, 0.3],
                                                     "lpips": [0.2, 0.4]}, fid=27.531),
        GroupResult("Smiling", "ours", ["a", "b"], {"psnr": [26.0, math.inf], "ssim": [0.8, 1.0],
                                                     "mae": [0.03, 0.0]}, fid=14.694, notes=["a remark"]),
        GroupResult("Old", "ours", ["c"], {"psnr": [30.0], "ssim": [0.9], "mae": [0.02]}),
    ]


def test_table1_rows_show_mean_and_std_per_attribute_and_method_with_dashes_for_missing_metrics():
    markdown = format_markdown(groups())
    assert "| Smiling | eogi | 2 | 22.00 ± 2.00 | 0.600 ± 0.100 | 0.2000 ± 0.1000 | 0.3000 ± 0.1000 |" in markdown
    assert "| Smiling | ours | 2 | 26.00 ± 0.00 (1 inf left out) | 0.900 ± 0.100 | 0.0150 ± 0.0150 | — |" in markdown


def test_table2_has_one_fid_row_per_method_and_one_column_per_attribute():
    markdown = format_markdown(groups(), notes=["global note"])
    assert "| Method | Smiling | Old |" in markdown
    assert "| eogi | 27.53 | — |" in markdown
    assert "| ours | 14.69 | — |" in markdown
    assert "- global note" in markdown and "- Smiling/ours: a remark" in markdown


def test_csv_files_hold_full_precision_numbers_and_empty_cells_for_missing_values(tmp_path):
    written = write_tables(groups(), tmp_path / "results")
    assert [path.name for path in written] == ["metrics.md", "table1_metrics.csv", "table2_fid.csv", "per_image.csv"]
    with open(tmp_path / "results" / "table1_metrics.csv", newline="") as handle:
        table1 = list(csv.DictReader(handle))
    assert float(table1[0]["psnr_mean"]) == 22.0 and float(table1[0]["lpips_std"]) == pytest.approx(0.1)
    assert table1[1]["lpips_mean"] == "" and table1[1]["psnr_infinite"] == "1"
    with open(tmp_path / "results" / "table2_fid.csv", newline="") as handle:
        table2 = list(csv.DictReader(handle))
    assert [(row["attribute"], row["method"], row["fid"]) for row in table2] == [
        ("Smiling", "eogi", "27.531"), ("Smiling", "ours", "14.694"), ("Old", "ours", "")]
    with open(tmp_path / "results" / "per_image.csv", newline="") as handle:
        per_image = list(csv.DictReader(handle))
    assert len(per_image) == 5 and per_image[3]["psnr"] == "inf" and per_image[3]["lpips"] == ""
