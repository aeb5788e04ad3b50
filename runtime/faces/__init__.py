"""Faces in ordinary photos: detection, landmarks, FFHQ alignment and paste-back (torch-free)."""
