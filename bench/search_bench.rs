//! Search latency on a large store (issue 14, BENCHMARKS.md "10 million messages"): the
//! searches `hl7d messages list` runs, by patient, control id and time range, each over
//! `--keys` random keys, timed through the same library path as the command and, with
//! `--cli`, as the command itself.
//!
//! ```sh
//! cargo build --release --example search_bench
//! target/release/examples/search_bench --dir /work/bench-data/store10m              # warm cache
//! target/release/examples/search_bench --dir /work/bench-data/store10m --cold       # cold, per query
//! target/release/examples/search_bench --dir /work/bench-data/store10m --cli target/release/hl7d
//! ```
//!
//! **Library path** (what `hl7d messages list` does, output aside): `Reader::open`,
//! `Reader::list` with the default limit of 100 (newest first), and, when the limit cut the
//! list, `Reader::count_matching_up_to` (10 001) for its "100 of N shown" line ("list p50":
//! the same without that count). `--exact-count` counts every match instead
//! (`Reader::count_matching`, what `list` did before the bound). **CLI**: `hl7d messages list
//! --config CFG <filter>` as a process, stdout read through a pipe, from spawn to exit.
//! `--cold` drops the database file's pages from the page cache before every query
//! (`posix_fadvise(DONTNEED)`; the VM's host may still cache the disk below that).
//!
//! Keys are drawn before any timing (`--seed`): a random message's patient (busy patients
//! more often, as an operator's questions would), a patient drawn from the distinct stored
//! patient ids (every patient alike), a random message's control id,
//! a random hour and a random day within the stored time span, and a random message's
//! patient over the day before that message.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hl7d::store::{Filter, Reader, DATABASE_FILE};
use rusqlite::{Connection, OpenFlags};

/// `hl7d messages list` shows this many without `--limit`.
const LIST_LIMIT: u64 = 100;
/// ... and counts the messages the limit left out up to this many (`cmd/messages.rs`).
const LIST_COUNT_CAP: u64 = 10_000;

struct Args {
    dir: PathBuf,
    keys: usize,
    cold: bool,
    cli: Option<PathBuf>,
    seed: u64,
    only: Option<String>,
    exact_count: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::new(),
        keys: 100,
        cold: false,
        cli: None,
        seed: 1,
        only: None,
        exact_count: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--cold" || flag == "--exact-count" {
            args.cold |= flag == "--cold";
            args.exact_count |= flag == "--exact-count";
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value),
            "--keys" => args.keys = value.parse().expect("--keys: a count"),
            "--cli" => args.cli = Some(PathBuf::from(value)),
            "--seed" => args.seed = value.parse().expect("--seed: a number"),
            "--only" => args.only = Some(value),
            other => panic!("unknown option {other} (see the file header)"),
        }
    }
    assert!(!args.dir.as_os_str().is_empty(), "--dir PATH: the store's directory");
    args
}

/// One search: its name, and per key the filter and the same as `hl7d messages list` flags.
struct Search {
    name: &'static str,
    keys: Vec<(Filter, Vec<String>)>,
}

fn main() {
    let args = parse_args();
    let file = args.dir.join(DATABASE_FILE);
    let searches = draw_keys(&file, args.keys, args.seed);
    let config = args.cli.as_ref().map(|_| write_config(&args.dir));
    println!(
        "{} keys per search, {} cache{}{}",
        args.keys,
        if args.cold { "cold (pages dropped before each query)" } else { "warm" },
        if args.cli.is_some() { ", CLI end to end" } else { ", library path" },
        if args.exact_count { ", exact count" } else { "" }
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>12} {:>9} {:>10}",
        "search", "p50 ms", "p95 ms", "max ms", "list p50 ms", "rows", "matching"
    );
    for search in &searches {
        if args.only.as_deref().is_some_and(|only| !search.name.contains(only)) {
            continue;
        }
        // One untimed query first when warm, so that the first key does not pay for
        // loading the index's upper pages.
        if !args.cold {
            run_library(&args.dir, &search.keys[0].0, args.exact_count);
        }
        let (mut times, mut list_times) = (Vec::new(), Vec::new());
        let (mut rows, mut matching) = (0u64, 0u64);
        for (filter, flags) in &search.keys {
            if args.cold {
                drop_cache(&file);
            }
            let started = Instant::now();
            let (shown, total, list_time) = match (&args.cli, &config) {
                (Some(hl7d), Some(config)) => run_cli(hl7d, config, flags),
                _ => run_library(&args.dir, filter, args.exact_count),
            };
            times.push(started.elapsed());
            list_times.push(list_time);
            rows += shown;
            matching += total;
        }
        times.sort_unstable();
        list_times.sort_unstable();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        let list_p50 = list_times[list_times.len() / 2].as_secs_f64() * 1e3;
        let n = search.keys.len() as u64;
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9.2} {:>12.2} {:>9.1} {:>10.1}",
            search.name,
            at(0.5),
            at(0.95),
            at(1.0),
            list_p50,
            rows as f64 / n as f64,
            matching as f64 / n as f64
        );
    }
    if let Some(config) = config {
        let _ = std::fs::remove_file(config);
    }
}

