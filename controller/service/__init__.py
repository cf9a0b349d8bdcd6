"""The daemon process: wiring, settings, metrics, sd_notify and logging."""
