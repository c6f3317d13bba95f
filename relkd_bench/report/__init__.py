"""Paper-style tables and figures from an ablation study: ``python -m relkd_bench.report``.

Reads the trials of an Optuna study (or a ``trials.csv`` this tool wrote) and writes, under ``--out``:
``tables.md``, ``tables.tex``, one tidy CSV per table plus ``trials.csv`` and ``provenance.json``, and
PNG figures. Every table carries its provenance (commit, config hash, data source, hardware, dates).
Methods are compared with the no-KD student of the same fold and seed by paired statistics
(:mod:`relkd_bench.report.stats`); bold marks only significant differences.
Imports only optuna, numpy, scipy, matplotlib and the storage helper of ``relkd_bench.ablate``.
"""

from relkd_bench.report.build import build_report
from relkd_bench.report.collect import provenance, read_trials_csv, rows_from_study
from relkd_bench.report.stats import Paired, paired_cells
from relkd_bench.report.tables import Stat, Table, dice_table, efficiency_table, modules_table, paired_table

__all__ = [
    "Paired",
    "Stat",
    "Table",
    "build_report",
    "dice_table",
    "efficiency_table",
    "modules_table",
    "paired_cells",
    "paired_table",
    "provenance",
    "read_trials_csv",
    "rows_from_study",
]
