"""``python -m modelctl.daemon``: the process ``modelctl`` spawns in the background."""

from __future__ import annotations

import sys

from modelctl.config import Settings
from modelctl.errors import ModelctlError


def main() -> int:
    try:
        settings = Settings.from_env()
    except ModelctlError as exc:
        print(f"modelctl daemon: {exc.message}", file=sys.stderr)
        return 1
    from modelctl.daemon.server import exit_process, run_daemon

    exit_process(run_daemon(settings))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
