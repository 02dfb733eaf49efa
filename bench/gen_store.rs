//! Builds a message store of N messages (default 10 000 000) exactly as `hl7d serve` makes
//! one, for the search, size and retention measurements of issue 14 (BENCHMARKS.md, "10
//! million messages").
//!
//! ```sh
//! cargo build --release --example gen_store
//! target/release/examples/gen_store --dir /work/bench-data/store10m            # 10 M messages
//! target/release/examples/gen_store --dry-run --messages 200000                 # sizes and mix only
//! ```
//!
//! `--page-size N` makes the store with another SQLite page size than hl7d's (8 KiB for a
//! new store since schema 6, `sqlite::NEW_STORE_PAGE_SIZE`; 4 KiB before), for
//! the size comparison in BENCHMARKS.md; `--messages`, `--patients`, `--senders`, `--days`,
//! `--end` (RFC 3339; give it when resuming), `--seed` change what is generated.
//!
//! Every message goes the listener's way into the store: `hl7_proto::inbound::inspect`
//! (parse, MSH view, checks, charset), `ack::decide`, [`NewMessage::received`] (header
//! columns and the key fields, `KeyFields`, extracted from the bytes) and
//! [`SqliteStore::append`] (the writer thread's `write_batch`: duplicate lookup on
//! the control-id index, the INSERT, group commit, checkpoints). Nothing here writes SQL, so the file
//! has hl7d's schema, indexes and column values. Two settings differ from `hl7d serve`, and
//! neither changes what is in the file: `Durability::DangerNoSync` (no fsync per batch) and
//! a 256 MiB page cache on the writer's connection (`PRAGMA cache_size`).
//!
//! What is generated (each message is a function of `--seed` and its index, so an
//! interrupted run resumes where it stopped when started again with the same options):
//!
//! - **Types**: ADT^A01 8 %, ADT^A04 12 %, ADT^A08 20 %, ORU^R01 30 % (3–12 numeric OBX;
//!   one in eight a text report of 20–110 lines), ORM^O01 18 %, SIU^S12 12 %. HL7 v2.3 to
//!   2.5.1, original and enhanced acknowledgment mode, MSH-7 with and without an offset.
//! - **Senders**: `--senders` (default 30) MSH-3/MSH-4 pairs over 10 facilities, each with
//!   its own kind (registration, lab, order entry, scheduling, or all of them), listener
//!   (`adt`, `lab`, `orders`), peer address and control-id style (counter, prefixed counter,
//!   timestamp + counter, random hex).
//! - **Patients**: `--patients` (default 500 000) MRNs with a Zipf-like skew (rank = N ·
//!   u²: the top 1 % of patients have 10 % of the messages, the least seen about 10 each),
//!   visits (PV1-19) that change every ten days, orders (ORC/OBR placer and filler numbers;
//!   60 % of results refer to an order placed earlier, the others bring their own).
//! - **Times**: `received_at` spread over `--days` (default 90) ending at `--end` (default
//!   now), busier by day than by night.
//! - **Sizes**: 300 B to 8 KiB, median ≈ 600 B (print them with `--dry-run`).
//! - **Resends and refusals**: 0.2 % of messages are sent twice within seconds (the store
//!   finds the duplicate and keeps one row); 0.05 % more are frames with an empty MSH-10,
//!   refused and kept with status `rejected`, as the listener does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hl7_proto::ack::{self, AckPolicy, Outcome};
use hl7_proto::charset::Charset;
use hl7_proto::inbound::{inspect, Inspection};
use hl7d::store::{
    Appended, ConnectionSetup, Disposition, Durability, MessageStore, NewMessage, Origin, Reader,
    SqliteOptions, SqliteStore, StoreError,
};

/// Messages queued on the writer at a time (it commits up to 1 024 per transaction).
const CHUNK: u64 = 4096;
/// The listener's default `duplicate_window`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);
const FACILITIES: [&str; 10] =
    ["MCM", "NORTH", "SOUTH", "STJ", "EAST", "CHILD", "ONC", "WEST", "RIVER", "LAKE"];

