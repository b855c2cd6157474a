//! The signalling messages spoken on `/ws`, shared by the bridge, the browser pages (by their JSON shape) and the
//! synthetic sites, so that all three speak exactly the same protocol.
//!
//! Every message is one JSON object tagged by `"type"`. The protocol version is [`PROTOCOL_VERSION`]; the server sends
//! it in [`ServerMsg::Welcome`] and a client that speaks another version is told so and closed. The long story with
//! examples is `docs/signalling.md`.
//!
//! Media layout: the client offers its transceivers. Those it sends on (`sendrecv`/`sendonly`) carry its camera and
//! microphone to the bridge; those the bridge may send on (`sendrecv`/`recvonly`) are *slots* that the bridge fills
//! with other sites' media. A commune site offers one audio and one video `sendrecv` transceiver and receives the
//! chair on them; the chair offers its own two and then up to `grid_size` `recvonly` video slots and `audio_slots`
//! `recvonly` audio slots. [`ServerMsg::Slots`] says which site fills which slot (by `mid`).

use serde::{Deserialize, Serialize};

pub mod control;

/// Version of the signalling protocol described here.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest text message the server accepts on `/ws`, in bytes. Chromium's SDP costs ~4 KB per video m-line (every
/// codec it can send is listed), so a chair offering the maximum 64 tiles sends ~260 KB.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// WebSocket close codes used by the bridge (4000–4999 are free for applications).
pub mod close {
    /// The session is over as planned (e.g. a link check sent its result).
    pub const NORMAL: u16 = 1000;
    /// The token is missing, malformed, badly signed or expired.
    pub const BAD_TOKEN: u16 = 4001;
    /// The message could not be parsed, is binary, or the handshake went wrong (no or a wrong first message).
    pub const BAD_MESSAGE: u16 = 4002;
    /// The message is larger than [`super::MAX_MESSAGE_BYTES`].
    pub const TOO_BIG: u16 = 4003;
    /// The client sent more messages than the per-connection rate limit allows.
    pub const RATE_LIMITED: u16 = 4004;
    /// The same site connected again; this older connection is replaced.
    pub const REPLACED: u16 = 4005;
    /// The bridge is shutting down.
    pub const SHUTDOWN: u16 = 4006;
    /// The client speaks another protocol version.
    pub const BAD_VERSION: u16 = 4007;
    /// The chair locked the meeting and this site had not joined it before.
    pub const LOCKED: u16 = 4008;
}

/// Role carried by a join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The chairing site (command centre): broadcasts to all, sees the grid, mutes.
    Chair,
    /// An invited site (commune, district, department).
    Site,
    /// A technician: watches statistics, sends no media.
    Technician,
}

impl Role {
    /// The name used in tokens, URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Chair => "chair",
            Role::Site => "site",
            Role::Technician => "technician",
        }
    }

    /// Parses the name used in tokens, URLs and JSON.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "chair" => Some(Role::Chair),
            "site" => Some(Role::Site),
            "technician" | "tech" => Some(Role::Technician),
            _ => None,
        }
    }
}

/// Kind of a site in the administrative hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// A province (or the national office) — usually the chair.
    Province,
    /// A provincial department (sở, ban, ngành).
    Department,
    /// A district / town.
    District,
    /// A commune / ward.
    Commune,
}

impl SiteKind {
    /// The name used in the database, CSV files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SiteKind::Province => "province",
            SiteKind::Department => "department",
            SiteKind::District => "district",
            SiteKind::Commune => "commune",
        }
    }

    /// Parses the name used in the database, CSV files and JSON.
    pub fn parse(s: &str) -> Option<SiteKind> {
        match s {
            "province" => Some(SiteKind::Province),
            "department" => Some(SiteKind::Department),
            "district" => Some(SiteKind::District),
            "commune" => Some(SiteKind::Commune),
            _ => None,
        }
    }
}

/// Media kind of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Opus audio.
    Audio,
    /// VP8 video.
    Video,
}

