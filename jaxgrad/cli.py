"""The `jaxgrad` command (filled in by the experiment-framework issue)."""
import sys


def main(argv=None) -> int:
    print("usage: jaxgrad {list,run,figures,reproduce,info,bench}", file=sys.stderr)
    return 0