struct Args {
    dir: Option<PathBuf>,
    messages: u64,
    patients: u64,
    senders: usize,
    days: u64,
    end: SystemTime,
    seed: u64,
    dry_run: bool,
    page_size: Option<u32>,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: None,
        messages: 10_000_000,
        patients: 500_000,
        senders: 30,
        days: 90,
        end: SystemTime::now(),
        seed: 14,
        dry_run: false,
        page_size: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--dry-run" {
            args.dry_run = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number =
            |what: &str| value.replace('_', "").parse::<u64>().unwrap_or_else(|_| panic!("{what}: a number"));
        match flag.as_str() {
            "--dir" => args.dir = Some(PathBuf::from(&value)),
            "--messages" => args.messages = number("--messages"),
            "--patients" => args.patients = number("--patients").max(1),
            "--senders" => args.senders = number("--senders").clamp(4, 1000) as usize,
            "--days" => args.days = number("--days").max(1),
            "--end" => {
                args.end = humantime::parse_rfc3339_weak(&value)
                    .expect("--end: an RFC 3339 time (2026-12-01T00:00:00Z)")
            }
            "--seed" => args.seed = number("--seed"),
            "--page-size" => args.page_size = Some(number("--page-size") as u32),
            other => panic!("unknown option {other} (see the file header)"),
        }
    }
    if args.dir.is_none() && !args.dry_run {
        panic!("--dir PATH (the store's directory, as [store] path) or --dry-run");
    }
    args
}

fn main() {
    let args = parse_args();
    let world = World::new(&args);
    if args.dry_run {
        dry_run(&args, &world);
        return;
    }
    let dir = args.dir.clone().expect("checked in parse_args");
    let options = SqliteOptions {
        durability: Durability::DangerNoSync,
        connection_setup: Some(ConnectionSetup::new(|conn| conn.pragma_update(None, "cache_size", -262_144))),
        ..SqliteOptions::default()
    };
    if let Some(page_size) = args.page_size {
        create_with_page_size(&dir, page_size);
    }
    let store = SqliteStore::open(&dir, options).expect("open the store");
    // Resume: every index below `first` has its accepted row (batches commit in order).
    let first = Reader::open(&dir)
        .and_then(|reader| {
            reader.count_matching(&hl7d::store::Filter {
                status: Some(hl7d::store::Status::Accepted),
                ..Default::default()
            })
        })
        .expect("count the stored messages");
    if first > 0 {
        eprintln!("resuming at message {first}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let started = Instant::now();
    let mut outcomes = BTreeMap::<&str, u64>::new();
    runtime.block_on(async {
        let mut in_flight: Vec<_> = Vec::new();
        let mut next = first;
        let mut last_report = Instant::now();
        while next < args.messages || !in_flight.is_empty() {
            // Queue the next chunk before waiting for the previous one, so that generating
            // and writing overlap.
            let end = (next + CHUNK).min(args.messages);
            let mut queued = Vec::new();
            for index in next..end {
                for record in world.records(index) {
                    queued.push(store.append(record));
                }
            }
            next = end;
            for append in std::mem::replace(&mut in_flight, queued) {
                let outcome = match append.await {
                    Ok(Appended::New) => "new",
                    Ok(Appended::Duplicate) => "duplicate",
                    Err(StoreError::Closed) => panic!("store closed"),
                    Err(e) => panic!("append failed: {e}"),
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                let done = next - first;
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprintln!(
                    "{next} / {} messages, {rate:.0} msg/s, {:.0} s left",
                    args.messages,
                    (args.messages - next) as f64 / rate
                );
            }
        }
    });
    let stats = store.stats();
    store.close();
    let elapsed = started.elapsed();
    let reader = Reader::open(&dir).expect("reopen");
    let rows = reader.count().expect("count");
    let file = std::fs::metadata(dir.join(hl7d::store::DATABASE_FILE)).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} messages generated from {first} in {:.0} s; appends: {outcomes:?}; store stats: {stats:?}",
        args.messages,
        elapsed.as_secs_f64()
    );
    println!("{rows} rows, database file {file} bytes");
}

/// `--page-size N` (an experiment; hl7d makes new stores with 8 KiB pages):
/// creates the database file with that page size before the store opens it, so that the
/// schema and every message are written in pages of that size. An existing file keeps its.
fn create_with_page_size(dir: &std::path::Path, page_size: u32) {
    let file = dir.join(hl7d::store::DATABASE_FILE);
    if file.exists() {
        return;
    }
    hl7d::private_files::create_dir_all(dir).expect("create the store's directory");
    let conn = rusqlite::Connection::open(&file).expect("create the database file");
    conn.pragma_update(None, "page_size", page_size).expect("page_size");
    // Writing the header fixes the page size.
    let _: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).expect("WAL");
    drop(conn);
    hl7d::private_files::secure_file(&file).expect("0600");
}