/// Connection state of a site as the bridge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Invited, not connected.
    Offline,
    /// Signalling open, media (ICE/DTLS) not yet up.
    Connecting,
    /// Media flowing.
    Connected,
}

/// One site as listed to the chair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// Site id in the directory.
    pub site_id: i64,
    /// Vietnamese name.
    pub name: String,
    /// Kind in the hierarchy.
    pub kind: SiteKind,
    /// Parent site id, if any.
    pub parent_id: Option<i64>,
    /// Current connection state.
    pub state: PeerState,
    /// Whether the site's microphone is muted (by itself or the chair).
    pub muted: bool,
}

/// Which site fills one of the client's receiving slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotAssignment {
    /// The transceiver's `mid`.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The site whose media is sent on it, or `None` when the slot is idle.
    pub site_id: Option<i64>,
}

/// What the client reports about its own media, for the technician page and the quality indicator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientStats {
    /// Total video frames decoded over all inbound video.
    pub frames_decoded: u64,
    /// Total audio samples received (concealed excluded).
    pub audio_samples: u64,
    /// Inbound packets lost as reported by the browser.
    pub packets_lost: i64,
    /// Round-trip time to the bridge in milliseconds, if known.
    pub rtt_ms: Option<f64>,
    /// Inbound bitrate in kbit/s.
    pub kbps_in: Option<f64>,
    /// Outbound bitrate in kbit/s.
    pub kbps_out: Option<f64>,
    /// Total audio samples concealed (lost or late), over all inbound audio.
    pub audio_concealed: u64,
    /// Height of the main picture decoded since the last report; 0 while the bridge sends audio only; absent when
    /// no frame was decoded.
    pub height: Option<u32>,
}

/// Messages from a client (browser page or synthetic site) to the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// First message: the protocol version the client speaks.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        v: u32,
    },
    /// An SDP offer (first negotiation or renegotiation). The bridge answers with [`ServerMsg::Answer`].
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// The answer to a [`ServerMsg::Offer`].
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// The client muted or unmuted its own microphone.
    Mute {
        /// `true` when muted.
        muted: bool,
    },
    /// Chair only: mute or unmute a site.
    MuteSite {
        /// The site.
        site_id: i64,
        /// `true` to mute.
        muted: bool,
    },
    /// Asks for a keyframe of every video the client receives (e.g. after a decoder reset).
    RequestKeyframe {},
    /// Periodic statistics from the client.
    Stats(ClientStats),
    /// Keep-alive; answered by [`ServerMsg::Pong`].
    Ping {},
    /// Link check (`/ws/check` only): what the client has received of the bridge's probe so far, cumulative.
    CheckReport(CheckReport),
    /// Site only: "Có mặt" — the site answers the roll call.
    Present {},
    /// Site only: raise (`true`) or lower (`false`) the hand, to ask for the floor.
    Hand {
        /// `true` to raise.
        raised: bool,
    },
    /// Standby page only (`/ws/standby`): the site's staff declined the meeting it was rung for.
    Decline {
        /// The meeting of the prompt.
        meeting_id: i64,
    },
}

/// A link-check client's receive counters for the bridge's probe stream (cumulative since the check began).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    /// RTP packets received.
    pub rx_packets: u64,
    /// RTP payload bytes received.
    pub rx_bytes: u64,
    /// RTP packets lost (expected minus received).
    pub rx_lost: i64,
    /// The client's own round-trip-time estimate, ms.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
}

/// Direction being measured by a link-check step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckPhase {
    /// Bridge → site: the bridge sends a probe at `kbps`; the client reports what arrives.
    Down,
    /// Site → bridge: the client sends video at `kbps`; the bridge measures what arrives.
    Up,
}

/// One measured step of a link check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckStep {
    /// Direction.
    pub phase: CheckPhase,
    /// Rate asked for, kbit/s of RTP payload.
    pub kbps: u32,
    /// Rate that arrived, kbit/s (`None`: nothing could be measured).
    pub delivered_kbps: Option<f64>,
    /// Packets lost in the step, percent (`None`: unknown).
    pub loss_pct: Option<f64>,
}

