#!/usr/bin/env python3
"""WebSocket echo server: the server under test for scripts/e2e/websocket.sh.

Echoes every message back, permessage-deflate on (for the 12.*/13.* cases),
messages up to 32 MiB (the 9.* cases send 16 MiB), no keepalive pings (an
unexpected ping would upset a case). Two implementations from PyPI:

  --impl autobahn    Autobahn|Python (asyncio), the reference implementation
                     from the makers of the Autobahn TestSuite. Default: it
                     passes every case of groups 1-10 (OK, or INFORMATIONAL
                     where the spec leaves the behaviour open).
  --impl websockets  The `websockets` package. It answers 7.1.5 (close frame
                     in the middle of a fragmented message) with 1002, which
                     Autobahn counts as FAILED, and 14 cases are NON-STRICT.

Binds 127.0.0.1 on a free port (or --port), writes the port to --port-file
once it listens, and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

MAX_SIZE = 2**25


async def serve_autobahn(host: str, port: int) -> tuple[object, int]:
    from autobahn.asyncio.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):  # noqa: N802,N803 (Autobahn's API)
            self.sendMessage(payload, isBinary)

    def accept_deflate(offers):
        for offer in offers:
            if isinstance(offer, PerMessageDeflateOffer):
                return PerMessageDeflateOfferAccept(offer)
        return None

    factory = WebSocketServerFactory(f"ws://{host}")
    factory.protocol = Echo
    factory.setProtocolOptions(
        maxMessagePayloadSize=MAX_SIZE,
        maxFramePayloadSize=MAX_SIZE,
        autoPingInterval=0,
        perMessageCompressionAccept=accept_deflate,
    )
    server = await asyncio.get_running_loop().create_server(factory, host, port)
    return server, server.sockets[0].getsockname()[1]


async def serve_websockets(host: str, port: int) -> tuple[object, int]:
    # websockets (>= 14) closes with 1009 a message of more than 4096
    # fragments, a DoS guard that the 9.3.*/9.4.* cases (4 MiB in 64-byte
    # fragments) trip. It is read at import time.
    os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(2**20))
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass

    server = await serve(
        echo, host, port, max_size=MAX_SIZE, ping_interval=None, server_header="websockets"
    )
    return server, server.sockets[0].getsockname()[1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["autobahn", "websockets"], default="autobahn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    start = serve_autobahn if args.impl == "autobahn" else serve_websockets
    server, port = await start(args.host, args.port)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"ws_echo: {args.impl} echo server on ws://{args.host}:{port}", flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
