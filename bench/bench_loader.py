"""How much the strict loader costs over plain PyYAML, as a ratio measured in one run.

    .venv/bin/python bench/bench_loader.py [--rounds N]

The baseline is PyYAML's C safe loader on the same text (no validation), the parser we build
on; the subject is `controller.manifest.load_text` (strict parse, schema, cross-field checks,
normalisation). Both run interleaved, best of several rounds, so machine noise hits both alike.
Prints the ratio for a valid manifest and for an invalid one (the error path composes
locations).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from controller.manifests.errors import ManifestError
from controller.manifests.loader import load_text

EXAMPLE = (Path(__file__).resolve().parent.parent / "manifests" / "examples" / "kernel-vm.yaml")


def best_time(fn: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - start


def load_expecting_errors(text: str) -> None:
    with contextlib.suppress(ManifestError):
        load_text(text, "bench.yaml")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    valid = EXAMPLE.read_text()
    invalid = valid.replace("memory: 256Mi", "memroy: 256MB").replace("accel: tcg", "accel: fast")
    cases = {"valid": (valid, lambda: load_text(valid, "bench.yaml")),
             "invalid": (invalid, lambda: load_expecting_errors(invalid))}
    for label, (text, subject) in cases.items():
        base, strict = float("inf"), float("inf")
        baseline = functools.partial(yaml.load, text, Loader=yaml.CSafeLoader)
        for _ in range(args.rounds):
            base = min(base, best_time(baseline, args.repeat))
            strict = min(strict, best_time(subject, args.repeat))
        print(f"{label}: load_text / yaml CSafeLoader = {strict / base:.2f}x "
              f"({strict / args.repeat * 1e6:.0f} us vs {base / args.repeat * 1e6:.0f} us "
              "per file)")


if __name__ == "__main__":
    main()
