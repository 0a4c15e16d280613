"""DeepSpeed's C++ ops, compiled once per virtualenv instead of inside the first training job.

DeepSpeed compiles its ops (CPU Adam for optimizer offload, the shared-memory collective of its
CPU accelerator) on first use, a minute or more each, into ``TORCH_EXTENSIONS_DIR``. The
default, ``~/.cache/torch_extensions``, is shared by every checkout of the machine, and a
checkout at another path recompiles over it (the include paths change). The platform keeps
them in ``<venv>/torch_extensions`` instead; ``make install`` builds them there
(``python -m cluster.trainers.ds_ops``), and workers point DeepSpeed at them before import.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def extensions_dir() -> Path:
    return Path(sys.prefix) / "torch_extensions"


def use_venv_extensions() -> None:
    """Point DeepSpeed at this virtualenv's compiled ops (unless the caller chose a folder)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))


def main() -> None:
    use_venv_extensions()
    from deepspeed.accelerator import get_accelerator

    for name in ("CPUAdamBuilder", "ShareMemCommBuilder"):
        builder = get_accelerator().create_op_builder(name)
        if builder is None or not builder.is_compatible(verbose=False):
            print(f"{name}: not used on this machine's accelerator", flush=True)
            continue
        started = time.monotonic()
        try:
            builder.load(verbose=False)
        except Exception as error:  # a missing toolchain must not fail the install
            print(f"{name}: not compiled now ({type(error).__name__}: {error}); DeepSpeed will "
                  "try again on first use", file=sys.stderr, flush=True)
            continue
        print(f"{builder.absolute_name()}: ready in {os.environ['TORCH_EXTENSIONS_DIR']} "
              f"({time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
