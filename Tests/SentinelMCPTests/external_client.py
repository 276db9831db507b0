"""An MCP client this project did not write (the official Python SDK, `mcp` from PyPI) driving
`cmcd-sentinel mcp` over stdio: initialize, list the tools, call each with the arguments given,
and print what came back as one JSON object on stdout.

    python external_client.py stdio BINARY CONFIG CALLS_JSON
    python external_client.py http URL TOKEN CALLS_JSON      (Streamable HTTP, bearer token)
"""
import asyncio, contextlib, json, sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


@contextlib.asynccontextmanager
async def connect(mode, a, b):
    if mode == "stdio":
        async with stdio_client(StdioServerParameters(command=a, args=["mcp", "--config", b])) as streams:
            yield streams
    else:
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {b}"}) as http:
            async with streamable_http_client(a, http_client=http, terminate_on_close=False) as streams:
                yield streams


async def main(mode, a, b, calls):
    async with connect(mode, a, b) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            listed = await session.list_tools()
            out = {
                "server": init.server_info.name,
                "tools": [
                    {"name": t.name, "read_only": bool(t.annotations and t.annotations.read_only_hint),
                     "schema": t.input_schema}
                    for t in listed.tools
                ],
                "calls": [],
            }
            for name, arguments in calls:
                result = await session.call_tool(name, arguments)
                out["calls"].append({
                    "name": name, "arguments": arguments, "is_error": bool(result.is_error),
                    "structured": result.structured_content,
                    "text": " ".join(c.text for c in result.content if getattr(c, "type", "") == "text"),
                })
            print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
