import sys

from bench.cli import main

if __name__ == "__main__":  # guarded: spawned cell processes re-import the parent's main module
    sys.exit(main())
