"""Named sweeps: ``conf/sweep/<name>.yaml`` -> queued DVC experiments -> one comparison report.

- :mod:`irtune.sweep.definition`: a sweep file, read and expanded into its members;
- :mod:`irtune.sweep.queue`: the members run as DVC experiments by DVC's queue workers;
- :mod:`irtune.sweep.report`: the comparison report, rebuilt from the members' MLflow runs:
  replicates over seeds grouped into recipes, each tested against the baseline recipe;
- ``python -m irtune.sweep run|report``: the command line (``make sweep``, ``make report``).
"""
