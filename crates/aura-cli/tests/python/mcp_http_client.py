"""Drives `aura mcp serve --http` with the official MCP Python SDK's streamable-HTTP
client, unchanged.

Usage: mcp_http_client.py URL API_KEY AGENT_ID. The API key is the bearer token. Lists
Aura's tools, submits a mission whose agent calls a streamable-HTTP MCP server's tool
(`mcp.web.add`), waits for it, and prints one JSON object with what it saw.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def payload(result):
    text = result.content[0].text
    try:
        return json.loads(text)
    except ValueError:
        return text


async def main():
    url, key, agent = sys.argv[1], sys.argv[2], sys.argv[3]
    seen = {}
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                seen["tools"] = sorted(t.name for t in tools.tools)
                submitted = await session.call_tool(
                    "mission_submit",
                    {
                        "agent": agent,
                        "objective": "add two and three with the web server",
                        "tools": ["mcp.web.add", "mission.finish"],
                        "timeout_secs": 120,
                    },
                )
                seen["submit_is_error"] = bool(submitted.is_error)
                mission = payload(submitted)
                done = await session.call_tool("mission_wait", {"id": mission["id"], "timeout_secs": 90})
                seen["mission"] = payload(done)
                record = await session.call_tool("agent_record", {"agent": agent, "limit": 500})
                seen["record"] = json.dumps(payload(record))
    print(json.dumps(seen))


asyncio.run(main())
