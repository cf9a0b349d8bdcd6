"""`domctl import-libvirt`: libvirt domain XML in, domctl manifests out (offline).

A thin shell over controller/importer/libvirt.py, registered lazily in cli/main.py: it needs no
daemon and touches nothing running. Each input is a file or standard input (`-`, or no file:
`virsh dumpxml NAME | domctl import-libvirt`); its domains are written as YAML documents to
standard output, or with `-o DIR` as DIR/NAME.yaml (written at once, so DIR may be the
directory a controller watches), never over an existing file unless --force. Each manifest
is loaded back by the real loader before it is written, so what comes out validates; an input
that fails says `FILE: message` on standard error, the others are still converted, and the
exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from controller.cli.parser import Parser, directory, not_a_directory

STDIN = "-"


def configure(parser: Parser) -> None:
    """`import-libvirt`'s arguments (a lazy command: its help is in cli/main.py's LAZY)."""
    parser.add_argument("files", nargs="*", metavar="FILES", type=not_a_directory)
    parser.add_argument("-o", "--output-dir", type=directory, metavar="DIR",
                        help="Write each manifest to DIR/NAME.yaml instead of standard output.")
    parser.add_argument("--force", action="store_true", help="With -o: replace existing files.")
    parser.add_argument("--state", choices=["shutoff", "running", "paused"], default="shutoff",
                        help="The manifests' desired state (shutoff: libvirt may still run the "
                             "domain) [default: %(default)s].")
    parser.set_defaults(handler=import_libvirt)


def import_libvirt(args: argparse.Namespace) -> int:
    """Convert each input, then write the manifests; 1 if any input failed."""
    from controller.importer.libvirt import convert  # only this command needs them
    from controller.manifests.errors import ManifestError
    from controller.manifests.loader import load_text

    failed = False
    sources: dict[str, str] = {}  # manifest name → the input it came from
    documents: list[tuple[str, str, str]] = []  # (input, name, manifest)
    output_dir: Path | None = args.output_dir
    for path in args.files or (STDIN,):
        label = "<stdin>" if path == STDIN else path
        try:
            data = sys.stdin.buffer.read() if path == STDIN else Path(path).read_bytes()
            imported = convert(data, label, args.state)
            for domain in imported:  # a manifest the loader refuses is the importer's bug
                load_text(domain.text, f"{label}: the manifest of {domain.name}")
        except OSError as err:
            failed = _fail(f"{label}: {err.strerror or err}")
            continue
        except ManifestError as err:
            failed = _fail("\n".join(str(problem) for problem in err.problems))
            continue
        except ValueError as err:  # not XML, or not a libvirt domain
            failed = _fail(f"{label}: {err}")
            continue
        for domain in imported:
            if domain.name in sources:
                failed = _fail(f"{label}: left out {domain.name}, a name already imported from "
                               f"{sources[domain.name]}")
                continue
            sources[domain.name] = label
            documents.append((label, domain.name, domain.text))
    for index, (label, name, text) in enumerate(documents):
        if output_dir is None:
            print(("---\n" if index else "") + text, end="")
        elif not _write(output_dir / f"{name}.yaml", text, args.force, label):
            failed = True
    return 1 if failed else 0


def _fail(message: str) -> bool:
    print(message, file=sys.stderr)
    return True


def _write(path: Path, text: str, force: bool, label: str) -> bool:
    """Write `text` to `path` at once (a dot file renamed or linked into place: a controller
    watching the directory never reads half a manifest), over an existing file only with
    `force`."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would make it
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails on anything already there, even a dangling link
    except FileExistsError:
        print(f"{label}: {path} exists (--force replaces it)", file=sys.stderr)
        return False
    except OSError as err:
        print(f"{label}: {path}: {err.strerror or err}", file=sys.stderr)
        return False
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    print(f"{path}", file=sys.stderr)
    return True
