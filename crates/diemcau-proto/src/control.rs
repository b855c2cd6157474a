//! The control of a meeting as the chair runs it — roll call ("điểm danh"), floor, hand raising, mutes, lock — in
//! the shapes the API, the WebSocket and the log share. The state machines are in `diemcau-meeting`.
//!
//! Every chair action ([`Action`], the body of `POST /api/meetings/{id}/control`) and every site answer becomes one
//! [`Event`], written to the meeting's log before it is acknowledged; a meeting's control state is the replay of its
//! log, which is how it survives a restart of the bridge.

use serde::{Deserialize, Serialize};

/// How the roll call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollCallMode {
    /// Every site is called at once and must answer before one deadline (default 60 s).
    AllAtOnce,
    /// Sites are called one after another (directory order or the chair's order), each with its own time (20 s).
    OneByOne,
}

/// The result of one site in a roll call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered, and its audio and video arrived at the bridge in the seconds before.
    PresentAv,
    /// Answered; its audio arrived, its video did not.
    PresentAudioOnly,
    /// Answered; no audio arrived (its video may have).
    PresentNoMedia,
    /// Connected when its call ended, but did not answer.
    NoAnswer,
    /// Not connected when its call ended.
    Offline,
}

impl Outcome {
    /// The name used in JSON and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::PresentAv => "present_av",
            Outcome::PresentAudioOnly => "present_audio_only",
            Outcome::PresentNoMedia => "present_no_media",
            Outcome::NoAnswer => "no_answer",
            Outcome::Offline => "offline",
        }
    }

    /// Whether the site answered.
    pub fn present(self) -> bool {
        matches!(self, Outcome::PresentAv | Outcome::PresentAudioOnly | Outcome::PresentNoMedia)
    }
}

/// One site's roll-call result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteResult {
    /// The result.
    pub outcome: Outcome,
    /// When it was decided (the answer, or the end of the site's call), unix ms.
    pub at_ms: i64,
    /// The site's audio arrived at the bridge in the seconds before its answer.
    pub audio: bool,
    /// Its video arrived.
    pub video: bool,
    /// The round it was decided in: 1 for the first call, 2 for the first re-call…
    pub round: u32,
}

/// Counts of a roll call's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Sites called in the current round.
    pub called: u32,
    /// [`Outcome::PresentAv`].
    pub present_av: u32,
    /// [`Outcome::PresentAudioOnly`].
    pub present_audio_only: u32,
    /// [`Outcome::PresentNoMedia`].
    pub present_no_media: u32,
    /// [`Outcome::NoAnswer`].
    pub no_answer: u32,
    /// [`Outcome::Offline`].
    pub offline: u32,
    /// Called in the current round and not decided yet.
    pub waiting: u32,
}

/// A chair action (the JSON body of `POST /api/meetings/{id}/control`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Start a roll call over every invited site (or `order`, in that order).
    StartRollCall {
        /// All at once (default) or one by one.
        #[serde(default = "default_mode")]
        mode: RollCallMode,
        /// Sites to call, in order; default: every invited site in directory order.
        #[serde(default)]
        order: Option<Vec<i64>>,
        /// Seconds to answer: the whole roll call's (all at once, default 60) or each site's (one by one, 20).
        #[serde(default)]
        seconds: Option<u32>,
    },
    /// Call again, in a new round, the sites of the last roll call that did not answer.
    Recall {
        /// Seconds to answer; default: the last round's.
        #[serde(default)]
        seconds: Option<u32>,
    },
    /// Stop the roll call in progress; sites not decided yet keep no result of this round.
    CancelRollCall {},
    /// Give the floor to a site: its microphone is unmuted and it is heard and seen by all.
    GiveFloor {
        /// The site.
        site_id: i64,
    },
    /// Take the floor back: the holder's microphone is muted.
    TakeFloor {},
    /// Lower a site's raised hand (without giving it the floor).
    LowerHand {
        /// The site.
        site_id: i64,
    },
    /// Mute every site but the floor holder.
    MuteAll {},
    /// Mute one site.
    Mute {
        /// The site.
        site_id: i64,
    },
    /// Unmute one site.
    Unmute {
        /// The site.
        site_id: i64,
    },
    /// Lock (no site that has not joined yet may join) or unlock the meeting.
    Lock {
        /// `true` to lock.
        locked: bool,
    },
}

fn default_mode() -> RollCallMode {
    RollCallMode::AllAtOnce
}

