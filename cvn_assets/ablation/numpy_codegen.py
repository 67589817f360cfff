"""SymPy expression trees -> chunked, in-place NumPy kernels (the focal objective's code generator).

:class:`InplaceNumpyCodegen` turns SymPy expressions into ``np.<ufunc>(..., out=buf)`` calls
on chunk buffers; :func:`compile_kernel` wraps such statements in a chunk loop, compiles them
and returns a :class:`Kernel` that runs them over whole arrays (optionally split over
threads; NumPy ufuncs release the GIL). What is derived, and why the kernel is built this way
(positional ``out``, 0-d constants of the kernel dtype, chunking), is in
:mod:`cvn_assets.ablation.focal_loss`; the measured speed in ``bench/bench_focal.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import sympy as sp
from numpy.typing import NDArray

__all__ = [
    "CHUNK",
    "KERNEL_DTYPES",
    "UFUNCS",
    "InplaceNumpyCodegen",
    "Kernel",
    "Operand",
    "compile_kernel",
    "const_name",
    "ufunc_call",
]

CHUNK = 16384
"""Rows per chunk: amortises NumPy's ~0.4 us per ufunc call while the work buffers stay
in L2/L3 cache (best of 1024..65536 measured on a 2-core AVX2 EPYC; re-measured for issue 22
on a 2-core AVX-512 Xeon with the focal kernel's 10 float32 buffers: 2048 / 4096 / 8192 /
16384 / 32768 / 65536 rows -> 932 / 674 / 575 / 507 / 527 / 536 us CPU per 100k rows)."""

Operand = tuple[str, Any]  # ("c", float) constant | ("a", name) named array | ("v", int) temp


class InplaceNumpyCodegen:
    """Translate SymPy expressions into a sequence of ``np.<ufunc>(..., out=buf)`` calls.

    Only the node types that occur in the focal derivatives are supported (Add, Mul, Pow,
    log, exp, Max, numbers, symbols); anything else raises, so a change in SymPy's output
    can never be silently mistranslated. Temporaries get buffers by liveness, so a chunk
    needs only a handful of buffers.
    """

    def __init__(self, inputs: dict[sp.Symbol, str]) -> None:
        self.env: dict[sp.Symbol, Operand] = {s: ("a", n) for s, n in inputs.items()}
        self.ops: list[tuple[str, int, list[Operand]]] = []
        self.n_vregs = 0

    def _op(self, ufunc: str, *args: Operand) -> Operand:
        vreg = self.n_vregs
        self.n_vregs += 1
        self.ops.append((ufunc, vreg, list(args)))
        return ("v", vreg)

    def _binary(self, ufunc: str, a: Operand, b: Operand) -> Operand:
        if a[0] == "c" and b[0] == "c":
            fold = {"add": a[1] + b[1], "subtract": a[1] - b[1], "multiply": a[1] * b[1]}
            if ufunc in fold:
                return ("c", fold[ufunc])
            if ufunc == "divide":
                return ("c", a[1] / b[1])
            if ufunc == "maximum":
                return ("c", max(a[1], b[1]))
        if ufunc == "maximum" and "c" in (a[0], b[0]):
            # max(x, c) as x.clip(c, inf): the same value (NaN propagates in both; the two can
            # differ only in the sign of a zero result when c is 0), but NumPy's clip loop is
            # vectorised for a 0-d bound while maximum's is not (2-3x faster per chunk)
            x, c = (b, a) if a[0] == "c" else (a, b)
            return self._op("clip", x, c, ("c", float("inf")))
        return self._op(ufunc, a, b)

    def _power(self, base: Operand, exponent: sp.Expr) -> Operand:
        if exponent.is_Integer:
            n = int(exponent)
            if n < 0:
                return self._binary("divide", ("c", 1.0), self._power(base, sp.Integer(-n)))
            if n == 0:
                return ("c", 1.0)
            result: Operand | None = None
            square = base
            while n:  # exponentiation by squaring
                if n & 1:
                    result = square if result is None else self._binary("multiply", result, square)
                n >>= 1
                if n:
                    square = self._op("square", square)
            assert result is not None
            return result
        if exponent == sp.Rational(1, 2):
            return self._op("sqrt", base)
        if exponent.is_Number:  # x**e = exp(e log x): ~2x faster than np.power
            logged = self._op("log", base)
            return self._op("exp", self._binary("multiply", logged, ("c", float(exponent))))
        raise NotImplementedError(f"symbolic exponent {exponent} in generated kernel")

    def emit(self, expr: sp.Expr) -> Operand:
        if expr.is_Number:
            return ("c", float(expr))
        if expr.is_Symbol:
            if expr not in self.env:
                raise NotImplementedError(f"free symbol {expr} in generated kernel")
            return self.env[expr]
        if expr.is_Add:
            const = 0.0
            pos: list[Operand] = []
            neg: list[Operand] = []
            for term in expr.args:
                if term.is_Number:
                    const += float(term)
                    continue
                coeff, rest = term.as_coeff_Mul()
                if coeff.is_negative:
                    neg.append(self.emit(-coeff * rest))
                else:
                    pos.append(self.emit(term))
            if pos:
                acc = pos[0]
                for t in pos[1:]:
                    acc = self._binary("add", acc, t)
                for t in neg:
                    acc = self._binary("subtract", acc, t)
            else:
                acc = self._op("negative", neg[0])
                for t in neg[1:]:
                    acc = self._binary("subtract", acc, t)
            return self._binary("add", acc, ("c", const)) if const else acc
        if expr.is_Mul:
            coeff, factors = expr.as_coeff_mul()
            num: list[Operand] = []
            den: list[Operand] = []
            for f in factors:
                if f.is_Pow and f.exp.is_Integer and f.exp < 0:
                    den.append(self._power(self.emit(f.base), -f.exp))
                else:
                    num.append(self.emit(f))
            acc2: Operand | None = None
            for t in num:
                acc2 = t if acc2 is None else self._binary("multiply", acc2, t)
            c = float(coeff)
            if acc2 is None:
                acc2 = ("c", c)
                c = 1.0
            for t in den:
                acc2 = self._binary("divide", acc2, t)
            if c == -1.0:
                return self._op("negative", acc2)
            return acc2 if c == 1.0 else self._binary("multiply", acc2, ("c", c))
        if expr.is_Pow:
            return self._power(self.emit(expr.base), expr.exp)
        if isinstance(expr, sp.log):
            return self._op("log", self.emit(expr.args[0]))
        if isinstance(expr, sp.exp):
            return self._op("exp", self.emit(expr.args[0]))
        if isinstance(expr, sp.Max) and len(expr.args) == 2:
            return self._binary("maximum", self.emit(expr.args[0]), self.emit(expr.args[1]))
        raise NotImplementedError(f"cannot generate NumPy code for {type(expr).__name__}")

    def compile_lines(
        self, outputs: Sequence[tuple[sp.Expr, str]], consts: dict[float, str]
    ) -> tuple[list[str], int]:
        """Statements computing ``outputs`` (expr, destination array); returns (lines, n_bufs).

        Numeric constants are collected in ``consts`` (value -> name); the caller binds them
        to 0-d arrays of the kernel dtype, which keeps every ufunc call on its fast path.
        """
        finals: dict[int, str] = {}
        copies: list[tuple[str, Operand]] = []
        for expr, dest in outputs:
            result = self.emit(expr)
            if result[0] == "v" and result[1] not in finals:
                finals[result[1]] = dest
            else:
                copies.append((dest, result))
        last_use: dict[int, int] = {}
        for i, (_, _, args) in enumerate(self.ops):
            for a in args:
                if a[0] == "v":
                    last_use[a[1]] = i
        phys: dict[int, str] = {}
        free: list[str] = []
        n_bufs = 0
        lines: list[str] = []

        def ref(a: Operand) -> str:
            if a[0] == "c":
                return const_name(consts, a[1])
            if a[0] == "a":
                return str(a[1])
            return phys[a[1]]

        for i, (ufunc, vreg, args) in enumerate(self.ops):
            arg_refs = [ref(a) for a in args]
            for a in args:  # release buffers whose value dies here (in-place reuse)
                if a[0] == "v" and last_use[a[1]] == i and a[1] not in finals:
                    free.append(phys[a[1]])
            if vreg in finals:
                phys[vreg] = finals[vreg]
            elif free:
                phys[vreg] = free.pop()
            else:
                phys[vreg] = f"b{n_bufs}"
                n_bufs += 1
            lines.append(ufunc_call(ufunc, arg_refs, phys[vreg]))
        for dest, src in copies:
            lines.append(ufunc_call("copyto_", [dest, ref(src)], None))
        return lines, n_bufs


def const_name(consts: dict[float, str], value: float) -> str:
    return consts.setdefault(float(value), f"c{len(consts)}")


def ufunc_call(ufunc: str, args: Sequence[str], out: str | None) -> str:
    """One ufunc call; ``out`` positional (faster) except for maximum/minimum (deprecated).

    ``clip`` (args: array, lower, upper) becomes the method call ``array.clip(lo, hi, out)``:
    one pass instead of a maximum and a minimum, through NumPy's public API.
    """
    if ufunc == "clip":
        x, lo, hi = args
        return f"{x}.clip({lo}, {hi}, {out})"
    if out is None:
        return f"_{ufunc.rstrip('_')}({', '.join(args)})"
    if ufunc in ("maximum", "minimum"):
        return f"_{ufunc}({', '.join(args)}, out={out})"
    return f"_{ufunc}({', '.join([*args, out])})"


UFUNCS = {
    f"_{name}": getattr(np, name)
    for name in (
        "add",
        "subtract",
        "multiply",
        "divide",
        "negative",
        "square",
        "sqrt",
        "log",
        "exp",
        "maximum",
        "minimum",
        "copyto",
    )
}
KERNEL_DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Kernel:
    """A generated, chunked NumPy kernel; ``source`` is the exact code that runs.

    ``n_bufs`` is the number of chunk work buffers ``func`` takes (each ``CHUNK`` long).
    """

    source: str
    dtype: str
    n_bufs: int
    func: Callable[..., None] = field(repr=False)

    def run(
        self, inputs: Sequence[NDArray[Any]], outs: Sequence[NDArray[Any]], n_threads: int
    ) -> None:
        """Rows ``0:n`` of the 1-D ``inputs`` into the 1-D ``outs`` (all ``n`` long)."""
        n = outs[0].shape[0]
        n_threads = max(1, min(n_threads, -(-n // CHUNK)))
        n_bufs = self.n_bufs
        if n_threads == 1:
            self.func(*inputs, *outs, *_buffers(n_bufs, 0, self.dtype), 0, n)
            return
        step = -(-n // (n_threads * CHUNK)) * CHUNK
        pool = _pool(n_threads - 1)
        futures = [  # the pool takes the later parts, the calling thread the first one
            pool.submit(
                self.func, *inputs, *outs, *_buffers(n_bufs, t, self.dtype), lo, min(lo + step, n)
            )
            for t, lo in enumerate(range(step, n, step), start=1)
        ]
        try:
            self.func(*inputs, *outs, *_buffers(n_bufs, 0, self.dtype), 0, min(step, n))
        finally:
            for f in futures:
                f.result()


_TLS = threading.local()


def _buffers(count: int, slot: int, dtype: str) -> list[NDArray[Any]]:
    """Per-calling-thread chunk buffers for one worker slot, allocated once and reused."""
    store: dict[tuple[int, str], list[NDArray[Any]]] | None = getattr(_TLS, "store", None)
    if store is None:
        store = _TLS.store = {}
    bufs = store.setdefault((slot, dtype), [])
    while len(bufs) < count:
        bufs.append(np.empty(CHUNK, dtype=dtype))
    return bufs[:count]


@lru_cache(maxsize=4)
def _pool(n_threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="focal")


def compile_kernel(
    *,
    inputs: Sequence[str],
    dests: Sequence[str],
    buffers: Sequence[str],
    body: Sequence[str],
    consts: dict[float, str],
    dtype: str,
    comment: str,
    filename: str,
) -> Kernel:
    """Wrap ``body`` (statements from :meth:`InplaceNumpyCodegen.compile_lines`) in a chunk loop.

    The generated ``kernel(<inputs>_all, <dests>_all, <buffers>_all, lo, hi)`` computes rows
    ``lo:hi`` in chunks of :data:`CHUNK`, slicing every input and destination per chunk;
    ``consts`` (value -> name) become 0-d arrays of ``dtype``; ``comment`` is the source's
    first comment line and ``filename`` the name ``compile`` reports in tracebacks.
    """
    params = ", ".join(f"{n}_all" for n in [*inputs, *dests, *buffers])
    src = [
        f"def kernel({params}, lo, hi):",
        f"    # {comment}",
        f"    # constants: {', '.join(f'{n} = {v!r}' for v, n in consts.items())}",
        *(f"    {n} = {n}_all" for n in buffers),
        f"    for i in range(lo, hi, {CHUNK}):",
        f"        j = min(i + {CHUNK}, hi)",
        *([f"        if j - i != {CHUNK}:  # last, partial chunk"] if buffers else []),
        *(f"            {n} = {n}_all[: j - i]" for n in buffers),
        *(f"        {n} = {n}_all[i:j]" for n in [*inputs, *dests]),
        *(f"        {line}" for line in body),
    ]
    source = "\n".join(src) + "\n"
    namespace: dict[str, Any] = dict(UFUNCS)
    namespace.update({n: np.array(v, dtype=dtype) for v, n in consts.items()})
    exec(compile(source, filename, "exec"), namespace)
    return Kernel(source=source, dtype=dtype, n_bufs=len(buffers), func=namespace["kernel"])
