"""`python -m envfarm.verifiers.web APP SCRIPT [--out DIR]`: an alias of `envfarm verify web APP SCRIPT`.

Kept for the hands that already type it; it runs the same command (envfarm.verifiers.cli) through the
same entry point, so options, output, exit codes and one-line errors are those of `envfarm verify web`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from envfarm.cli import main as envfarm_main

    envfarm_main(["verify", "web", *(sys.argv[1:] if argv is None else argv)], prog_name="envfarm")


if __name__ == "__main__":
    main()