/// `--dry-run`: the sizes and the mix of the first `--messages` messages, nothing written.
fn dry_run(args: &Args, world: &World) {
    let mut sizes = Vec::new();
    let mut kinds = BTreeMap::<String, u64>::new();
    let mut patients = std::collections::HashSet::new();
    let mut by_kind = BTreeMap::<String, Vec<usize>>::new();
    for index in 0..args.messages {
        for record in world.records(index) {
            if std::env::var_os("GEN_STORE_SHOW").is_some() && !kinds.contains_key(&record.message_type) {
                eprintln!("{}\n", String::from_utf8_lossy(&record.raw).replace('\r', "\n"));
            }
            sizes.push(record.raw.len());
            by_kind.entry(record.message_type.clone()).or_default().push(record.raw.len());
            *kinds.entry(record.message_type.clone()).or_default() += 1;
            if let Some(patient) = &record.fields.patient_id {
                patients.insert(patient.clone());
            }
        }
    }
    sizes.sort_unstable();
    let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q) as usize];
    let total: usize = sizes.iter().sum();
    println!(
        "{} frames, {total} bytes: min {} p10 {} p50 {} mean {} p90 {} p99 {} max {}",
        sizes.len(),
        sizes[0],
        at(0.1),
        at(0.5),
        total / sizes.len(),
        at(0.9),
        at(0.99),
        sizes[sizes.len() - 1]
    );
    println!("{} distinct patients; types {kinds:?}", patients.len());
    for (kind, mut sizes) in by_kind {
        sizes.sort_unstable();
        let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q) as usize];
        println!("{kind}: min {} p50 {} p90 {} max {}", sizes[0], at(0.5), at(0.9), sizes[sizes.len() - 1]);
    }
}

/// A deterministic random stream (SplitMix64), one per message index.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed
            ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// In `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Registration,
    Lab,
    Orders,
    Scheduling,
    Mixed,
}

#[derive(Clone, Copy)]
enum ControlIds {
    Counter,
    Prefixed,
    Timestamp,
    RandomHex,
}

struct Sender {
    application: String,
    facility: &'static str,
    kind: Kind,
    origin: Origin,
    control_ids: ControlIds,
    version: &'static str,
    /// PID and PV1 with the key fields and little else (some systems send no more).
    lean: bool,
    /// MSH-15/MSH-16: enhanced mode (`AL|NE`) or original (empty).
    enhanced: bool,
    /// MSH-7's offset from UTC in minutes, or `None` for a time without one.
    offset_minutes: Option<i32>,
}

struct World {
    seed: u64,
    messages: u64,
    patients: u64,
    start_micros: i64,
    span_micros: i64,
    senders: Vec<Sender>,
}

/// What a message is, decided from its index alone (so that a result can look up the
/// order an earlier message placed).
struct Plan {
    sender: usize,
    message_type: &'static str,
    patient: u64,
}

impl World {
    fn new(args: &Args) -> World {
        let end = args.end.duration_since(UNIX_EPOCH).expect("after 1970").as_micros() as i64;
        let span_micros = args.days as i64 * 86_400_000_000;
        let mut rng = Rng::new(args.seed, u64::MAX, 1);
        let kinds = [
            Kind::Registration,
            Kind::Lab,
            Kind::Lab,
            Kind::Orders,
            Kind::Registration,
            Kind::Scheduling,
            Kind::Mixed,
        ];
        let senders = (0..args.senders)
            .map(|i| {
                let kind = kinds[i % kinds.len()];
                let (prefix, listener) = match kind {
                    Kind::Registration => ("ADT", "adt"),
                    Kind::Lab => ("LAB", "lab"),
                    Kind::Orders => ("CPOE", "orders"),
                    Kind::Scheduling => ("SCHED", "orders"),
                    Kind::Mixed => ("HIS", "adt"),
                };
                let peer = SocketAddr::from((
                    [10, 20, (i / 200) as u8, (i % 200 + 10) as u8],
                    40_000 + rng.below(20_000) as u16,
                ));
                Sender {
                    application: format!("{prefix}{}", i + 1),
                    facility: FACILITIES[i % FACILITIES.len()],
                    kind,
                    origin: Origin { listener: Arc::from(listener), peer, client_thumbprint: None },
                    control_ids: [
                        ControlIds::Counter,
                        ControlIds::Prefixed,
                        ControlIds::Timestamp,
                        ControlIds::RandomHex,
                    ][i % 4],
                    version: rng.pick(&["2.3", "2.4", "2.5", "2.5.1", "2.5.1"]),
                    enhanced: rng.below(3) == 0,
                    lean: i % 2 == 0,
                    offset_minutes: [None, Some(-300), Some(60), None, Some(0)][i % 5],
                }
            })
            .collect();
        World {
            seed: args.seed,
            messages: args.messages,
            patients: args.patients,
            start_micros: end - span_micros,
            span_micros,
            senders,
        }
    }

