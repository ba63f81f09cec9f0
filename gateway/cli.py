"""``feature-gateway``: ``serve`` runs a gateway; ``local up`` runs a local cluster for development,
``local status``, ``local down`` and ``local fault …`` act on it from another terminal.

A bad configuration prints one line naming the file and key and exits 2. Output cut short by its reader
(``local fault status | head -1``) ends the command quietly, as for any Unix tool.
"""

from __future__ import annotations

import argparse
import functools
import os
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
    status = local_sub.add_parser("status", help="the running local cluster: endpoints, PIDs, faults, status page")
    status.add_argument("--state-dir", default=".local")
    status.add_argument("--json", action="store_true", help="the cluster's status as JSON")
    down = local_sub.add_parser("down", help="stop the running local cluster (as Ctrl-C in its terminal would)")
    down.add_argument("--state-dir", default=".local")

    fault = local_sub.add_parser("fault", help="inject a fault into the running local cluster")
    fault.add_argument("--state-dir", default=".local")
    # Taken after the fault's name too (`local fault status --state-dir D`); SUPPRESS keeps the one given before.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--state-dir", default=argparse.SUPPRESS, help="the cluster's state directory (.local)")
    kinds = fault.add_subparsers(dest="fault", required=True)
    kinds.add_parser = functools.partial(kinds.add_parser, parents=[where])  # type: ignore[method-assign]
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
    kinds.add_parser("status", help="every active fault, regions, replication backlogs, dropped changes").add_argument(
        "--json", action="store_true", help="the cluster's status as JSON"
    )
    kinds.add_parser("clear", help="remove every fault: heal, start stopped regions, no lag, pause or reordering")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, so a reader that went away is seen now rather than at exit
    except BrokenPipeError:
        # The reader stopped reading (`| head`): nothing more to say, and no traceback to say it with.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    return code


def _main(argv: list[str] | None) -> int:
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

    from gateway.local import remote
    from gateway.local.cluster import (
        ClusterError,
        LocalCluster,
        endpoint_table,
        run_until_signalled,
        use_local_credentials,
    )
    from gateway.local.dynamodb_local import DynamoDBLocalError
    from gateway.local.faults import status_text
    from gateway.local.gateway_process import GatewayProcessError

    try:
        if args.local_command == "up":
            use_local_credentials()
            regions = args.regions.split(",") if args.regions else None
            say = lambda line: print(line, flush=True)  # noqa: E731
            return asyncio.run(run_until_signalled(LocalCluster(args.config, regions, args.state_dir, say=say)))
        if args.local_command == "down":
            print(remote.down(args.state_dir))
            return 0
        if args.local_command == "status":
            status = asyncio.run(remote.cluster_status(args.state_dir))
            if args.json:
                print(json.dumps(status, indent=2))
                return 0
            print(f"running: local up pid {status['pid']}, {len(status['regions'])} region(s); "
                  f"status page {status['status_page']}")
            print(endpoint_table(status["regions"]))
            print(status_text(status))
            return 0
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
        answer = asyncio.run(remote.send_fault(args.state_dir, args.fault, body))
        if args.fault == "status":
            print(json.dumps(answer["status"], indent=2) if args.json else status_text(answer["status"]))
        else:
            print(answer["message"])
        return 0
    except (ClusterError, DynamoDBLocalError, GatewayProcessError, remote.RemoteError) as exc:
        print(f"feature-gateway local {args.local_command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
