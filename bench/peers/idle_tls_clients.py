"""Hold N idle TLS connections to 127.0.0.1:PORT, for measuring a server's memory per
connection (bench/compare.sh).

    python3 idle_tls_clients.py PORT CA_PEM N READY_FILE DONE_FILE

Opens N connections (handshakes complete, server name `localhost`, verified against
CA_PEM), writes the number opened to READY_FILE, then sends nothing until DONE_FILE exists
(at most 60 s), and closes them all.
"""
import asyncio
import os
import ssl
import sys


async def main(port, ca, count, ready, done):
    context = ssl.create_default_context(cafile=ca)
    connections = []
    for _ in range(count):
        try:
            connections.append(
                await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 10
                )
            )
        except (OSError, asyncio.TimeoutError) as e:
            print(f"idle_tls_clients: stopped at {len(connections)}: {e}", file=sys.stderr)
            break
    with open(ready + ".tmp", "w") as f:
        f.write(str(len(connections)))
    os.replace(ready + ".tmp", ready)
    for _ in range(600):
        if os.path.exists(done):
            break
        await asyncio.sleep(0.1)
    for _, writer in connections:
        writer.close()


if __name__ == "__main__":
    port, ca, count, ready, done = sys.argv[1:6]
    asyncio.run(main(int(port), ca, int(count), ready, done))
