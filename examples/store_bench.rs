//! Durable-store throughput: an in-process `hl7d` listener on 127.0.0.1 with the SQLite
//! store, driven by N concurrent MLLP connections that each send one message and wait for
//! its ACK before sending the next (as real senders do). Every run is measured twice in the
//! same process: with the real durability (`synchronous=FULL`, group commit) and with the
//! no-fsync benchmark knob, so the cost of the fsync is visible.
//!
//! ```sh
//! cargo run --release --example store_bench -- --seconds 3 --repeat 3 --connections 1,16,64
//! ```
//!
//! Options: `--seconds S` per measurement (default 3), `--repeat R` measurements per
//! setting (default 3; the durable and no-fsync measurements alternate, so that a change in
//! the load of a shared machine hits both alike, and the R results are pooled),
//! `--connections LIST` (default 1,16,64), `--size BYTES` approximate message size (default
//! 1024), `--durability full|nosync|both` (default both), `--dir PATH` where the temporary
//! stores go (default the system temp dir; put it on the disk you want to measure).
//!
//! "fsyncs/msg" is computed from the store's counters: one WAL sync per committed batch,
//! plus two per checkpoint (WAL, then database file). Check it against the kernel with
//! `strace -f -c -e trace=fsync,fdatasync` (see BENCHMARKS.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hl7d::config::{Config, ListenerConfig};
use hl7d::listener::Server;
use hl7d::store::{Durability, SqliteOptions, SqliteStore, StoreStats};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    seconds: f64,
    repeat: usize,
    connections: Vec<usize>,
    size: usize,
    durabilities: Vec<Durability>,
    dir: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 3.0,
        repeat: 3,
        connections: vec![1, 16, 64],
        size: 1024,
        durabilities: vec![Durability::Full, Durability::DangerNoSync],
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--repeat" => args.repeat = value.parse().expect("--repeat: a count"),
            "--connections" => {
                args.connections =
                    value.split(',').map(|n| n.trim().parse().expect("--connections: 1,16,64")).collect()
            }
            "--size" => args.size = value.parse().expect("--size: bytes"),
            "--durability" => {
                args.durabilities = match value.as_str() {
                    "full" => vec![Durability::Full],
                    "nosync" => vec![Durability::DangerNoSync],
                    "both" => vec![Durability::Full, Durability::DangerNoSync],
                    other => panic!("--durability: full, nosync or both, not {other}"),
                }
            }
            "--dir" => args.dir = PathBuf::from(value),
            other => panic!("unknown option {other}"),
        }
    }
    args
}

/// One measurement.
struct Run {
    connections: usize,
    durability: Durability,
    messages: u64,
    elapsed: Duration,
    /// ACK latencies in microseconds (sorted once pooled).
    latencies: Vec<u32>,
    stats: StoreStats,
}

impl Run {
    /// Pools another measurement of the same setting into this one.
    fn add(&mut self, other: Run) {
        self.messages += other.messages;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        let (a, b) = (&mut self.stats, other.stats);
        a.stored += b.stored;
        a.duplicates += b.duplicates;
        a.commits += b.commits;
        a.checkpoints += b.checkpoints;
        a.failed_batches += b.failed_batches;
        a.expired += b.expired;
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies[index]) / 1000.0
    }

    fn fsyncs(&self) -> u64 {
        match self.durability {
            Durability::Full => self.stats.commits + 2 * self.stats.checkpoints,
            Durability::DangerNoSync => 0,
        }
    }
}

fn message(control_id: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "MSH|^~\\&|BENCH|FAC|HL7D|FAC|20261128120000||ADT^A01^ADT_A01|{control_id}|P|2.5\r\
         EVN|A01|20261128120000\r\
         PID|1||{control_id}^^^HOSP^MR||DOE^JANE^Q||19800101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701\r\
         PV1|1|I|W^389^1^HOSP||||1234^WELBY^MARCUS|||MED\r"
    )
    .into_bytes();
    if m.len() + 10 < size {
        m.extend_from_slice(b"NTE|1||");
        m.extend(std::iter::repeat_n(b'x', size - m.len() - 1));
        m.push(b'\r');
    }
    m
}

