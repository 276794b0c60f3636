"""Analysis of rlzoo runs: reads the CSVs and ``.hydra`` files of run directories only (never imports rlzoo).

- :mod:`analysis.load`: run directories, sweeps or globs -> tidy DataFrames, labels from the resolved configs
  (broken runs skipped, repeated rows and non-finite returns reported, each with a warning)
- :mod:`analysis.stats`: IQM, stratified bootstrap confidence intervals, probability of improvement, differences
  of means, sustained threshold crossings, curve alignment
- ``python -m analysis.plot_curves``, ``python -m analysis.summary``, ``python -m analysis.plot_overestimation``
- ``python -m analysis.report``: the seed's claims, each with a figure, a table and a verdict (plug-in claims in
  :mod:`analysis.maxbias`, :mod:`analysis.corridor`, :mod:`analysis.minatar`)
- ``python -m analysis.claims run --out DIR``: every claim's experiment sweeps in turn (``python -m rlzoo`` in a
  subprocess), then the report
"""