    /// When message `index` is received: the `index`-th of `messages` evenly spread over the
    /// span, warped so that days are busier than nights (rate 1 − 0.6·cos(2π·time of day),
    /// lowest at midnight UTC).
    fn received_micros(&self, index: u64) -> i64 {
        let days = self.span_micros as f64 / 86_400e6;
        let x = (index as f64 + 0.5) / self.messages as f64 * days;
        let (day, f) = (x.floor(), x.fract());
        // Solve t − 0.6/(2π)·sin(2πt) = f for t in [0, 1) (the warp is increasing).
        let k = 0.6 / std::f64::consts::TAU;
        let mut t = f;
        for _ in 0..6 {
            let g = t - k * (std::f64::consts::TAU * t).sin() - f;
            let dg = 1.0 - 0.6 * (std::f64::consts::TAU * t).cos();
            t = (t - g / dg).clamp(0.0, 1.0);
        }
        self.start_micros + ((day + t) * 86_400e6) as i64
    }

    fn plan(&self, index: u64) -> Plan {
        let mut rng = Rng::new(self.seed, index, 2);
        let sender = rng.below(self.senders.len() as u64) as usize;
        let roll = rng.below(100);
        let message_type = match self.senders[sender].kind {
            Kind::Registration => {
                ["ADT^A01", "ADT^A04", "ADT^A04", "ADT^A08", "ADT^A08", "ADT^A08"][(roll % 6) as usize]
            }
            Kind::Lab => "ORU^R01",
            Kind::Orders => "ORM^O01",
            Kind::Scheduling => "SIU^S12",
            Kind::Mixed => match roll {
                0..=7 => "ADT^A01",
                8..=19 => "ADT^A04",
                20..=39 => "ADT^A08",
                40..=69 => "ORU^R01",
                70..=87 => "ORM^O01",
                _ => "SIU^S12",
            },
        };
        // Zipf-like: rank = N·u², so P(rank < k) = √(k/N). Ranks are scattered over the MRN
        // range so that busy patients are not neighbours in the index.
        let u = rng.unit();
        let rank = ((self.patients as f64) * u * u) as u64 % self.patients;
        let patient = (rank.wrapping_mul(2_654_435_761) % self.patients) + 100_000;
        Plan { sender, message_type, patient }
    }

    /// The frames message `index` arrives as (usually one; a resend twice; a refused frame
    /// next to it now and then), as the rows the listener would append.
    fn records(&self, index: u64) -> Vec<NewMessage> {
        let plan = self.plan(index);
        let mut rng = Rng::new(self.seed, index, 3);
        let sender = &self.senders[plan.sender];
        let received = self.received_micros(index);
        let text = self.message(index, &plan, received, &mut rng);
        let resend = rng.below(1000) < 2;
        let refused = rng.below(10_000) < 5;
        let mut records = vec![record(sender, received, text.clone().into_bytes())];
        if resend {
            // Resent a few seconds later: the same bytes, found as a duplicate.
            let later = received + 1_000_000 + rng.below(30_000_000) as i64;
            records.push(record(sender, later, text.clone().into_bytes()));
        }
        if refused {
            records.push(record(sender, received + 1, text_without_control_id(&text).into_bytes()));
        }
        records
    }

