//! The one error type of the crate.

/// What can go wrong when configuring or running the emulator.
///
/// `Invalid` and `Parse` are the caller's fault (a bad value or a bad file), `UnknownPreset` names a profile that does
/// not exist, `Io` comes from the sockets of the [`crate::relay`] shell only: the sans-IO core never does IO.
#[derive(Debug, thiserror::Error)]
pub enum NetemError {
    /// A value is out of range or inconsistent; `what` is the path of the field (e.g. `preset "vsat": up.loss`).
    #[error("{what}: {reason}")]
    Invalid {
        /// Path of the offending field.
        what: String,
        /// Why it is rejected, with the accepted range.
        reason: String,
    },
    /// The TOML text could not be read: syntax, a wrong type, a missing or an unknown key.
    #[error("cannot parse {what}: {source}")]
    Parse {
        /// What was being parsed (`link profiles`, `timeline`…).
        what: &'static str,
        /// The parser's message, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// No preset of that name in `config/links.toml`.
    #[error("unknown link preset `{name}`; known presets: {known}")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A socket of the UDP relay failed to bind or connect.
    #[error("relay socket: {0}")]
    Io(#[from] std::io::Error),
}

impl NetemError {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { what: what.into(), reason: reason.into() }
    }

    /// Prefixes the field path of an `Invalid` error with `prefix` (e.g. `up` + `loss` → `up.loss`).
    pub(crate) fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { what, reason } => {
                let what = if prefix.ends_with(':') { format!("{prefix} {what}") } else { format!("{prefix}.{what}") };
                Self::Invalid { what, reason }
            }
            other => other,
        }
    }
}