async fn client(addr: std::net::SocketAddr, id: usize, size: usize, until: Instant) -> Vec<u32> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut conn = BufReader::new(stream);
    let mut latencies = Vec::new();
    let mut ack = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        let mut frame = vec![0x0B];
        frame.extend_from_slice(&message(&format!("B{id}-{n}"), size));
        frame.extend_from_slice(&[0x1C, 0x0D]);
        let sent = Instant::now();
        conn.get_mut().write_all(&frame).await.expect("write");
        ack.clear();
        conn.read_until(0x1C, &mut ack).await.expect("read ACK");
        let mut cr = [0u8; 1];
        conn.read_exact(&mut cr).await.expect("read ACK end");
        latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        assert!(ack.windows(6).any(|w| w == b"MSA|AA"), "not AA: {:?}", String::from_utf8_lossy(&ack));
        n += 1;
    }
    latencies
}

async fn measure(args: &Args, durability: Durability, connections: usize) -> Run {
    let dir =
        args.dir.join(format!("hl7d-store-bench-{}-{connections}-{:?}", std::process::id(), durability));
    let _ = std::fs::remove_dir_all(&dir);
    let options = SqliteOptions { durability, ..SqliteOptions::default() };
    let store = Arc::new(SqliteStore::open(&dir, options).expect("open store"));
    let mut config = Config::embedded_default();
    let mut listener = ListenerConfig::plaintext("bench", "127.0.0.1:0".parse().unwrap());
    listener.max_connections = connections.max(1) + 8;
    config.listeners = vec![listener];
    let server = Server::start(&config, store.clone()).await.expect("server starts");
    let addr = server.local_addr("bench").unwrap();

    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..connections).map(|id| tokio::spawn(client(addr, id, args.size, until))).collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let elapsed = start.elapsed();
    let stats = store.stats();
    server.shutdown(Duration::from_secs(10)).await;
    let closing = store.clone();
    tokio::task::spawn_blocking(move || closing.close()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Run { connections, durability, messages: latencies.len() as u64, elapsed, latencies, stats }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let mut runs = Vec::new();
    for &connections in &args.connections {
        let mut pooled: Vec<Run> = Vec::new();
        for round in 0..args.repeat.max(1) {
            for &durability in &args.durabilities {
                let run = measure(&args, durability, connections).await;
                eprintln!(
                    "{:?} x{} (round {}): {} messages in {:.1?}, {} commits, {} checkpoints",
                    run.durability,
                    run.connections,
                    round + 1,
                    run.messages,
                    run.elapsed,
                    run.stats.commits,
                    run.stats.checkpoints
                );
                match pooled.iter_mut().find(|p| p.durability == durability) {
                    Some(total) => total.add(run),
                    None => pooled.push(run),
                }
            }
        }
        for run in &mut pooled {
            run.latencies.sort_unstable();
        }
        runs.extend(pooled);
    }
    println!(
        "| connections | store | messages/s | ACK p50 | ACK p99 | messages per commit | fsyncs per message |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for run in &runs {
        let rate = run.messages as f64 / run.elapsed.as_secs_f64();
        let per_commit = run.stats.stored as f64 / run.stats.commits.max(1) as f64;
        let fsyncs = run.fsyncs() as f64 / run.messages.max(1) as f64;
        let store = match run.durability {
            Durability::Full => "durable (FULL)",
            Durability::DangerNoSync => "no-fsync knob",
        };
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.1} | {:.3} |",
            run.connections,
            store,
            rate,
            run.percentile(0.50),
            run.percentile(0.99),
            per_commit,
            fsyncs
        );
    }
    for &connections in &args.connections {
        let rate = |d| {
            runs.iter()
                .find(|r| r.connections == connections && r.durability == d)
                .map(|r| r.messages as f64 / r.elapsed.as_secs_f64())
        };
        if let (Some(full), Some(nosync)) = (rate(Durability::Full), rate(Durability::DangerNoSync)) {
            println!("x{connections}: no-fsync / durable throughput = {:.2}", nosync / full);
        }
    }
}
