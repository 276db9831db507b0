#!/usr/bin/env python3
"""ApiVersions relay: development and test tooling only.

WHY THIS EXISTS: Debian 12's librdkafka (2.0.2) mis-skips the KIP-482 tagged fields at the end
of an ApiVersions v3+ response. The Tansu broker used for local development and CI ends that
response with four tagged fields (SupportedFeatures, FinalizedFeaturesEpoch, FinalizedFeatures,
ZkMigrationReady); librdkafka 2.0.2 then fails with "Protocol read buffer underflow for
ApiVersion v3" and never connects.

This relay sits between the client and the broker on every connection. It passes every byte
through unchanged, except the trailing tagged-field section of ApiVersions responses, which it
rewrites to "no tags" (a single 0x00 byte), fixing the frame length.

Production Apache Kafka brokers (and MSK, Confluent Cloud) do not need it: never deploy it.

Usage: apiversions-relay.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
"""
import asyncio
import struct
import sys

API_VERSIONS = 18


def read_uvarint(buf, pos):
    shift = 0
    value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def strip_trailing_tags(body):
    """body = ApiVersions response without the length prefix. Returns the rewritten body, or
    the original when it cannot be parsed (never worse than no relay)."""
    try:
        pos = 4 + 2  # correlation id, error code
        n, pos = read_uvarint(body, pos)
        for _ in range(max(n - 1, 0)):
            pos += 6  # api key, min version, max version
            tags, pos = read_uvarint(body, pos)
            for _ in range(tags):
                _, pos = read_uvarint(body, pos)
                size, pos = read_uvarint(body, pos)
                pos += size
        pos += 4  # throttle time
        if pos > len(body):
            return body
        return body[:pos] + b"\x00"
    except IndexError:
        return body


async def read_frame(reader):
    head = await reader.readexactly(4)
    (size,) = struct.unpack(">i", head)
    return head, await reader.readexactly(size)


async def client_to_broker(reader, writer, pending):
    try:
        while True:
            head, body = await read_frame(reader)
            if len(body) >= 8:
                api_key, api_version, correlation = struct.unpack(">hhi", body[:8])
                if api_key == API_VERSIONS and api_version >= 3:
                    pending.add(correlation)
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def broker_to_client(reader, writer, pending):
    try:
        while True:
            head, body = await read_frame(reader)
            if pending and len(body) >= 4:
                (correlation,) = struct.unpack(">i", body[:4])
                if correlation in pending:
                    pending.discard(correlation)
                    body = strip_trailing_tags(body)
                    head = struct.pack(">i", len(body))
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(listen_port, upstream_host, upstream_port):
    async def handle(client_reader, client_writer):
        try:
            broker_reader, broker_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_writer.close()
            return
        pending = set()
        await asyncio.gather(
            client_to_broker(client_reader, broker_writer, pending),
            broker_to_client(broker_reader, client_writer, pending),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
