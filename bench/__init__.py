"""Benchmarks of pipeline-send / pipeline-receive against baselines measured in the same run.

Run ``python -m bench --help``; bench/README.md explains every scenario.
"""
