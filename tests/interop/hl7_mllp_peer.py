"""Independent MLLP peer from the python `hl7` package, for interoperability tests.

  server PORT_FILE       run an MLLP server on 127.0.0.1:0 answering every message with the
                         ACK `hl7` builds (AA); write the port to PORT_FILE; stop after 60 s.
  client PORT FILE...    send each file's message to 127.0.0.1:PORT with the `hl7` asyncio
                         client, print "MSA-1 MSA-2" per ACK.
"""
import asyncio
import sys

import hl7
from hl7.mllp import open_hl7_connection, start_hl7_server


async def serve(port_file):
    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await start_hl7_server(handle, "127.0.0.1", 0, encoding="utf-8")
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    import os
    os.replace(port_file + ".tmp", port_file)
    async with server:
        await asyncio.sleep(60)


async def client(port, files):
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    try:
        for name in files:
            raw = open(name, "rb").read().decode("utf-8")
            writer.writemessage(hl7.parse(raw))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 10)
            msa = ack.segment("MSA")
            print(f"{msa[1]} {msa[2]}", flush=True)
    finally:
        writer.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(serve(sys.argv[2]))
    else:
        asyncio.run(client(int(sys.argv[2]), sys.argv[3:]))
