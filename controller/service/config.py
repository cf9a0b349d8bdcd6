"""The old home of `Paths`, which now lives in controller/paths.py (a leaf every layer may import).

Kept only because controller/api/backend.py still imports `Paths` from here; delete this module
once it imports `controller.paths` (the import-linter layers contract ignores that one upward
import, api → service, until then).
"""

from controller.paths import Paths as Paths
