"""Usage errors in one line, exit 2 (A.2), for every CLI.

Kept free of heavy imports so that ``pipeline-signal`` can use it without
loading aiortc."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from pipeline.protocol.outcome import EXIT_USAGE


def usage_error(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


class OneLineErrorParser(argparse.ArgumentParser):
    """``argparse`` with a usage error in one line and exit 2 (A.2), like a config
    error, instead of the whole usage block; ``--help`` still prints everything."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, f"{' '.join(message.split())} (see {self.prog} --help)")
