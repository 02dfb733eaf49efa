//! The console's users and API tokens: one TOML file (`[admin] users`, by default
//! `users.toml` in the data directory), written by `hl7d users` and `hl7d tokens`, read by
//! the server.
//!
//! - Passwords are stored as Argon2id PHC strings with the OWASP parameters
//!   ([`PASSWORD_PARAMS`]: 19 MiB of memory, 2 passes, 1 lane) and a 16-byte random salt.
//! - A token is 32 random bytes (`hl7d_` + 64 hex digits), shown once; the file keeps its
//!   SHA-256. A slow hash protects guessable secrets; a token has 256 bits of entropy, so
//!   its SHA-256 cannot be reversed by search, and the fast hash lets every request be
//!   checked without an Argon2 run.
//!
//! The file is private (0600, its directory 0700) and replaced whole: written beside it,
//! synced, renamed over it ([`update`], under an exclusive lock so that two commands cannot
//! lose each other's change). The server re-reads it when it changes (see
//! [`super::AuthState`]), so a revoked token or removed user stops working at once.
//!
//! Owns the file's format and the secrets' hashing. It must not do HTTP or logging: the
//! CLI and the auth layer write the audit lines.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::console::Role;

/// Argon2id parameters (OWASP Password Storage Cheat Sheet, first option): m = 19 MiB,
/// t = 2, p = 1.
pub const PASSWORD_PARAMS: (u32, u32, u32) = (19 * 1024, 2, 1);
/// Shortest password `hl7d users add|passwd` accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in bytes (Argon2 takes any length; this bounds the work a
/// login request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// What every token starts with (so that secret scanners can recognise one).
pub const TOKEN_PREFIX: &str = "hl7d_";

/// The users file could not be read, written or understood, or a change was refused.
#[derive(Debug, Error)]
pub enum AccountsError {
    /// Reading, writing, locking or renaming failed.
    #[error("users file {}: {source}", path.display())]
    Io {
        /// The file (or its lock or temporary file).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not what `hl7d users` writes.
    #[error("users file {}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A request the file's contents refuse (a name taken, a user not there …): the
    /// operator's mistake, not a failure.
    #[error("{0}")]
    Refused(String),
}

/// One console user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The login name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// When the user was added (RFC 3339).
    pub created: String,
}

/// One API token (its secret is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The name given at creation; audit lines and `Principal::user` use it.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
    /// When it was created (RFC 3339).
    pub created: String,
}

/// The users and tokens of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// Users in the order they were added.
    pub users: Vec<User>,
    /// Tokens in the order they were created.
    pub tokens: Vec<Token>,
}

