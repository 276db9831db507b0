#!/usr/bin/env python3
"""Writes the fuzzer's seed inputs into the folder given: the bundled sample lines, the upstream
CMCD test vectors in each form, and one example of every other entry point. The first byte of
each seed picks the harness's entry point (see Harness.swift)."""
import json
import os
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def put(name, mode, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([mode]) + data)


def lines(path):
    with open(os.path.join(root, path), "rb") as f:
        return [line for line in f.read().split(b"\n") if line.strip()]


for i, line in enumerate(lines("samples/cloudfront-realtime-seed-format.tsv")[:20]):
    put(f"cloudfront-{i}", 0, line + b"\n")
demo = lines("samples/demo-sessions.tsv")
for i in range(0, min(len(demo), 400), 20):
    put(f"demo-{i}", 1, b"\n".join(demo[i:i + 20]))
put("native-fields", 2, b"1720015641207\t203.0.113.45\t200\t/v/1.ts\tIAD89-P1\t0.2\tCMCD=bl%3D2000%2Csid%3D%22x%22\t"
    b"Host:a%0ACMCD-Request:bl=300%0A\t2100\tsid1\tmovie\tv\tfalse\t1\t1\t%22seg.ts%22")
put("json-object", 3, b'{"timestamp":1720015641207,"cmcd":{"sid":"s","bl":2000,"ot":"v","bs":true},'
    b'"edge_location":"FRA56-P3","status":200,"time_taken":0.2}')
put("json-array", 3, b'[{"time":"2024-07-03T14:07:21.207Z","cmcd":"bl=2000,sid=\\"s\\""},{"timestamp":1720015641.2,"sid":"t","bl":100}]')
put("event-lines", 4, b'ts=1720015641207,sid="s",bl=2000,e=ps,sta=p\nts=1720015642207,sid="s",bl=(100;v 200;a),v=2\n')
put("url", 5, b"https://cdn.example/x/seg.ts?CMCD=bl%3D2000%2Cbr%3D(5000%3Bv%20320%3Ba)%2Cnor%3D(%22a%22%20%22b%22%3Br%3D%220-99%22)%2Csid%3D%22s%22")
put("double-encoded", 5, b"CMCD=bl%253D2000%252Csid%253D%2522s%2522&x=1#f")
put("headers", 6, b'CMCD-Request: bl=2000, mtp=5000\nCMCD-Session: sid="abc",cid="m",v=2\n'
    b"cmcd-object: ot=v,d=4000,br=(3000;v 128;a)\nCMCD-Status: bs,rtp=1200\n")
put("json-payload", 7, b'{"bl":2000,"sid":"s","nor":["a","b"],"br":[{"value":300,"params":{"v":true}}],"v":2}')
with open(os.path.join(root, "rules", "default.yaml"), "rb") as f:
    put("rules", 8, f.read())
with open(os.path.join(root, "deploy", "sentinel.yaml"), "rb") as f:
    put("configuration", 9, f.read())
with open(os.path.join(root, "Tests", "CMCDTests", "Vectors", "cmcd-vectors.json")) as f:
    vectors = json.load(f)
for i, vector in enumerate(vectors):
    text = vector.get("input") if isinstance(vector, dict) else None
    if isinstance(text, str):
        put(f"vector-{i}-raw", 5, text.encode())
        put(f"vector-{i}-headers", 6, text.encode())
print(len(os.listdir(out)))
