"""Helpers for the real-browser test: a JupyterLab server and the notebook it opens."""
