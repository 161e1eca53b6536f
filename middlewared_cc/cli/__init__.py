"""``midclt-cc``: call middlewared-cc from the shell.

    midclt-cc call METHOD [ARG...]    each ARG is JSON, else a string; a final "-" reads JSON from stdin
    midclt-cc call -j METHOD [ARG...] wait for the job the call starts, with its progress on stderr
    midclt-cc ping                    print "pong"
    midclt-cc waitready [-t SECS]     wait until the daemon answers (default 60 s)
    midclt-cc subscribe EVENT [-n N]  print N collection_update events as JSON lines (0 = until stopped)
    midclt-cc import-rclone FILE      import an rclone config file's remotes (a table of results)
    midclt-cc export-rclone [ID...]   print credentials as an rclone config file
    midclt-cc import-truenas FILE [SEED]  import a TrueNAS backup's cloud credentials (via /_upload)

The default URI is the local daemon's unix socket, from its settings (``--config`` or the environment).
Results go to stdout as JSON, the server's reason to stderr. Exit codes: 0 ok, 1 call error, 2 usage,
3 cannot connect, 4 login failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from middlewared_cc.cli import transfer
from middlewared_cc.cli.commands import ExitCode, Request, run
from middlewared_cc.cli.inputs import PASSWORD_ENV, UsageError, parse_params, resolve_credentials, resolve_uri
from middlewared_cc.client import parse_uri

__all__ = ["ExitCode", "build_parser", "main"]


def _add_connection_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The options are accepted before and after the command; a subcommand's copy must not reset
    # what the top level already parsed, hence SUPPRESS there.
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument("-u", "--uri", default=default(None),
                       help="ws://HOST:PORT[/PATH], wss://HOST:PORT[/PATH], ws+unix:///SOCKET[:/PATH] or "
                            "/SOCKET; PATH defaults to /api/current (default: the local daemon's unix socket)")
    group.add_argument("-U", "--username", default=default(None), help="log in as this user")
    group.add_argument("-P", "--password", default=default(None),
                       help=f"password for -U (visible in ps: prefer ${PASSWORD_ENV} or the prompt)")
    group.add_argument("-K", "--api-key", default=default(None), metavar="KEY_OR_FILE",
                       help="log in with this API key, or with the key held in this file")
    group.add_argument("-t", "--timeout", type=float, default=default(None), metavar="SECS",
                       help="seconds to wait: for the connection and the reply (default: 10 s to connect, "
                            "no limit for the reply), or in total for waitready (default: 60 s)")
    group.add_argument("--insecure", action="store_true", default=default(False),
                       help="do not verify the server's TLS certificate (wss://)")
    group.add_argument("--config", default=default(None), metavar="FILE",
                       help="the daemon's config file, to find its unix socket")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for ``midclt-cc``."""
    parser = argparse.ArgumentParser(
        prog="midclt-cc", description="Call middlewared-cc over its websocket API.",
        epilog="Exit codes: 0 ok, 1 call error, 2 usage, 3 cannot connect, 4 login failed.",
    )
    _add_connection_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    call = commands.add_parser("call", help="call a method and print its result as JSON")
    call.add_argument("-j", "--job", action="store_true",
                      help="the method is a job: wait for it to end, showing its progress on stderr (a bar on "
                           "a terminal, lines otherwise); Ctrl-C asks, then aborts it (exit 130)")
    call.add_argument("method")
    call.add_argument("params", nargs=argparse.REMAINDER, metavar="ARG",
                      help='JSON (else a string); a final "-" reads one JSON document from stdin')
    ping = commands.add_parser("ping", help='check the daemon answers; prints "pong"')
    ready = commands.add_parser("waitready", help="wait until the daemon answers core.ping")
    sub = commands.add_parser("subscribe", help="print events of a collection as JSON lines")
    sub.add_argument("event", help="e.g. cloudsync.credentials.query")
    sub.add_argument("-n", "--count", type=int, default=0, help="stop after N events (default: never)")
    for sub_parser in (call, ping, ready, sub):
        _add_connection_options(sub_parser, top=False)
    transfer.add_parsers(commands, _add_connection_options)  # import-rclone, export-rclone, import-truenas
    return parser


def prepare(args: argparse.Namespace) -> Request:
    """Resolve the parsed arguments into a :class:`Request`; raise :class:`UsageError` when unusable."""
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("-t: must be a positive number of seconds")
    if args.command == "subscribe" and args.count < 0:
        raise UsageError("-n: must be 0 or more")
    uri = resolve_uri(args.uri, args.config)
    try:
        parse_uri(uri)
    except ValueError as exc:
        raise UsageError(f"-u: {exc} (or a socket path)") from None
    if args.command == "waitready":
        no_login = resolve_credentials(None, None, None)
        return Request("waitready", uri, no_login, args.timeout, not args.insecure)
    credentials = resolve_credentials(args.api_key, args.username, args.password)
    if args.command in transfer.COMMANDS:
        method, params = transfer.prepare(args)
        return Request(command=args.command, uri=uri, credentials=credentials, timeout=args.timeout,
                       ssl_verify=not args.insecure, method=method, params=params, files=transfer.files_of(args),
                       as_json=getattr(args, "json", False))
    params = parse_params(args.params) if args.command == "call" else []
    return Request(
        command=args.command, uri=uri, credentials=credentials, timeout=args.timeout,
        ssl_verify=not args.insecure, method=getattr(args, "method", ""), params=params,
        event=getattr(args, "event", ""), count=getattr(args, "count", 0), job=getattr(args, "job", False),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``midclt-cc``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are 2, --help is 0
        return int(exc.code) if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        request = prepare(args)
    except UsageError as exc:
        print(f"midclt-cc: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        return int(asyncio.run(run(request)))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error of ours.
        return ExitCode.OK
