"""Statistics for the benchmarks (standard library only).

Intervals are distribution-free: the 95 % confidence interval of a quantile
(the median, a low quantile, the median of paired ratios) is a pair of order
statistics of the sample, chosen with the binomial distribution; it assumes
nothing about the shape of the timings, which on a shared machine have a
long tail. A verdict against a limit is given only when the whole interval
is on one side of it; otherwise it is undecided, and the run should be
repeated rather than read as a pass or a failure.
"""
import functools
import math
import statistics

LEVEL = 0.95

# A curve bends where the slope of log(cost) against log(N) between two
# consecutive points is above this: the cost per unit grows at least as
# fast as the square root of N there. What grows with a logarithm of N (a
# heap, a tree) stays far below at these sizes; a cost per call that walks
# what is pending tends to 1.
BEND_SLOPE = 0.5


def _binom_cdf(n, q):
    """[P(B <= k) for k in 0..n] for B ~ Binomial(n, q), 0 < q < 1."""
    log_q, log_p, lg = math.log(q), math.log1p(-q), math.lgamma
    total, cdf = 0.0, []
    for k in range(n + 1):
        total += math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1) + k * log_q + (n - k) * log_p)
        cdf.append(min(total, 1.0))
    return cdf


@functools.lru_cache(maxsize=None)
def rank_interval(n, q, level=LEVEL):
    """1-based ranks (l, u) such that the order statistics X(l) <= X(u) of
    n samples hold the true q-quantile between them with probability at
    least `level`, each tail at most (1 - level) / 2; None when n is too
    small for that."""
    if n < 1:
        return None
    tail = (1 - level) / 2
    cdf = _binom_cdf(n, q)
    # B, the number of samples below the quantile, is Binomial(n, q):
    # P(X(l) > Q) = P(B < l) = cdf[l - 1], P(X(u) < Q) = P(B >= u) = 1 - cdf[u - 1].
    lower = max((l for l in range(1, n + 1) if cdf[l - 1] <= tail), default=None)
    upper = min((u for u in range(1, n + 1) if 1 - cdf[u - 1] <= tail), default=None)
    if lower is None or upper is None:
        return None
    return lower, upper


def quantile(xs, q):
    """The sample q-quantile (the median for q = 0.5 and an even count is
    the mean of the middle two)."""
    if q == 0.5:
        return statistics.median(xs)
    s = sorted(xs)
    return s[max(1, math.ceil(q * len(s))) - 1]


def interval(xs, q=0.5, level=LEVEL):
    """(estimate, low, high) of the q-quantile of xs; low and high are None
    when there are too few samples for an interval."""
    ranks = rank_interval(len(xs), q, level)
    if ranks is None:
        return quantile(xs, q), None, None
    s = sorted(xs)
    return quantile(xs, q), s[ranks[0] - 1], s[ranks[1] - 1]


def paired_ratios(a, b):
    """Each sample of a over the sample of b taken next to it."""
    return [x / y for x, y in zip(a, b) if y > 0]


def process_ratio(processes):
    """(estimate, low, high) of the ratio a / b from paired samples taken in
    several processes [(a, b), ...]: each process's median paired ratio is
    one observation, and the interval is that of their median. Samples of
    one process share its address layout, which moves a case of a few ns by
    up to a quarter, the same way all through the process: they are not
    independent of one another, and an interval over all of them would
    hold within a run but not from run to run."""
    return interval([statistics.median(paired_ratios(a, b)) for a, b in processes])


def at_most(low, high, limit):
    """True when the whole interval is at or below limit, False when all of
    it is above, None (undecided) otherwise or without an interval."""
    if low is None or high is None:
        return None
    if high <= limit:
        return True
    if low > limit:
        return False
    return None


def at_least(low, high, limit):
    """at_most, the other way round."""
    if low is None or high is None:
        return None
    if low >= limit:
        return True
    if high < limit:
        return False
    return None


def slope(n0, n1, ratio):
    """The slope of log(cost) against log(N) between N = n0 and n1, for
    cost(n1) / cost(n0) = ratio."""
    return math.log(ratio) / math.log(n1 / n0)


def slopes(n0, n1, ratio, ratio_low, ratio_high):
    """The segment from n0 to n1 of a curve, given cost(n1) / cost(n0) and
    its interval (None: none): its slope, and the slope's interval."""
    seg = {"from": n0, "to": n1, "slope": slope(n0, n1, ratio), "slope_ci": [None, None]}
    if ratio_low is not None and ratio_high is not None and ratio_low > 0:
        seg["slope_ci"] = [slope(n0, n1, ratio_low), slope(n0, n1, ratio_high)]
    return seg


def segment(n0, n1, ratio, ratio_low, ratio_high):
    """slopes() and the segment's verdict: it bends when the whole interval
    of its slope is above BEND_SLOPE, is flat when all of it is at or below,
    and is undecided otherwise."""
    seg = slopes(n0, n1, ratio, ratio_low, ratio_high)
    flat = at_most(*seg["slope_ci"], BEND_SLOPE)
    seg["verdict"] = {True: "flat", False: "bends", None: "undecided"}[flat]
    return seg


def curve_verdict(segments):
    """The verdict of a curve from its segments: where it first bends, else
    flat when every segment is flat, else undecided."""
    for seg in segments:
        if seg["verdict"] == "bends":
            return f"bends at {seg['from']:g}->{seg['to']:g}"
    if all(seg["verdict"] == "flat" for seg in segments):
        return "flat"
    return "undecided: rerun"


def steepest(segments):
    """The segment with the steepest slope, of those that have one."""
    return max((seg for seg in segments if seg["slope"] is not None),
               key=lambda seg: seg["slope"], default=None)
