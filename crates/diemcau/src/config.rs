//! Configuration: defaults compiled in from `config/default.toml`, a user file overlaid on them, then validation.
//! An unknown key is an error that names the key and the file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP side.
    pub http: Http,
    /// Media (UDP) side.
    pub media: MediaSection,
    /// Persistence.
    pub data: Data,
    /// Meeting defaults.
    pub meeting: MeetingSection,
    /// Signalling limits.
    pub signal: SignalSection,
    /// Admin API.
    pub admin: Admin,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Listen address.
    pub listen: SocketAddr,
    /// Base URL of the printed links; empty = derived.
    pub public_url: String,
    /// TLS certificate (PEM), empty = plain HTTP.
    pub tls_cert: String,
    /// TLS key (PEM).
    pub tls_key: String,
}

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// Bind address.
    pub bind: IpAddr,
    /// First port; 0 = ephemeral.
    pub port: u16,
    /// Advertised address; empty = bind.
    pub advertise: String,
    /// Shard threads; 0 = cores.
    pub shards: usize,
    /// Per-subscriber bandwidth estimation and simulcast layer choice.
    pub adaptive: bool,
    /// Video FEC toward lossy subscribers.
    pub video_fec: bool,
}

/// `[data]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// Data directory.
    pub dir: PathBuf,
}

/// `[meeting]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingSection {
    /// Chair's video tiles.
    pub grid_size: u32,
    /// Chair's audio slots.
    pub audio_slots: u32,
    /// Sites join muted.
    pub sites_start_muted: bool,
    /// Token lifetime, hours.
    pub token_ttl_hours: u32,
}

/// `[signal]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSection {
    /// Messages per second per connection.
    pub max_messages_per_sec: u32,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Admin bearer token; empty disables the admin API.
    pub token: String,
}

/// A configuration that cannot be used, with the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value is out of range.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_table() && v.is_table() => merge(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl Config {
    /// The embedded defaults alone.
    pub fn defaults() -> Config {
        // The defaults are tested to parse (see the tests below); a broken build fails loudly there, not here.
        Config::from_toml_str(DEFAULT_TOML, "<embedded defaults>").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Defaults overlaid with `text` (the content of `file`, used in messages).
    pub fn from_toml_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut base: toml::Value = toml::from_str(DEFAULT_TOML)
            .map_err(|e| ConfigError::Parse { file: "<embedded defaults>".into(), message: e.to_string() })?;
        let over: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.into(), message: e.to_string() })?;
        merge(&mut base, over);
        let cfg: Config = base.try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            file: file.into(),
            message: e.to_string().trim().to_string(),
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Defaults overlaid with the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::from_toml_str(&text, &file)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |message: String| Err(ConfigError::Invalid { file: file.into(), message });
        if !(1..=64).contains(&self.meeting.grid_size) {
            return bad(format!("meeting.grid_size = {} must be between 1 and 64", self.meeting.grid_size));
        }
        if self.meeting.audio_slots > 16 {
            return bad(format!("meeting.audio_slots = {} must be at most 16", self.meeting.audio_slots));
        }
        if self.meeting.token_ttl_hours == 0 {
            return bad("meeting.token_ttl_hours must be at least 1".into());
        }
        if self.signal.max_messages_per_sec == 0 {
            return bad("signal.max_messages_per_sec must be at least 1".into());
        }
        if self.http.tls_cert.is_empty() != self.http.tls_key.is_empty() {
            return bad("http.tls_cert and http.tls_key must be set together".into());
        }
        if !self.media.advertise.is_empty() && self.media.advertise.parse::<IpAddr>().is_err() {
            return bad(format!("media.advertise = {:?} is not an IP address", self.media.advertise));
        }
        if self.media.bind.is_unspecified() && self.media.advertise.is_empty() {
            return bad("media.bind is a wildcard address: set media.advertise to the address sites reach".into());
        }
        let url = &self.http.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return bad(format!("http.public_url = {:?} must start with http:// or https://", self.http.public_url));
        }
        Ok(())
    }

    /// The advertised media address, if set.
    pub fn advertise_ip(&self) -> Option<IpAddr> {
        self.media.advertise.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::defaults();
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.meeting.grid_size, 16);
        assert_eq!(c.data.dir, PathBuf::from("./data"));
    }

    #[test]
    fn overlay_changes_only_what_it_names() {
        let c = Config::from_toml_str("[media]\nport = 0\n[meeting]\ngrid_size = 9", "x.toml").unwrap();
        assert_eq!(c.media.port, 0);
        assert_eq!(c.meeting.grid_size, 9);
        assert_eq!(c.meeting.audio_slots, 3);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = Config::from_toml_str("[media]\nprot = 1\n", "site.toml").unwrap_err().to_string();
        assert!(e.contains("site.toml") && e.contains("prot"), "{e}");
        let e = Config::from_toml_str("[nope]\na = 1\n", "site.toml").unwrap_err().to_string();
        assert!(e.contains("site.toml") && e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("[meeting]\ngrid_size = 0", "grid_size"),
            ("[http]\ntls_cert = \"a.pem\"", "tls_key"),
            ("[media]\nadvertise = \"not-an-ip\"", "advertise"),
            ("[media]\nbind = \"0.0.0.0\"", "advertise"),
            ("[http]\nlisten = \"nowhere\"", "listen"),
            ("[media]\nport = 70000", "port"),
            ("[http]\npublic_url = \"ftp://x\"", "public_url"),
            ("not toml at all [", "f.toml"),
        ] {
            let e = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("f.toml"), "{text}: {e}");
        }
    }
}
