"""An MCP client this project did not write (the official Python SDK, `mcp` from PyPI) driving
`cmcd-sentinel mcp` over stdio: initialize, list the tools, call each with the arguments given,
and print what came back as one JSON object on stdout.

    python external_client.py BINARY CONFIG CALLS_JSON
"""
import asyncio, json, sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main(binary, config, calls):
    params = StdioServerParameters(command=binary, args=["mcp", "--config", config])
    async with stdio_client(params) as (read, write):
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
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