/// One entry of a meeting's control log: what happened, after it was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A roll call (round 1) or a re-call (round 2, 3…) began at the event's time.
    RollCallStarted {
        /// Round number.
        round: u32,
        /// How.
        mode: RollCallMode,
        /// The sites called, in order.
        sites: Vec<i64>,
        /// Time to answer, ms: the whole round's (all at once) or each site's (one by one).
        per_call_ms: i64,
    },
    /// A called site answered "Có mặt"; what of its media had arrived.
    Confirmed {
        /// The site.
        site_id: i64,
        /// Audio arrived in the seconds before.
        audio: bool,
        /// Video arrived.
        video: bool,
    },
    /// One by one: the called site's time ran out.
    CallExpired {
        /// The site.
        site_id: i64,
        /// Whether it was connected.
        online: bool,
    },
    /// All at once: the deadline passed; the sites not yet answered get no answer, or offline for those listed.
    DeadlinePassed {
        /// Unanswered sites that were not connected.
        offline: Vec<i64>,
    },
    /// The chair stopped the roll call.
    RollCallCancelled,
    /// The floor went to a site (the previous holder, if any, lost it and was muted).
    FloorGiven {
        /// The site.
        site_id: i64,
    },
    /// The chair took the floor back.
    FloorTaken,
    /// A site raised its hand.
    HandRaised {
        /// The site.
        site_id: i64,
    },
    /// A site lowered its hand, or the chair lowered it.
    HandLowered {
        /// The site.
        site_id: i64,
    },
    /// Every site but the floor holder muted.
    MutedAll,
    /// One site muted by the chair.
    Muted {
        /// The site.
        site_id: i64,
    },
    /// One site unmuted by the chair.
    Unmuted {
        /// The site.
        site_id: i64,
    },
    /// The meeting was locked or unlocked.
    Locked {
        /// Locked now.
        locked: bool,
    },
}

/// A logged event with its place and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// 1, 2, 3… within the meeting.
    pub seq: u64,
    /// When it was decided, unix ms.
    pub at_ms: i64,
    /// What.
    pub event: Event,
}

/// A raised hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hand {
    /// The site.
    pub site_id: i64,
    /// Since when, unix ms.
    pub since_ms: i64,
}

/// The roll call in progress, as the chair sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollCallState {
    /// Round (1: first call).
    pub round: u32,
    /// How.
    pub mode: RollCallMode,
    /// When the round began, unix ms.
    pub started_ms: i64,
    /// All at once: the round's deadline; one by one: the current site's.
    pub deadline_ms: i64,
    /// One by one: the site being called now.
    pub calling: Option<i64>,
    /// The sites of the round, in order.
    pub sites: Vec<i64>,
}

/// The whole control state (for the chair's console and technicians).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// The roll call in progress, if any.
    pub roll_call: Option<RollCallState>,
    /// The latest result of every site decided in any round (site id, result), by site id.
    pub results: Vec<(i64, SiteResult)>,
    /// Counts of the last (or current) round.
    pub counts: Counts,
    /// How many rounds have begun.
    pub rounds: u32,
    /// The floor holder.
    pub floor: Option<i64>,
    /// Raised hands, first raised first.
    pub hands: Vec<Hand>,
    /// Sites muted by the chair.
    pub muted: Vec<i64>,
    /// Locked.
    pub locked: bool,
    /// Seq of the last event applied.
    pub seq: u64,
}

/// What the control of the meeting means for one site (its page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    /// The site is being called now: answer "Có mặt" before this time (unix ms).
    pub called_until_ms: Option<i64>,
    /// Its result in the latest round that decided it.
    pub result: Option<SiteResult>,
    /// The floor holder, if any.
    pub floor: Option<i64>,
    /// Its raised hand's place in the queue (1: first), if raised.
    pub hand_position: Option<u32>,
    /// Muted by the chair.
    pub muted_by_chair: bool,
}

/// One site as an emergency convening names it: its directory id, or a text — its code, its name, or a path of names
/// from an ancestor down (`"Huyện Đại Từ / Xã La Bằng"`) when the name alone is shared by several sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SitePick {
    /// A directory id.
    Id(i64),
    /// A code, a name or a path of names.
    Text(String),
}

/// `POST /api/convene`: a meeting created now with the sites named, whose open pages are rung.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConveneRequest {
    /// Title shown to every site and on the incoming-meeting prompt.
    pub title: String,
    /// The chairing site. With a chair token it is the token's site (and may be left out); the admin must give it.
    #[serde(default)]
    pub chair_site_id: Option<i64>,
    /// Sites invited one by one.
    #[serde(default)]
    pub sites: Vec<SitePick>,
    /// Sites invited with everything under them in the directory (a district and its communes).
    #[serde(default)]
    pub subtrees: Vec<SitePick>,
    /// How long the prompt rings on the sites' pages, s (default 120).
    #[serde(default)]
    pub ring_secs: Option<u32>,
}

/// Where the ringing of one invited site stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingStatus {
    /// A page of the site is open and shows the prompt.
    Ringing,
    /// No page of the site was open when it was rung.
    Unreachable,
    /// The site's staff pressed "Từ chối" (decline).
    Declined,
}

/// The ringing of one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// The site.
    pub site_id: i64,
    /// Where it stands.
    pub status: RingStatus,
    /// When it was rung or declined, unix ms.
    pub at_ms: i64,
    /// The prompt rings until then, unix ms: a site still `ringing` after it did not pick up.
    pub until_ms: i64,
}
