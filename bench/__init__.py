"""Judicator's benchmarks (`make bench`): each module measures one thing and prints a table.

Figures are medians over repeats, measured side by side in one run, because the build machine is
shared and noisy; every benchmark writes its figures to bench/results/<name>.json.
"""
