"""The python `hl7` package's asyncio MLLP server, as a benchmark peer for `hl7d bench`.

    python3 python_hl7_server.py PORT_FILE [--tls CERT KEY] [--seconds N]

Listens on 127.0.0.1 (an OS-chosen port, written to PORT_FILE once listening), answers every
message with the ACK `hl7` builds (`Message.create_ack()`: AA, MSA-2 = MSH-10) and stores
nothing. With --tls it wraps the same server in an `ssl` context (TLS 1.2+, the python
defaults otherwise). Exits by itself after --seconds (default 900), whatever happens.
"""
import argparse
import asyncio
import os
import ssl

import hl7
from hl7.mllp import start_hl7_server


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(args):
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.tls[0], args.tls[1])
    server = await start_hl7_server(handle, "127.0.0.1", 0, encoding="utf-8", ssl=context)
    port = server.sockets[0].getsockname()[1]
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(args.port_file + ".tmp", args.port_file)
    async with server:
        await asyncio.sleep(args.seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port_file")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--seconds", type=float, default=900)
    print(f"python hl7 {hl7.__version__} MLLP server", flush=True)
    asyncio.run(main(parser.parse_args()))
