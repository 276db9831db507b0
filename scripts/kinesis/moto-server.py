#!/usr/bin/env python3
"""A local Kinesis and DynamoDB API (moto's server mode) on a free loopback port.

    python moto-server.py --port-file FILE [--port N]

Writes the port it got to FILE once it listens, then serves until killed. Needs moto[server]
(scripts/kinesis/moto.sh installs it into .tools/moto). Streams and tables live in memory.
"""
import argparse
import os
import signal
import sys
import threading

from moto.kinesis import models as kinesis
from moto.moto_server.threaded_moto_server import ThreadedMotoServer


def resharding_as_aws_does() -> None:
    """moto 5.2's SplitShard moves the parent's records into the shards again (with new
    sequence numbers and arrival times) and keeps routing new records to the closed parent,
    whose hash range still matches. Kinesis keeps a closed shard's records where they are and
    routes new records to open shards only; the consumer's resharding tests need that."""
    find_shard = kinesis.Stream.get_shard_for_key
    split = kinesis.Stream.split_shard

    def get_shard_for_key(self, partition_key, explicit_hash_key):
        closed = [shard for shard in self.shards.values() if not shard.is_open]
        for shard in closed:
            shard.starting_hash, shard.ending_hash = -shard.ending_hash - 1, -shard.starting_hash - 1
        try:
            return find_shard(self, partition_key, explicit_hash_key)
        finally:
            for shard in closed:
                shard.starting_hash, shard.ending_hash = -shard.ending_hash - 1, -shard.starting_hash - 1

    def split_shard(self, shard_to_split, new_starting_hash_key):
        parent = self.shards.get(shard_to_split)
        records = dict(parent.records) if parent is not None else None
        before = {shard_id: len(shard.records) for shard_id, shard in self.shards.items()}
        split(self, shard_to_split, new_starting_hash_key)
        if records is None:
            return
        for shard_id, shard in self.shards.items():
            # Drop what the split put again; the parent keeps its own records.
            for key in list(shard.records.keys())[before.get(shard_id, 0):]:
                del shard.records[key]
        parent.records.clear()
        parent.records.update(records)

    kinesis.Stream.get_shard_for_key = get_shard_for_key
    kinesis.Stream.split_shard = split_shard


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    resharding_as_aws_does()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
