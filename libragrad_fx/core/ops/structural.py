"""Ops that move, select or copy values (complete as they are), and ops without a value:
shapes and assertions, factories, sources, detach."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .schema import INDICES, VALUE, Category, Op, Role

S = Category.STRUCTURAL
SEL, SHAPE, ADD = Role.SELECTOR, Role.SHAPE, Role.ADDITIVE


def _unary(fn, *args, **kwargs):
    """An example call ``fn(x, *args)`` on a 3 x 4 x 5 tensor."""
    return lambda t: (fn, (t(3, 4, 5), *args), kwargs)


def _structural(name: str, example=None, **kw) -> Op:
    return Op(name, S, example=example, **kw)


ENTRIES: list[Op] = [
    _structural("view", spellings=("_unsafe_view",), example=_unary(torch.Tensor.view, 12, 5)),
    _structural("reshape", spellings=("_reshape_alias",), example=_unary(torch.reshape, (12, 5))),
    _structural("permute", example=_unary(torch.permute, (2, 0, 1))),
    _structural("transpose", example=_unary(torch.transpose, 0, 2)),
    _structural("t", example=lambda t: (torch.t, (t(4, 5),), {})),
    _structural("flatten", modules={nn.Flatten: ("start_dim", "end_dim")}, example=_unary(torch.flatten, 1)),
    _structural("unflatten", modules={nn.Unflatten: ("dim", "unflattened_size")},
                example=_unary(torch.unflatten, 2, (5, 1))),
    _structural("squeeze", example=lambda t: (torch.squeeze, (t(3, 1, 5), 1), {})),
    _structural("unsqueeze", example=_unary(torch.unsqueeze, 1)),
    _structural("expand", example=lambda t: (torch.Tensor.expand, (t(3, 1, 5), 3, 4, 5), {})),
    _structural("expand_as", roles={"other": SHAPE},
                example=lambda t: (torch.Tensor.expand_as, (t(3, 1, 5), t(3, 4, 5)), {})),
    _structural("broadcast_to", example=lambda t: (torch.broadcast_to, (t(1, 4, 5), (3, 4, 5)), {})),
    _structural("repeat", example=_unary(torch.Tensor.repeat, 2, 1, 1)),
    _structural("repeat_interleave", example=_unary(torch.repeat_interleave, 2, 1)),
    _structural("tile", example=_unary(torch.tile, (2, 1, 1))),
    _structural("clone", spellings=("contiguous", "lift_fresh_copy", "resolve_conj", "resolve_neg"),
                example=_unary(torch.clone)),
    _structural("identity", modules={nn.Identity: ()}, example=lambda t: (nn.Identity(), (t(3, 4),), {})),
    _structural("alias", spellings=("alias_copy",), example=_unary(torch.ops.aten.alias.default)),
    _structural("to", spellings=("_to_copy", "type_as", "float", "half", "bfloat16", "double", "type"),
                roles={"other": SHAPE}, example=_unary(torch.Tensor.to, torch.float64)),
    _structural("view_as", roles={"other": SHAPE},
                example=lambda t: (torch.Tensor.view_as, (t(3, 4, 5), t(12, 5)), {})),
    _structural("reshape_as", roles={"other": SHAPE},
                example=lambda t: (torch.Tensor.reshape_as, (t(3, 4, 5), t(12, 5)), {})),
    _structural("ravel", example=_unary(torch.ravel)),
    _structural("getitem", spellings=("__getitem__",), roles={"index": SEL}, positional=("input", "index"),
                example=lambda t: (lambda x: x[:, 1:3], (t(3, 4, 5),), {})),
    _structural("cat", spellings=("concat", "concatenate"), roles={"tensors": ADD}, positional=("tensors", "dim"),
                example=lambda t: (torch.cat, ([t(3, 4), t(2, 4)],), {})),
    _structural("stack", roles={"tensors": ADD}, positional=("tensors", "dim"),
                example=lambda t: (torch.stack, ([t(3, 4), t(3, 4)], 1), {})),
    _structural("hstack", roles={"tensors": ADD}, example=lambda t: (torch.hstack, ([t(3, 4), t(3, 2)],), {})),
    _structural("vstack", roles={"tensors": ADD}, example=lambda t: (torch.vstack, ([t(3, 4), t(2, 4)],), {})),
    _structural("chunk", spellings=("unsafe_chunk",), example=lambda t: (lambda x: x.chunk(2, -1)[1], (t(3, 4),), {})),
    _structural("split", spellings=("unsafe_split", "split_copy"),
                example=lambda t: (lambda x: torch.split(x, 2, 1)[0], (t(3, 4),), {})),
    _structural("split_with_sizes", example=lambda t: (lambda x: x.split_with_sizes([1, 3], 1)[1], (t(3, 4),), {})),
    _structural("unbind", spellings=("unbind_copy",), example=lambda t: (lambda x: x.unbind(1)[2], (t(3, 4),), {})),
    _structural("tensor_split", example=lambda t: (lambda x: x.tensor_split(2, 1)[0], (t(3, 4),), {})),
    _structural("narrow", example=_unary(torch.narrow, 1, 1, 2)),
    _structural("select", spellings=("select_copy",), example=_unary(torch.select, 1, 2)),
    _structural("slice", spellings=("slice_copy",),
                example=lambda t: (torch.ops.aten.slice.Tensor, (t(3, 4, 5), 1, 1, 3), {})),
    _structural("roll", example=_unary(torch.roll, 1, 2)),
    _structural("flip", example=_unary(torch.flip, (1,))),
    _structural("movedim", spellings=("moveaxis",), example=_unary(torch.movedim, 0, 2)),
    _structural("swapaxes", spellings=("swapdims",), example=_unary(torch.swapaxes, 0, 2)),
    _structural("dropout", spellings=("feature_dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d",
                                      "dropout2d", "dropout3d"),
                modules={nn.Dropout: ("p",), nn.Dropout1d: ("p",), nn.Dropout2d: ("p",), nn.Dropout3d: ("p",),
                         nn.AlphaDropout: ("p",)},
                example=_unary(F.dropout, 0.5, False)),
    _structural("native_dropout", outputs=(VALUE, INDICES), example=_unary(torch.ops.aten.native_dropout.default, 0.5,
                                                                            False)),
    _structural("unfold", example=lambda t: (F.unfold, (t(2, 3, 4, 4), 2), {})),
    _structural("fold", example=lambda t: (F.fold, (t(2, 12, 9), (4, 4), 2), {})),
    _structural("im2col", example=lambda t: (torch.ops.aten.im2col.default, (t(2, 3, 4, 4), [2, 2], [1, 1], [0, 0],
                                                                             [1, 1]), {})),
    _structural("col2im", example=lambda t: (torch.ops.aten.col2im.default, (t(2, 12, 9), [4, 4], [2, 2], [1, 1],
                                                                             [0, 0], [1, 1]), {})),
    _structural("pixel_shuffle", modules={nn.PixelShuffle: ()}, example=lambda t: (F.pixel_shuffle, (t(2, 4, 3, 3), 2), {})),
    _structural("pixel_unshuffle", modules={nn.PixelUnshuffle: ()},
                example=lambda t: (F.pixel_unshuffle, (t(2, 1, 4, 4), 2), {})),
    _structural("channel_shuffle", spellings=("native_channel_shuffle",), modules={nn.ChannelShuffle: ()},
                example=lambda t: (F.channel_shuffle, (t(2, 4, 3, 3), 2), {})),
    _structural("index_select", roles={"index": SEL},
                example=lambda t: (torch.index_select, (t(3, 4), 1, torch.tensor([0, 2])), {})),
    _structural("gather", roles={"index": SEL},
                example=lambda t: (torch.gather, (t(3, 4), 1, torch.tensor([[0, 2]] * 3)), {})),
    _structural("take_along_dim", roles={"indices": SEL},
                example=lambda t: (torch.take_along_dim, (t(3, 4), torch.tensor([[0, 2]] * 3), 1), {})),
    _structural("index", roles={"indices": SEL},
                example=lambda t: (torch.ops.aten.index.Tensor, (t(3, 4), [torch.tensor([0, 2])]), {})),
    _structural("masked_select", roles={"mask": SEL},
                example=lambda t: (torch.masked_select, (t(3, 4), torch.tensor([True, False, True, True])), {})),
    _structural("diagonal", example=lambda t: (torch.diagonal, (t(4, 4),), {})),
    _structural("tril", example=lambda t: (torch.tril, (t(4, 4),), {})),
    _structural("triu", example=lambda t: (torch.triu, (t(4, 4),), {})),
    _structural("as_strided", example=_unary(torch.as_strided, (3, 4), (20, 5))),
    _structural("copy", roles={"input": SHAPE}, positional=("input", "src"),
                example=lambda t: (lambda x, y: torch.zeros_like(x).copy_(y), (t(3, 4), t(3, 4)), {})),
    _structural("resize"),
    _structural("expand_copy", example=lambda t: (torch.expand_copy, (t(1, 4), [3, 4]), {})),
    _structural("permute_copy", example=_unary(torch.permute_copy, [2, 0, 1])),
    _structural("view_copy", example=_unary(torch.view_copy, [12, 5])),
    _structural("squeeze_copy", example=lambda t: (torch.squeeze_copy, (t(3, 1, 5), 1), {})),
    _structural("unsqueeze_copy", example=_unary(torch.unsqueeze_copy, 1)),
    _structural("pad", roles={"value": ADD},
                modules={nn.ZeroPad1d: (), nn.ZeroPad2d: (), nn.ZeroPad3d: (), nn.ConstantPad1d: ("value",),
                         nn.ConstantPad2d: ("value",), nn.ConstantPad3d: ("value",), nn.ReflectionPad1d: (),
                         nn.ReflectionPad2d: (), nn.ReflectionPad3d: (), nn.ReplicationPad1d: (),
                         nn.ReplicationPad2d: (), nn.ReplicationPad3d: (), nn.CircularPad1d: (),
                         nn.CircularPad2d: (), nn.CircularPad3d: ()},
                example=lambda t: (F.pad, (t(3, 4), (1, 2)), {"value": 0.5})),
    _structural("constant_pad_nd", roles={"value": ADD},
                example=lambda t: (torch.constant_pad_nd, (t(3, 4), (1, 2), 0.5), {})),
    *[_structural(f"{kind}_pad{d}d", example=(lambda t, kind=kind, d=d: (
        getattr(torch.ops.aten, f"{kind}_pad{d}d").default, (t(*([2, 3] + [5] * d)), [1, 1] * d), {})))
      for kind in ("reflection", "replication") for d in (1, 2, 3)],
    *[_structural(name, roles={"input": ADD, "src": ADD}, example=example) for name, example in (
        ("select_scatter", lambda t: (torch.select_scatter, (t(3, 4), t(3), 1, 2), {})),
        ("slice_scatter", lambda t: (torch.slice_scatter, (t(3, 4), t(3, 2), 1, 1, 3), {})),
        ("diagonal_scatter", lambda t: (torch.diagonal_scatter, (t(4, 4), t(4)), {})))],
    # torch's backward keeps the gradient of the region the forward overwrites (torch 2.14)
    Op("as_strided_scatter", Category.OPAQUE, reason="torch's gradient for it does not match its forward: no rule",
       example=lambda t: (torch.as_strided_scatter, (t(3, 4), t(2, 2), (2, 2), (4, 1)), {})),
]

_SHAPE_NAMES = (
    "size", "dim", "numel", "shape", "getattr", "sym_size", "sym_numel", "sym_stride", "sym_storage_offset",
    "stride", "_assert", "_assert_is_none", "len", "is_floating_point", "element_size",
    "_assert_tensor_metadata", "sym_constrain_range_for_size", "_assert_scalar", "sym_constrain_range", "item",
    "is_contiguous", "data_ptr", "get_device", "_local_scalar_dense", "sym_float", "sym_int", "sym_max",
    "sym_min", "sym_not", "sym_sqrt", "truth", "contains", "is_", "is_not", "_guards_fn", "is_complex",
    "storage_offset", "sym_ite")
_FACTORY_NAMES = (
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like", "new_zeros",
    "new_ones", "new_full", "new_empty", "new_tensor", "zeros", "ones", "arange", "full", "empty", "eye",
    "linspace", "tensor", "scalar_tensor", "randn", "rand", "randint", "randperm", "logspace", "meshgrid",
    "empty_strided", "empty_permuted", "as_tensor", "from_numpy")

ENTRIES += [Op(name, Category.SHAPE) for name in _SHAPE_NAMES]
ENTRIES += [Op(name, Category.FACTORY) for name in _FACTORY_NAMES]
ENTRIES += [
    # a value the backward treats as a constant: the user's own .detach() and the rules' cuts
    Op("detach", Category.DETACH, spellings=("detach_copy",), example=_unary(torch.detach)),
    # where an input enters: an embedding of input ids is the stream its gradient starts from
    Op("embedding", Category.SOURCE, modules={nn.Embedding: ("weight",)}, roles={"input": SEL},
       example=lambda t: (F.embedding, (torch.tensor([[1, 2], [4, 5]]), t(10, 4)), {})),
]
