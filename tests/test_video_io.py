"""Video in and out (deghost.runtime.video.io) on clips generated here: counts, rates, timestamps,
sound, rotation, odd sizes, B-frames, and files that are not (whole) videos."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from deghost.runtime.video.io import VideoError, VideoWriter, probe, read_frames
from tests.helpers.clips import motion_frames, photo, read_sound, sound, write_clip

N = 12


@pytest.fixture(scope="module")
def pan_clip(module_tmp_path):
    frames, _ = motion_frames(photo(scale=0.25), N, "pan")
    return write_clip(module_tmp_path / "pan.mp4", frames, audio=sound(N / 25)), frames


def _copy(source, destination, **writer):
    info = probe(source)
    with VideoWriter(destination, info, audio_from=source if info.audio_streams else None, **writer) as out:
        for frame in read_frames(source):
            out.write(frame.rgb, frame.pts)
    return destination


def _pts(path):
    with av.open(str(path)) as container:
        return sorted(f.pts for f in container.decode(container.streams.video[0]))


def test_copy_keeps_frame_count_rate_duration_timestamps_and_sound(pan_clip, tmp_path):
    source, frames = pan_clip
    out = _copy(source, tmp_path / "out.mp4")
    before, after = probe(source), probe(out)
    assert after.frames == before.frames == N  # B-frames (bf=2): the flushed decoder gives every frame
    assert (after.rate, after.time_base, after.duration_s) == (before.rate, before.time_base, before.duration_s)
    assert _pts(out) == _pts(source)
    assert len(list(read_frames(out))) == N
    original, copied = read_sound(source), read_sound(out)
    assert len(copied) == len(original)
    assert np.corrcoef(original, copied)[0, 1] > 0.999  # packets copied, not re-encoded
    truth = sound(N / 25)
    n = min(len(truth), len(copied))
    assert max(np.corrcoef(truth[: n - d], copied[d:n])[0, 1] for d in range(0, 2048, 1)) > 0.9  # AAC's delay
    error = [np.abs(a.rgb.astype(int) - b.rgb).mean() for a, b in zip(read_frames(source), read_frames(out),
                                                                       strict=True)]
    assert max(error) < 5  # one re-encode at crf 16 of a detailed 128² clip: measured 2.2-3.6 levels on average


def test_variable_frame_rate_keeps_each_timestamp(tmp_path):
    frames, _ = motion_frames(photo(scale=0.25), 8, "zoom")
    pts = [0, 1, 2, 5, 6, 9, 10, 14]  # gaps: a variable frame rate
    source = write_clip(tmp_path / "vfr.mkv", frames, pts=pts, time_base=Fraction(1, 25), b_frames=0)
    out = _copy(source, tmp_path / "out.mkv")
    assert [round(p * float(probe(out).time_base) * 25) for p in _pts(out)] == pts


def test_rotation_metadata_frames_upright_and_rotation_kept(tmp_path):
    upright = photo(scale=0.25)[:, 16:-16]  # 128 high, 96 wide, as shown
    stored = np.ascontiguousarray(np.rot90(upright, -1))  # a phone's sideways pixels, shown turned 90° back
    source = write_clip(tmp_path / "phone.mp4", [stored] * 4, rotation=90)
    info = probe(source)
    assert (info.width, info.height, info.rotation, info.display_size) == (128, 96, 90, (96, 128))
    frame = next(read_frames(source))
    assert frame.rgb.shape == upright.shape
    assert np.abs(frame.rgb.astype(int) - upright).mean() < 5  # codec rounding
    assert np.abs(frame.rgb.astype(int) - upright[::-1, ::-1]).mean() > 20  # not turned the wrong way
    out = probe(_copy(source, tmp_path / "out.mp4"))
    assert (out.width, out.height, out.rotation) == (128, 96, 90)


def test_odd_size_written_at_the_same_size(tmp_path):
    frames = [f[:63, :47] for f in motion_frames(photo(scale=0.25), 4, "pan")[0]]
    out = _copy(write_clip(tmp_path / "odd.mkv", frames), tmp_path / "out.mkv")
    info = probe(out)
    assert (info.width, info.height) == (47, 63)
    assert np.abs(next(read_frames(out)).rgb.astype(int) - frames[0]).mean() < 5  # codec rounding


def test_not_a_video_is_refused_by_name(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4: not a readable video"):
        probe(text)
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")


def test_truncated_clip_is_refused(pan_clip, tmp_path):
    data = pan_clip[0].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) at the end is gone
    with pytest.raises(VideoError, match="cut.mp4"):
        list(read_frames(cut))
    mkv = _copy(pan_clip[0], tmp_path / "whole.mkv")
    cut_mkv = tmp_path / "cut.mkv"
    cut_mkv.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])
    with pytest.raises(VideoError, match="cut.mkv"):
        probe(cut_mkv)  # an index at the start: decoding stops early instead
        list(read_frames(cut_mkv))


def test_a_failed_write_leaves_no_file(pan_clip, tmp_path):
    out = tmp_path / "half.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, probe(pan_clip[0])) as writer:
        writer.write(pan_clip[1][0])
        raise RuntimeError("stopped mid-clip")
    assert list(tmp_path.iterdir()) == []
