"""Judging a driving agent: driving metrics, baselines, episode videos, run reports.

``rllib-av evaluate`` writes into RUN_DIR/EVAL_DIR (RESULT_FILE, tables, videos/);
``rllib-av report`` reads it from there and writes RUN_DIR/report/.
"""

EVAL_DIR = "eval"
RESULT_FILE = "evaluation.json"
