"""domctl's daemon machinery: watching manifests, the work queue, status, API and CLI.

Knows nothing of qemu or LXC: it talks to drivers only through reconcilers.driver.Driver.
"""