/// `hl7d messages list` without the printing: the newest 100, and the count when cut.
/// Returns (rows listed, messages matching).
fn run_library(dir: &Path, filter: &Filter, exact_count: bool) -> (u64, u64, Duration) {
    let started = Instant::now();
    let reader = Reader::open(dir).expect("open the store");
    let filter = Filter { limit: Some(LIST_LIMIT), ..filter.clone() };
    let listed = reader.list(&filter).expect("list").len() as u64;
    let list_time = started.elapsed();
    let total = if listed == LIST_LIMIT && exact_count {
        reader.count_matching(&filter).expect("count")
    } else if listed == LIST_LIMIT {
        reader.count_matching_up_to(&filter, LIST_COUNT_CAP + 1).expect("count")
    } else {
        listed
    };
    (listed, total, list_time)
}

/// The command itself; (rows printed, 0, 0). The count is on stderr and not parsed.
fn run_cli(hl7d: &Path, config: &Path, flags: &[String]) -> (u64, u64, Duration) {
    let output = Command::new(hl7d)
        .args(["messages", "list", "--config"])
        .arg(config)
        .args(flags)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run hl7d");
    assert!(output.status.success(), "hl7d messages list {flags:?}: {}", output.status);
    // A header line, then one line per message.
    let lines = output.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
    (lines.saturating_sub(1), 0, Duration::ZERO)
}

/// Drops the database file's pages from the page cache.
fn drop_cache(file: &Path) {
    let handle = File::open(file).expect("open the database file");
    rustix::fs::fadvise(&handle, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
}

/// A configuration whose `[store] path` is the store, for `--cli`.
fn write_config(dir: &Path) -> PathBuf {
    let path = std::env::temp_dir().join(format!("search_bench-{}.toml", std::process::id()));
    // Absolute: a relative `[store] path` is read relative to the configuration file.
    let dir = dir.canonicalize().expect("the store's directory");
    let text = format!(
        "[store]\npath = {:?}\n\n[[listener]]\nname = \"adt\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
        dir.display().to_string()
    );
    std::fs::write(&path, text).expect("write the configuration");
    path
}

fn draw_keys(file: &Path, n: usize, seed: u64) -> Vec<Search> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let (max_id, first, last): (i64, i64, i64) = conn
        .query_row("SELECT max(id), min(received_at), max(received_at) FROM messages", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("store bounds");
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let random_row = |column: &str, next: &mut dyn FnMut() -> u64| -> (String, i64) {
        let id = (next() % max_id as u64) as i64 + 1;
        conn.query_row(
            &format!("SELECT {column}, received_at FROM messages WHERE id >= ?1 AND {column} IS NOT NULL ORDER BY id LIMIT 1"),
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("a row")
    };
    let time = |micros: i64| UNIX_EPOCH + Duration::from_micros(micros as u64);
    let rfc = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let by = |flag: &str, value: &str| vec![flag.to_owned(), value.to_owned()];
    let mut searches = Vec::new();

    let keys = (0..n)
        .map(|_| {
            let (patient, _) = random_row("patient_id", &mut next);
            (Filter { patient_id: Some(patient.clone()), ..Filter::default() }, by("--patient", &patient))
        })
        .collect();
    searches.push(Search { name: "patient (a random message's)", keys });

    // Every stored patient id once (an index scan), to draw from uniformly.
    let patients: Vec<String> = conn
        .prepare("SELECT DISTINCT patient_id FROM messages WHERE patient_id IS NOT NULL")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("the patient ids");
    let keys = (0..n)
        .map(|_| {
            let patient = patients[(next() % patients.len() as u64) as usize].clone();
            (Filter { patient_id: Some(patient.clone()), ..Filter::default() }, by("--patient", &patient))
        })
        .collect();
    searches.push(Search { name: "patient (any patient alike)", keys });

    let keys = (0..n)
        .map(|_| {
            let (control_id, _) = random_row("control_id", &mut next);
            (
                Filter { control_id: Some(control_id.clone()), ..Filter::default() },
                by("--control-id", &control_id),
            )
        })
        .collect();
    searches.push(Search { name: "control id", keys });

    for (name, span) in [("time range, one hour", 3_600_000_000i64), ("time range, one day", 86_400_000_000)]
    {
        let keys = (0..n)
            .map(|_| {
                // Whole seconds, so that the CLI's RFC 3339 flags say the same.
                let start = (first + (next() % (last - first - span) as u64) as i64) / 1_000_000 * 1_000_000;
                let (since, until) = (time(start), time(start + span));
                let filter = Filter { since: Some(since), until: Some(until), ..Filter::default() };
                let mut flags = by("--since", &rfc(since));
                flags.extend(by("--until", &rfc(until)));
                (filter, flags)
            })
            .collect();
        searches.push(Search { name, keys });
    }

    let keys = (0..n)
        .map(|_| {
            let (patient, at) = random_row("patient_id", &mut next);
            let until = at / 1_000_000 * 1_000_000 + 1_000_000;
            let (since, until) = (time(until - 86_400_000_000), time(until));
            let filter = Filter {
                patient_id: Some(patient.clone()),
                since: Some(since),
                until: Some(until),
                ..Filter::default()
            };
            let mut flags = by("--patient", &patient);
            flags.extend(by("--since", &rfc(since)));
            flags.extend(by("--until", &rfc(until)));
            (filter, flags)
        })
        .collect();
    searches.push(Search { name: "patient over one day", keys });
    searches
}
