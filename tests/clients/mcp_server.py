"""An MCP server built with the official `mcp` SDK (MCPServer, streamable HTTP) for the MCP tests:
tools read_ticket and delete_customer, resources tickets://{id} and customers://{id}.

usage: mcp_server.py CERT KEY PORT_FILE LOG [--json]
Serves /mcp over HTTPS on 127.0.0.1:0 with CERT/KEY (answering in SSE, or JSON with --json),
writes the port to PORT_FILE, and appends the body of every request it receives to LOG (one
line each), so a test can show a refused call never reached it. Serves until killed.
"""
import asyncio
import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer


def main():
    cert, key, port_file, log = sys.argv[1:5]
    server = MCPServer("tickets")

    @server.tool()
    def read_ticket(ticket_id: str) -> str:
        """Reads a support ticket."""
        return f"ticket {ticket_id}: printer on fire"

    @server.tool()
    def delete_customer(customer_id: str) -> str:
        """Deletes a customer and all their data."""
        return f"customer {customer_id} deleted"

    @server.resource("tickets://{ticket_id}")
    def ticket(ticket_id: str) -> str:
        """A support ticket as a resource."""
        return f"ticket {ticket_id}: printer on fire"

    @server.resource("customers://{customer_id}")
    def customer(customer_id: str) -> str:
        """A customer's record as a resource."""
        return f"customer {customer_id}: private details"

    app = server.streamable_http_app(json_response="--json" in sys.argv)

    async def logged(scope, receive, send):
        async def recv():
            msg = await receive()
            if msg["type"] == "http.request" and msg.get("body"):
                with open(log, "ab") as f:
                    f.write(msg["body"].replace(b"\n", b" ") + b"\n")
            return msg

        await app(scope, recv if scope["type"] == "http" else receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        logged, ssl_certfile=cert, ssl_keyfile=key, log_level="warning", lifespan="on"
    )
    with open(port_file + ".tmp", "w") as f:
        f.write(str(sock.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
