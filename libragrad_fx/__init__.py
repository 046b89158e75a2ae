"""libragrad-fx: faithful gradient explanations for any PyTorch model."""
import os as _os

from ._source_tree import ensure_passes as _ensure_passes

_ensure_passes(__name__, _os.path.dirname(__file__))

from . import passes, pruned_ops, rules  # noqa: E402, F401  (registers the torch.ops.libragrad custom ops)
from .capture import CaptureError  # noqa: E402
from .frozen import frozen_parameters  # noqa: E402
from .report import Report, UnclassifiedOpWarning  # noqa: E402
from .transform import PRESETS, transform  # noqa: E402
from . import attr, maps, viz  # noqa: E402
from .completeness import Completeness, NodeCompleteness, completeness, node_completeness  # noqa: E402

__all__ = ["transform", "PRESETS", "Report", "CaptureError", "UnclassifiedOpWarning", "passes", "rules", "attr",
           "maps", "viz", "completeness", "node_completeness", "Completeness", "NodeCompleteness",
           "frozen_parameters"]
