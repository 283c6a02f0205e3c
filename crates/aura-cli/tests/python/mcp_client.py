"""Drives `aura mcp serve` with the official MCP Python SDK's client, unchanged.

Usage: mcp_client.py AURA_BINARY AGENT_ID. The environment carries AURA_HOME, AURA_NODE
and AURA_API_KEY for the server process. Lists Aura's tools, submits a mission that calls
an MCP server's tool inside a cell, waits for it, reads the agent's record, checks bad
calls, and prints one JSON object with what it saw.
"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters


def payload(result):
    """The JSON value an Aura tool answered with (its text content)."""
    text = result.content[0].text
    try:
        return json.loads(text)
    except ValueError:
        return text


async def main():
    aura, agent = sys.argv[1], sys.argv[2]
    env = {k: os.environ[k] for k in ("AURA_HOME", "AURA_NODE", "AURA_API_KEY") if k in os.environ}
    params = StdioServerParameters(command=aura, args=["mcp", "serve"], env=env)
    seen = {}
    async with Client(params) as client:
        tools = await client.list_tools()
        seen["tools"] = sorted(t.name for t in tools.tools)
        submitted = await client.call_tool(
            "mission_submit",
            {
                "agent": agent,
                "objective": "add two and three with the probe server",
                "tools": ["mcp.probe.add", "mission.finish"],
                "timeout_secs": 120,
            },
        )
        seen["submit_is_error"] = bool(getattr(submitted, "is_error", getattr(submitted, "isError", False)))
        mission = payload(submitted)
        done = await client.call_tool("mission_wait", {"id": mission["id"], "timeout_secs": 90})
        seen["mission"] = payload(done)
        record = await client.call_tool("agent_record", {"agent": agent, "limit": 500})
        seen["record"] = json.dumps(payload(record))
        checkpoint = await client.call_tool("ledger_checkpoint", {})
        seen["checkpoint"] = payload(checkpoint)
        try:
            bad = await client.call_tool("mission_get", {"id": "../../etc"})
            seen["bad_id"] = bad.content[0].text if bad.content else ""
        except Exception as e:  # the SDK raises a JSON-RPC error as an exception
            seen["bad_id"] = f"error: {e}"
    # An approver's key may read missions but not submit them: Aura says so, in the result.
    if "AURA_API_KEY_APPROVER" in os.environ:
        env["AURA_API_KEY"] = os.environ["AURA_API_KEY_APPROVER"]
        params = StdioServerParameters(command=aura, args=["mcp", "serve"], env=env)
        async with Client(params) as client:
            refused = await client.call_tool(
                "mission_submit",
                {"agent": agent, "objective": "x", "tools": ["mission.finish"], "timeout_secs": 60},
            )
            seen["approver_submit_is_error"] = bool(getattr(refused, "is_error", getattr(refused, "isError", False)))
            seen["approver_submit_text"] = refused.content[0].text
    print(json.dumps(seen))


asyncio.run(main())
