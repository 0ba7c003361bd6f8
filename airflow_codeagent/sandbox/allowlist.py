"""What each default module exposes to model code, name by name.

An allowlist, not a denylist: a module's public surface grows with every
Python release, and one overlooked helper is an escape (``functools.wraps``
copies ``__globals__``, ``singledispatch.register`` evaluates string
annotations with plain ``eval``, ``collections.UserString.format`` walks
attributes, ``statistics.NormalDist.samples`` draws from the host's
``random``, ``decimal.DefaultContext`` is process-wide state).

Modules a user authorizes beyond these get the generic proxy: private and
module-valued attributes refused, everything else exposed. README says so.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Mapping


def _public(module: object) -> frozenset[str]:
    return frozenset(name for name in dir(module) if not name.startswith("_"))


MODULE_ALLOWLIST: Mapping[str, frozenset[str]] = {
    "collections": frozenset({"ChainMap", "Counter", "OrderedDict", "defaultdict", "deque", "namedtuple"}),
    "datetime": frozenset({"MAXYEAR", "MINYEAR", "date", "datetime", "time", "timedelta", "timezone",
                           "UTC"}),
    "decimal": frozenset({
        "Context", "Decimal", "DecimalException", "DivisionByZero", "Inexact", "InvalidOperation",
        "Overflow", "Rounded", "Subnormal", "Underflow", "Clamped", "FloatOperation",
        "ROUND_05UP", "ROUND_CEILING", "ROUND_DOWN", "ROUND_FLOOR", "ROUND_HALF_DOWN",
        "ROUND_HALF_EVEN", "ROUND_HALF_UP", "ROUND_UP", "getcontext", "localcontext",
        "MAX_PREC", "MAX_EMAX", "MIN_EMIN", "MIN_ETINY",
    }),
    "fractions": frozenset({"Fraction"}),
    "functools": frozenset({"cache", "cached_property", "cmp_to_key", "lru_cache", "partial", "reduce",
                            "total_ordering"}),
    "itertools": _public(itertools),
    "json": frozenset({"JSONDecodeError", "dumps", "loads"}),
    "math": _public(math),
    "random": frozenset({
        "betavariate", "choice", "choices", "expovariate", "gammavariate", "gauss", "getrandbits",
        "getstate", "setstate",
        "lognormvariate", "normalvariate", "paretovariate", "randbytes", "randint", "random",
        "randrange", "sample", "seed", "shuffle", "triangular", "uniform", "vonmisesvariate",
        "weibullvariate", "Random",
    }),
    "re": frozenset({
        "A", "ASCII", "DOTALL", "I", "IGNORECASE", "M", "MULTILINE", "Match", "NOFLAG", "Pattern",
        "S", "U", "UNICODE", "VERBOSE", "X", "compile", "error", "escape", "findall", "finditer",
        "fullmatch", "match", "search", "split", "sub", "subn",
    }),
    "statistics": frozenset({
        "StatisticsError", "correlation", "covariance", "fmean", "geometric_mean", "harmonic_mean",
        "linear_regression", "mean", "median", "median_grouped", "median_high", "median_low", "mode",
        "multimode", "pstdev", "pvariance", "quantiles", "stdev", "variance",
    }),
    "string": frozenset({
        "Template", "ascii_letters", "ascii_lowercase", "ascii_uppercase", "capwords", "digits",
        "hexdigits", "octdigits", "printable", "punctuation", "whitespace",
    }),
    "time": frozenset({
        "altzone", "asctime", "ctime", "daylight", "gmtime", "localtime", "mktime", "monotonic",
        "monotonic_ns", "perf_counter", "perf_counter_ns", "strftime", "strptime", "struct_time",
        "time", "time_ns", "timezone", "tzname",
    }),
    "unicodedata": _public(unicodedata),
}

# Opt-in data libraries (``authorized_imports=["numpy"]`` / ``["pandas"]``). Module level only: no
# file or URL I/O, no pickle, no eval, no process-wide state (print/error options, global RNG,
# pandas options), no frame introspection (``bmat``), no uninitialized memory (``empty``,
# ``ndarray(shape)``). Methods on the objects these hand out (``DataFrame.to_csv``,
# ``DataFrame.query``, ``ndarray.tofile``...) are refused by ``dataframes.py``.
_NUMPY_NAMES = """
False_ ScalarType True_ abs absolute acos acosh add all allclose amax amin angle any append
apply_along_axis apply_over_axes arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh
argmax argmin argpartition argsort argwhere around array array2string array_equal array_equiv
array_repr array_split array_str asanyarray asarray asarray_chkfinite ascontiguousarray
asfortranarray asin asinh asmatrix astype atan atan2 atanh atleast_1d atleast_2d atleast_3d
average bartlett base_repr binary_repr bincount bitwise_and bitwise_count bitwise_invert
bitwise_left_shift bitwise_not bitwise_or bitwise_right_shift bitwise_xor blackman block bool
bool_ broadcast broadcast_arrays broadcast_shapes broadcast_to busday_count busday_offset
busdaycalendar byte bytes_ c_ can_cast cbrt cdouble ceil character choose clip clongdouble
column_stack common_type complex128 complex256 complex64 complexfloating compress concat
concatenate conj conjugate convolve copy copysign copyto corrcoef correlate cos cosh
count_nonzero cov cross csingle cumprod cumsum cumulative_prod cumulative_sum datetime64
datetime_as_string datetime_data deg2rad degrees delete diag diag_indices diag_indices_from
diagflat diagonal diff digitize divide divmod dot double dsplit dstack dtype e ediff1d einsum
einsum_path equal euler_gamma exp exp2 expand_dims expm1 extract eye fabs fill_diagonal finfo
fix flatiter flatnonzero flexible flip fliplr flipud float128 float16 float32 float64
float_power floating floor floor_divide fmax fmin fmod format_float_positional
format_float_scientific frexp frombuffer fromfunction fromiter frompyfunc fromstring full
full_like gcd generic geomspace gradient greater greater_equal half hamming hanning heaviside
histogram histogram2d histogram_bin_edges histogramdd hsplit hstack hypot i0 identity iinfo imag
index_exp indices inexact inf inner insert int16 int32 int64 int8 int_ intc integer interp
intersect1d intp invert is_busday isclose iscomplex iscomplexobj isdtype isfinite isfortran isin
isinf isnan isnat isneginf isposinf isreal isrealobj isscalar issubdtype iterable ix_ kaiser
kron lcm ldexp left_shift less less_equal lexsort linspace little_endian log log10 log1p log2
logaddexp logaddexp2 logical_and logical_not logical_or logical_xor logspace long longdouble
longlong mask_indices matmul matrix matrix_transpose matvec max maximum may_share_memory mean
median meshgrid mgrid min min_scalar_type minimum mintypecode mod modf moveaxis multiply nan
nan_to_num nanargmax nanargmin nancumprod nancumsum nanmax nanmean nanmedian nanmin
nanpercentile nanprod nanquantile nanstd nansum nanvar ndenumerate ndim ndindex nditer negative
newaxis nextafter nonzero not_equal number object_ ogrid ones ones_like outer packbits pad
partition percentile permute_dims pi piecewise place poly poly1d polyadd polyder polydiv polyfit
polyint polymul polysub polyval positive pow power prod promote_types ptp put put_along_axis
putmask quantile r_ rad2deg radians ravel ravel_multi_index real real_if_close reciprocal
remainder repeat require reshape resize result_type right_shift rint roll rollaxis roots rot90
round row_stack s_ searchsorted select setdiff1d setxor1d shape shares_memory short sign signbit
signedinteger sin sinc single sinh size sort sort_complex spacing split sqrt square squeeze
stack std str_ subtract sum swapaxes take take_along_axis tan tanh tensordot tile timedelta64
trace transpose trapezoid tri tril tril_indices tril_indices_from trim_zeros triu triu_indices
triu_indices_from true_divide trunc typename ubyte ufunc uint uint16 uint32 uint64 uint8 uintc
uintp ulong ulonglong union1d unique unique_all unique_counts unique_inverse unique_values
unpackbits unravel_index unsignedinteger unstack unwrap ushort vander var vdot vecdot vecmat
vectorize void vsplit vstack where zeros zeros_like
"""

_PANDAS_NAMES = """
ArrowDtype BooleanDtype Categorical CategoricalDtype CategoricalIndex DataFrame DateOffset
DatetimeIndex DatetimeTZDtype Float32Dtype Float64Dtype Grouper Index IndexSlice Int16Dtype
Int32Dtype Int64Dtype Int8Dtype Interval IntervalDtype IntervalIndex MultiIndex NA NaT NamedAgg
Period PeriodDtype PeriodIndex RangeIndex Series SparseDtype StringDtype Timedelta TimedeltaIndex
Timestamp UInt16Dtype UInt32Dtype UInt64Dtype UInt8Dtype array bdate_range col concat crosstab cut
date_range factorize from_dummies get_dummies infer_freq interval_range isna isnull json_normalize
lreshape melt merge merge_asof merge_ordered notna notnull period_range pivot pivot_table qcut
timedelta_range to_datetime to_numeric to_timedelta unique wide_to_long
"""

DATAFRAME_ALLOWLIST: Mapping[str, frozenset[str]] = {
    "numpy": frozenset(_NUMPY_NAMES.split()),
    "numpy.linalg": frozenset("""
        LinAlgError cholesky cond cross det diagonal eig eigh eigvals eigvalsh inv lstsq matmul
        matrix_norm matrix_power matrix_rank matrix_transpose multi_dot norm outer pinv qr slogdet
        solve svd svdvals tensordot tensorinv tensorsolve trace vecdot vector_norm
    """.split()),
    # Seeded generators only: the legacy functions (seed, rand, ...) share one process-wide state.
    "numpy.random": frozenset({"default_rng", "Generator", "PCG64", "SeedSequence"}),
    "pandas": frozenset(_PANDAS_NAMES.split()),
}

MODULE_ALLOWLIST = {**MODULE_ALLOWLIST, **DATAFRAME_ALLOWLIST}

# For modules outside the allowlist: names that lead out even though they are not modules.
GENERIC_DENYLIST: Mapping[str, frozenset[str]] = {
    "string": frozenset({"Formatter"}),
    "json": frozenset({"load", "dump"}),
    "time": frozenset({"sleep"}),
}
