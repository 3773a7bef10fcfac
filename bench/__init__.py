"""LumbarSeg speed and memory benchmark (issue 5): ``python bench/run_benchmark.py``."""
