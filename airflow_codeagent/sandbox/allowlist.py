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

# For modules outside the allowlist: names that lead out even though they are not modules.
GENERIC_DENYLIST: Mapping[str, frozenset[str]] = {
    "string": frozenset({"Formatter"}),
    "json": frozenset({"load", "dump"}),
    "time": frozenset({"sleep"}),
}