impl Accounts {
    /// Reads `path`; a missing file is an empty set (hl7d starts without users).
    pub fn load(path: &Path) -> Result<Accounts, AccountsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Accounts::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Accounts::default()),
            Err(source) => Err(AccountsError::Io { path: path.to_owned(), source }),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Accounts, AccountsError> {
        let format = |reason: String| AccountsError::Format { path: path.to_owned(), reason };
        let file: FileFormat = toml::from_str(text).map_err(|e| format(e.message().to_owned()))?;
        let role = |name: &str, role: &str| {
            Role::from_name(role).ok_or_else(|| format(format!("{name:?}: unknown role {role:?}")))
        };
        let mut accounts = Accounts::default();
        for user in file.user {
            check_name(&user.name).map_err(format)?;
            if !user.password.starts_with("$argon2id$") {
                return Err(format(format!("user {:?}: the password is not an Argon2id hash", user.name)));
            }
            accounts.users.push(User {
                role: role(&user.name, &user.role)?,
                name: user.name,
                password_hash: user.password,
                created: user.created,
            });
        }
        for token in file.token {
            check_name(&token.name).map_err(format)?;
            let digest = parse_hex32(&token.sha256)
                .ok_or_else(|| format(format!("token {:?}: sha256 is not 64 hex digits", token.name)))?;
            accounts.tokens.push(Token {
                role: role(&token.name, &token.role)?,
                name: token.name,
                digest,
                created: token.created,
            });
        }
        Ok(accounts)
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let file = FileFormat {
            user: self
                .users
                .iter()
                .map(|u| UserEntry {
                    name: u.name.clone(),
                    role: u.role.as_str().to_owned(),
                    password: u.password_hash.clone(),
                    created: u.created.clone(),
                })
                .collect(),
            token: self
                .tokens
                .iter()
                .map(|t| TokenEntry {
                    name: t.name.clone(),
                    role: t.role.as_str().to_owned(),
                    sha256: hex(&t.digest),
                    created: t.created.clone(),
                })
                .collect(),
        };
        // Strings and arrays of tables only: serialising cannot fail.
        let body = toml::to_string(&file).expect("the users file serialises");
        format!("# hl7d console users and API tokens: managed by `hl7d users` and `hl7d tokens`.\n{body}")
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|user| user.name == name)
    }

    /// The token whose secret is `secret`. Every stored digest is compared in constant
    /// time, so the answer's timing does not say how close a guess came.
    pub fn token(&self, secret: &str) -> Option<&Token> {
        let digest = token_digest(secret);
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(&token.digest, &digest) {
                found = Some(token);
            }
        }
        found
    }

    /// Adds a user; refused when the name is taken or not a valid name.
    pub fn add_user(&mut self, name: &str, role: Role, password: &str) -> Result<(), AccountsError> {
        check_name(name).map_err(AccountsError::Refused)?;
        if self.user(name).is_some() {
            return Err(AccountsError::Refused(format!(
                "user {name:?} exists already (hl7d users passwd {name} changes the password)"
            )));
        }
        check_password(password).map_err(AccountsError::Refused)?;
        let created = now_rfc3339();
        self.users.push(User {
            name: name.to_owned(),
            role,
            password_hash: hash_password(password),
            created,
        });
        Ok(())
    }

    /// Sets a user's password; refused when there is no such user.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), AccountsError> {
        check_password(password).map_err(AccountsError::Refused)?;
        let user = self.users.iter_mut().find(|user| user.name == name).ok_or_else(|| no_user(name))?;
        user.password_hash = hash_password(password);
        Ok(())
    }

    /// Removes a user; refused when there is no such user.
    pub fn remove_user(&mut self, name: &str) -> Result<User, AccountsError> {
        let index = self.users.iter().position(|user| user.name == name).ok_or_else(|| no_user(name))?;
        Ok(self.users.remove(index))
    }

    /// Creates a token and returns its secret (the only time it exists outside the caller).
    pub fn create_token(&mut self, name: &str, role: Role) -> Result<String, AccountsError> {
        check_name(name).map_err(AccountsError::Refused)?;
        if self.tokens.iter().any(|token| token.name == name) {
            return Err(AccountsError::Refused(format!(
                "a token called {name:?} exists already (hl7d tokens revoke {name} first)"
            )));
        }
        let secret = format!("{TOKEN_PREFIX}{}", hex(&random_bytes::<32>()));
        let digest = token_digest(&secret);
        self.tokens.push(Token { name: name.to_owned(), role, digest, created: now_rfc3339() });
        Ok(secret)
    }

    /// Revokes (removes) a token; refused when there is no such token.
    pub fn revoke_token(&mut self, name: &str) -> Result<Token, AccountsError> {
        let index =
            self.tokens.iter().position(|token| token.name == name).ok_or_else(|| {
                AccountsError::Refused(format!("no token called {name:?} (hl7d tokens list)"))
            })?;
        Ok(self.tokens.remove(index))
    }
}

fn no_user(name: &str) -> AccountsError {
    AccountsError::Refused(format!("no user called {name:?} (hl7d users list)"))
}

/// Reads the file under an exclusive lock, lets `change` modify it, and writes it back
/// whole (0600; beside it, synced, renamed over it, the directory synced) when `change`
/// succeeds. Creates the file's directory (0700) when it is missing.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut Accounts) -> Result<T, AccountsError>,
) -> Result<T, AccountsError> {
    let io = |path: &Path, source| AccountsError::Io { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    crate::private_files::secure_dir(&dir)
        .map_err(|e| AccountsError::Io { path: dir.clone(), source: std::io::Error::other(e.to_string()) })?;
    let lock_path = with_suffix(path, ".lock");
    let lock = crate::private_files::open_for_write(&lock_path, crate::private_files::FILE_MODE, true)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => std::fs::OpenOptions::new().write(true).open(&lock_path),
            _ => Err(e),
        })
        .map_err(|e| io(&lock_path, e))?;
    #[cfg(unix)]
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| AccountsError::Io { path: lock_path.clone(), source: e.into() })?;
    let mut accounts = Accounts::load(path)?;
    let result = change(&mut accounts)?;
    let aside = with_suffix(path, ".tmp");
    let mut file = crate::private_files::open_for_write(&aside, crate::private_files::FILE_MODE, true)
        .map_err(|e| io(&aside, e))?;
    file.write_all(accounts.to_toml().as_bytes()).map_err(|e| io(&aside, e))?;
    file.sync_all().map_err(|e| io(&aside, e))?;
    drop(file);
    std::fs::rename(&aside, path).map_err(|e| io(path, e))?;
    if let Ok(dir) = std::fs::File::open(&dir) {
        // The rename is durable once the directory is; a failure here leaves the new file
        // in place all the same.
        let _ = dir.sync_all();
    }
    drop(lock);
    Ok(result)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A user or token name: 1–64 characters of `A-Z a-z 0-9 _ . @ -`.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid name: use 1 to 64 of A-Z a-z 0-9 _ . @ -"))
    }
}

