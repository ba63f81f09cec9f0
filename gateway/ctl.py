"""``gatewayctl``: the operator CLI for routing rules and switches.

Rules and switches arrive with the routing issue; today it only explains itself.
"""

from __future__ import annotations

import argparse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gatewayctl",
        description="Operate Feature Gateway: edit routing rules in the control table and drive primary switches. "
        "(Rule and switch commands are not available in this version yet.)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser().parse_args(argv)
    parser().print_help()
    return 0