/// The profile a site is recommended to join with, from its link check (most to least demanding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkProfile {
    /// Audio only: no video fits.
    AudioOnly,
    /// Video at 180p (~150 kbit/s).
    Low,
    /// Video at 360p (~500 kbit/s).
    Standard,
    /// Video at 720p (~1.5 Mbit/s).
    Full,
}

impl LinkProfile {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkProfile::AudioOnly => "audio_only",
            LinkProfile::Low => "low",
            LinkProfile::Standard => "standard",
            LinkProfile::Full => "full",
        }
    }

    /// The profile a directory link hint implies (`vsat`, `3g`, `adsl`…, any case), when a site has no link check;
    /// `None` for fibre, an unknown hint or none.
    pub fn from_link_hint(hint: &str) -> Option<LinkProfile> {
        match hint.trim().to_ascii_lowercase().as_str() {
            "vsat" | "satellite" | "edge" | "2g" => Some(LinkProfile::AudioOnly),
            "3g" => Some(LinkProfile::Low),
            "4g" | "adsl" | "dsl" => Some(LinkProfile::Standard),
            _ => None,
        }
    }

    /// Parses [`LinkProfile::as_str`].
    pub fn parse(s: &str) -> Option<LinkProfile> {
        [LinkProfile::AudioOnly, LinkProfile::Low, LinkProfile::Standard, LinkProfile::Full]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// The outcome of a link check, as the bridge measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkCheckResult {
    /// Downlink (bridge → site) capacity, kbit/s of RTP payload: the most that arrived in one step.
    pub down_kbps: Option<f64>,
    /// `true` when the downlink ran out before the top step (the figure is the link's capacity); `false` means the
    /// link carried every step and the capacity is at least the figure.
    pub down_saturated: bool,
    /// Uplink (site → bridge) capacity, kbit/s, as the most that arrived in one step.
    pub up_kbps: Option<f64>,
    /// As `down_saturated`, for the uplink.
    pub up_saturated: bool,
    /// Downlink loss at rates the link carried, percent.
    pub down_loss_pct: Option<f64>,
    /// Uplink loss, percent (the bridge's receiver reports).
    pub up_loss_pct: Option<f64>,
    /// Round-trip time, ms (median of the check's samples).
    pub rtt_ms: Option<f64>,
    /// What the site should join with.
    pub recommended: LinkProfile,
    /// Every step, in order.
    pub steps: Vec<CheckStep>,
    /// How long the measurement took, ms.
    pub duration_ms: u64,
}

