//! Ingest latency while retention deletes a backlog of expired messages (issue 14,
//! BENCHMARKS.md "10 million messages"): the real listener and `SqliteStore` (durable, as
//! `hl7d serve` runs them) on a large store, `hl7d bench --rate` sending at a fixed rate, in
//! phases that alternate retention off and on, so that the machine's load falls on both.
//!
//! ```sh
//! cargo build --release --example retention_bench && cargo build --release
//! target/release/examples/retention_bench --dir /work/bench-data/store10m --hl7d target/release/hl7d \
//!     --expire 1000000 --rate 1000 --connections 16 --phase 30s --phases 8
//! ```
//!
//! Before the first phase, the retention period is chosen so that the `--expire` oldest
//! messages are older than it (counted by `received_at`); every "on" phase opens the store
//! with that retention, so the store's own retention steps delete the backlog between the
//! writer's batches, while "off" phases open it without retention. Each phase starts the
//! listener (plaintext, 127.0.0.1), runs `hl7d bench --rate R --connections C --duration D
//! --json` as a separate process, then stops the listener and closes the store. Per phase:
//! ACK latency p50/p99/max as `hl7d bench` measured it (from when each message was due),
//! messages deleted, the load average.
//!
//! `--batch N`, `--step D` and `--pause F` (or `F1,F2,…`: the "on" phases take them in turn) set `SqliteOptions::retention_batch`,
//! `retention_step` and `retention_pause` (the most one retention step deletes, how long a
//! step should take, and how long the writer waits after one, as a multiple of its own
//! time), to compare settings; without them the store's defaults apply.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hl7d::config::{Config, ListenerConfig};
use hl7d::listener::Server;
use hl7d::store::{SqliteOptions, SqliteStore, DATABASE_FILE};
use rusqlite::{Connection, OpenFlags};

struct Args {
    dir: PathBuf,
    hl7d: PathBuf,
    expire: u64,
    rate: f64,
    connections: u32,
    phase: Duration,
    phases: usize,
    batch: Option<u32>,
    step: Option<Duration>,
    pause: Vec<u32>,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::new(),
        hl7d: PathBuf::from("target/release/hl7d"),
        expire: 1_000_000,
        rate: 1000.0,
        connections: 16,
        phase: Duration::from_secs(30),
        phases: 8,
        batch: None,
        step: None,
        pause: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value),
            "--hl7d" => args.hl7d = PathBuf::from(value),
            "--expire" => args.expire = value.parse().expect("--expire: a count"),
            "--rate" => args.rate = value.parse().expect("--rate: messages per second"),
            "--connections" => args.connections = value.parse().expect("--connections: a count"),
            "--phase" => args.phase = humantime::parse_duration(&value).expect("--phase: e.g. 30s"),
            "--phases" => args.phases = value.parse().expect("--phases: a count"),
            "--batch" => args.batch = Some(value.parse().expect("--batch: a count")),
            "--step" => args.step = Some(humantime::parse_duration(&value).expect("--step: e.g. 5ms")),
            "--pause" => {
                args.pause =
                    value.split(',').map(|f| f.trim().parse().expect("--pause: factors, e.g. 9,19")).collect()
            }
            other => panic!("unknown option {other} (see the file header)"),
        }
    }
    assert!(!args.dir.as_os_str().is_empty(), "--dir PATH: the store's directory");
    args
}

/// The retention period under which the `n` oldest messages are expired now.
fn retention_expiring(dir: &std::path::Path, n: u64) -> Duration {
    let conn = Connection::open_with_flags(dir.join(DATABASE_FILE), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the store");
    let at: i64 = conn
        .query_row(
            "SELECT received_at FROM messages ORDER BY received_at LIMIT 1 OFFSET ?1",
            [n.saturating_sub(1) as i64],
            |r| r.get(0),
        )
        .expect("the store holds that many messages");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_micros() as i64;
    // Just past the n-th oldest message.
    Duration::from_micros((now - at - 1) as u64)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let retention = retention_expiring(&args.dir, args.expire);
    let defaults = SqliteOptions::default();
    println!(
        "retention steps: at most {} messages, about {:?} each, pause {:?}x",
        args.batch.unwrap_or(defaults.retention_batch),
        args.step.unwrap_or(defaults.retention_step),
        if args.pause.is_empty() { vec![defaults.retention_pause] } else { args.pause.clone() }
    );
    println!(
        "retention {} ({} expired at the start); {} msg/s over {} connections, {} phases of {}",
        humantime::format_duration(Duration::from_secs(retention.as_secs())),
        args.expire,
        args.rate,
        args.connections,
        args.phases,
        humantime::format_duration(args.phase)
    );
    println!(
        "{:>5} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}  load",
        "phase", "retention", "acked", "p50 ms", "p99 ms", "max ms", "deleted", "errors"
    );
    for phase in 0..args.phases {
        let on = phase % 2 == 1;
        let mut options = SqliteOptions { retention: on.then_some(retention), ..SqliteOptions::default() };
        if let Some(batch) = args.batch {
            options.retention_batch = batch;
        }
        if let Some(step) = args.step {
            options.retention_step = step;
        }
        // "On" phases take the pause factors in turn.
        let pause = (!args.pause.is_empty()).then(|| args.pause[(phase / 2) % args.pause.len()]);
        if let Some(pause) = pause {
            options.retention_pause = pause;
        }
        let store = Arc::new(SqliteStore::open(&args.dir, options).expect("open the store"));
        let mut config = Config::embedded_default();
        let mut listener = ListenerConfig::plaintext("bench", "127.0.0.1:0".parse().expect("an address"));
        listener.max_connections = args.connections as usize + 8;
        listener.max_connections_per_ip = listener.max_connections;
        listener.max_pending = listener.max_connections;
        config.listeners = vec![listener];
        let server = Server::start(&config, store.clone()).await.expect("the listener starts");
        let addr = server.local_addr("bench").expect("bound");
        let hl7d = args.hl7d.clone();
        let (rate, connections, duration) = (args.rate, args.connections, args.phase);
        let output = tokio::task::spawn_blocking(move || {
            Command::new(hl7d)
                .args(["bench", "--json", "--quiet", "--to", &addr.to_string()])
                .args(["--rate", &rate.to_string(), "--connections", &connections.to_string()])
                .args(["--duration", &format!("{}ms", duration.as_millis())])
                .output()
                .expect("run hl7d bench")
        })
        .await
        .expect("bench task");
        let stats = store.stats();
        server.shutdown(Duration::from_secs(10)).await;
        let closing = store.clone();
        tokio::task::spawn_blocking(move || closing.close()).await.expect("close");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        let latency = &report["latency_us"];
        let ms = |key: &str| latency[key].as_f64().unwrap_or(f64::NAN) / 1000.0;
        println!(
            "{:>5} {:>10} {:>8} {:>9.2} {:>9.2} {:>9.1} {:>9} {:>8}  {}",
            phase + 1,
            if on {
                format!("on {}x", pause.unwrap_or(SqliteOptions::default().retention_pause))
            } else {
                "off".to_owned()
            },
            report["acked"],
            ms("p50"),
            ms("p99"),
            ms("max"),
            stats.expired,
            report["errors"],
            load_average()
        );
    }
}
