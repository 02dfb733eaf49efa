//! Who runs an operator command (`messages purge`, `routes retry`, …), for the audit line
//! each of them writes.

/// Who runs this command, for the audit trail.
pub struct OsUser {
    /// The account name of the process's user (from `/etc/passwd`), or `uid N`.
    pub name: String,
    /// The numeric user id, when it can be read.
    pub uid: Option<u32>,
    /// `SUDO_USER`: who ran `sudo hl7d …`.
    pub sudo_user: Option<String>,
}

/// The process's user: its uid is the owner of `/proc/self` (Linux); the name is looked up
/// in `/etc/passwd`, with `$USER` where neither can be read.
pub fn os_user() -> OsUser {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    let from_passwd = |uid: u32| {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
        })
    };
    let name = match uid {
        Some(uid) => from_passwd(uid).unwrap_or_else(|| format!("uid {uid}")),
        None => std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned()),
    };
    let sudo_user = std::env::var("SUDO_USER").ok().filter(|user| !user.is_empty());
    OsUser { name, uid, sudo_user }
}
