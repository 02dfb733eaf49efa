//! `hl7d cert`: certificate tools for operators. Argument parsing and output formatting
//! only; reading, inspecting and generating certificates is in [`hl7d::tls`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use hl7d::tls::cert::{format_time, CertSummary, ValidityStatus};
use hl7d::tls::{load, pki};
use serde_json::{json, Value};

use super::{rfc3339, unix_now};

/// `hl7d cert` arguments.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Print one JSON object instead of text (fields in docs/operations.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CertCommand,
}

/// The `hl7d cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Print a certificate's thumbprints: `sha256:<hex>` on the first line, then the SHA-1
    /// form as the Windows certificate dialog shows it (`A9 4A 8F …`). Either line can go
    /// into `client_thumbprints`. For a file with several certificates, each is preceded
    /// by a `# certificate N of M: <subject>` line.
    Thumbprint {
        /// PEM or DER certificate file.
        file: PathBuf,
    },
    /// Show subject, issuer, serial, validity, SANs, key type, thumbprints and days until
    /// expiry of every certificate in the file.
    Inspect {
        /// PEM or DER certificate file (a chain is shown certificate by certificate).
        file: PathBuf,
    },
    /// Write a CA, a server certificate and a client certificate with their keys, for
    /// trials and tests. NOT FOR PRODUCTION.
    DevPki {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Extra name for the server certificate (DNS name or IP address); repeatable.
        /// localhost, 127.0.0.1 and ::1 are always included.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `hl7d cert`, printing to stdout; errors go to stderr with exit code 1.
pub fn run(args: CertArgs) -> ExitCode {
    let stdout = &mut std::io::stdout().lock();
    let json = args.json;
    let result = match args.command {
        CertCommand::Thumbprint { file } if json => {
            thumbprint_json(&file).and_then(|v| print_json(&v, stdout))
        }
        CertCommand::Thumbprint { file } => thumbprint(&file, stdout),
        CertCommand::Inspect { file } if json => {
            inspect_json(&file, unix_now()).and_then(|v| print_json(&v, stdout))
        }
        CertCommand::Inspect { file } => inspect(&file, unix_now(), stdout),
        CertCommand::DevPki { out, sans, force } if json => {
            dev_pki_json(&out, &sans, force).and_then(|v| print_json(&v, stdout))
        }
        CertCommand::DevPki { out, sans, force } => dev_pki(&out, &sans, force, stdout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hl7d cert: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `hl7d cert thumbprint FILE`.
pub fn thumbprint(file: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let chain = load::certificates(file)?;
    let total = chain.len();
    for (i, der) in chain.iter().enumerate() {
        if total > 1 {
            let subject = CertSummary::parse(der).map(|c| c.display_name()).unwrap_or_else(|e| e.to_string());
            writeln!(out, "# certificate {} of {total}: {subject}", i + 1)?;
        }
        let digests = hl7d::tls::cert::Digests::of(der);
        writeln!(out, "{}", digests.sha256())?;
        writeln!(out, "{}", digests.sha1_windows())?;
    }
    Ok(())
}

/// `hl7d cert inspect FILE`, with `now` in seconds since the Unix epoch.
pub fn inspect(file: &Path, now: i64, out: &mut dyn Write) -> anyhow::Result<()> {
    let chain = load::certificates(file)?;
    let total = chain.len();
    for (i, der) in chain.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "certificate {} of {total}", i + 1)?;
        let cert =
            CertSummary::parse(der).with_context(|| format!("{}: certificate {}", file.display(), i + 1))?;
        let days = cert.days_until_expiry(now);
        let status = match cert.validity_at(now) {
            ValidityStatus::NotYetValid => "NOT VALID YET".to_owned(),
            ValidityStatus::Expired => format!("EXPIRED {} days ago", -days),
            ValidityStatus::Valid => format!("expires in {days} days"),
        };
        let sans = if cert.sans.is_empty() { "(none)".to_owned() } else { cert.sans.join(", ") };
        writeln!(out, "  subject:      {}", cert.subject)?;
        writeln!(out, "  issuer:       {}", cert.issuer)?;
        writeln!(out, "  serial:       {}", cert.serial)?;
        writeln!(out, "  not before:   {}", format_time(cert.not_before))?;
        writeln!(out, "  not after:    {} ({status})", format_time(cert.not_after))?;
        writeln!(out, "  SANs:         {sans}")?;
        writeln!(out, "  key:          {}", cert.key)?;
        writeln!(out, "  signature:    {}", cert.signature_algorithm)?;
        writeln!(out, "  CA:           {}", if cert.is_ca { "yes" } else { "no" })?;
        writeln!(out, "  sha256:       {}", cert.digests.sha256())?;
        writeln!(out, "  sha1:         {}", cert.digests.sha1_windows())?;
    }
    Ok(())
}

/// `hl7d cert dev-pki --out DIR [--san NAME…] [--force]`.
pub fn dev_pki(dir: &Path, sans: &[String], force: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let pki = pki::dev_pki(dir, sans, force)?;
    writeln!(out, "development PKI written - NOT FOR PRODUCTION (keys in plain files, no revocation)")?;
    for file in &pki.files {
        writeln!(out, "  {}", file.display())?;
    }
    writeln!(out, "server certificate names: {}", pki.server_names.join(", "))?;
    writeln!(out, "server thumbprint: {}", pki.server.sha256())?;
    writeln!(out, "client thumbprint: {}  ({})", pki.client.sha256(), pki.client.sha1_windows())?;
    writeln!(out)?;
    writeln!(out, "[listener.tls]")?;
    writeln!(out, "cert = {:?}", dir.join("server.pem").display().to_string())?;
    writeln!(out, "key = {:?}", dir.join("server.key").display().to_string())?;
    writeln!(out, "client_auth = \"required\"")?;
    writeln!(out, "client_thumbprints = [\"{}\"]", pki.client.sha256())?;
    Ok(())
}

/// `hl7d cert thumbprint --json FILE`: `{"file", "certificates": [{"subject", "sha256",
/// "sha1", "sha1_windows"}]}`.
pub fn thumbprint_json(file: &Path) -> anyhow::Result<Value> {
    let chain = load::certificates(file)?;
    let certificates: Vec<Value> = chain
        .iter()
        .map(|der| {
            let digests = hl7d::tls::cert::Digests::of(der);
            // A DER blob that is not X.509 still has thumbprints; its subject is then null.
            let subject = CertSummary::parse(der).ok().map(|cert| cert.subject);
            json!({
                "subject": subject,
                "sha256": digests.sha256().to_string(),
                "sha1": digests.sha1().to_string(),
                "sha1_windows": digests.sha1_windows(),
            })
        })
        .collect();
    Ok(json!({ "file": file.display().to_string(), "certificates": certificates }))
}

/// `hl7d cert inspect --json FILE`, with `now` in seconds since the Unix epoch: the fields
/// of the text form, times in RFC 3339 (UTC), one object per certificate of the file.
pub fn inspect_json(file: &Path, now: i64) -> anyhow::Result<Value> {
    let chain = load::certificates(file)?;
    let mut certificates = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let cert =
            CertSummary::parse(der).with_context(|| format!("{}: certificate {}", file.display(), i + 1))?;
        let status = match cert.validity_at(now) {
            ValidityStatus::NotYetValid => "not_yet_valid",
            ValidityStatus::Valid => "valid",
            ValidityStatus::Expired => "expired",
        };
        certificates.push(json!({
            "subject": cert.subject,
            "issuer": cert.issuer,
            "serial": cert.serial,
            "not_before": rfc3339(cert.not_before),
            "not_after": rfc3339(cert.not_after),
            "status": status,
            "days_until_expiry": cert.days_until_expiry(now),
            "sans": cert.sans,
            "key": cert.key,
            "signature_algorithm": cert.signature_algorithm,
            "is_ca": cert.is_ca,
            "sha256": cert.digests.sha256().to_string(),
            "sha1": cert.digests.sha1().to_string(),
            "sha1_windows": cert.digests.sha1_windows(),
        }));
    }
    Ok(json!({ "file": file.display().to_string(), "certificates": certificates }))
}

/// `hl7d cert dev-pki --json --out DIR …`: `{"directory", "files", "server_names",
/// "server_sha256", "client_sha256", "client_sha1"}`.
pub fn dev_pki_json(dir: &Path, sans: &[String], force: bool) -> anyhow::Result<Value> {
    let pki = pki::dev_pki(dir, sans, force)?;
    let files: Vec<String> = pki.files.iter().map(|file| file.display().to_string()).collect();
    Ok(json!({
        "directory": dir.display().to_string(),
        "files": files,
        "server_names": pki.server_names,
        "server_sha256": pki.server.sha256().to_string(),
        "client_sha256": pki.client.sha256().to_string(),
        "client_sha1": pki.client.sha1().to_string(),
    }))
}

fn print_json(value: &Value, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "{value}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_and_inspect_of_a_dev_pki() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        let mut out = Vec::new();
        dev_pki(&dir, &["lab.example".to_owned()], false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("NOT FOR PRODUCTION"), "{text}");
        assert!(text.contains("client_thumbprints = [\"sha256:"), "{text}");

        let mut out = Vec::new();
        thumbprint(&dir.join("client.pem"), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("sha256:") && lines[0].len() == 7 + 64, "{text}");
        assert_eq!(lines[1].len(), 20 * 3 - 1, "{text}");
        for line in &lines {
            line.parse::<hl7d::tls::thumbprint::Thumbprint>().unwrap();
        }

        // A chain: server certificate followed by the CA.
        let chain = dir.join("chain.pem");
        let pem = std::fs::read_to_string(dir.join("server.pem")).unwrap()
            + &std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        std::fs::write(&chain, pem).unwrap();
        let mut out = Vec::new();
        inspect(&chain, unix_now(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("certificate 1 of 2") && text.contains("certificate 2 of 2"), "{text}");
        assert!(text.contains("DNS:lab.example"), "{text}");
        assert!(text.contains("key:          EC P-256"), "{text}");
        assert!(text.contains("CA:           yes"), "{text}");
        assert!(text.contains("(expires in 36"), "{text}");
        let mut out = Vec::new();
        thumbprint(&chain, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("# certificate 1 of 2: CN=hl7d development server"));

        let err = inspect(&dir.join("missing.pem"), 0, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().starts_with("cannot read"), "{err}");

        // --json: the same facts as fields.
        let now = unix_now();
        let value = inspect_json(&chain, now).unwrap();
        let certs = value["certificates"].as_array().unwrap();
        assert_eq!(certs.len(), 2, "{value}");
        let server = CertSummary::parse(&load::certificates(&dir.join("server.pem")).unwrap()[0]).unwrap();
        assert_eq!(certs[0]["subject"], server.subject.as_str());
        assert_eq!(certs[0]["sha256"], server.digests.sha256().to_string().as_str());
        assert_eq!(certs[0]["sha1_windows"], server.digests.sha1_windows().as_str());
        assert_eq!(certs[0]["days_until_expiry"], server.days_until_expiry(now));
        assert_eq!(certs[0]["not_after"], rfc3339(server.not_after).as_str());
        assert_eq!(certs[0]["status"], "valid");
        assert_eq!(certs[0]["is_ca"], false);
        assert_eq!(certs[1]["is_ca"], true);
        assert!(certs[0]["sans"].as_array().unwrap().iter().any(|san| san == "DNS:lab.example"), "{value}");
        assert_eq!(
            inspect_json(&chain, server.not_after + 1).unwrap()["certificates"][0]["status"],
            "expired"
        );
        let value = thumbprint_json(&chain).unwrap();
        assert_eq!(value["certificates"][0]["sha256"], server.digests.sha256().to_string().as_str());
        assert_eq!(value["certificates"][0]["sha1"], server.digests.sha1().to_string().as_str());
    }
}
