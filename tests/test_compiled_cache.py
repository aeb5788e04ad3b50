"""The compiled-model cache (runtime/backends/compiled_cache.py): OpenVINO stages compiled once per machine,
imported by later processes; a different precision or graph never reuses an entry; damaged or foreign
entries are ignored with a warning and rebuilt; processes opening at once all succeed; the folder stays
under its bound; a flag and an environment variable turn it off. Assertions are on what the backend
reports (`cache_use`) and on outputs, never on time."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deghost.files import sha256_of
from deghost.manifest import Manifest, ManifestError
from deghost.runtime.backends import open_backend
from deghost.runtime.backends import openvino as ov_backend
from deghost.runtime.backends.compiled_cache import MAGIC, NO_CACHE_ENV, CacheKey, CompiledCache, open_cache
from deghost.runtime.pipeline import Pipeline
from deghost.stages import example_feeds, stage_table
from tests.helpers.cpu_bf16 import needs_cpu_bf16

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install deghost[openvino]")

STAGE = "suppressor"  # a small graph of the tiny preset, bf16 within its bound


def opened(folder: Path, cache: CompiledCache | None, precision: str = "fp32", stage: str = STAGE):
    """The stage on OpenVINO, run once (compiles or imports), and its outputs on the stage's example feeds."""
    manifest = Manifest.load(folder)
    backend = open_backend(manifest, stage, "openvino", precision, device="cpu", cache=cache)
    spec = stage_table(manifest.find(stage, "onnx", "fp32").preset)[stage]
    return backend, backend.run(example_feeds(spec, 1, seed=3))


@pytest.fixture
def cache(tmp_path) -> CompiledCache:
    return CompiledCache(tmp_path / "cache", 2**40)


def test_an_entry_is_written_on_the_first_open_and_imported_on_the_second_with_the_same_outputs(
        tiny_onnx_dir, cache):
    first, expected = opened(tiny_onnx_dir, cache)
    second, got = opened(tiny_onnx_dir, cache)
    assert (first.cache_use, second.cache_use) == ("compiled", "cache hit")
    assert len(cache.entries()) == 1
    for name in first.output_names:
        np.testing.assert_array_equal(got[name], expected[name])  # the same kernels, bit for bit


@needs_cpu_bf16
def test_another_precision_never_reuses_an_entry(tiny_onnx_dir, cache):
    f32, _ = opened(tiny_onnx_dir, cache, "fp32")
    bf16, _ = opened(tiny_onnx_dir, cache, "bf16")
    assert bf16.runs_in == "bf16"  # the tiny suppressor's recorded bf16 error is within its bound
    assert (f32.cache_use, bf16.cache_use) == ("compiled", "compiled")
    assert len(cache.entries()) == 2


def test_another_graph_never_reuses_an_entry(tiny_onnx_dir, cache, tmp_path):
    first, _ = opened(tiny_onnx_dir, cache, "fp32")
    changed = copy_with_changed_weights(tiny_onnx_dir, tmp_path / "changed", STAGE)
    other, _ = opened(changed, cache, "fp32")
    assert (first.cache_use, other.cache_use) == ("compiled", "compiled")
    assert len(cache.entries()) == 2


