"""How a distributed fill sums its tasks' reports, and when it refuses to report success.

No engine needed: :func:`skbert.engines._common.fill_totals` is what the
Dask, Ray and Spark fills call on the client with their tasks' reports
(the engine tests run it on real clusters).
"""

import pytest

from skbert.engines._common import TASK_COLUMNS, fill_totals


def _task(texts, hits, misses, failed=0, error=""):
    return dict(zip(TASK_COLUMNS, (texts, hits, misses, failed, error)))


def test_counts_are_summed_when_every_task_stored():
    reports = [_task(10, 4, 6), _task(0, 0, 0), _task(5, 5, 0)]
    assert fill_totals(reports) == {"texts": 15, "hits": 9, "misses": 6}


def test_a_fill_that_stored_nothing_raises_with_the_cause():
    cause = "cannot write to s3://b/x/skbert-features-v1 (PermissionError: Access Denied)"
    reports = [_task(10, 0, 10, 10, cause), _task(7, 0, 7, 7, cause)]
    with pytest.raises(OSError, match=r"stored nothing: the 17 texts .* in 2 of 2 tasks: "
                       r"cannot write .*Access Denied\)\. Every executor must reach"):
        fill_totals(reports, worker="executor")


def test_a_partly_failed_fill_raises_and_counts_what_failed():
    reports = [
        _task(10, 2, 8),
        _task(6, 0, 6, 6, "cannot use s3://b/x/skbert-features-v1 (NoCredentialsError: none)"),
        _task(4, 0, 4, 4, "cannot use /nfs/x/skbert-features-v1 (not a directory)"),
    ]
    with pytest.raises(OSError, match=r"incomplete: 10 of the 18 texts .* in 2 of 3 tasks: "
                       r"cannot use s3://.*NoCredentialsError: none\) \(and 1 other cause\)"):
        fill_totals(reports)


def test_a_failure_with_nothing_to_store_is_no_failure():
    # A read-only store that held every text: nothing to write, nothing lost.
    assert fill_totals([_task(5, 5, 0, 0, "")]) == {"texts": 5, "hits": 5, "misses": 0}
