"""What the test tiers share (DESIGN §2): one builder, one fake per seam, one wait, one cleanup.

- domains: `domain()` builds every test domain, `manifest()` writes it as YAML, `load()` reads
  a golden input through the real loader.
- memory: MemoryDriver, the in-memory Driver (tests/contract holds it to the real drivers'
  contract).
- api: DocsBackend and ThreadedServer, the fake daemon behind a real ApiServer.
- waiting: `wait_until` / `async_wait_until`, poll with a deadline and a failure that says what.
- cleanup: `sweep()` removes what domains leave (qemu processes, containers, cgroups, dirs);
  `scratch_dir()` makes short directories for sockets.
- leaks: the guard of tests/conftest.py (asyncio tasks, qemu processes, LXC containers).
- qemu, lxc: the environments the driver tiers and the contract tests run real domains in.
"""
