"""Analysis of rlzoo runs: reads the CSVs and ``.hydra`` files of run directories only.

- :mod:`analysis.load`: run directories, sweeps or globs -> tidy DataFrames (broken runs are skipped with a warning)
- :mod:`analysis.stats`: IQM, stratified bootstrap confidence intervals, probability of improvement, curve alignment
- ``python -m analysis.plot_curves``, ``python -m analysis.summary``, ``python -m analysis.plot_overestimation``
"""
