"""pytest-benchmark suite: the paper's size and speed comparison (`pytest benchmarks --benchmark-only`)."""
