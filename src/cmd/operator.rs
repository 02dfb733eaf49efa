//! Who runs an operator command (`messages purge`, `routes retry|skip|backfill`, `messages
//! resend`), and the audit trail each of them writes one line to.

use std::time::Duration;

use hl7d::audit::AuditTrail;
use hl7d::config::Config;

/// Longest wait at exit for the audit syslog collector to take the command's line.
pub const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Who runs this command, for the audit trail.
pub struct OsUser {
    /// The account name of the process's effective user (from `/etc/passwd`), or `uid N`.
    pub name: String,
    /// The effective user id.
    pub uid: Option<u32>,
    /// `SUDO_USER`: who ran `sudo hl7d …`.
    pub sudo_user: Option<String>,
}

/// The process's effective user (`geteuid`, the user whose rights the command acts with);
/// the name is looked up in `/etc/passwd`, `uid N` when it is not there.
pub fn os_user() -> OsUser {
    let uid = rustix::process::geteuid().as_raw();
    let from_passwd = |uid: u32| {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
        })
    };
    let name = from_passwd(uid).unwrap_or_else(|| format!("uid {uid}"));
    let sudo_user = std::env::var("SUDO_USER").ok().filter(|user| !user.is_empty());
    OsUser { name, uid: Some(uid), sudo_user }
}

/// Opens the audit trail `config` names (if any) and sends the log, with its `audit`
/// events, to stderr and the trail: the same two places `serve` writes them. An action
/// that cannot be recorded does not run, so callers open it before they change anything.
pub fn open_audit(config: &Config) -> anyhow::Result<Option<AuditTrail>> {
    let audit = config.audit.as_ref().map(AuditTrail::open).transpose()?;
    hl7d::logging::init_with_audit(config.log, audit.as_ref());
    Ok(audit)
}

/// Waits (at most [`AUDIT_FLUSH_LIMIT`]) for the syslog collector to take what is queued.
pub fn flush_audit(audit: Option<&AuditTrail>) {
    if let Some(audit) = audit {
        audit.flush(AUDIT_FLUSH_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_the_effective_one() {
        let user = os_user();
        assert_eq!(user.uid, Some(rustix::process::geteuid().as_raw()));
        assert!(!user.name.is_empty());
    }
}
