"""Command line: ``python -m autograder release [ASSIGNMENT ...]``."""

import argparse

from autograder.release import release


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    release_parser = commands.add_parser("release", help="generate notebooks/ from solutions/")
    release_parser.add_argument("assignments", nargs="*", help="assignment ids (default: all)")
    args = parser.parse_args(argv)
    for path in release(args.assignments or None):
        print(f"released {path}")


if __name__ == "__main__":
    main()
