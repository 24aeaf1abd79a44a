"""The reproduction study (issue 10): plans of ``usnet train`` runs, a restartable runner, the
per-width results gathered into one CSV per plan, and plots. ``python -m benchmarks.study``."""
