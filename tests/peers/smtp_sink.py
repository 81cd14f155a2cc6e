"""A real SMTP server for the tests (aiosmtpd): accepts mail on 127.0.0.1 and writes each
message, as received, to DIR/<n>.eml. Prints the port it listens on, then serves until killed.

    python smtp_sink.py DIR [PORT]

With PORT it listens there (a test that restarts the server on the port the broker knows).
"""
import asyncio
import pathlib
import socket
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out: pathlib.Path):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        tmp = self.out / f".{self.n}.tmp"
        tmp.write_bytes(
            b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n" + envelope.original_content
        )
        tmp.rename(self.out / f"{self.n}.eml")
        return "250 OK"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    port = int(sys.argv[2]) if len(sys.argv) > 2 else free_port()
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    try:
        asyncio.new_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
