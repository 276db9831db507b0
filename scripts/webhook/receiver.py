#!/usr/bin/env python3
"""A small webhook receiver for development, tests and the compose stack.

It verifies Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature:
v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">; secrets as whsec_<base64> or plain
text), answers each attempt of an event by a plan, and logs every attempt as one JSON line.

    receiver.py --port 9000 --secret whsec_... --log deliveries.jsonl [--plan stall,429,500]

--plan lists the answers to the first attempts of every event id (`stall` holds the request
for --stall-seconds, a number is that HTTP status); later attempts get 204. A request whose
signature does not verify (when a secret is given) gets 401. Standard library only.
"""
import argparse, base64, hashlib, hmac, json, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def key_of(secret):
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def verify(secrets, msg_id, timestamp, body, header):
    if not secrets:
        return True
    if not msg_id or not timestamp or not header:
        return False
    try:
        if abs(time.time() - int(timestamp)) > 300:
            return False
    except ValueError:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    given = [part.split(",", 1)[1] for part in header.split() if part.startswith("v1,")]
    for secret in secrets:
        expected = base64.b64encode(hmac.new(key_of(secret), signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, g) for g in given):
            return True
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--secret", action="append", default=[], help="signing secret (repeat for rotation)")
    parser.add_argument("--log", help="append one JSON line per attempt here (default: stdout)")
    parser.add_argument("--plan", default="", help="answers to the first attempts of each event, e.g. stall,429,500")
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    parser.add_argument("--retry-after", default="1", help="Retry-After sent with 429")
    args = parser.parse_args()
    plan = [p for p in args.plan.split(",") if p]
    attempts = {}
    lock = threading.Lock()
    in_flight = [0]
    out = open(args.log, "a", buffering=1) if args.log else sys.stdout

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 1 << 20))
            msg_id = self.headers.get("webhook-id", "")
            valid = verify(args.secret, msg_id, self.headers.get("webhook-timestamp"), body, self.headers.get("webhook-signature"))
            with lock:
                attempts[msg_id] = attempts.get(msg_id, 0) + 1
                attempt = attempts[msg_id]
                in_flight[0] += 1
                concurrent = in_flight[0]
            answer = plan[attempt - 1] if attempt <= len(plan) else "204"
            if not valid:
                answer = "401"
            if answer == "stall":
                time.sleep(args.stall_seconds)
                status = 204
            else:
                status = int(answer)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            record = {"id": msg_id, "attempt": attempt, "timestamp": self.headers.get("webhook-timestamp"),
                      "signature_valid": valid, "answer": answer, "status": status, "path": self.path,
                      "headers": {k.lower(): v for k, v in self.headers.items()}, "body": payload,
                      "received_at": time.time(), "concurrent": concurrent}
            with lock:
                in_flight[0] -= 1
                out.write(json.dumps(record) + "\n")
                out.flush()
            try:
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", args.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up waiting (a stall past its timeout)

    # Stop on SIGTERM even when started with signals blocked (as a thread of a test runner may).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        import os
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"webhook receiver listening on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
