"""libragrad-fx: faithful gradient explanations for any PyTorch model."""
import os as _os

from ._source_tree import ensure_passes as _ensure_passes
from ._version import version as _version

_ensure_passes(__name__, _os.path.dirname(__file__))
__version__ = _version(_os.path.dirname(__file__))

# the core registers the torch.ops.libragrad custom ops (rules, pruned ops, autograd Functions) as it is imported
from . import passes  # noqa: E402
from .core import dissent, functions, pruned_ops, rules  # noqa: E402, F401
from .core.capture import CaptureError  # noqa: E402
from .core.frozen import frozen_parameters  # noqa: E402
from .core.errors import ForwardMismatchError  # noqa: E402
from .core.report import LibraGradWarning, Report, UnclassifiedOpWarning  # noqa: E402
from .core.transform import PRESETS, transform  # noqa: E402
from . import attr, viz  # noqa: E402
from .attr import maps  # noqa: E402
from .attr.completeness import Completeness, NodeCompleteness, completeness, node_completeness  # noqa: E402

__all__ = ["__version__", "transform", "PRESETS", "Report", "CaptureError", "LibraGradWarning", "UnclassifiedOpWarning",
           "ForwardMismatchError", "passes", "rules", "attr",
           "maps", "viz", "completeness", "node_completeness", "Completeness", "NodeCompleteness",
           "frozen_parameters"]
