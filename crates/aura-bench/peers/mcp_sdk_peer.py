"""The peer of `aura-bench mcp`: the official MCP SDK's client calling `add` on the same
server script, started on the host (no cell) by the SDK's stdio transport.

Usage: mcp_sdk_peer.py PYTHON SERVER_PY. Reads a number n per line on stdin, makes n
timed calls, and answers one line: a JSON list of each call's nanoseconds. Ends at EOF.
"""

import asyncio
import json
import os
import sys
import time

from mcp import Client, StdioServerParameters


async def main():
    python, server = sys.argv[1], sys.argv[2]
    # The SDK starts servers with a short allowlist of the environment, without
    # PYTHONPATH, so the server would not find the SDK it is written with.
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    params = StdioServerParameters(command=python, args=[server], env=env)
    loop = asyncio.get_running_loop()
    k = 0
    async with Client(params) as client:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            times = []
            for _ in range(int(line)):
                k += 1
                t = time.perf_counter_ns()
                r = await client.call_tool("add", {"a": k, "b": 1})
                times.append(time.perf_counter_ns() - t)
                assert not getattr(r, "is_error", getattr(r, "isError", False)), r
            print(json.dumps(times), flush=True)


asyncio.run(main())
