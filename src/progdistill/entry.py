"""The `progdistill` command's entry point: a Ctrl-C while Python is still loading the program (torch
takes seconds) gets one line and exit status 130, like one pressed later, not a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    """Load the command line (`cli.main`) and run it on sys.argv; 130 if interrupted while loading."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return run()
