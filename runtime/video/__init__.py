"""Video in, video out: clips read and written through PyAV (io), faces tracked across frames (track),
steadied over time (smooth), and edited as a stream (edit: `edit_clip`). See docs/video.md."""
