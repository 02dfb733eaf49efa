#!/usr/bin/env python3
"""Misbehaving MLLP/TLS clients for bench/soak.sh, loopback only.

    soak_clients.py --host 127.0.0.1 --plain PORT --tls PORT --seconds N [--workers W]

Each worker loops over the behaviours below until the deadline, one connection per round,
and every socket operation has a timeout. A round counts as "closed" when the server ended
the connection by itself within BOUND seconds after the client stopped sending. The summary
(one JSON object on stdout) lists rounds and closes per behaviour; `stuck` counts rounds in
which the server kept a misbehaving connection open past BOUND, which soak.sh treats as a
failure.

Behaviours: slowloris inside a frame and in the TLS handshake, random bytes and an HTTP
request and a TLS 1.0 hello on both ports, a real TLS hello on the plain port, MLLP on the
TLS port, a client that never reads its ACKs, half a frame then FIN, connect-and-close.
"""

import argparse
import json
import os
import random
import socket
import ssl
import threading
import time

BOUND = 15.0  # seconds: longest any server limit in soak.sh's config may take, with slack
SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"


def message(control_id, sender="SOAK"):
    return (
        "MSH|^~\\&|%s|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|%s|P|2.5\rPID|1||x\r" % (sender, control_id)
    ).encode()


def frame(payload):
    return SB + payload + EB + CR


def tls10_hello():
    body = b"\x03\x01" + b"\x5a" * 32 + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    handshake = b"\x01\x00\x00" + bytes([len(body)]) + body
    return b"\x16\x03\x01\x00" + bytes([len(handshake)]) + handshake


def modern_hello():
    """The first flight of Python's own TLS client (a real ClientHello)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def connect(host, port):
    sock = socket.create_connection((host, port), timeout=5)
    sock.settimeout(BOUND)
    return sock


def wait_closed(sock):
    """Reads until the server closes; True if it did within BOUND."""
    deadline = time.monotonic() + BOUND
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True  # reset: closed
    return False


def send_all(sock, data):
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def trickle(sock, data, every):
    """One byte every `every` seconds until the server closes; True if it did within BOUND."""
    deadline = time.monotonic() + BOUND
    i = 0
    while time.monotonic() < deadline:
        try:
            sock.sendall(data[i % len(data) : i % len(data) + 1])
        except OSError:
            return True
        i += 1
        sock.settimeout(every)
        try:
            if not sock.recv(4096):
                return True
        except socket.timeout:
            pass
        except OSError:
            return True
    return False


def never_reads(host, port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((host, port))
    sock.settimeout(BOUND)
    payload = frame(message("DEAF", sender="S" * 16384))
    deadline = time.monotonic() + BOUND
    try:
        while time.monotonic() < deadline:
            sock.sendall(payload)
    except (socket.timeout, OSError) as e:
        return not isinstance(e, socket.timeout)
    finally:
        sock.close()
    return False


def behaviours(host, plain, tls, hello):
    rng = random.Random(os.getpid())

    def probe(port, data):
        def run():
            with connect(host, port) as sock:
                send_all(sock, data)
                return wait_closed(sock)

        return run

    def half_frame():
        with connect(host, plain) as sock:
            send_all(sock, frame(message("HALF"))[:20])
            sock.shutdown(socket.SHUT_WR)
            return wait_closed(sock)

    def connect_close():
        connect(host, plain).close()
        connect(host, tls).close()
        return True

    def slow_frame():
        with connect(host, plain) as sock:
            return trickle(sock, frame(message("SLOW")), 0.5)

    def slow_hello():
        with connect(host, tls) as sock:
            return trickle(sock, hello, 0.5)

    return {
        "slowloris_frame": slow_frame,
        "slowloris_tls_handshake": slow_hello,
        "random_bytes_plain": lambda: probe(plain, bytes(rng.getrandbits(8) for _ in range(32768)))(),
        "random_bytes_tls": lambda: probe(tls, bytes(rng.getrandbits(8) for _ in range(32768)))(),
        "random_frames_plain": lambda: probe(plain, SB + bytes(rng.getrandbits(8) for _ in range(32768)))(),
        "http_plain": probe(plain, b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"),
        "http_tls": probe(tls, b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"),
        "tls10_hello_plain": probe(plain, tls10_hello()),
        "tls10_hello_tls": probe(tls, tls10_hello()),
        "tls_hello_plain": probe(plain, hello),
        "mllp_on_tls": probe(tls, frame(message("PLAIN"))),
        "never_reads": lambda: never_reads(host, plain),
        "half_frame_then_fin": half_frame,
        "connect_close": connect_close,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--plain", type=int, required=True)
    parser.add_argument("--tls", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--workers", type=int, default=6)
    args = parser.parse_args()
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("loopback addresses only")

    hello = modern_hello()
    table = behaviours(args.host, args.plain, args.tls, hello)
    names = sorted(table)
    stats = {name: {"rounds": 0, "closed": 0, "stuck": 0, "errors": 0} for name in names}
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def worker(offset):
        i = offset
        while time.monotonic() < deadline:
            name = names[i % len(names)]
            i += 1
            try:
                closed = table[name]()
                outcome = "closed" if closed else "stuck"
            except OSError:
                outcome = "errors"  # e.g. refused at max_connections
            with lock:
                stats[name]["rounds"] += 1
                stats[name][outcome] += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(w * 3,), daemon=True) for w in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 2 * BOUND + 10)
    print(json.dumps({"behaviours": stats, "stuck": sum(s["stuck"] for s in stats.values())}))


if __name__ == "__main__":
    main()
