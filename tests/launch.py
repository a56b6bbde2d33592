"""Run an entry point as `python` would, with the tests' fakes registered first (`fakes.py`):

    python tests/launch.py -m index build --config c.toml
    python tests/launch.py bot.py --console
    python tests/launch.py -c "code" arg...

For the tests that need a real process (signals, SIGKILL, two processes, the smoke tests of
each entry point) over an index built with the fake embedder.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS.parent


def main(args: list[str]) -> None:
    # As `python -m` and `python bot.py` from the checkout: the project first, then the fakes.
    sys.path[:1] = [str(PROJECT_ROOT), str(TESTS)]
    from fakes import register_fakes

    register_fakes()
    if args[:1] == ["-m"] and len(args) > 1:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[:1] == ["-c"] and len(args) > 1:
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    elif args:
        sys.argv = list(args)
        runpy.run_path(args[0], run_name="__main__")
    else:
        sys.exit("usage: launch.py -m MODULE [ARG...] | -c CODE [ARG...] | SCRIPT [ARG...]")


if __name__ == "__main__":
    main(sys.argv[1:])
