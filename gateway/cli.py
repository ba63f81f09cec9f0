"""``feature-gateway``: ``serve`` runs a gateway; ``local up`` runs a local cluster for development.

A bad configuration prints one line naming the file and key and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import ConfigError, load, require_peer_secret


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
    up.add_argument("--regions", help="comma-separated regions to start (default: every region of the file)")
    up.add_argument("--state-dir", default=".local")

    fault = local_sub.add_parser("fault", help="inject a fault into the running local cluster")
    fault.add_argument("--state-dir", default=".local")
    kinds = fault.add_subparsers(dest="fault", required=True)
    for name, text in (
        ("lag", "add replication lag from one region to another"),
        ("pause", "pause replication from one region to another (changes accumulate)"),
        ("resume", "resume paused replication"),
        ("reorder", "deliver changes to different items out of order (per-item order is kept)"),
    ):
        k = kinds.add_parser(name, help=text)
        k.add_argument("--from", dest="source", required=True, metavar="REGION")
        k.add_argument("--to", dest="target", required=True, metavar="REGION")
        if name == "lag":
            k.add_argument("--seconds", type=float, required=True)
            k.add_argument("--jitter", type=float, default=0.0)
        if name == "reorder":
            k.add_argument("--off", action="store_true", help="back to in-order delivery")
    for name, text in (("stop-region", "stop a region's gateway and freeze its DynamoDB"), ("start-region", "bring it back")):
        kinds.add_parser(name, help=text).add_argument("region")
    cut = kinds.add_parser("partition", help="cut a region off the network from the others (nftables; needs root)")
    cut.add_argument("region")
    cut.add_argument("--from", dest="source", metavar="REGION", help="only from this region (default: from all)")
    kinds.add_parser("heal", help="remove partitions (all, or one region's)").add_argument("region", nargs="?")
    kinds.add_parser("status", help="regions, partitions and replication backlogs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "serve":
            from gateway.server import serve

            if args.workers is not None and args.workers < 1:
                raise ConfigError("--workers: must be at least 1")
            config = load(args.config, region=args.region)
            require_peer_secret(config)
            if config.auth.mode == "tokens" and config.auth.tokens_file:
                from gateway.api.auth import TokenAuthority, TokensFileError

                try:
                    TokenAuthority(config.auth.tokens_file)  # a bad tokens file stops the gateway here, in one line
                except TokensFileError as exc:
                    raise ConfigError(f"auth.tokens_file: {exc}") from None
            return serve(config, args.workers)
        if args.command == "local":
            return _local(args)
    except ConfigError as exc:
        print(f"feature-gateway: bad configuration: {exc}", file=sys.stderr)
        return 2
    return 2


def _local(args: argparse.Namespace) -> int:
    import asyncio
    import json
    from pathlib import Path

    from gateway.local.cluster import ClusterError, LocalCluster, run_until_signalled, send_fault, use_local_credentials
    from gateway.local.dynamodb_local import DynamoDBLocalError
    from gateway.local.gateway_process import GatewayProcessError

    try:
        if args.local_command == "up":
            use_local_credentials()
            regions = args.regions.split(",") if args.regions else None
            return asyncio.run(run_until_signalled(LocalCluster(args.config, regions, args.state_dir)))
        body: dict[str, object] = {}
        if args.fault in ("lag", "pause", "resume", "reorder"):
            body = {"from": args.source, "to": args.target}
            if args.fault == "lag":
                body.update(seconds=args.seconds, jitter=args.jitter)
            if args.fault == "reorder":
                body["enabled"] = not args.off
        elif args.fault in ("stop-region", "start-region", "heal"):
            body = {"region": args.region}
        elif args.fault == "partition":
            body = {"region": args.region, "from": args.source}
        answer = asyncio.run(send_fault(Path(args.state_dir) / "cluster.json", args.fault, body))
        print(json.dumps(answer, indent=2))
        return 0
    except (ClusterError, DynamoDBLocalError, GatewayProcessError) as exc:
        print(f"feature-gateway local {args.local_command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
