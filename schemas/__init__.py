"""The Domain manifest JSON Schema, shipped as package data (read by controller/manifests/schema.py)."""
