"""The Ray side of training: job specs, ``python -m cluster.train``, trainers, model zoo.

Importing this package is light (pydantic and YAML only), so the gateway can validate specs
without loading torch; trainers and the zoo are imported when a job runs.
"""

from cluster.errors import SpecError, TrainingFailed
from cluster.spec import JobSpec, load_spec, validate_spec

__all__ = ["JobSpec", "SpecError", "TrainingFailed", "load_spec", "validate_spec"]
