"""A TCP proxy that delays every byte by a fixed time each way: a broker "far away" (a
cross-zone cluster) on one machine. Bandwidth is not limited, only latency added; the order of
bytes is kept. Loopback only: it listens on 127.0.0.1 and forwards to a loopback target."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

CHUNK = 256 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Forward what ``reader`` receives to ``writer``, each chunk ``delay_s`` after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((time.monotonic() + delay_s, data))
    except ConnectionError:
        pass
    finally:
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError):
            await sender
        writer.close()


async def serve(listen_port: int, target_port: int, delay_s: float) -> None:
    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w, delay_s), _pump(server_r, client_w, delay_s))

    server = await asyncio.start_server(connect, "127.0.0.1", listen_port)
    print(f"delay proxy listening on 127.0.0.1:{listen_port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def run_proxy(listen_port: int, target_port: int, delay_ms: float) -> None:
    """Serve until killed."""
    asyncio.run(serve(listen_port, target_port, delay_ms / 1000))
