"""What the processes tell their operators: Prometheus metrics and JSON logs."""
