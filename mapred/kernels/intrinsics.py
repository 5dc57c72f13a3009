"""LLVM intrinsics for the kernels: unaligned loads, count trailing zeros, byte swap, 64x64->128
multiply, prefetch, raw peek/poke, and a raw memory compare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llvmlite import ir  # numba's own code generator (hard dependency of numba)
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _intrinsic(fn: Callable[..., Any]) -> Any:
    """numba.extending.intrinsic, typed as Any for mypy (intrinsics are only called in njit)."""
    return intrinsic(fn)


def _data_ptr(context, builder, arrty, arr, idxty, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return builder.gep(ary.data, [i])


def _make_load(bits: int) -> Any:
    nbty = types.uint64 if bits == 64 else types.uint32

    @_intrinsic
    def load(typingctx, arr, idx):
        if not (isinstance(arr, types.Array) and arr.dtype == types.uint8
                and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ptr = _data_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            p = builder.bitcast(ptr, ir.IntType(bits).as_pointer())
            return builder.load(p, align=1)

        return nbty(arr, idx), codegen

    return load


#: ``load_u64(buf, i)``: the 8 bytes buf[i:i+8] as a little-endian uint64 (unaligned, unchecked).
load_u64 = _make_load(64)


#: ``load_u32(buf, i)``: the 4 bytes buf[i:i+4] as a little-endian uint32 (unaligned, unchecked).
load_u32 = _make_load(32)


@_intrinsic
def cttz64(typingctx, x):
    """Number of trailing zero bits of a non-zero uint64, as intp."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        r = builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
        return context.cast(builder, r, types.uint64, types.intp)

    return types.intp(x), codegen


@_intrinsic
def bswap64(typingctx, x):
    """Byte-reverse a uint64."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bswap(args[0])

    return types.uint64(x), codegen


@_intrinsic
def mum64(typingctx, a, b):
    """Fold of the 128-bit product of two uint64: low 64 bits ^ high 64 bits (as in wyhash)."""
    if a != types.uint64 or b != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        i128 = ir.IntType(128)
        p = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        lo = builder.trunc(p, ir.IntType(64))
        hi = builder.trunc(builder.lshr(p, ir.Constant(i128, 64)), ir.IntType(64))
        return builder.xor(lo, hi)

    return types.uint64(a, b), codegen


@_intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch the cache line holding ``arr[idx]`` (never faults)."""
    if not (isinstance(arr, types.Array) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _data_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


@_intrinsic
def _peek(typingctx, addr, idx, width):
    """Load the ``width``-byte little-endian unsigned integer at raw address addr + idx.

    ``width`` must be a literal 1 or 8; the result is uint64.  Unchecked and unaligned.  Hot
    internal helpers take (address, length) integers instead of arrays: calls with array
    arguments cost refcount traffic and block inlining in numba.
    """
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 8):
        return None
    bits = 8 * width.literal_value

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.intp)
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.inttoptr(builder.add(a, i), ir.IntType(bits).as_pointer())
        v = builder.load(ptr, align=1)
        return builder.zext(v, ir.IntType(64)) if bits < 64 else v

    return types.uint64(addr, idx, width), codegen


@_intrinsic
def _poke(typingctx, addr, val, width):
    """Store the low ``width`` (literal 1 or 8) bytes of integer ``val`` at raw ``addr``."""
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 8):
        return None
    bits = 8 * width.literal_value

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.intp)
        v = context.cast(builder, args[1], sig.args[1], types.uint64)
        if bits < 64:
            v = builder.trunc(v, ir.IntType(bits))
        builder.store(v, builder.inttoptr(a, ir.IntType(bits).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(addr, val, width), codegen


@njit(cache=True, nogil=True)
def _cmp_raw(pa, la, pb, lb, off):
    """Compare la bytes at raw pa with lb bytes at pb, from byte ``off`` on (<= min(la, lb)).

    Returns <0, 0, >0 like unsigned lexicographic bytes comparison (shorter prefix first).
    """
    n = min(la, lb)
    i = off
    while i + 8 <= n:
        wa = bswap64(_peek(pa, i, 8))
        wb = bswap64(_peek(pb, i, 8))
        if wa != wb:
            return -1 if wa < wb else 1
        i += 8
    while i < n:
        ca = _peek(pa, i, 1)
        cb = _peek(pb, i, 1)
        if ca != cb:
            return -1 if ca < cb else 1
        i += 1
    return -1 if la < lb else (1 if la > lb else 0)
