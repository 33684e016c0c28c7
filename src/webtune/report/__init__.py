"""The report stage and what reads many runs: the run report (`stage`: RUN/metrics.json and a
self-contained RUN/report.html), the sweep summary (`sweep`) and `compare` (runs side by side), all
HTML with inline SVG charts (`svg`), from run directories alone."""
