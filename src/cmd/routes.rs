//! `hl7d routes status|parked|retry|skip|backfill`: see and act on the delivery queue in
//! the store, while the server runs.
//!
//! Reading goes through [`StoreReader`] (read-only, never blocks the server); changes through
//! [`StoreActions`], in short transactions beside the server's writer (SQLite) or the
//! nodes working the queue (PostgreSQL: the rows changed are locked, see
//! `hl7d::store::postgres::PgActions`). Nothing signals
//! the server: its delivery engine reads the rows again at least every second, so a
//! change takes effect within two seconds. Every change writes one audit line (the route,
//! the messages, the action, the operator's OS user) to the log and to the audit trail of
//! the configuration; a dry run writes none. Lane keys hold patient identifiers under
//! `per_patient`: they are printed for the operator, never logged.
//!
//! Exit codes: 0 done; 1 the store could not be read or written, or there was nothing the
//! action applies to (e.g. `retry --message` of a message with no parked delivery); 64
//! usage (a name that is neither a route of the configuration nor one the store's rows
//! carry; `backfill` of a route not in the configuration); 78 the configuration.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use hl7d::config::{Config, RouteConfig};
use hl7d::ops;
use hl7d::store::deliveries::{Changed, Release, RouteRule, RouteStatus};
use hl7d::store::{Reader, StoreActions, StoreAt, StoreReader};
use serde_json::json;

use super::messages::{parse_since, thousands};
use super::operator::{flush_audit, open_audit, os_user};
use super::{exit_code, Failure, EXIT_CONFIG};
use hl7d::ops::printable;

/// `hl7d routes`: the delivery queue of each route (works while the server runs).
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// Configuration file (TOML): its `[store] path`, `[[route]]`s and `[audit]`. Without
    /// it, the embedded default (`./hl7d-data`, no routes).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: RoutesCommand,
}