    fn message(&self, index: u64, plan: &Plan, received: i64, rng: &mut Rng) -> String {
        let sender = &self.senders[plan.sender];
        let message_time = received - 200_000 - rng.below(3_000_000) as i64;
        let mut m = String::with_capacity(1024);
        let (code, trigger) = plan.message_type.split_once('^').expect("TYPE^TRIGGER");
        let structure = match plan.message_type {
            "ADT^A04" | "ADT^A08" => "ADT_A01".to_owned(),
            _ => plan.message_type.replace('^', "_"),
        };
        let (receiver, receiving_facility) = match sender.kind {
            Kind::Lab => ("EMR", "HOSP"),
            _ => (rng.pick(&["HL7D", "EMR", "HIE"]), "HOSP"),
        };
        let ack_modes = if sender.enhanced { "|||AL|NE" } else { "" };
        m += &format!(
            "MSH|^~\\&|{}|{}|{receiver}|{receiving_facility}|{}||{code}^{trigger}^{structure}|{}|P|{}{ack_modes}\r",
            sender.application,
            sender.facility,
            hl7_time(message_time, sender.offset_minutes, sender.version != "2.3"),
            control_id(sender, index, message_time),
            sender.version,
        );
        let patient = Patient::new(plan.patient);
        let visit = visit_number(plan.patient, received);
        match code {
            "ADT" => {
                m += &format!(
                    "EVN|{trigger}|{}|||{}^{}^{}\r",
                    hl7_time(message_time, None, false),
                    rng.below(9000) + 1000,
                    pick_name(rng.next()).0,
                    pick_name(rng.next()).1
                );
                m += &patient.pid(sender.lean, rng);
                m += &pv1(&patient, &visit, received, sender.lean, rng);
                if trigger != "A08" || rng.below(4) == 0 {
                    let (last, first) = pick_name(rng.next());
                    m += &format!(
                        "NK1|1|{last}^{first}|{}^{}^HL70063|{}||{}\r",
                        ["SPO", "PAR", "CHD", "SIB"][rng.below(4) as usize],
                        ["Spouse", "Parent", "Child", "Sibling"][rng.below(4) as usize],
                        patient.address,
                        patient.phone
                    );
                }
                if trigger == "A01" || rng.below(5) == 0 {
                    let (dx, text) = rng.pick(&DIAGNOSES);
                    m += &format!("DG1|1|I10|{dx}^{text}^I10||{}|A\r", hl7_time(received, None, false));
                    m += &format!(
                        "AL1|1|DA|{}^{}^L|{}\r",
                        rng.below(90_000) + 10_000,
                        ["Penicillin", "Latex", "Peanut", "Sulfa", "Codeine"][rng.below(5) as usize],
                        ["SV", "MO", "MI"][rng.below(3) as usize]
                    );
                }
                if trigger != "A08" {
                    m += &format!(
                        "IN1|1|{}^{}|{}|{}|PO BOX {}^^{}^{}^{}|||GRP{:06}|||||||{}^{}|01|{}|{}\r",
                        ["BCBS", "AETNA", "MEDICARE", "CIGNA", "UHC"][rng.below(5) as usize],
                        ["PPO", "HMO", "A", "B"][rng.below(4) as usize],
                        rng.below(900) + 100,
                        ["Blue Cross", "Aetna", "Medicare", "Cigna", "United"][rng.below(5) as usize],
                        rng.below(9000) + 1000,
                        patient.city,
                        patient.state,
                        patient.zip,
                        rng.below(1_000_000),
                        patient.last,
                        patient.first,
                        patient.dob,
                        patient.address,
                    );
                }
            }
            "ORM" => {
                let order = Order::placed(sender, index);
                m += &patient.pid(sender.lean, rng);
                m += &pv1(&patient, &visit, received, sender.lean, rng);
                let (test, name) = rng.pick(&TESTS);
                m += &format!(
                    "ORC|NW|{}^{}||{}|SC||^^^{}^^R||{}|{}^{}^{}|||{}^{}^{}^^^DR\r",
                    order.placer,
                    sender.application,
                    order.group,
                    hl7_time(message_time, None, false),
                    hl7_time(message_time, None, false),
                    rng.below(9000) + 1000,
                    pick_name(rng.next()).0,
                    pick_name(rng.next()).1,
                    rng.below(90_000) + 10_000,
                    pick_name(rng.next()).0,
                    pick_name(rng.next()).1,
                );
                m += &format!(
                    "OBR|1|{}^{}||{test}^{name}^L|||{}|||||||||{}^{}^{}^^^DR||||||||||^^^{}^^R\r",
                    order.placer,
                    sender.application,
                    hl7_time(message_time, None, false),
                    rng.below(90_000) + 10_000,
                    pick_name(rng.next()).0,
                    pick_name(rng.next()).1,
                    hl7_time(message_time, None, false),
                );
                if rng.below(2) == 0 {
                    let (dx, text) = rng.pick(&DIAGNOSES);
                    m += &format!("DG1|1|I10|{dx}^{text}^I10\r");
                }
            }
            "ORU" => {
                // Most results answer an order placed earlier (by an order-entry sender),
                // for that order's patient; the rest bring their own numbers.
                let earlier = index.checked_sub(1 + rng.below(20_000)).filter(|_| rng.below(10) < 6);
                let (order, patient) =
                    match earlier.map(|j| (j, self.plan(j))).filter(|(_, p)| p.message_type == "ORM^O01") {
                        Some((j, earlier)) => {
                            (Order::placed(&self.senders[earlier.sender], j), Patient::new(earlier.patient))
                        }
                        None => (Order::placed(sender, index), patient),
                    };
                let visit = visit_number(patient.mrn, received);
                let filler = format!("F{:09}", index % 1_000_000_000);
                m += &patient.pid(sender.lean, rng);
                m += &pv1(&patient, &visit, received, sender.lean, rng);
                m += &format!("ORC|RE|{}|{filler}^{}||CM\r", order.placer, sender.application);
                let report = rng.below(12) == 0;
                let (test, name) = if report { rng.pick(&REPORTS) } else { rng.pick(&TESTS) };
                m += &format!(
                    "OBR|1|{}|{filler}^{}|{test}^{name}^L|||{}|||||||{}|{}^{}^{}^^^DR||||||{}|||F\r",
                    order.placer,
                    sender.application,
                    hl7_time(message_time - 3_600_000_000, None, false),
                    hl7_time(message_time - 3_000_000_000, None, false),
                    rng.below(90_000) + 10_000,
                    pick_name(rng.next()).0,
                    pick_name(rng.next()).1,
                    hl7_time(message_time, None, false),
                );
                if report {
                    let lines = 10 + rng.below(81);
                    for line in 1..=lines {
                        let words = 6 + rng.below(10);
                        let sentence: Vec<&str> = (0..words).map(|_| rng.pick(&WORDS)).collect();
                        m +=
                            &format!("OBX|{line}|TX|{test}^{name}^L|{line}|{}.||||||F\r", sentence.join(" "));
                        if m.len() > 8000 {
                            break;
                        }
                    }
                } else {
                    for n in 1..=(1 + rng.below(6)) {
                        let (code, name, unit, low, high) = rng.pick(&ANALYTES);
                        let value = low + (high - low) * (rng.unit() * 1.4 - 0.2);
                        let flag = if value < low {
                            "L"
                        } else if value > high {
                            "H"
                        } else {
                            "N"
                        };
                        m += &format!(
                            "OBX|{n}|NM|{code}^{name}^LN||{value:.1}|{unit}^{unit}^UCUM|{low}-{high}|{flag}|||F|||{}\r",
                            hl7_time(message_time - 2_000_000_000, None, false),
                        );
                    }
                }
            }
            _ => {
                // SIU^S12
                let start = received + (1 + rng.below(30 * 24)) as i64 * 3_600_000_000;
                let minutes = rng.pick(&[15u64, 20, 30, 45, 60]);
                m += &format!(
                    "SCH|{}^{}|{}^{}|||||{}^{}|NORMAL|{minutes}|min|^^{minutes}^{}^{}|||||{}^{}^{}||||{}^{}^{}|||||Booked\r",
                    index % 100_000_000, sender.application, index % 10_000_000 + 5_000_000, "SCHED",
                    ["ROUTINE", "FOLLOWUP", "CHECKUP", "PROCEDURE"][rng.below(4) as usize], ["Routine visit", "Follow-up", "Annual check-up", "Procedure"][rng.below(4) as usize],
                    hl7_time(start, None, false), hl7_time(start + minutes as i64 * 60_000_000, None, false),
                    rng.below(90_000) + 10_000, pick_name(rng.next()).0, pick_name(rng.next()).1,
                    rng.below(90_000) + 10_000, pick_name(rng.next()).0, pick_name(rng.next()).1,
                );
                m += &patient.pid(sender.lean, rng);
                m += &pv1(&patient, &visit, received, sender.lean, rng);
                m += "RGS|1|A\r";
                m += &format!(
                    "AIS|1|A|{}^{}|{}|0|min|{minutes}|min\r",
                    rng.below(900) + 100,
                    ["Consultation", "Imaging", "Therapy", "Lab draw"][rng.below(4) as usize],
                    hl7_time(start, None, false)
                );
                m += &format!(
                    "AIP|1|A|{}^{}^{}^^^DR|{}|{}|0|min|{minutes}|min\r",
                    rng.below(90_000) + 10_000,
                    pick_name(rng.next()).0,
                    pick_name(rng.next()).1,
                    ["ATT", "CON"][rng.below(2) as usize],
                    hl7_time(start, None, false)
                );
            }
        }
        m
    }
}

