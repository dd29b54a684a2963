"""The report room: what a run tells its user between host loops and at its start.

metrics.jsonl and TensorBoard (metric_writers.py, run_summaries.py), the terminal's progress line
(progress.py), and the run's versions, git commit, host and model summary (run_info.py).
"""
