"""``python -m llmjobs`` and the ``llmjobs`` command: ``status`` of a finished run on SQLite is answered by
``llmjobs.fast_status`` before typer, SQLAlchemy or the controller are imported; everything else by the CLI."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from llmjobs.fast_status import try_status

    try:
        code = try_status(sys.argv[1:])
    except Exception as e:  # printing failed (e.g. a closed pipe): one line, as the CLI words errors
        if "--debug" in sys.argv[1:] or os.environ.get("LLMJOBS_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        sys.stderr.write(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)\n")
        sys.exit(1)
    if code is not None:
        sys.exit(code)
    from llmjobs.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
