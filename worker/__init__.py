"""The Celery worker: loads models once per process and computes batch predictions."""
