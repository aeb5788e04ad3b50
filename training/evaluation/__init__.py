"""Evaluation of edited faces: PSNR, SSIM, MAE, LPIPS and FID, and the paper's tables."""
