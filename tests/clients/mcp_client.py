"""An MCP client built with the official `mcp` SDK (streamable HTTP) for the MCP tests.

usage: mcp_client.py URL TOOL [TOOL...]
Reaches the server through HTTPS_PROXY, trusting SSL_CERT_FILE (httpx reads both), lists the
tools, calls each TOOL with one argument, and prints one JSON document: the tool names listed and,
per call, whether it is an error and its text. A TOOL written `read:URI` reads that resource
instead: under "reads", its text, or the JSON-RPC error the client received (code, message, data).
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def main():
    url, tools = sys.argv[1], sys.argv[2:]
    out = {"calls": {}}
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            out["tools"] = sorted(t.name for t in listed.tools)
            for uri in (t[len("read:"):] for t in tools if t.startswith("read:")):
                try:
                    r = await session.read_resource(uri)
                    out.setdefault("reads", {})[uri] = {
                        "text": " ".join(getattr(c, "text", "") for c in r.contents)
                    }
                except MCPError as e:
                    err = {"code": e.code, "message": e.message, "data": e.data}
                    out.setdefault("reads", {})[uri] = {"error": err}
            for tool in (t for t in tools if not t.startswith("read:")):
                arg = "customer_id" if tool == "delete_customer" else "ticket_id"
                r = await session.call_tool(tool, {arg: "42"})
                out["calls"][tool] = {
                    "isError": bool(r.is_error if hasattr(r, "is_error") else r.isError),
                    "text": " ".join(c.text for c in r.content if hasattr(c, "text")),
                }
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
