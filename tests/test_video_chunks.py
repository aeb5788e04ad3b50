"""A clip in chunks (deghost.runtime.video.chunks; on Ray: apps/edit/ray_clips.py) equals the one-stream
edit, and a killed run resumes from the chunks written."""

from __future__ import annotations

import numpy as np
import pytest

from deghost.runtime.pipeline import Pipeline
from deghost.runtime.video.chunks import chunk_plan, edit_chunk, edit_clip_in_chunks, load_tracks, segment_paths
from deghost.runtime.video.edit import edit_clip
from deghost.runtime.video.io import read_frames
from tests.helpers.clips import motion_frames, photo, sound, write_clip
from tests.helpers.stand_ins import LatentShadeStandIn


@pytest.fixture(scope="module")
def shade(tiny_onnx_dir):
    return LatentShadeStandIn.load(tiny_onnx_dir)


@pytest.fixture(scope="module")
def clip(module_tmp_path):
    frames, _ = motion_frames(photo(scale=0.5), 11, "rotate")
    return write_clip(module_tmp_path / "rotate.mp4", frames, audio=sound(11 / 25))


def test_chunk_plan_margins():
    # radius 1, three windows stacked (quads → latents → masks and head regions): margin 3
    plan = chunk_plan(11, 4, window=3)
    assert [(c.start, c.stop, c.lo, c.hi) for c in plan] == [(0, 4, 0, 7), (4, 8, 1, 11), (8, 11, 5, 11)]


def _frames(path):
    return [f.rgb.astype(int) for f in read_frames(path)]


def _local_runner(pipe, source, options, log):
    def run(tracks_file, chunks, work):
        tracks = load_tracks(tracks_file)
        for chunk in chunks:
            log.append(chunk.number)
            edit_chunk(pipe, source, tracks, chunk, work, **options)
    return run


def test_chunks_equal_the_one_stream_run_and_resume(shade, clip, tmp_path):
    options = dict(alpha=20.0, suppress="none", window=5)
    edit_clip(shade, clip, tmp_path / "whole.mp4", **options)
    log: list[int] = []

    class Killed(Exception):
        pass

    def killed_after_two(tracks_file, chunks, work):
        _local_runner(shade, clip, options, log)(tracks_file, chunks[:2], work)
        raise Killed

    with pytest.raises(Killed):
        edit_clip_in_chunks(clip, tmp_path / "chunked.mp4", killed_after_two, chunk_frames=3, window=5)
    work = tmp_path / ".chunked.chunks"
    assert all(p.exists() for c in chunk_plan(11, 3, 5)[:2] for p in segment_paths(work, c, 1))
    assert not (tmp_path / "chunked.mp4").exists()
    log.clear()
    edit_clip_in_chunks(clip, tmp_path / "chunked.mp4", _local_runner(shade, clip, options, log), chunk_frames=3,
                        window=5)
    assert log == [0, 1, 2, 3]  # offered every chunk; chunks 0 and 1 skip at once (segments exist)
    assert not work.exists()
    whole, chunked = _frames(tmp_path / "whole.mp4"), _frames(tmp_path / "chunked.mp4")
    assert len(whole) == len(chunked) == 11
    source = _frames(clip)
    assert max(np.abs(a - s).mean() for a, s in zip(whole, source, strict=True)) > 2  # the stand-in edits
    for a, b in zip(whole, chunked, strict=True):
        assert np.abs(a - b).max() <= 1  # the same frames into the same encoder


def test_ray_chunks_equal_the_local_run(tiny_onnx_dir, tmp_path):
    """The real (untrained) tiny networks, chunks edited by Ray Data actors, joined: equal to the local
    one-stream run within fp32 rounding (different batch compositions) and the codec's."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'deghost[ray]'")
    from deghost.apps.edit.ray_clips import ray_chunk_runner
    from deghost.runtime.ray_cluster import connected

    frames, _ = motion_frames(photo(scale=0.5), 4, "pan")
    source = write_clip(tmp_path / "pan.mp4", frames)
    options = dict(alpha=20.0, suppress="none", window=3)
    with Pipeline.load(tiny_onnx_dir, backend="onnxruntime", device="cpu", threads=1) as pipe:
        edit_clip(pipe, source, tmp_path / "local.mp4", **options)
    assert ray is not None
    with connected(None, num_cpus=2) as connected_ray:
        runner = ray_chunk_runner(connected_ray, tiny_onnx_dir, source, options, backend="onnxruntime",
                                  device="cpu", ray_workers=1)
        edit_clip_in_chunks(source, tmp_path / "ray.mp4", runner, chunk_frames=2, window=3)
    local, joined = _frames(tmp_path / "local.mp4"), _frames(tmp_path / "ray.mp4")
    assert len(local) == len(joined) == 4
    for a, b in zip(local, joined, strict=True):
        assert np.abs(a - b).mean() < 0.5

