#!/usr/bin/env python3
"""Writes samples/demo-sessions.tsv: CloudFront real-time log lines (the default 10 fields)
for a few viewers, each showing one kind of problem, interleaved in time order.

Deterministic: the same file every run. Used by the README quick start and the tests.
"""
import sys
from urllib.parse import quote

T0 = 1720015600.000
UA = "User-Agent:Mozilla/5.0%20(X11;%20Linux%20x86_64)%0AAccept:*/*%0A"
lines = []


def cmcd(**keys):
    parts = []
    for k in sorted(keys):
        v = keys[k]
        if v is True:
            parts.append(k)
        elif isinstance(v, str) and k in ("sid", "cid", "nor"):
            parts.append(f'{k}="{v}"')
        else:
            parts.append(f"{k}={v}")
    return ",".join(parts)


def request(t, sid, ot, seg, bl=None, mode="query", **extra):
    keys = dict(sid=sid, cid="demo-movie-42", ot=ot, sf="h", st="v", **extra)
    if bl is not None:
        keys.update(bl=bl, br=extra.get("br", 5000), d=6000, mtp=25000, tb=8500)
    payload = cmcd(**keys)
    stem = "/videos/master.m3u8" if ot == "m" else f"/videos/1080p_{seg:05d}.ts"
    query, headers = "-", "Host:d111111abcdef8.cloudfront.net%0A" + UA
    if mode == "query":
        query = "CMCD=" + quote(payload, safe="")
    else:  # CMCD as request headers, as CloudFront logs them in cs-headers
        headers += "CMCD-Session:" + quote(payload, safe="") + "%0A"
    lines.append((t, "\t".join([
        f"{t:.3f}", "198.51.100.7", "200", "GET", stem, "FRA56-P3", f"req{len(lines):04d}", "0.120", query, headers,
    ])))


def session(sid, start, startup_s, buffers, mode="query", interval=2.0):
    request(start, sid, "m", 0, su=True, mode=mode)
    request(start + 0.3, sid, "av", 1, bl=0, su=True, mode=mode)
    t = start + startup_s
    for i, bl in enumerate(buffers):
        extra = {}
        if isinstance(bl, tuple):
            bl, extra = bl
        request(t, sid, "av", i + 2, bl=bl, mode=mode, **extra)
        t += interval


# Healthy viewer: quick start, buffer grows and stays high. No findings.
session("viewer-healthy-0001", T0, 1.2, [4000, 8000, 12000, 16000, 20000, 22000, 23000, 24000, 24000, 24000])
# Sudden buffer drop: 21 s of buffer falls to 3 s (critical, 86%), then recovers.
session("viewer-drop-0002", T0 + 1, 1.5, [6000, 12000, 18000, 21000, 21000, 3000, 2600, 9000, 14000, 18000])
# Starvation: the buffer runs low (warning), the player stalls (bs, bl=0), then recovers.
session("viewer-stall-0003", T0 + 2, 1.0, [8000, 6000, 3000, 400, (0, {"bs": True, "su": True}), 900, 2500, 6000, 9000])
# Slow startup: 3.4 s to the first buffered request (warning).
session("viewer-slowstart-0004", T0 + 3, 3.4, [3000, 7000, 11000, 15000, 19000, 23000])
# Stuck startup: only startup requests, never playing (critical, fires once past 5 s).
for i in range(9):
    request(T0 + 4 + i, "viewer-stuck-0005", "av" if i else "m", i, bl=0 if i else None, su=True)
# CMCD sent as headers: a 60% drop (warning).
session("viewer-headers-0006", T0 + 5, 1.1, [5000, 10000, 15000, 20000, 20000, 8000, 12000, 16000], mode="header")
# Records a real feed also carries: a request without CMCD, and a damaged line.
lines.append((T0 + 6, "\t".join([f"{T0 + 6:.3f}", "198.51.100.9", "200", "GET", "/favicon.ico", "FRA56-P3", "reqX", "0.001", "-", "-"])))
lines.append((T0 + 7, f"{T0 + 7:.3f}\tthis line was cut short"))

lines.sort(key=lambda x: x[0])
out = sys.argv[1] if len(sys.argv) > 1 else "samples/demo-sessions.tsv"
with open(out, "w") as f:
    for _, line in lines:
        f.write(line + "\n")
print(f"wrote {len(lines)} lines to {out}")