/// Messages from the bridge to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Sent once the token is accepted.
    Welcome {
        /// Protocol version of the server.
        v: u32,
        /// Role of this connection.
        role: Role,
        /// Meeting id.
        meeting_id: i64,
        /// Meeting title.
        meeting_title: String,
        /// This client's site id.
        site_id: i64,
        /// This client's site name.
        site_name: String,
        /// Site id of the chair.
        chair_site_id: i64,
        /// Video slots the chair should offer.
        grid_size: u32,
        /// Audio slots the chair should offer.
        audio_slots: u32,
        /// What this site's link carries (its latest link check, else the directory's link hint); absent: no limit.
        /// `low` and `audio_only` make the page send Opus in 60 ms packets at 16 kbit/s with in-band FEC; its camera
        /// is capped at 500 kbit/s (`standard`), 150 kbit/s (`low`) or 64 kbit/s (`audio_only`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<LinkProfile>,
        /// The weakest link among the meeting's invited sites (the same sources as `profile`); absent: none known.
        /// With `audio_only` (a satellite or EDGE commune is invited) every page, the chair's first, sends Opus in
        /// 60 ms packets at 16 kbit/s and its 180p layer at 100 kbit/s: what such a commune hears and sees must fit
        /// 128 kbit/s, and the bridge forwards, it does not transcode.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weakest_link: Option<LinkProfile>,
    },
    /// Answer to a [`ClientMsg::Offer`].
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A bridge-initiated renegotiation.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// The sites of the meeting and their state (sent to the chair and technicians on every change).
    Roster {
        /// Every invited site.
        sites: Vec<RosterEntry>,
    },
    /// Which site fills each receiving slot of this client.
    Slots {
        /// One entry per slot.
        slots: Vec<SlotAssignment>,
    },
    /// The chair muted or unmuted this site.
    Muted {
        /// `true` when muted.
        muted: bool,
    },
    /// A request was refused; the connection stays open.
    Error {
        /// Machine-readable code, e.g. `forbidden`, `bad_sdp`.
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// Answer to [`ClientMsg::Ping {}`].
    Pong,
    /// The bridge paused (`true`) or resumed (`false`) the video it sends this client: its link has room for audio
    /// only. The page says "Chỉ âm thanh" meanwhile.
    AudioOnly {
        /// Video paused.
        on: bool,
    },
    /// Dynacast: the bridge asks a site to send (`true`) or stop encoding (`false`) its camera, as someone receives
    /// it or nobody does. Pages start sending; a site whose camera is in no tile frees its uplink.
    Publish {
        /// Send video.
        video: bool,
    },
    /// Link check: a step begins (`percent` of the whole check done so far). In an `up` step the client sends video at
    /// `kbps`; in a `down` step the bridge sends its probe at `kbps` and the client reports with `check_report`.
    CheckStep {
        /// Direction measured.
        phase: CheckPhase,
        /// Rate of the step, kbit/s.
        kbps: u32,
        /// Progress of the whole check, 0–100.
        percent: u8,
    },
    /// Link check: the result, also stored with the site. The bridge closes the connection after it.
    CheckResult {
        /// The measures and the recommended profile.
        result: LinkCheckResult,
    },
    /// Chair and technicians: the whole state of the meeting's control (roll call, floor, hands, mutes, lock),
    /// sent on joining and after every change that is not a roll-call answer.
    Control {
        /// The state.
        state: control::ControlState,
    },
    /// Chair and technicians: one roll-call answer or expiry, as it is logged (3,000 answers are 3,000 small
    /// messages, not 3,000 copies of the whole list).
    RollCallResult {
        /// The site.
        site_id: i64,
        /// Its result.
        result: control::SiteResult,
        /// The counts so far in this roll call.
        counts: control::Counts,
    },
    /// Sites: what the control of the meeting means for this site, sent on joining and on every change that
    /// concerns it.
    SiteControl {
        /// The view.
        view: control::SiteView,
        /// The bridge's clock when it was sent, unix ms: the page counts a call's time left from it, not from its
        /// own clock.
        now_ms: i64,
        /// The floor holder's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        floor_name: Option<String>,
    },
    /// Standby page (`/ws/standby`): sent once the token is accepted; the page waits to be rung.
    Standby {
        /// Protocol version of the server.
        v: u32,
        /// This page's site.
        site_id: i64,
        /// Its name.
        site_name: String,
    },
    /// A site's page (standby or in a meeting): a meeting was convened with this site — the incoming-meeting prompt.
    Incoming {
        /// The new meeting.
        meeting_id: i64,
        /// Its title.
        title: String,
        /// The chairing site's name.
        chair_name: String,
        /// The site's join token for it: the page opens `/site?token=…` when its staff accept.
        token: String,
        /// The prompt rings until then, unix ms (bridge clock) …
        until_ms: i64,
        /// … and this is the bridge's clock when it was sent.
        now_ms: i64,
    },
    /// Chair and technicians of a convened meeting: where the ringing of its sites stands (all of them on joining,
    /// then each change).
    Rings {
        /// The sites, each with its status.
        rings: Vec<control::Ring>,
    },
}

