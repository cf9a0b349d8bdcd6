"""Manifests: strict YAML, JSON Schema, cross-field checks, normalisation, the directory source.

Pure input handling: turns files into validated `reconcilers.model.Domain` objects or located
errors; never touches a domain or the state directory.
"""
