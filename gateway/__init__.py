"""The HTTP gateway: validates jobs, enqueues them by task name, serves their status and results."""
