"""Learned editing directions (InterFaceGAN's recipe): sample latents, render and score them with the Diff-CAM
classifier, fit a linear boundary in latent space, write its normal as a direction file (docs/directions.md).

    scorers.py       render W+ and score every classifier class: PyTorch or the exported graphs
    samples.py       seeded latent draws, kept on disk chunk by chunk (a killed run resumes)
    boundary.py      the extremes, the linear SVM, the held-out accuracy, conditional projection
    entanglement.py  how much an edit moves every class's score
    learn.py         the whole job: samples → boundary → <name>.npy + <name>.json
"""
