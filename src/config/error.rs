//! Why a configuration was refused: [`ConfigError`], and the [`Problem`]s it lists, each in
//! its [`Section`] of the file.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    ///
    /// The I/O error is part of the message rather than a `source`, so that printing the
    /// error with `{}` (as `check-config` does) says why, and `{:#}` does not say it twice.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Not valid TOML, an unknown key, a missing key or a value of the wrong type. The
    /// message is toml's own, with line, column and the offending key, prefixed by the
    /// section (e.g. `listener "lab": `) where it could be located.
    #[error("{}{error}", section_prefix(section.as_ref()))]
    Toml {
        /// The table the error is in, when it could be located.
        section: Option<Section>,
        /// toml's error (boxed: it is large, and rare).
        error: Box<toml::de::Error>,
    },
    /// Well-formed TOML with values that are not allowed; every problem found is listed,
    /// one per line.
    #[error("{}", display_problems(problems))]
    Invalid {
        /// At least one problem, in file order per section.
        problems: Vec<Problem>,
    },
}

/// One invalid value: where it is, which key, what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The table it is in.
    pub section: Section,
    /// The key, with a path below the section where needed (`tls.client_thumbprints[1]`,
    /// `allow_ips[0]`, `framing.start`).
    pub key: String,
    /// What is wrong, lower case, no trailing period.
    pub message: String,
    /// 1-based line of the value in the TOML text, when known.
    pub line: Option<usize>,
}

/// A table of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// Top level (outside any table).
    Root,
    /// `[store]`
    Store,
    /// `[admin]`
    Admin,
    /// `[log]`
    Log,
    /// `[audit]`
    Audit,
    /// `[node]`
    Node,
    /// `[delivery]`
    Delivery,
    /// One `[[listener]]` table (and its `[listener.tls]`, `[listener.framing]`).
    Listener {
        /// 0-based position among the `[[listener]]` tables.
        index: usize,
        /// Its `name`, when it has a non-empty one.
        name: Option<String>,
    },
    /// One `[[route]]` table (and its `[route.tls]`, `[route.http]`, `[route.file]`).
    Route {
        /// 0-based position among the `[[route]]` tables.
        index: usize,
        /// Its `name`, when it has a non-empty one.
        name: Option<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&section_prefix(Some(&self.section)))?;
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Root => f.write_str("top level"),
            Section::Store => f.write_str("store"),
            Section::Admin => f.write_str("admin"),
            Section::Log => f.write_str("log"),
            Section::Audit => f.write_str("audit"),
            Section::Node => f.write_str("node"),
            Section::Delivery => f.write_str("delivery"),
            Section::Listener { name: Some(name), .. } => write!(f, "listener {name:?}"),
            Section::Listener { index, name: None } => write!(f, "listener #{}", index + 1),
            Section::Route { name: Some(name), .. } => write!(f, "route {name:?}"),
            Section::Route { index, name: None } => write!(f, "route #{}", index + 1),
        }
    }
}

/// `"listener \"lab\": "`, or nothing for the top level.
fn section_prefix(section: Option<&Section>) -> String {
    match section {
        None | Some(Section::Root) => String::new(),
        Some(section) => format!("{section}: "),
    }
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// The section of the `[[listener]]` table at `index`, by its name when it has one.
pub(super) fn listener_section(index: usize, name: &str) -> Section {
    Section::Listener { index, name: (!name.is_empty()).then(|| name.to_owned()) }
}

/// The section of the `[[route]]` table at `index`, by its name when it has one.
pub(super) fn route_section(index: usize, name: &str) -> Section {
    Section::Route { index, name: (!name.is_empty()).then(|| name.to_owned()) }
}