impl ClientMsg {
    /// Parses a client message, with an error that says what is wrong.
    pub fn parse(text: &str) -> Result<ClientMsg, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl ServerMsg {
    /// Serializes to the JSON text sent on the WebSocket.
    pub fn to_json(&self) -> String {
        // Serializing these plain types cannot fail: no maps with non-string keys, no custom serializers.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip() {
        let msgs = [
            ClientMsg::Hello { v: 1 },
            ClientMsg::Offer { sdp: "v=0".into() },
            ClientMsg::Mute { muted: true },
            ClientMsg::MuteSite { site_id: 3, muted: false },
            ClientMsg::RequestKeyframe {},
            ClientMsg::Stats(ClientStats { frames_decoded: 5, ..Default::default() }),
            ClientMsg::Ping {},
            ClientMsg::CheckReport(CheckReport { rx_packets: 9, rx_bytes: 9000, rx_lost: 1, rtt_ms: Some(40.0) }),
        ];
        for m in msgs {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(ClientMsg::parse(&json).unwrap(), m, "{json}");
        }
    }

    #[test]
    fn wire_shape_is_stable() {
        assert_eq!(
            serde_json::to_string(&ClientMsg::Offer { sdp: "x".into() }).unwrap(),
            r#"{"type":"offer","sdp":"x"}"#
        );
        assert_eq!(ClientMsg::parse(r#"{"type":"ping"}"#).unwrap(), ClientMsg::Ping {});
        assert_eq!(
            ClientMsg::parse(r#"{"type":"stats","frames_decoded":7}"#).unwrap(),
            ClientMsg::Stats(ClientStats { frames_decoded: 7, ..Default::default() })
        );
        assert_eq!(ServerMsg::Pong.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(
            ClientMsg::parse(r#"{"type":"check_report","rx_packets":3,"rx_bytes":300,"rx_lost":0}"#).unwrap(),
            ClientMsg::CheckReport(CheckReport { rx_packets: 3, rx_bytes: 300, rx_lost: 0, rtt_ms: None })
        );
        assert!(
            ClientMsg::parse(r#"{"type":"check_report","rx_packets":3,"rx_bytes":300,"rx_lost":0,"x":1}"#).is_err()
        );
        assert_eq!(
            ServerMsg::CheckStep { phase: CheckPhase::Down, kbps: 512, percent: 40 }.to_json(),
            r#"{"type":"check_step","phase":"down","kbps":512,"percent":40}"#
        );
        assert_eq!(LinkProfile::parse("audio_only"), Some(LinkProfile::AudioOnly));
        assert_eq!(LinkProfile::from_link_hint(" VSAT "), Some(LinkProfile::AudioOnly));
        assert_eq!(LinkProfile::from_link_hint("3G"), Some(LinkProfile::Low));
        assert_eq!(LinkProfile::from_link_hint("fibre"), None);
        assert!(LinkProfile::AudioOnly < LinkProfile::Full);
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"offer"}"#,
            r#"{"type":"mute","muted":"yes"}"#,
            r#"{"type":"ping","extra":1}"#,
        ] {
            assert!(ClientMsg::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn roles_and_kinds_parse() {
        for r in [Role::Chair, Role::Site, Role::Technician] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        for k in [SiteKind::Province, SiteKind::Department, SiteKind::District, SiteKind::Commune] {
            assert_eq!(SiteKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    /// Random corruptions of valid messages (the same inputs every run): parsing never panics, and whatever parses
    /// serializes back to an equal message.
    #[test]
    fn corrupted_messages_parse_or_fail_and_round_trip() {
        let seeds = [
            r#"{"type":"hello","v":1}"#,
            r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#,
            r#"{"type":"mute_site","site_id":12,"muted":true}"#,
            r#"{"type":"stats","frames_decoded":10,"rtt_ms":3.5,"kbps_in":120.0}"#,
            r#"{"type":"ping"}"#,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut parsed = 0;
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..(next() % 4) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                let alphabet = b"{}[]\":,0e-";
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            if let Ok(m) = ClientMsg::parse(text) {
                parsed += 1;
                let again = serde_json::to_string(&m).unwrap();
                assert_eq!(ClientMsg::parse(&again).unwrap(), m, "{text}");
            }
        }
        assert!(parsed > 1_000, "the corpus should keep many valid messages ({parsed})");
    }
}
