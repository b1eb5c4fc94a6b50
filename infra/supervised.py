"""``python -m infra.supervised SPEC``: what supervisord runs for each program.

SPEC is a private JSON file with the program's ``argv``, ``env`` and ``cwd``; this replaces
itself with that command (same pid, so supervisord signals the real process), keeping the
environment, which can hold passwords, out of supervisord's configuration.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(argv) != 1:
        print("usage: python -m infra.supervised SPEC", file=sys.stderr)
        return 2
    try:
        spec = json.loads(Path(argv[0]).read_text())
        command, env, cwd = list(spec["argv"]), dict(spec["env"]), str(spec["cwd"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"infra.supervised: cannot read the program spec {argv[0]}: {exc}", file=sys.stderr)
        return 2
    os.chdir(cwd)
    os.execvpe(command[0], command, env)
    return 0  # not reached: execvpe replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
