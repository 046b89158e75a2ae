"""Attribution methods on the LibraGrad-transformed model (docs/METHOD.md section 5), captum-style:

    libragrad_fx.attr.<Method>(model).attribute(inputs, target=None, **kwargs)

``model`` is a transformed GraphModule or a plain model (transformed on first use with the
``libragrad`` preset; ``preset=`` chooses another, ``vanilla`` included). ``target=None`` is the
predicted class's logit; ``target="prob"`` / :class:`Probability` its probability; a callable
``target=readout`` any scalar per sample, traced into the graph (:mod:`libragrad_fx.attr.readout`).
Gradient methods return tensors shaped like ``inputs``; CAM and rollout methods return maps on the
model's patch grid [B, h, w] (see :mod:`libragrad_fx.attr.maps` to bring them to the image). What
the methods read from the transformed graph is found once per model (:mod:`libragrad_fx.attr.compiled`).
"""
from ._base import Attribution, class_index, is_transformed, target_values, targets
from .compiled import Compiled, compiled_of
from .readout import Probability
from .cam import GradCAM, HiResCAM, XGradCAM
from .fullgrad import FullGrad, FullGradResult
from .gradient import Gradient, InputXGradient
from .integrated_gradients import IntegratedGradients
from .rollout import GAE, AttentionRollout, GradientRollout
from .smoothgrad import SmoothGrad

__all__ = ["Attribution", "Gradient", "InputXGradient", "IntegratedGradients", "SmoothGrad", "FullGrad",
           "FullGradResult", "GradCAM", "HiResCAM", "XGradCAM", "AttentionRollout", "GradientRollout", "GAE",
           "METHODS", "ALIASES", "targets", "target_values", "class_index", "is_transformed", "Probability", "Compiled",
           "compiled_of"]

METHODS: dict[str, type[Attribution]] = {
    "gradient": Gradient, "input_x_gradient": InputXGradient, "integrated_gradients": IntegratedGradients,
    "smoothgrad": SmoothGrad, "fullgrad": FullGrad, "gradcam": GradCAM, "hirescam": HiResCAM,
    "xgradcam": XGradCAM, "attention_rollout": AttentionRollout, "gae": GradientRollout,
}
"""Every method by a command-line friendly name."""

ALIASES: dict[str, str] = {"ixg": "input_x_gradient", "ig": "integrated_gradients", "rollout": "attention_rollout",
                           "sg": "smoothgrad"}
"""The short names the paper uses, for the methods above."""