/// A new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("the password is too short: use at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("the password is too long: at most {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    let (m, t, p) = PASSWORD_PARAMS;
    // Constants within Argon2's bounds (the test `hashes_are_argon2id_with_owasp_parameters`).
    let params = Params::new(m, t, p, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with Argon2id ([`PASSWORD_PARAMS`], a fresh 16-byte salt) as a PHC
/// string.
pub fn hash_password(password: &str) -> String {
    let salt = random_bytes::<16>();
    argon2()
        .hash_password_with_salt(password.as_bytes(), &salt)
        // The salt length and the parameters are fixed and valid.
        .expect("Argon2id hashes any password")
        .to_string()
}

/// Whether `password` matches `hash` (a PHC string; its own parameters are used). A hash
/// that does not parse matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    argon2().verify_password(password.as_bytes(), hash).is_ok()
}

/// A hash of a password nobody knows, verified for an unknown user name, so that its
/// answer takes as long as a wrong password's.
pub fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&hex(&random_bytes::<32>())))
}

/// SHA-256 of a token's secret.
pub fn token_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// `N` bytes from the TLS provider's random source (aws-lc-rs).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        // Without a working random source no secret can be made; nothing to fall back to.
        .expect("the system random source works");
    bytes
}

/// Equality whose time depends on the length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    user: Vec<UserEntry>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    role: String,
    password: String,
    created: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: String,
    sha256: String,
    created: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_USERS_FILE as USERS_FILE;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters() {
        let hash = hash_password("correct horse battery");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery "));
        assert_ne!(hash, hash_password("correct horse battery"), "a fresh salt each time");
        assert!(!verify_password("not a hash", "anything"));
        assert!(!verify_password(decoy_hash(), ""));
    }

    #[test]
    fn the_file_round_trips_and_tokens_are_found_by_their_secret_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data").join(USERS_FILE);
        assert_eq!(Accounts::load(&path).unwrap(), Accounts::default(), "no file: no users");
        update(&path, |a| a.add_user("ana", Role::Operator, "a long password")).unwrap();
        let secret = update(&path, |a| a.create_token("ci", Role::Viewer)).unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() == TOKEN_PREFIX.len() + 64, "{secret}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret[TOKEN_PREFIX.len()..]), "the secret is not stored: {text}");
        assert!(!text.contains("a long password"), "{text}");
        let accounts = Accounts::load(&path).unwrap();
        assert_eq!(accounts.user("ana").unwrap().role, Role::Operator);
        assert_eq!(accounts.token(&secret).unwrap().name, "ci");
        assert!(accounts.token(&format!("{secret}0")).is_none());
        assert!(accounts.token("").is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
            assert_eq!(dir_mode, 0o700);
        }
    }

    #[test]
    fn refusals_name_the_problem_and_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(USERS_FILE);
        update(&path, |a| a.add_user("ana", Role::Viewer, "a long password")).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let refused = |result: Result<(), AccountsError>| match result {
            Err(AccountsError::Refused(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(refused(update(&path, |a| a.add_user("ana", Role::Viewer, "another long one")))
            .contains("exists"));
        assert!(
            refused(update(&path, |a| a.add_user("bo b", Role::Viewer, "a long password"))).contains("valid")
        );
        assert!(refused(update(&path, |a| a.add_user("bob", Role::Viewer, "short"))).contains("too short"));
        assert!(refused(update(&path, |a| a.set_password("bob", "a long password"))).contains("no user"));
        assert!(refused(update(&path, |a| a.remove_user("bob").map(drop))).contains("no user"));
        assert!(refused(update(&path, |a| a.revoke_token("ci").map(drop))).contains("no token"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn a_damaged_file_is_refused_not_emptied() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(USERS_FILE);
        std::fs::write(
            &path,
            "[[user]]\nname = \"ana\"\nrole = \"root\"\npassword = \"$argon2id$x\"\ncreated = \"\"\n",
        )
        .unwrap();
        let error = Accounts::load(&path).unwrap_err();
        assert!(error.to_string().contains("unknown role \"root\""), "{error}");
        assert!(update(&path, |a| a.add_user("bob", Role::Viewer, "a long password")).is_err());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(parse_hex32(&hex(&[7u8; 32])), Some([7u8; 32]));
    }
}
