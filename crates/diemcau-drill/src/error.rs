//! Errors of the drill engine, separated by who is at fault: the caller's configuration, the bridge (it refused or
//! closed), the network or the machine (I/O, WebSocket), or an SDP exchange that could not be applied.

use diemcau_netem::NetemError;

/// Why a swarm or a synthetic site could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The caller's configuration is unusable (no tokens, a mix that does not add up to 100%…).
    #[error("invalid drill configuration: {0}")]
    Config(String),
    /// A link profile or timeline is invalid, or names an unknown preset.
    #[error(transparent)]
    Netem(#[from] NetemError),
    /// A socket or thread could not be set up.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket failed or the bridge spoke out of protocol.
    #[error("signalling: {0}")]
    Signal(String),
    /// The bridge closed the WebSocket (code from `diemcau_proto::close`).
    #[error("the bridge closed the connection ({code}): {reason}")]
    Closed {
        /// The close code (4001 bad token, 4005 replaced, 4006 shutdown, …).
        code: u16,
        /// The reason the bridge gave.
        reason: String,
    },
    /// The bridge answered a request with an `error` message.
    #[error("the bridge refused: {code}: {message}")]
    Refused {
        /// `bad_sdp`, `forbidden`, …
        code: String,
        /// The bridge's explanation.
        message: String,
    },
    /// An SDP offer or answer could not be made or applied.
    #[error("SDP: {0}")]
    Sdp(String),
    /// The swarm stopped before this was done.
    #[error("stopped")]
    Stopped,
}
