// The npm `simple-hl7` TCP server, as a benchmark peer for `hl7d bench`.
//
//     node simple_hl7_server.js PORT_FILE [SECONDS]
//
// Listens on 127.0.0.1 (an OS-chosen port, written to PORT_FILE once listening), answers
// every message with the ACK simple-hl7 builds (AA, MSA-2 = MSH-10) and stores nothing.
// simple-hl7 has no TLS. Exits by itself after SECONDS (default 900). `simple-hl7` must be
// resolvable (compare.sh installs it into a temporary directory and sets NODE_PATH).
'use strict';
const fs = require('fs');
const net = require('net');

// simple-hl7 calls `listen(port)`, i.e. on every interface; a benchmark stays on loopback.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, ...rest) {
  return listen.call(this, port, '127.0.0.1', ...rest);
};

const hl7 = require('simple-hl7');
const [portFile, seconds = '900'] = process.argv.slice(2);

const app = hl7.tcp();
app.use((req, res, next) => res.end());
const server = app.start(0).server;
server.on('listening', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
setTimeout(() => process.exit(0), Number(seconds) * 1000).unref();