/// The `hl7d routes` subcommands.
#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Per route: pending, in flight, delivered, parked, held lanes, the age of the oldest
    /// pending message and the last error. Routes of the configuration, then routes that
    /// only the store's rows still name (removed from the configuration).
    Status {
        /// A JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The route's parked deliveries (each holds its lane), by lane.
    Parked {
        /// The route.
        route: String,
        /// A JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Release parked deliveries: they are sent again at once (attempts kept), and their
    /// lanes go on once they are delivered.
    Retry {
        /// The route.
        route: String,
        /// Which parked deliveries.
        #[command(flatten)]
        which: RetryWhich,
    },
    /// Give up on a message on this route: its parked or pending delivery becomes skipped
    /// (kept, never sent) and its lane goes on.
    Skip {
        /// The route.
        route: String,
        /// The message id (see `routes parked`).
        #[arg(long, value_name = "ID")]
        message: i64,
    },
    /// Queue the route's deliveries of messages stored before it was configured: accepted
    /// messages received since --since (until --until) that the route's listeners and
    /// message_types take and that have no delivery on it yet, in the order they were
    /// stored. Running it again queues nothing new.
    Backfill {
        /// The route (it must be in the configuration).
        route: String,
        /// Messages received since this time: RFC 3339 (`2026-11-28T09:00:00Z`), a date
        /// (`2026-11-28`, UTC), or an age (`90m`, `2h`, `7d`).
        #[arg(long, value_parser = parse_since)]
        since: SystemTime,
        /// Messages received before this time (same forms; default: now).
        #[arg(long, value_parser = parse_since)]
        until: Option<SystemTime>,
        /// Only count what would be queued; queue nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `retry`'s selection: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RetryWhich {
    /// The parked delivery of this message.
    #[arg(long, value_name = "ID")]
    pub message: Option<i64>,
    /// Every parked delivery in this lane (as `routes parked` shows it).
    #[arg(long, value_name = "KEY")]
    pub lane: Option<String>,
    /// Every parked delivery of the route.
    #[arg(long)]
    pub all_parked: bool,
}

impl RetryWhich {
    fn release(&self) -> Release {
        match (&self.message, &self.lane) {
            (Some(id), _) => Release::Message(*id),
            (None, Some(lane)) => Release::Lane(lane.clone()),
            // clap requires exactly one of the three.
            (None, None) => Release::AllParked,
        }
    }
}

/// Runs `hl7d routes`.
pub fn run(args: RoutesArgs) -> ExitCode {
    let config = match hl7d::serve::load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hl7d: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let out = &mut std::io::stdout().lock();
    let result = match args.command {
        RoutesCommand::Status { json } if config.store.postgres.is_some() => pg_status(&config, json, out),
        RoutesCommand::Status { json } => status(&config, json, out),
        RoutesCommand::Parked { route, json } => parked(&config, &route, json, out),
        RoutesCommand::Retry { route, which } => retry(&config, &route, &which.release(), out),
        RoutesCommand::Skip { route, message } => skip(&config, &route, message, out),
        RoutesCommand::Backfill { route, since, until, dry_run } => {
            backfill(&config, &route, since, until, dry_run, out)
        }
    };
    exit_code("hl7d routes", result)
}

/// The route of the configuration called `name`, as what it matches and how it lanes;
/// a usage error naming the configured routes otherwise (`what` says what needs it).
pub fn configured_route(config: &Config, name: &str, what: &str) -> Result<RouteRule, Failure> {
    match config.route(name) {
        Some(route) => Ok(ops::route_rule(route)),
        None => {
            let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
            let known = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
            Err(Failure::Usage(format!(
                "route {:?} is not in the configuration ({what}); configured: {known}",
                printable(name)
            )))
        }
    }
}

/// A route is known when the configuration has it or the store's rows name it (it may have
/// been removed since, with deliveries left); anything else is a typo, and the error names
/// the known ones. Returns whether the configuration has it.
fn known_route(config: &Config, reader: &StoreReader, name: &str) -> Result<bool, Failure> {
    if config.route(name).is_some() {
        return Ok(true);
    }
    if reader.route_has_deliveries(name)? {
        return Ok(false);
    }
    let mut known: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
    known.extend(reader.delivery_routes()?);
    known.sort_unstable();
    known.dedup();
    let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
    Err(Failure::Usage(format!("unknown route {:?}; known: {known}", printable(name))))
}

/// `hl7d routes status`.
fn status(config: &Config, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let reader = StoreReader::Sqlite(Reader::open(&config.store.path)?);
    let routes = ops::route_statuses(&config.routes, &reader)?;
    let routes: Vec<(RouteStatus, Option<&RouteConfig>, Holders)> =
        routes.into_iter().map(|(status, route)| (status, route, Vec::new())).collect();
    print_status(&routes, json, out)
}

/// Which node holds which lanes (PostgreSQL only): (node, lanes).
type Holders = Vec<(String, Vec<String>)>;

/// `hl7d routes status` on the PostgreSQL store: the same table and JSON, and which node
/// holds which lanes now (`holders`).
fn pg_status(config: &Config, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    use hl7d::delivery::queue::postgres::{delivery_routes, holders, route_status};
    // Checked by the configuration's validation when it loaded.
    let Some(postgres) = &config.store.postgres else { return Ok(()) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pool = hl7d::store::postgres::connect::pool(postgres).map_err(|e| anyhow!("{e}"))?;
    let statuses = runtime.block_on(async {
        let client = pool.get().await.map_err(|e| anyhow!("PostgreSQL store: {e}"))?;
        let mut names: Vec<(String, Option<&RouteConfig>)> =
            config.routes.iter().map(|route| (route.name.clone(), Some(route))).collect();
        for name in delivery_routes(&client).await? {
            if config.route(&name).is_none() {
                names.push((name, None));
            }
        }
        let mut statuses = Vec::new();
        for (name, route) in names {
            statuses.push((route_status(&client, &name).await?, route, holders(&client, &name).await?));
        }
        Ok::<_, anyhow::Error>(statuses)
    })?;
    print_status(&statuses, json, out)
}

fn print_status(
    routes: &[(RouteStatus, Option<&RouteConfig>, Holders)],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let now = SystemTime::now();
    if json {
        let array: Vec<serde_json::Value> =
            routes.iter().map(|(status, route, holders)| status_json(status, *route, holders, now)).collect();
        writeln!(out, "{}", serde_json::Value::Array(array))?;
        out.flush()?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24}  {:>9}  {:>9}  {:>11}  {:>7}  {:>7}  {:>10}  {:>14}  LAST ERROR",
        "ROUTE", "PENDING", "IN FLIGHT", "DELIVERED", "PARKED", "SKIPPED", "HELD LANES", "OLDEST PENDING"
    )?;
    for (status, route, _) in routes {
        let name = match route {
            Some(_) => printable(&status.name),
            None => format!("{} (removed)", printable(&status.name)),
        };
        let oldest = match status.oldest_pending_queued_at {
            Some(_) => age(status.oldest_pending_seconds(now)),
            None => "-".to_owned(),
        };
        writeln!(
            out,
            "{name:<24}  {:>9}  {:>9}  {:>11}  {:>7}  {:>7}  {:>10}  {oldest:>14}  {}",
            thousands(status.pending),
            thousands(status.in_flight),
            thousands(status.delivered),
            thousands(status.parked),
            thousands(status.skipped),
            thousands(status.held_lanes),
            status.last_error.as_deref().map_or_else(|| "-".to_owned(), printable),
        )?;
    }
    for (status, _, holders) in routes {
        if !holders.is_empty() {
            let held: Vec<String> = holders
                .iter()
                .map(|(node, lanes)| format!("{} {}", printable(node), thousands(lanes.len() as u64)))
                .collect();
            writeln!(out, "  {}: lanes held by node: {}", printable(&status.name), held.join(", "))?;
        }
    }
    if routes.is_empty() {
        eprintln!("no routes: the configuration has no [[route]] and the store no deliveries");
    }
    out.flush()?;
    Ok(())
}

/// One route of `status --json`: the fields of [`ops::route_status_json`] (the first eight
/// are the contract of issue 15) and `holders`: which node holds which lanes now, on the
/// PostgreSQL store (empty on SQLite, where the one node owns every lane without a lease).
fn status_json(
    status: &RouteStatus,
    route: Option<&RouteConfig>,
    holders: &Holders,
    now: SystemTime,
) -> serde_json::Value {
    let holders: Vec<serde_json::Value> =
        holders.iter().map(|(node, lanes)| json!({ "node": node, "lanes": lanes })).collect();
    let mut value = ops::route_status_json(status, route, now);
    value["holders"] = serde_json::Value::Array(holders);
    value
}

/// `90` → `1m 30s` (whole seconds).
fn age(seconds: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
}

/// `hl7d routes parked ROUTE`.
fn parked(config: &Config, route: &str, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let reader = StoreReader::open(&config.store)?;
    known_route(config, &reader, route)?;
    let parked = reader.parked(route)?;
    let time = |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339_seconds(t).to_string());
    if json {
        let array: Vec<serde_json::Value> = parked
            .iter()
            .map(|p| {
                json!({
                    "delivery_id": p.id,
                    "message_id": p.message_id,
                    "lane": p.lane,
                    "control_id": p.control_id,
                    "message_type": p.message_type,
                    "attempts": p.attempts,
                    "parked_at": time(p.parked_at),
                    "last_error": p.last_error,
                    "response": p.response,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(array))?;
        out.flush()?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>8}  {:>8}  {:<28}  {:<20}  {:<10}  {:>8}  {:<20}  {:<24}  RESPONSE",
        "DELIVERY", "MESSAGE", "LANE", "CONTROL ID", "TYPE", "ATTEMPTS", "PARKED AT (UTC)", "LAST ERROR"
    )?;
    for p in &parked {
        writeln!(
            out,
            "{:>8}  {:>8}  {:<28}  {:<20}  {:<10}  {:>8}  {:<20}  {:<24}  {}",
            p.id,
            p.message_id,
            printable(&p.lane),
            printable(&p.control_id),
            printable(&p.message_type),
            p.attempts,
            time(p.parked_at).unwrap_or_else(|| "-".to_owned()),
            p.last_error.as_deref().map_or_else(|| "-".to_owned(), printable),
            p.response.as_deref().map_or_else(|| "-".to_owned(), printable),
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `hl7d routes retry ROUTE (--message ID | --lane KEY | --all-parked)`.
fn retry(config: &Config, route: &str, which: &Release, out: &mut dyn Write) -> Result<(), Failure> {
    let store = StoreAt::of(&config.store);
    let reader = StoreReader::open(&config.store)?;
    if !known_route(config, &reader, route)? {
        eprintln!(
            "hl7d routes: route {:?} is not in the configuration: nothing delivers what is released \
             until it is configured again",
            printable(route)
        );
    }
    // The audit trail first: an action that cannot be recorded does not run.
    let audit = open_audit(config)?;
    let result = ops::retry(store, route, which, &actor());
    flush_audit(audit.as_ref());
    let released = result?;
    if released.is_empty() {
        return match which {
            Release::AllParked => {
                writeln!(out, "nothing parked on route {}", printable(route))?;
                Ok(())
            }
            Release::Lane(lane) => Err(Failure::Other(anyhow!(
                "no parked delivery in lane {:?} on route {}",
                printable(lane),
                printable(route)
            ))),
            Release::Message(id) => {
                Err(Failure::Other(anyhow!(ops::why_not(&reader, route, *id, "parked")?)))
            }
        };
    }
    writeln!(out, "released {} parked delivery(ies) on route {}:", released.len(), printable(route))?;
    print_changed(&released, out)?;
    Ok(())
}

/// `hl7d routes skip ROUTE --message ID`.
fn skip(config: &Config, route: &str, message: i64, out: &mut dyn Write) -> Result<(), Failure> {
    let store = StoreAt::of(&config.store);
    let reader = StoreReader::open(&config.store)?;
    known_route(config, &reader, route)?;
    let audit = open_audit(config)?;
    let result = ops::skip(store, route, message, &actor());
    flush_audit(audit.as_ref());
    let skipped = result?;
    if skipped.is_empty() {
        return Err(Failure::Other(anyhow!(ops::why_not(&reader, route, message, "parked or pending")?)));
    }
    writeln!(out, "skipped {} delivery(ies) on route {}:", skipped.len(), printable(route))?;
    print_changed(&skipped, out)?;
    Ok(())
}

fn print_changed(changed: &[Changed], out: &mut dyn Write) -> std::io::Result<()> {
    for row in changed {
        writeln!(
            out,
            "  delivery {}  message {}  lane {}  (was {})",
            row.id,
            row.message_id,
            printable(&row.lane),
            row.was.as_str()
        )?;
    }
    out.flush()
}

/// The OS user running the command, as the shared actions' audit lines name them.
fn actor() -> ops::Actor {
    let user = os_user();
    ops::Actor { user: user.name, uid: user.uid, sudo_user: user.sudo_user, addr: None, via: None }
}

/// `hl7d routes backfill ROUTE --since T [--until T] [--dry-run]`.
fn backfill(
    config: &Config,
    route: &str,
    since: SystemTime,
    until: Option<SystemTime>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let rule = configured_route(config, route, "backfill needs its listeners, message_types and order")?;
    let now = SystemTime::now();
    let until = until.unwrap_or(now);
    if since >= until {
        return Err(Failure::Usage("--since must be before --until".into()));
    }
    let store = StoreAt::of(&config.store);
    let range = format!(
        "{} to {}",
        humantime::format_rfc3339_seconds(since),
        humantime::format_rfc3339_seconds(until)
    );
    if dry_run {
        let queued = StoreActions::open(store)?.backfill(&rule, since, until, true, now)?;
        writeln!(out, "would queue {} message(s) for route {}", thousands(queued.count), printable(route))?;
        return Ok(());
    }
    let audit = open_audit(config)?;
    let result =
        StoreActions::open(store).and_then(|mut actions| actions.backfill(&rule, since, until, false, now));
    let user = os_user();
    match &result {
        Ok(queued) => tracing::info!(target: "audit", event = "route_backfill", action = "backfill", route,
            count = queued.count, first_message_id = queued.first_message, last_message_id = queued.last_message,
            range = %range, user = %user.name, uid = user.uid, sudo_user = user.sudo_user.as_deref(),
            "stored messages queued for a route"),
        Err(e) => tracing::warn!(target: "audit", event = "route_backfill", action = "backfill", route,
            count = 0u64, range = %range, user = %user.name, uid = user.uid,
            sudo_user = user.sudo_user.as_deref(), error = %e, "backfill failed"),
    }
    flush_audit(audit.as_ref());
    let queued = result?;
    match (queued.first_message, queued.last_message) {
        (Some(first), Some(last)) => writeln!(
            out,
            "queued {} message(s) for route {} (messages {first} to {last})",
            thousands(queued.count),
            printable(route)
        )?,
        _ => writeln!(out, "queued 0 message(s) for route {}", printable(route))?,
    }
    Ok(())
}

/// `hl7d messages resend ID… --route ROUTE` (`range` `None`) or `hl7d messages resend
/// --route ROUTE --since T [--until T]`: new deliveries, linked to the originals; one audit
/// line (event `message_resend`) unless `dry_run`.
pub fn resend(
    config: &Config,
    route: &str,
    ids: &[i64],
    range: Option<(SystemTime, Option<SystemTime>)>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let rule = configured_route(config, route, "a resend needs its order")?;
    let store = StoreAt::of(&config.store);
    let now = SystemTime::now();
    let range = match range {
        Some((since, until)) => {
            let until = until.unwrap_or(now);
            if since >= until {
                return Err(Failure::Usage("--since must be before --until".into()));
            }
            Some((since, until))
        }
        None => None,
    };
    let verb = if dry_run { "would queue" } else { "queued" };
    if dry_run {
        let mut actions = StoreActions::open(store)?;
        let count = match range {
            Some((since, until)) => actions.resend_range(&rule, since, until, true, now)?.count,
            None => actions.resend(&rule, ids, true, now)?.len() as u64,
        };
        writeln!(out, "{verb} {} resend(s) on route {}", thousands(count), printable(route))?;
        return Ok(());
    }
    let audit = open_audit(config)?;
    let user = os_user();
    let mut actions = StoreActions::open(store)?;
    let result = match range {
        Some((since, until)) => {
            let range_text = format!(
                "{} to {}",
                humantime::format_rfc3339_seconds(since),
                humantime::format_rfc3339_seconds(until)
            );
            let result = actions.resend_range(&rule, since, until, false, now);
            match &result {
                Ok(queued) => {
                    tracing::info!(target: "audit", event = "message_resend", action = "resend", route,
                    count = queued.count, first_message_id = queued.first_message,
                    last_message_id = queued.last_message, range = %range_text, user = %user.name,
                    uid = user.uid, sudo_user = user.sudo_user.as_deref(), "stored messages queued again")
                }
                Err(e) => tracing::warn!(target: "audit", event = "message_resend", action = "resend", route,
                    count = 0u64, range = %range_text, user = %user.name, uid = user.uid,
                    sudo_user = user.sudo_user.as_deref(), error = %e, "resend failed"),
            }
            flush_audit(audit.as_ref());
            result.map(|queued| {
                let which = match (queued.first_message, queued.last_message) {
                    (Some(first), Some(last)) => format!(" (messages {first} to {last})"),
                    _ => String::new(),
                };
                format!("{verb} {} resend(s) on route {}{which}\n", thousands(queued.count), printable(route))
            })?
        }
        None => {
            let result = ops::resend(store, &rule, ids, &actor());
            flush_audit(audit.as_ref());
            let queued = result?;
            let mut text = format!("{verb} {} resend(s) on route {}:\n", queued.len(), printable(route));
            for q in &queued {
                let link = q
                    .resend_of
                    .map_or_else(|| "no earlier delivery".to_owned(), |d| format!("resend of delivery {d}"));
                let id = q.id.map_or_else(|| "-".to_owned(), |id| id.to_string());
                text += &format!("  message {}  delivery {id}  ({link})\n", q.message_id);
            }
            text
        }
    };
    out.write_all(result.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_durations() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(90), "1m 30s");
    }
}
