"""PyTorch side of deghost: the model zoo, official checkpoint loading and training."""
