"""The model zoo: every network of the pipeline, with the official implementations' key names."""
