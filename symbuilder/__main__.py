"""`python -m symbuilder` is the `symbuilder` command."""
import signal

# Until cli.main() has its handlers, a Ctrl-C or SIGTERM waits (then ends the command cleanly)
# instead of breaking an import with a traceback.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

from .cli import run  # noqa: E402

run()
