"""The reason a failed batch job gives: the innermost error of the remote traceback."""

from serve_apps.inference.batch_runner import _reason

RAY_DATA_FAILURE = """ray::MapWorker(MapBatches(P)).submit() (pid=1, ip=10.0.0.2)
  File "/usr/lib/python3.11/concurrent/futures/thread.py", line 58, in run
    result = self.fn(*self.args, **self.kwargs)
ValueError: the file needs the feature columns ['a', 'b']

The above exception was the direct cause of the following exception:

ray::MapWorker(MapBatches(P)).submit() (pid=1, ip=10.0.0.2)
ray.exceptions.UserCodeException: UDF failed to process a data block.
Failed to apply UDF transform after 1/1 attempts (total backoff 0.0s).
To change retry attempts, backoff, or which errors are retried, configure it."""


def test_a_ray_data_failure_names_the_user_error_not_rays_advice() -> None:
    reason = _reason(RuntimeError(RAY_DATA_FAILURE), "s3://bucket/datasets/t/a.parquet")

    assert reason == "ValueError: the file needs the feature columns ['a', 'b']"


def test_a_plain_error_keeps_its_type_and_last_line() -> None:
    assert _reason(KeyError("pixel_0_0"), "a.csv") == "KeyError: 'pixel_0_0'"
