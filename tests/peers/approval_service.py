"""A push-approval service for the waiting-factor tests (issue #18): what an approval app's
backend does, in a few lines, over plain HTTP on 127.0.0.1. A factor plugin starts an approval
for a user with the numbers to choose from (number matching) and polls it; the test plays the
approver's phone: it reads the user's inbox and picks a number, or denies.

    python approval_service.py        # prints the port, then serves until killed

Plugin side:
  POST /approvals            form user=..., choices=12,57,83  -> 201, body: the approval id
  GET  /approvals/ID         -> 200, body: pending | denied | picked:NN   (404: unknown id)
Approver side (the test):
  GET  /inbox?user=...       -> 200, JSON [{"id": ..., "choices": [...]}] still pending, oldest first
  POST /approvals/ID/pick    form number=NN  -> 204
  POST /approvals/ID/deny    -> 204
  GET  /count                -> 200, body: approvals started so far
"""
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
APPROVALS = {}  # id -> {"user", "choices", "state"}
ORDER = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def form(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 65536)).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def do_GET(self):
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        with LOCK:
            if parts == ["inbox"]:
                user = parse_qs(url.query).get("user", [""])[0]
                items = [
                    {"id": i, "choices": APPROVALS[i]["choices"]}
                    for i in ORDER
                    if APPROVALS[i]["user"] == user and APPROVALS[i]["state"] == "pending"
                ]
                return self.reply(200, json.dumps(items).encode(), "application/json")
            if parts == ["count"]:
                return self.reply(200, str(len(ORDER)).encode())
            if len(parts) == 2 and parts[0] == "approvals" and parts[1] in APPROVALS:
                return self.reply(200, APPROVALS[parts[1]]["state"].encode())
        self.reply(404, b"unknown")

    def do_POST(self):
        parts = urlsplit(self.path).path.strip("/").split("/")
        form = self.form()
        with LOCK:
            if parts == ["approvals"]:
                choices = [c for c in form.get("choices", "").split(",") if c]
                if not form.get("user") or not choices:
                    return self.reply(400, b"user and choices")
                i = secrets.token_hex(8)
                APPROVALS[i] = {"user": form["user"], "choices": choices, "state": "pending"}
                ORDER.append(i)
                return self.reply(201, i.encode())
            if len(parts) == 3 and parts[0] == "approvals" and parts[1] in APPROVALS:
                a = APPROVALS[parts[1]]
                if parts[2] == "pick" and form.get("number"):
                    a["state"] = "picked:" + form["number"]
                    return self.reply(204)
                if parts[2] == "deny":
                    a["state"] = "denied"
                    return self.reply(204)
        self.reply(404, b"unknown")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