/// The row the listener would append for this frame from `sender` at `received_micros`.
fn record(sender: &Sender, received_micros: i64, frame: Vec<u8>) -> NewMessage {
    let received_at = UNIX_EPOCH + Duration::from_micros(received_micros as u64);
    let frame = Bytes::from(frame);
    match inspect(&frame, Charset::Utf8, false) {
        Inspection::Accept { msh, charset } => {
            let code = ack::decide(Some(&msh), AckPolicy::Msh, Outcome::Accepted);
            let accepted = Disposition::Accepted { duplicate_window: Some(DUPLICATE_WINDOW) };
            NewMessage::received(
                &sender.origin,
                received_at,
                Some(&msh),
                charset,
                code,
                accepted,
                frame.clone(),
            )
        }
        Inspection::Refuse(refused) => {
            let code = ack::decide(refused.msh.as_ref(), AckPolicy::Msh, refused.reason.outcome());
            let disposition = Disposition::Refused(refused.reason.clone());
            NewMessage::received(
                &sender.origin,
                received_at,
                refused.msh.as_ref(),
                refused.charset,
                code,
                disposition,
                frame.clone(),
            )
        }
    }
}

/// The same message with MSH-10 emptied: the listener refuses it (AR, MSH-10 required).
fn text_without_control_id(message: &str) -> String {
    let mut fields: Vec<&str> = message.splitn(11, '|').collect();
    if fields.len() == 11 {
        let rest = fields[10].split_once('|').map_or("", |(_, rest)| rest);
        fields[9] = "";
        return format!("{}|{rest}", fields[..10].join("|"));
    }
    message.to_owned()
}