def copy_with_changed_weights(source: Path, folder: Path, stage: str) -> Path:
    """The engine folder with one weight of `stage` changed (same names and shapes, another sha256)."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("cache"))
    path = folder / f"{stage}.onnx"
    model = onnx.load(path)
    tensor = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims)
    array = numpy_helper.to_array(tensor).copy()
    array.flat[0] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(model, path)
    manifest = json.loads((folder / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        if artifact["file"] == path.name:
            artifact["sha256"] = sha256_of(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("damage", ["truncated", "not an entry", "foreign"])
def test_a_damaged_or_foreign_entry_is_ignored_with_a_warning_and_rebuilt(tiny_onnx_dir, cache, caplog, damage):
    first, expected = opened(tiny_onnx_dir, cache)
    entry = cache.entries()[0]
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "not an entry":
        entry.write_bytes(b"\0" * 4096)
    else:  # another stage's entry under this one's name (a copied folder, a hash clash)
        other, _ = opened(tiny_onnx_dir, cache, stage="diffcam")
        shutil.copyfile(cache.path(other.cache_key(other.static_shapes)), entry)
    with caplog.at_level(logging.WARNING, logger="deghost.runtime"):
        rebuilt, got = opened(tiny_onnx_dir, cache)
    assert rebuilt.cache_use == "compiled"
    assert any("ignored" in r.message and str(entry) in r.message for r in caplog.records)
    for name in first.output_names:
        np.testing.assert_array_equal(got[name], expected[name])
    assert opened(tiny_onnx_dir, cache)[0].cache_use == "cache hit"  # the rebuilt entry is whole


OPEN_AND_RUN = """
import sys
import numpy as np
from deghost.manifest import Manifest, ManifestError
from deghost.runtime.backends import open_backend
from deghost.runtime.backends.compiled_cache import CompiledCache
from deghost.stages import example_feeds, stage_table
manifest = Manifest.load(sys.argv[1])
backend = open_backend(manifest, sys.argv[3], "openvino", "fp32", device="cpu", cache=CompiledCache(sys.argv[2], 2**40))
out = backend.run(example_feeds(stage_table(manifest.find(sys.argv[3], "onnx", "fp32").preset)[sys.argv[3]], 1, 3))
np.save(sys.argv[4], out["output"])
print(backend.cache_use)
"""


def test_two_processes_opening_the_same_engines_at_once_both_succeed_and_one_compiles(tiny_onnx_dir, cache,
                                                                                      tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_RUN, str(tiny_onnx_dir), str(cache.folder), STAGE,
                              str(tmp_path / f"out{i}.npy")], stdout=subprocess.PIPE, text=True, env=env)
            for i in range(2)]
    answers = [run.communicate(timeout=300)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sorted(answers) == ["cache hit", "compiled"]  # the second waited for the first's entry
    np.testing.assert_array_equal(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"))
    assert len(cache.entries()) == 1 and not list(cache.folder.glob(".*.tmp"))


def test_the_folder_is_kept_under_its_bound_least_recently_used_first(tmp_path):
    cache = CompiledCache(tmp_path, max_bytes=2500)
    keys = [CacheKey(f"{i:064x}", "fp32", "null", 2, "openvino test", "cpu") for i in range(4)]
    for age, key in enumerate(keys):
        cache._write(key, b"x" * 1000)
        os.utime(cache.path(key), (1000 + age, 1000 + age))
    os.utime(cache.path(keys[0]), (5000, 5000))  # used last: kept
    removed = cache.prune(keep=cache.path(keys[3]))
    assert removed == [cache.path(keys[1]), cache.path(keys[2])]
    assert cache.entries() == sorted([cache.path(keys[0]), cache.path(keys[3])])
    assert all(path.read_bytes().startswith(MAGIC) for path in cache.entries())


def test_the_environment_variable_and_the_flag_turn_the_cache_off(tiny_onnx_dir, tmp_path, monkeypatch):
    assert open_cache(False) is None
    monkeypatch.setenv(NO_CACHE_ENV, "1")
    assert open_cache(tmp_path) is None
    with Pipeline.load(tiny_onnx_dir, backend="openvino", precision="fp32", device="cpu") as pipe:
        assert pipe.cache is None
        pipe.warm_up("network")
        assert {pipe.backend(s).cache_use for s in ("encoder", "generator", "diffcam", "suppressor")} == {
            "compiled (cache off)"}
    assert not any(tmp_path.iterdir())


def test_another_cpu_or_runtime_version_never_reuses_an_entry(tiny_onnx_dir, cache, monkeypatch):
    assert opened(tiny_onnx_dir, cache)[0].cache_use == "compiled"
    monkeypatch.setattr(ov_backend, "cpu_identity", lambda: "a CPU with other instructions")  # a stand-in CPU
    assert opened(tiny_onnx_dir, cache)[0].cache_use == "compiled"
    monkeypatch.setattr(ov_backend._openvino(), "__version__", "2099.1")  # a stand-in upgrade of OpenVINO
    assert opened(tiny_onnx_dir, cache)[0].cache_use == "compiled"
    assert len(cache.entries()) == 3


def test_a_graph_changed_after_its_hash_was_remembered_is_hashed_again_and_refused(tiny_onnx_dir, cache, tmp_path):
    folder = tmp_path / "engines"
    shutil.copytree(tiny_onnx_dir, folder, ignore=shutil.ignore_patterns("cache"))
    opened(folder, cache)  # hashed once and remembered
    assert opened(folder, cache)[0].cache_use == "cache hit"
    graph = folder / f"{STAGE}.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1  # one bit of the last weight, same size
    graph.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match its sha256"):
        opened(folder, cache)


def test_the_warm_up_compiles_each_stage_for_the_shapes_of_the_edit_that_follows(tiny_onnx_dir, cache):
    stages = ("encoder", "generator", "diffcam", "suppressor")
    with Pipeline.load(tiny_onnx_dir, backend="openvino", precision="fp32", device="cpu", cache=cache.folder) as pipe:
        pipe.prepare("network", warm=(1, 1))  # one face, one edit: what the edit below runs
        pipe._warming.result(timeout=600)
        warmed = {stage: pipe.backend(stage).compiled for stage in stages}
        assert all(compiled is not None for compiled in warmed.values())
        side = pipe.preset.image_size
        pipe.edit(np.random.default_rng(0).uniform(-1, 1, (1, 3, side, side)).astype(np.float32))
        for stage in stages:  # the same static graph ran the edit: no recompile, no switch to the dynamic one
            assert pipe.backend(stage).compiled is warmed[stage] and pipe.backend(stage).static_shapes is not None


def test_build_warm_fills_the_cache_so_the_first_edit_imports_every_stage(tiny_onnx_dir, cache, monkeypatch):
    from deghost.export.build import build_parser, options_from_args, warm_compiled_cache

    parse = build_parser().parse_args
    assert options_from_args(parse(["--random-init", "0", "--warm"])).warm == ("fp32", "bf16")
    assert options_from_args(parse(["--random-init", "0", "--warm", "fp32"])).warm == ("fp32",)
    assert options_from_args(parse(["--random-init", "0"])).warm == ()
    monkeypatch.setenv("DEGHOST_CACHE_DIR", str(cache.folder))
    lines = []
    warm_compiled_cache(tiny_onnx_dir, ["fp32"], lines.append)
    assert len(lines) == 1 and "encoder compiled" in lines[0]
    with Pipeline.load(tiny_onnx_dir, backend="openvino", precision="fp32", device="cpu") as pipe:
        side = pipe.preset.image_size
        pipe.edit(np.zeros((1, 3, side, side), np.float32), suppress=["network", "eogi", "poisson"])
        assert {pipe.backend(stage).cache_use for stage in pipe.describe()} == {"cache hit"}
