"""The `domctl` command line: commands, the socket client, the console relay.

Runs in the user's shell, not in the daemon: it imports no engine code (checked by
import-linter), so `domctl get` starts fast and shares with the daemon only `protocol.py`.
"""
