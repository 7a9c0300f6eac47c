"""Scoring with the champion models: loading them from MLflow, shaping feature sequences,
the dual-model prediction, and publishing it. Shared by the streaming job and the API."""
