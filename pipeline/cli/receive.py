"""Entry point of ``pipeline-receive``; the implementation is in ``pipeline.cli.receiving``.

This module stays import-light on purpose: worker processes are started with
the ``spawn`` method, which re-imports the parent's ``__main__`` module in
every child.  Importing aiortc and friends here would cost each reader, hasher
and writer process ~50 MiB of memory it never uses.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    from pipeline.cli.receiving import main as run_main

    run_main(argv)


if __name__ == "__main__":
    main()
