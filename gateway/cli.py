"""``feature-gateway``: ``serve`` runs a gateway; ``local up`` runs a local cluster for development.

A bad configuration prints one line naming the file and key and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import ConfigError, load


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="feature-gateway", description="Regional data gateway for ML feature stores on DynamoDB.")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="TOML configuration file")
    serve.add_argument("--region", help="which region of the file this gateway is (default: gateway.region)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (default: gateway.workers)")

    local = sub.add_parser("local", help="a local cluster on this machine for development")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="start DynamoDB Local and a gateway per region; Ctrl-C stops everything")
    up.add_argument("--config", default="config/local.toml")
    up.add_argument(
        "--regions",
        help="comma-separated regions to start (default: the first region of the file; "
        "regions do not replicate to each other until the global-table emulator lands)",
    )
    up.add_argument("--state-dir", default=".local")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "serve":
            from gateway.server import serve

            if args.workers is not None and args.workers < 1:
                raise ConfigError("--workers: must be at least 1")
            return serve(load(args.config, region=args.region), args.workers)
        if args.command == "local" and args.local_command == "up":
            from gateway.local.cluster import ClusterError, LocalCluster, run_until_signalled, use_local_credentials
            from gateway.local.dynamodb_local import DynamoDBLocalError

            use_local_credentials()
            try:
                regions = args.regions.split(",") if args.regions else None
                return run_until_signalled(LocalCluster(args.config, regions, args.state_dir))
            except (ClusterError, DynamoDBLocalError) as exc:
                print(f"feature-gateway local up: {exc}", file=sys.stderr)
                return 1
    except ConfigError as exc:
        print(f"feature-gateway: bad configuration: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
