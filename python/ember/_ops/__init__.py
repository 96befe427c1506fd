"""The built-in differentiable ops; each is an autograd Function in one of these modules.

This module also attaches the method forms (``x.sum()``, ``x.exp()`` ...) to Tensor, so the
functional form and the method are the same function.
"""

from __future__ import annotations

from ..tensor import Tensor
from .activation import relu
from .elementwise import (
    abs,
    add,
    allclose,
    bitwise_and,
    bitwise_not,
    bitwise_or,
    bitwise_xor,
    ceil,
    clamp,
    clip,
    cos,
    div,
    divide,
    eq,
    equal,
    exp,
    floor,
    floor_divide,
    fmod,
    ge,
    greater,
    greater_equal,
    gt,
    isfinite,
    isinf,
    isnan,
    le,
    less,
    less_equal,
    log,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    maximum,
    minimum,
    mul,
    multiply,
    ne,
    neg,
    negative,
    not_equal,
    pow,
    remainder,
    round,
    sigmoid,
    sign,
    sin,
    sqrt,
    sub,
    subtract,
    tanh,
    true_divide,
    trunc,
    where,
)
from .index import getitem, index_select, masked_fill, setitem
from .linalg import bmm, dot, matmul, mm, mv, outer
from .reduce import (
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    logsumexp,
    max,
    mean,
    min,
    norm,
    prod,
    std,
    sum,
    var,
)
from .shape import (
    broadcast_to,
    cat,
    chunk,
    clone,
    concat,
    concatenate,
    contiguous,
    expand,
    expand_as,
    flatten,
    flip,
    movedim,
    permute,
    repeat,
    reshape,
    split,
    squeeze,
    stack,
    swapaxes,
    swapdims,
    t,
    transpose,
    unbind,
    unflatten,
    unsqueeze,
    view,
)


def _square(input):
    return mul(input, input)


def _rsqrt(input):
    return div(1.0, sqrt(input))


def _view_as(input, other):
    return view(input, other.shape)


def _reshape_as(input, other):
    return reshape(input, other.shape)


def _where_method(input, condition, other):
    return where(condition, input, other)


def _masked_fill_(input, mask, value):
    with_value = masked_fill(input.detach(), mask, value)
    return input.copy_(with_value)


square, rsqrt = _square, _rsqrt

__all__ = sorted(
    n
    for n, v in dict(globals()).items()
    if not n.startswith("_")
    and callable(v)
    and n not in ("Tensor", "annotations")
    and not isinstance(v, type(__import__("sys")))
)

_METHODS = dict(
    abs=abs,
    add=add,
    all=all,
    amax=amax,
    amin=amin,
    any=any,
    argmax=argmax,
    argmin=argmin,
    ceil=ceil,
    chunk=chunk,
    clamp=clamp,
    clip=clip,
    clone=clone,
    contiguous=contiguous,
    cos=cos,
    div=div,
    divide=divide,
    eq=eq,
    equal=equal,
    exp=exp,
    expand=expand,
    expand_as=expand_as,
    flatten=flatten,
    flip=flip,
    floor=floor,
    ge=ge,
    gt=gt,
    index_select=index_select,
    isfinite=isfinite,
    isinf=isinf,
    isnan=isnan,
    le=le,
    log=log,
    logical_not=logical_not,
    logsumexp=logsumexp,
    lt=lt,
    masked_fill=masked_fill,
    masked_fill_=_masked_fill_,
    matmul=matmul,
    max=max,
    maximum=maximum,
    mean=mean,
    min=min,
    minimum=minimum,
    mm=mm,
    movedim=movedim,
    mul=mul,
    multiply=multiply,
    ne=ne,
    neg=neg,
    norm=norm,
    permute=permute,
    pow=pow,
    prod=prod,
    relu=relu,
    repeat=repeat,
    reshape=reshape,
    reshape_as=_reshape_as,
    round=round,
    rsqrt=_rsqrt,
    sigmoid=sigmoid,
    sign=sign,
    sin=sin,
    split=split,
    sqrt=sqrt,
    square=_square,
    squeeze=squeeze,
    std=std,
    sub=sub,
    subtract=subtract,
    sum=sum,
    swapaxes=swapaxes,
    t=t,
    tanh=tanh,
    transpose=transpose,
    trunc=trunc,
    unbind=unbind,
    unflatten=unflatten,
    unsqueeze=unsqueeze,
    var=var,
    view=view,
    view_as=_view_as,
    where=_where_method,
    bmm=bmm,
    dot=dot,
    mv=mv,
    outer=outer,
    logical_and=logical_and,
    logical_or=logical_or,
    logical_xor=logical_xor,
    bitwise_not=bitwise_not,
)
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
del _name, _fn
