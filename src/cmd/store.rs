//! `hl7d store backup|verify`: a consistent copy of the message store while the server runs,
//! and SQLite's integrity check on it (or on a copy).
//!
//! The work is in [`hl7d::store::backup`]; this file turns arguments into its calls and its
//! results into one line (or one JSON object with `--json`) and an exit code: 0 done / no
//! problem, 1 failed / problems found, 78 the configuration could not be loaded.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hl7d::store::backup::{self, BackupOptions, BackupReport, Verification};
use hl7d::store::DATABASE_FILE;
use serde_json::json;

use super::{EXIT_CONFIG, EXIT_USAGE};

/// `hl7d store`: back up and check the message store (works while the server runs).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Configuration file (TOML) whose `[store] path` to use. Without it, the embedded
    /// default (`./hl7d-data`).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,

    /// One JSON object on stdout instead of a line of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The `hl7d store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the store to a new file with SQLite's online backup, while hl7d keeps receiving.
    /// The copy holds every message acknowledged before the backup started; it is created
    /// 0600, never overwrites a file, and opens as a store when put in a data directory as
    /// messages.db.
    Backup {
        /// The file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run SQLite's integrity check (and foreign key check) on the store, read-only, and say
    /// what it found. Exit 0 when sound, 1 when problems were found.
    Verify {
        /// Check this database file (e.g. a backup) instead of the store of the
        /// configuration.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// Runs `hl7d store`.
pub fn run(args: StoreArgs) -> ExitCode {
    let store_dir = match hl7d::serve::load_config(args.config.as_deref()) {
        // A database server has its own consistent, online backups; hl7d does not copy a
        // shared database. `--file` names an SQLite file, which verify still checks.
        Ok(config)
            if config.store.postgres.is_some()
                && !matches!(args.command, StoreCommand::Verify { file: Some(_) }) =>
        {
            fail(
                args.json,
                "the PostgreSQL store ([store] url) is backed up and checked with the database's own tools: \
                 pg_dump (or pg_basebackup with WAL archiving) and pg_amcheck; see docs/operations.md",
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Ok(config) => config.store.path,
        Err(e) => {
            fail(args.json, &format!("{e:#}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match args.command {
        StoreCommand::Backup { out } => run_backup(&store_dir, &out, args.json),
        StoreCommand::Verify { file } => {
            let file = file.unwrap_or_else(|| store_dir.join(DATABASE_FILE));
            run_verify(&file, args.json)
        }
    }
}

fn run_backup(store_dir: &Path, out: &Path, json: bool) -> ExitCode {
    match backup::backup(store_dir, out, &BackupOptions::default()) {
        Ok(report) => {
            if json {
                println!("{}", backup_json(&report));
            } else {
                println!("{}", backup_line(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            fail(json, &e.to_string());
            ExitCode::FAILURE
        }
    }
}

fn run_verify(file: &Path, json: bool) -> ExitCode {
    let found = match backup::verify(file) {
        Ok(found) => found,
        Err(e) => {
            fail(json, &e.to_string());
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", verify_json(&found));
    } else {
        for line in verify_lines(&found) {
            println!("{line}");
        }
    }
    if found.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// An error: `{"ok": false, "error": …}` on stdout with `--json`, else a line on stderr.
fn fail(json: bool, error: &str) {
    if json {
        println!("{}", json!({ "ok": false, "error": error }));
    } else {
        eprintln!("hl7d store: {error}");
    }
}

/// `backed up 1204 message(s) (last id 1204, 5.1 MB) from … to … in 0.31 s`.
fn backup_line(report: &BackupReport) -> String {
    format!(
        "backed up {} message(s) (last id {}, {}) from {} to {} in {:.2} s",
        report.messages,
        report.last_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
        size(report.bytes),
        report.source.display(),
        report.out.display(),
        report.elapsed.as_secs_f64()
    )
}

fn backup_json(report: &BackupReport) -> serde_json::Value {
    json!({
        "ok": true,
        "source": report.source,
        "out": report.out,
        "messages": report.messages,
        "last_id": report.last_id,
        "bytes": report.bytes,
        "pages": report.pages,
        "steps": report.steps,
        "schema_version": report.schema_version,
        "elapsed_ms": report.elapsed.as_millis() as u64,
    })
}

/// The summary line, then one indented line per problem.
fn verify_lines(found: &Verification) -> Vec<String> {
    let schema = found.schema_version.map_or_else(String::new, |v| format!(", schema version {v}"));
    if found.is_ok() {
        return vec![format!(
            "{}: ok (integrity_check ok, no foreign key problems{schema})",
            found.file.display()
        )];
    }
    let mut lines =
        vec![format!("{}: {} problem(s) found{schema}", found.file.display(), found.problems.len())];
    lines.extend(found.problems.iter().map(|problem| format!("  {problem}")));
    lines
}

fn verify_json(found: &Verification) -> serde_json::Value {
    json!({
        "ok": found.is_ok(),
        "file": found.file,
        "schema_version": found.schema_version,
        "problems": found.problems,
    })
}

/// Bytes as `812 B`, `4.2 KB`, `5.1 MB`, `2.3 GB` (powers of 1000).
fn size(bytes: u64) -> String {
    match bytes {
        0..=999 => format!("{bytes} B"),
        1_000..=999_999 => format!("{:.1} KB", bytes as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(4_200), "4.2 KB");
        assert_eq!(size(5_120_000), "5.1 MB");
        assert_eq!(size(2_300_000_000), "2.3 GB");
    }

    #[test]
    fn lines() {
        let report = BackupReport {
            source: "/data/messages.db".into(),
            out: "/backup/b.db".into(),
            messages: 3,
            last_id: Some(7),
            bytes: 40_960,
            pages: 10,
            steps: 1,
            schema_version: 1,
            elapsed: Duration::from_millis(250),
        };
        assert_eq!(
            backup_line(&report),
            "backed up 3 message(s) (last id 7, 41.0 KB) from /data/messages.db to /backup/b.db in 0.25 s"
        );
        let ok = Verification { file: "/b.db".into(), schema_version: Some(1), problems: vec![] };
        assert_eq!(
            verify_lines(&ok),
            ["/b.db: ok (integrity_check ok, no foreign key problems, schema version 1)"]
        );
        let bad = Verification {
            file: "/b.db".into(),
            schema_version: None,
            problems: vec!["cannot open it: x".into()],
        };
        assert_eq!(verify_lines(&bad), ["/b.db: 1 problem(s) found", "  cannot open it: x"]);
        assert_eq!(verify_json(&bad)["ok"], false);
    }
}
