"""Use cases, called alike by the API handlers, the Celery tasks and the CLI."""