fn control_id(sender: &Sender, index: u64, message_time: i64) -> String {
    match sender.control_ids {
        ControlIds::Counter => format!("{}", 1_000_000 + index),
        ControlIds::Prefixed => {
            format!("{}{:010}", &sender.application[..3.min(sender.application.len())], index)
        }
        ControlIds::Timestamp => format!("{}{:04}", hl7_time(message_time, None, false), index % 10_000),
        ControlIds::RandomHex => format!("{:016X}", Rng::new(0x5eed, index, 9).next()),
    }
}

/// `YYYYMMDDHHMMSS` in the sender's offset, with `±HHMM` when it has one; with `fraction`
/// and an offset, four digits of the second too.
fn hl7_time(micros: i64, offset_minutes: Option<i32>, fraction: bool) -> String {
    let local = micros + i64::from(offset_minutes.unwrap_or(0)) * 60_000_000;
    let secs = local.div_euclid(1_000_000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let mut out =
        format!("{y:04}{mo:02}{d:02}{:02}{:02}{:02}", day_secs / 3600, day_secs / 60 % 60, day_secs % 60);
    if let Some(offset) = offset_minutes {
        if fraction {
            out += &format!(".{:04}", local.rem_euclid(1_000_000) / 100);
        }
        let sign = if offset < 0 { '-' } else { '+' };
        out += &format!("{sign}{:02}{:02}", offset.abs() / 60, offset.abs() % 60);
    }
    out
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A visit number that changes every ten days for a patient.
fn visit_number(patient: u64, received: i64) -> String {
    let period = received.div_euclid(10 * 86_400_000_000) as u64;
    format!("V{:09}", Rng::new(patient, period, 4).below(1_000_000_000))
}

struct Order {
    placer: String,
    group: String,
}

impl Order {
    /// The order message `index` from `sender` places.
    fn placed(sender: &Sender, index: u64) -> Order {
        Order {
            placer: format!("{}{:08}", &sender.application[..1], index % 100_000_000),
            group: format!("G{:08}", index / 3 % 100_000_000),
        }
    }
}

struct Patient {
    mrn: u64,
    authority: &'static str,
    last: &'static str,
    first: &'static str,
    dob: String,
    sex: &'static str,
    address: String,
    city: &'static str,
    state: &'static str,
    zip: u64,
    phone: String,
}

impl Patient {
    fn new(mrn: u64) -> Patient {
        let mut rng = Rng::new(mrn, 0, 5);
        let (last, first) = pick_name(rng.next());
        let (city, state) = rng.pick(&CITIES);
        Patient {
            mrn,
            authority: rng.pick(&["HOSP", "HOSP", "HOSP", "CLINIC", "2.16.840.1.113883.19.5"]),
            last,
            first,
            dob: format!("{}{:02}{:02}", 1930 + rng.below(94), 1 + rng.below(12), 1 + rng.below(28)),
            sex: rng.pick(&["F", "M", "F", "M", "U"]),
            address: format!(
                "{} {} {}",
                1 + rng.below(9999),
                rng.pick(&STREETS),
                rng.pick(&["ST", "AVE", "RD", "LN", "BLVD"])
            ),
            city,
            state,
            zip: 10_000 + rng.below(89_999),
            phone: format!("({}){}-{:04}", 200 + rng.below(800), 200 + rng.below(800), rng.below(10_000)),
        }
    }

    fn pid(&self, lean: bool, rng: &mut Rng) -> String {
        let authority = if self.authority.contains('.') {
            format!("&{}&ISO", self.authority)
        } else {
            self.authority.to_owned()
        };
        let ssn = Rng::new(self.mrn, 1, 6).below(900_000_000) + 100_000_000;
        let middle = ["A", "B", "J", "M", ""][rng.below(5) as usize];
        if lean {
            return format!(
                "PID|1||{}^^^{authority}^MR||{}^{}^{middle}||{}|{}|||{}^^{}^{}^{}\r",
                self.mrn,
                self.last,
                self.first,
                self.dob,
                self.sex,
                self.address,
                self.city,
                self.state,
                self.zip
            );
        }
        format!(
            "PID|1||{}^^^{authority}^MR~{ssn}^^^SSA^SS||{}^{}^{middle}||{}|{}|||{}^^{}^{}^{}^USA||{}|||{}||{}^^^{authority}^AN|{ssn}\r",
            self.mrn, self.last, self.first, self.dob, self.sex, self.address, self.city, self.state, self.zip, self.phone,
            ["M", "S", "D", "W"][(self.mrn % 4) as usize], 90_000_000 + self.mrn,
        )
    }
}

fn pv1(patient: &Patient, visit: &str, received: i64, lean: bool, rng: &mut Rng) -> String {
    let class = rng.pick(&["I", "O", "E", "O"]);
    let (last, first) = pick_name(rng.next());
    let authority = if patient.authority.contains('.') { "HOSP" } else { patient.authority };
    if lean {
        return format!(
            "PV1|1|{class}|{}^{}||||{}^{last}^{first}|||||||||||{class}|{visit}^^^{authority}^VN|||||||||||||||||||||||||{}\r",
            ["MED", "SUR", "ICU", "ER", "PED", "ONC"][rng.below(6) as usize],
            100 + rng.below(400),
            rng.below(90_000) + 10_000,
            hl7_time(received - rng.below(5 * 86_400) as i64 * 1_000_000, None, false),
        );
    }
    format!(
        "PV1|1|{class}|{}^{}^{}^{}||||{}^{last}^{first}^^^DR|||{}||||{}|||{}^{last}^{first}^^^DR|{class}|{visit}^^^{}^VN|||||||||||||||||||||||||{}\r",
        ["MED", "SUR", "ICU", "ER", "PED", "ONC"][rng.below(6) as usize],
        100 + rng.below(400),
        rng.below(4) + 1,
        FACILITIES[(patient.mrn % 10) as usize],
        rng.below(90_000) + 10_000,
        ["MED", "SUR", "CAR", "PUL"][rng.below(4) as usize],
        rng.below(9) + 1,
        rng.below(90_000) + 10_000,
        authority,
        hl7_time(received - rng.below(5 * 86_400) as i64 * 1_000_000, None, false),
    )
}

fn pick_name(r: u64) -> (&'static str, &'static str) {
    (
        LAST_NAMES[(r % LAST_NAMES.len() as u64) as usize],
        FIRST_NAMES[(r / 1000 % FIRST_NAMES.len() as u64) as usize],
    )
}

const LAST_NAMES: [&str; 24] = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "O'BRIEN",
];
const FIRST_NAMES: [&str; 20] = [
    "JAMES",
    "MARY",
    "ROBERT",
    "PATRICIA",
    "JOHN",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "DAVID",
    "ELIZABETH",
    "WILLIAM",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "CHARLES",
    "KAREN",
];
const CITIES: [(&str, &str); 8] = [
    ("SPRINGFIELD", "IL"),
    ("RIVERSIDE", "CA"),
    ("FRANKLIN", "TN"),
    ("GREENVILLE", "SC"),
    ("MADISON", "WI"),
    ("GEORGETOWN", "TX"),
    ("SALEM", "OR"),
    ("CLINTON", "IA"),
];
const STREETS: [&str; 8] = ["MAIN", "OAK", "PINE", "MAPLE", "CEDAR", "ELM", "WASHINGTON", "LAKE"];
const DIAGNOSES: [(&str, &str); 6] = [
    ("I10", "Essential hypertension"),
    ("E11.9", "Type 2 diabetes mellitus"),
    ("J18.9", "Pneumonia, unspecified"),
    ("N39.0", "Urinary tract infection"),
    ("I50.9", "Heart failure, unspecified"),
    ("R07.9", "Chest pain, unspecified"),
];
const TESTS: [(&str, &str); 6] = [
    ("CBC", "Complete blood count"),
    ("BMP", "Basic metabolic panel"),
    ("CMP", "Comprehensive metabolic panel"),
    ("LIPID", "Lipid panel"),
    ("TSH", "Thyroid stimulating hormone"),
    ("UA", "Urinalysis"),
];
const REPORTS: [(&str, &str); 4] = [
    ("XR-CHEST", "Chest X-ray 2 views"),
    ("CT-HEAD", "CT head without contrast"),
    ("US-ABD", "Ultrasound abdomen"),
    ("PATH", "Surgical pathology report"),
];
const ANALYTES: [(&str, &str, &str, f64, f64); 10] = [
    ("718-7", "Hemoglobin", "g/dL", 12.0, 17.5),
    ("6690-2", "WBC", "10*3/uL", 4.0, 11.0),
    ("777-3", "Platelets", "10*3/uL", 150.0, 400.0),
    ("2951-2", "Sodium", "mmol/L", 135.0, 145.0),
    ("2823-3", "Potassium", "mmol/L", 3.5, 5.1),
    ("2345-7", "Glucose", "mg/dL", 70.0, 99.0),
    ("2160-0", "Creatinine", "mg/dL", 0.6, 1.3),
    ("3094-0", "BUN", "mg/dL", 7.0, 20.0),
    ("2093-3", "Cholesterol", "mg/dL", 125.0, 200.0),
    ("3016-3", "TSH", "mIU/L", 0.4, 4.0),
];
const WORDS: [&str; 24] = [
    "no",
    "acute",
    "cardiopulmonary",
    "process",
    "the",
    "lungs",
    "are",
    "clear",
    "mild",
    "degenerative",
    "changes",
    "of",
    "the",
    "spine",
    "unremarkable",
    "within",
    "normal",
    "limits",
    "there",
    "is",
    "small",
    "effusion",
    "findings",
    "stable",
];
