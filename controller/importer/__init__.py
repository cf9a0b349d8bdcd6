"""Turning another tool's configuration into domctl manifests (`domctl import-libvirt`).

Pure conversions, from bytes to manifest text: nothing here reads a file, talks to a daemon or
touches a domain. `libvirt.py` maps a libvirt domain XML document, `xmltree.py` parses XML
safely and keeps account of what the mapping took from it (everything else becomes a comment),
and `yamltext.py` writes the manifest with those comments where they belong.
"""
