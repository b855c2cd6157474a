//! Drills: a [`Scenario`] (TOML: sites, link mix, a synthetic chair, a timeline of link events for shares of the
//! sites, thresholds) and the [`DrillReport`] that judges a swarm's outcome against the thresholds, per site and per
//! link preset. `diemcau drill run FILE --out DIR` runs one against a bridge and writes `report.json` and the
//! self-contained `report.html` ([`crate::report_html`]).
//!
//! The scenario format, with every key (those marked optional have the default shown):
//! ```toml
//! name = "rural-mix"                  # short name, used in file names
//! title = "Diễn tập xã nông thôn"      # optional: shown on the report
//! description = "…"                   # optional
//! sites = 200                         # synthetic communes
//! duration_s = 60                     # from the first join to the report
//! join_spread_s = 10                  # optional (0): joins spread evenly over this
//! mix = "3g:40,adsl:40,vsat:20"       # link presets of config/links.toml and their shares (sum 100)
//! seed = 1                            # optional (1): same seed, same drill
//! threads = 1                         # optional (1): media threads of the swarm
//! sites_publish = false               # optional (false): communes send synthetic camera and microphone too
//!
//! [chair]                             # optional: the synthetic chair that publishes to everyone
//! profile = "fibre"                   # its link preset
//! video = true
//! video_kbps = 500
//! fps = 15
//! width = 640
//! height = 360
//! keyframe_interval_s = 10
//! audio = true
//! audio_kbps = 32
//! audio_ptime_ms = 20                 # 20, 40 or 60 ms audio packets (60: the low-bandwidth profile's)
//! simulcast = false                   # three layers q/h/f (this one is h), as the chair page sends
//! temporal_layers = 1                 # 1, 2 or 3: each layer in temporal layers (L1T3 at 30 fps: 7.5/15/30 fps)
//! q_kbps = 100                        # optional: the q layer's rate (default 30% of video_kbps)
//!
//! [[event]]                           # optional, any number: a link change for a share of the sites
//! at_s = 30                           # from the start of the drill
//! change = "rate"                     # rate | loss | outage | recover | profile
//! kbps = 250                          # rate: kbit/s or "unlimited"
//! queue_ms = 200                      # rate, optional: resize the queue to this many ms at the new rate
//! direction = "down"                  # optional: up | down (both by default)
//! share = 0.5                         # optional (1): share of the eligible sites, chosen with the seed
//! profiles = ["3g"]                   # optional (all): which presets' sites are eligible
//! # loss = 0.05 (loss); duration_s = 5 (outage: optional, until a recover); name = "vsat" (profile)
//!
//! [thresholds]                        # optional: what passes, for every preset (leave a key out to not check it)
//! connected_min = 1.0                 # share of the sites connected (ICE + DTLS)
//! first_frame_max_ms = 5000           # time to first frame: each site, and the preset's p95
//! audio_continuity_min = 0.995        # each site, and the preset's mean
//! audio_gap_max_ms = 200              # longest audio gap of any site
//! freeze_share_max = 0.01             # frozen time over watch time: each site, and the preset's total
//! loss_after_repair_max = 0.01        # each site, and the preset's mean
//! fps_min = 7.5                       # frames decoded per second of watching: each site, and the preset's lowest
//!
//! [profile_thresholds.vsat]           # optional: per preset, overriding [thresholds] key by key
//! audio_continuity_min = 0.9
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use diemcau_netem::{Change, Direction, Profile};
use serde::{Deserialize, Serialize};

use crate::DrillError;
use crate::metrics::SiteReport;
use crate::publisher::PublisherConfig;
use crate::swarm::{CostReport, EventReport, LinkEvent, ProfileSeries, ProfileSummary, SwarmReport, parse_mix};

/// The largest drill this build accepts (the bridge's budget is 3,000 sites; some headroom for tests of it).
pub const MAX_SITES: usize = 20_000;

/// A drill, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// Shown on the report.
    pub title: String,
    /// Shown on the report.
    pub description: String,
    /// Synthetic communes.
    pub sites: usize,
    /// From the first join to the report.
    pub duration: Duration,
    /// Joins are spread evenly over this.
    pub join_spread: Duration,
    /// Presets and their shares.
    pub mix: Vec<(String, u32)>,
    /// Seeds everything random.
    pub seed: u64,
    /// Media threads of the swarm.
    pub threads: usize,
    /// Communes publish synthetic media too.
    pub sites_publish: bool,
    /// Communes connect media at all (`false`: signalling only).
    pub sites_media: bool,
    /// The synthetic chair, if any: its link preset and what it sends.
    pub chair: Option<(String, PublisherConfig)>,
    /// Link events, from the start of the drill.
    pub events: Vec<LinkEvent>,
    /// Thresholds for every preset.
    pub thresholds: Thresholds,
    /// Per-preset overrides.
    pub profile_thresholds: BTreeMap<String, Thresholds>,
    /// A roll call the chair starts during the drill, if any.
    pub rollcall: Option<RollCallPlan>,
}

/// A roll call in a drill: started by the chair at `start`, answered by the swarm after a random delay, except a
/// share that never answers.
#[derive(Debug, Clone, PartialEq)]
pub struct RollCallPlan {
    /// From the start of the drill.
    pub start: Duration,
    /// Time to answer (all at once).
    pub seconds: u32,
    /// Share of the sites that never answer, `0..=1` (exactly `round(share × sites)` of them, chosen by the seed).
    pub silent_share: f64,
    /// The others answer uniformly within this after their call.
    pub answer_within: Duration,
}

/// What a drill's roll call measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollCallReport {
    /// Sites called.
    pub sites: u32,
    /// Sites planned to answer / never to answer.
    pub expected_present: u32,
    /// Sites planned never to answer.
    pub expected_absent: u32,
    /// What the attendance report counts.
    pub present: u32,
    /// No answer + offline in the attendance report.
    pub absent: u32,
    /// Of which not connected at the deadline.
    pub offline: u32,
    /// The counts match the plan.
    pub matches: bool,
    /// From the start of the roll call to its last answer recorded, ms.
    pub last_answer_ms: Option<i64>,
}

/// What passes. A `None` is not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Share of the sites that connected, `0..=1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_min: Option<f64>,
    /// Time to first frame, ms: each site, and the preset's p95.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_frame_max_ms: Option<f64>,
    /// Audio continuity: each site, and the preset's mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_continuity_min: Option<f64>,
    /// Longest audio gap, ms, of any site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_gap_max_ms: Option<f64>,
    /// Frozen time over watch time: each site, and the preset's total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_share_max: Option<f64>,
    /// Loss after repair: each site, and the preset's mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_after_repair_max: Option<f64>,
    /// Frames decoded per second of watching: each site that watched, and the preset's lowest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps_min: Option<f64>,
}

impl Thresholds {
    /// `self`, with every key `over` sets replaced.
    pub fn overridden_by(&self, over: &Thresholds) -> Thresholds {
        Thresholds {
            connected_min: over.connected_min.or(self.connected_min),
            first_frame_max_ms: over.first_frame_max_ms.or(self.first_frame_max_ms),
            audio_continuity_min: over.audio_continuity_min.or(self.audio_continuity_min),
            audio_gap_max_ms: over.audio_gap_max_ms.or(self.audio_gap_max_ms),
            freeze_share_max: over.freeze_share_max.or(self.freeze_share_max),
            loss_after_repair_max: over.loss_after_repair_max.or(self.loss_after_repair_max),
            fps_min: over.fps_min.or(self.fps_min),
        }
    }

    fn validate(&self, at: &str) -> Result<(), DrillError> {
        let share = |name: &str, v: Option<f64>| match v {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                Err(DrillError::Config(format!("{at}: {name} = {x} is not within 0..=1")))
            }
            _ => Ok(()),
        };
        let positive = |name: &str, v: Option<f64>| match v {
            Some(x) if !(x.is_finite() && x >= 0.0) => {
                Err(DrillError::Config(format!("{at}: {name} = {x} must be a number of ms ≥ 0")))
            }
            _ => Ok(()),
        };
        share("connected_min", self.connected_min)?;
        share("audio_continuity_min", self.audio_continuity_min)?;
        share("freeze_share_max", self.freeze_share_max)?;
        share("loss_after_repair_max", self.loss_after_repair_max)?;
        positive("first_frame_max_ms", self.first_frame_max_ms)?;
        positive("audio_gap_max_ms", self.audio_gap_max_ms)?;
        match self.fps_min {
            Some(x) if !(x.is_finite() && (0.0..=120.0).contains(&x)) => {
                Err(DrillError::Config(format!("{at}: fps_min = {x} is not within 0..=120")))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioToml {
    name: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    sites: usize,
    duration_s: f64,
    #[serde(default)]
    join_spread_s: f64,
    mix: String,
    #[serde(default = "one")]
    seed: u64,
    #[serde(default = "one_usize")]
    threads: usize,
    #[serde(default)]
    sites_publish: bool,
    #[serde(default = "yes")]
    sites_media: bool,
    chair: Option<ChairToml>,
    #[serde(default)]
    event: Vec<EventToml>,
    #[serde(default)]
    thresholds: Thresholds,
    #[serde(default)]
    profile_thresholds: BTreeMap<String, Thresholds>,
    rollcall: Option<RollCallToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollCallToml {
    start_s: f64,
    #[serde(default = "sixty")]
    seconds: u32,
    #[serde(default)]
    silent_share: f64,
    #[serde(default = "twenty")]
    answer_within_s: f64,
}

fn yes() -> bool {
    true
}

fn sixty() -> u32 {
    60
}

fn twenty() -> f64 {
    20.0
}

fn one() -> u64 {
    1
}

fn one_usize() -> usize {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChairToml {
    #[serde(default = "fibre")]
    profile: String,
    video: Option<bool>,
    video_kbps: Option<u32>,
    fps: Option<u32>,
    width: Option<u16>,
    height: Option<u16>,
    keyframe_interval_s: Option<f64>,
    audio: Option<bool>,
    audio_kbps: Option<u32>,
    audio_ptime_ms: Option<u32>,
    simulcast: Option<bool>,
    temporal_layers: Option<u8>,
    q_kbps: Option<u32>,
}

fn fibre() -> String {
    "fibre".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RateToml {
    Kbps(u32),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventToml {
    at_s: f64,
    change: String,
    kbps: Option<RateToml>,
    queue_ms: Option<u32>,
    loss: Option<f64>,
    duration_s: Option<f64>,
    name: Option<String>,
    direction: Option<Direction>,
    share: Option<f64>,
    #[serde(default)]
    profiles: Vec<String>,
}

fn seconds(what: &str, s: f64) -> Result<Duration, DrillError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| DrillError::Config(format!("{what} = {s}: expected a number of seconds ≥ 0")))
}

impl EventToml {
    fn into_event(self, at: &str) -> Result<LinkEvent, DrillError> {
        let bad = |msg: String| DrillError::Config(format!("{at}: {msg}"));
        let unused = |key: &str, present: bool| {
            if present { Err(bad(format!("`{key}` does not apply to change = \"{}\"", self.change))) } else { Ok(()) }
        };
        let change = match self.change.as_str() {
            "rate" => {
                unused("loss", self.loss.is_some())?;
                unused("duration_s", self.duration_s.is_some())?;
                unused("name", self.name.is_some())?;
                let kbps = match &self.kbps {
                    Some(RateToml::Kbps(0)) => return Err(bad("kbps must be above 0".into())),
                    Some(RateToml::Kbps(k)) => Some(*k),
                    Some(RateToml::Word(w)) if w == "unlimited" => None,
                    Some(RateToml::Word(w)) => return Err(bad(format!("kbps `{w}`: a number or \"unlimited\""))),
                    None => return Err(bad("change = \"rate\" needs kbps".into())),
                };
                if self.queue_ms == Some(0) {
                    return Err(bad("queue_ms must be above 0".into()));
                }
                Change::Rate { dir: self.direction, kbps, queue_ms: self.queue_ms }
            }
            "loss" => {
                unused("kbps", self.kbps.is_some())?;
                unused("queue_ms", self.queue_ms.is_some())?;
                unused("duration_s", self.duration_s.is_some())?;
                unused("name", self.name.is_some())?;
                let loss = self.loss.ok_or_else(|| bad("change = \"loss\" needs loss (0..=1)".into()))?;
                if !(0.0..=1.0).contains(&loss) {
                    return Err(bad(format!("loss = {loss} is not within 0..=1")));
                }
                Change::Loss { dir: self.direction, loss }
            }
            "outage" => {
                unused("kbps", self.kbps.is_some())?;
                unused("queue_ms", self.queue_ms.is_some())?;
                unused("loss", self.loss.is_some())?;
                unused("name", self.name.is_some())?;
                let duration = self.duration_s.map(|s| seconds(&format!("{at}: duration_s"), s)).transpose()?;
                Change::Outage { dir: self.direction, duration }
            }
            "recover" => {
                unused("kbps", self.kbps.is_some())?;
                unused("queue_ms", self.queue_ms.is_some())?;
                unused("loss", self.loss.is_some())?;
                unused("duration_s", self.duration_s.is_some())?;
                unused("name", self.name.is_some())?;
                Change::Recover { dir: self.direction }
            }
            "profile" => {
                unused("kbps", self.kbps.is_some())?;
                unused("queue_ms", self.queue_ms.is_some())?;
                unused("loss", self.loss.is_some())?;
                unused("duration_s", self.duration_s.is_some())?;
                unused("direction", self.direction.is_some())?;
                let name = self.name.as_deref().ok_or_else(|| bad("change = \"profile\" needs name".into()))?;
                Change::Profile(Profile::preset(name).map_err(|e| bad(e.to_string()))?)
            }
            other => {
                return Err(bad(format!("change = \"{other}\": expected rate, loss, outage, recover or profile")));
            }
        };
        let share = self.share.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&share) {
            return Err(bad(format!("share = {share} is not within 0..=1")));
        }
        Ok(LinkEvent { at: seconds(&format!("{at}: at_s"), self.at_s)?, change, share, profiles: self.profiles })
    }
}

impl Scenario {
    /// Parses and validates a scenario; errors name the key at fault.
    pub fn from_toml_str(text: &str) -> Result<Self, DrillError> {
        let t: ScenarioToml = toml::from_str(text).map_err(|e| DrillError::Config(format!("scenario: {e}")))?;
        if t.name.trim().is_empty() {
            return Err(DrillError::Config("name is empty".into()));
        }
        if t.sites == 0 || t.sites > MAX_SITES {
            return Err(DrillError::Config(format!("sites = {}: expected 1..={MAX_SITES}", t.sites)));
        }
        if t.threads == 0 || t.threads > 64 {
            return Err(DrillError::Config(format!("threads = {}: expected 1..=64", t.threads)));
        }
        let duration = seconds("duration_s", t.duration_s)?;
        if duration < Duration::from_secs(1) {
            return Err(DrillError::Config("duration_s must be at least 1".into()));
        }
        let join_spread = seconds("join_spread_s", t.join_spread_s)?;
        if join_spread >= duration {
            return Err(DrillError::Config("join_spread_s must be shorter than duration_s".into()));
        }
        let mix = parse_mix(&t.mix)?;
        let total: u32 = mix.iter().map(|(_, p)| p).sum();
        if total != 100 {
            return Err(DrillError::Config(format!("mix adds up to {total}%, not 100%")));
        }
        for (name, _) in &mix {
            Profile::preset(name).map_err(|e| DrillError::Config(format!("mix: {e}")))?;
        }
        let chair = match t.chair {
            None => None,
            Some(c) => {
                Profile::preset(&c.profile).map_err(|e| DrillError::Config(format!("chair.profile: {e}")))?;
                let d = PublisherConfig::default();
                let p = PublisherConfig {
                    video: c.video.unwrap_or(d.video),
                    video_kbps: c.video_kbps.unwrap_or(d.video_kbps),
                    fps: c.fps.unwrap_or(d.fps),
                    width: c.width.unwrap_or(d.width),
                    height: c.height.unwrap_or(d.height),
                    keyframe_interval: match c.keyframe_interval_s {
                        Some(s) => seconds("chair.keyframe_interval_s", s)?,
                        None => d.keyframe_interval,
                    },
                    audio: c.audio.unwrap_or(d.audio),
                    audio_kbps: c.audio_kbps.unwrap_or(d.audio_kbps),
                    audio_ptime_ms: c.audio_ptime_ms.unwrap_or(d.audio_ptime_ms),
                    max_payload: d.max_payload,
                    simulcast: c.simulcast.unwrap_or(d.simulcast),
                    temporal_layers: c.temporal_layers.unwrap_or(d.temporal_layers),
                    q_kbps: c.q_kbps,
                };
                if p.q_kbps == Some(0) {
                    return Err(DrillError::Config("chair.q_kbps must be above 0".into()));
                }
                if ![20, 40, 60].contains(&p.audio_ptime_ms) {
                    return Err(DrillError::Config(format!(
                        "chair.audio_ptime_ms = {}: expected 20, 40 or 60",
                        p.audio_ptime_ms
                    )));
                }
                if !(1..=3).contains(&p.temporal_layers) {
                    return Err(DrillError::Config(format!(
                        "chair.temporal_layers = {}: expected 1, 2 or 3",
                        p.temporal_layers
                    )));
                }
                if p.fps == 0 || p.fps > 60 {
                    return Err(DrillError::Config(format!("chair.fps = {}: expected 1..=60", p.fps)));
                }
                if p.video_kbps == 0 || p.audio_kbps == 0 {
                    return Err(DrillError::Config("chair.video_kbps and chair.audio_kbps must be above 0".into()));
                }
                if p.keyframe_interval.is_zero() {
                    return Err(DrillError::Config("chair.keyframe_interval_s must be above 0".into()));
                }
                Some((c.profile, p))
            }
        };
        let mut events = Vec::with_capacity(t.event.len());
        for (i, e) in t.event.into_iter().enumerate() {
            let ev = e.into_event(&format!("event {}", i + 1))?;
            if ev.at > duration {
                return Err(DrillError::Config(format!("event {}: at_s is after the end of the drill", i + 1)));
            }
            for p in &ev.profiles {
                if !mix.iter().any(|(name, _)| name == p) {
                    return Err(DrillError::Config(format!("event {}: profile `{p}` is not in the mix", i + 1)));
                }
            }
            events.push(ev);
        }
        t.thresholds.validate("thresholds")?;
        for (name, th) in &t.profile_thresholds {
            if !mix.iter().any(|(p, _)| p == name) {
                return Err(DrillError::Config(format!("profile_thresholds.{name}: `{name}` is not in the mix")));
            }
            th.validate(&format!("profile_thresholds.{name}"))?;
        }
        let rollcall = match t.rollcall {
            None => None,
            Some(r) => {
                if !(0.0..=1.0).contains(&r.silent_share) {
                    return Err(DrillError::Config(format!(
                        "rollcall.silent_share = {} is not within 0..=1",
                        r.silent_share
                    )));
                }
                if !(1..=3600).contains(&r.seconds) {
                    return Err(DrillError::Config("rollcall.seconds must be between 1 and 3600".into()));
                }
                let start = seconds("rollcall.start_s", r.start_s)?;
                let answer_within = seconds("rollcall.answer_within_s", r.answer_within_s)?;
                if answer_within >= Duration::from_secs(u64::from(r.seconds)) {
                    return Err(DrillError::Config(
                        "rollcall.answer_within_s must be shorter than rollcall.seconds (answers after the deadline \
                         would count as absent)"
                            .into(),
                    ));
                }
                if start + Duration::from_secs(u64::from(r.seconds)) + Duration::from_secs(2) > duration {
                    return Err(DrillError::Config(
                        "rollcall: start_s + seconds (+ 2 s) must end before duration_s".into(),
                    ));
                }
                Some(RollCallPlan { start, seconds: r.seconds, silent_share: r.silent_share, answer_within })
            }
        };
        Ok(Self {
            name: t.name,
            title: t.title,
            description: t.description,
            sites: t.sites,
            duration,
            join_spread,
            mix,
            seed: t.seed,
            threads: t.threads,
            sites_publish: t.sites_publish,
            sites_media: t.sites_media,
            chair,
            events,
            thresholds: t.thresholds,
            profile_thresholds: t.profile_thresholds,
            rollcall,
        })
    }

    /// Reads and parses a scenario file; errors name the file.
    pub fn load(path: &Path) -> Result<Self, DrillError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DrillError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| match e {
            DrillError::Config(m) => DrillError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The thresholds of one preset.
    pub fn thresholds_for(&self, profile: &str) -> Thresholds {
        match self.profile_thresholds.get(profile) {
            Some(over) => self.thresholds.overridden_by(over),
            None => self.thresholds.clone(),
        }
    }
}

/// One measure against one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Which measure (`audio_continuity`, `first_frame_ms`, …).
    pub measure: String,
    /// `≥` or `≤`.
    pub op: String,
    /// The threshold.
    pub limit: f64,
    /// The measured value; `None` when there was nothing to measure (which fails).
    pub value: Option<f64>,
    /// Whether it passed.
    pub passed: bool,
}

fn check_min(measure: &str, limit: Option<f64>, value: Option<f64>) -> Option<Check> {
    let limit = limit?;
    let passed = value.is_some_and(|v| v >= limit);
    Some(Check { measure: measure.into(), op: "≥".into(), limit, value, passed })
}

fn check_max(measure: &str, limit: Option<f64>, value: Option<f64>) -> Option<Check> {
    let limit = limit?;
    let passed = value.is_some_and(|v| v <= limit);
    Some(Check { measure: measure.into(), op: "≤".into(), limit, value, passed })
}

/// A preset's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileVerdict {
    /// The aggregates.
    #[serde(flatten)]
    pub summary: ProfileSummary,
    /// The thresholds that applied.
    pub thresholds: Thresholds,
    /// Each threshold against the preset's aggregate.
    pub checks: Vec<Check>,
    /// Sites of this preset that passed every check of their own.
    pub sites_passed: usize,
    /// All checks passed.
    pub passed: bool,
}

/// A site's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteVerdict {
    /// What it measured.
    #[serde(flatten)]
    pub report: SiteReport,
    /// The measures that failed their threshold.
    pub failed: Vec<String>,
    /// No measure failed.
    pub passed: bool,
}

/// The scenario as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioInfo {
    /// Short name.
    pub name: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Synthetic communes.
    pub sites: usize,
    /// Seconds.
    pub duration_s: f64,
    /// Seconds.
    pub join_spread_s: f64,
    /// Presets and shares.
    pub mix: Vec<(String, u32)>,
    /// Seed.
    pub seed: u64,
    /// The chair's link preset and video bitrate, if there was a synthetic chair.
    pub chair: Option<String>,
}

/// What a drill writes to `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillReport {
    /// The report format (bump on incompatible changes).
    pub format: u32,
    /// The scenario.
    pub scenario: ScenarioInfo,
    /// Start of the drill, seconds since 1970 (UTC).
    pub started_unix: u64,
    /// Where it ran (`in-process bridge` or the URL).
    pub bridge: String,
    /// Every preset passed.
    pub passed: bool,
    /// Per preset, in mix order.
    pub profiles: Vec<ProfileVerdict>,
    /// Per site.
    pub sites: Vec<SiteVerdict>,
    /// Per preset, one point per second.
    pub series: Vec<ProfileSeries>,
    /// The link events and how many sites each touched.
    pub events: Vec<EventReport>,
    /// What the synthetic chair saw (it publishes; its report says whether it stayed connected).
    pub chair: Option<SiteReport>,
    /// CPU of the swarm's media threads.
    pub swarm_cost: CostReport,
    /// Wall time of the measurement, ms.
    pub duration_ms: f64,
    /// The drill's roll call, if it ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollcall: Option<RollCallReport>,
}

/// Judges one site.
pub fn judge_site(report: SiteReport, th: &Thresholds) -> SiteVerdict {
    let mut failed = Vec::new();
    if th.connected_min.is_some_and(|m| m > 0.0) && !report.connected {
        failed.push("connected".to_owned());
    }
    let watched = report.video.watch_ms > 0.0;
    let checks = [
        check_max("first_frame_ms", th.first_frame_max_ms, report.first_frame_ms),
        check_min("audio_continuity", th.audio_continuity_min, report.audio.continuity),
        check_max("audio_gap_ms", th.audio_gap_max_ms, report.audio.longest_gap_ms),
        check_max("freeze_share", th.freeze_share_max, watched.then_some(report.video.freeze_share)),
        check_max("loss_after_repair", th.loss_after_repair_max, Some(report.loss_after_repair)),
        check_min("fps", th.fps_min, watched.then_some(report.video.fps)),
    ];
    failed.extend(checks.into_iter().flatten().filter(|c| !c.passed).map(|c| c.measure));
    SiteVerdict { passed: failed.is_empty(), failed, report }
}

/// Judges a preset's aggregate.
pub fn judge_profile(summary: ProfileSummary, th: &Thresholds, sites_passed: usize) -> ProfileVerdict {
    let connected = (summary.sites > 0).then(|| summary.connected as f64 / summary.sites as f64);
    let checks: Vec<Check> = [
        check_min("connected", th.connected_min, connected),
        check_max("first_frame_p95_ms", th.first_frame_max_ms, summary.first_frame_p95_ms),
        check_min("audio_continuity_mean", th.audio_continuity_min, summary.audio_continuity_mean),
        check_max("audio_worst_gap_ms", th.audio_gap_max_ms, summary.audio_worst_gap_ms),
        check_max("freeze_share", th.freeze_share_max, (summary.with_video > 0).then_some(summary.freeze_share)),
        check_max("loss_after_repair_mean", th.loss_after_repair_max, Some(summary.loss_after_repair_mean)),
        check_min("fps_min", th.fps_min, summary.fps_min),
    ]
    .into_iter()
    .flatten()
    .collect();
    let passed = summary.sites > 0 && checks.iter().all(|c| c.passed);
    ProfileVerdict { summary, thresholds: th.clone(), checks, sites_passed, passed }
}

/// The current report format.
pub const REPORT_FORMAT: u32 = 1;

/// Builds the drill's report from the sites' swarm report (and the chair's, if any).
pub fn judge(
    scenario: &Scenario,
    sites: SwarmReport,
    chair: Option<SiteReport>,
    started_unix: u64,
    bridge: String,
) -> DrillReport {
    let SwarmReport { duration_ms, sites: site_reports, profiles, cost, series, events } = sites;
    let site_verdicts: Vec<SiteVerdict> =
        site_reports.into_iter().map(|r| judge_site(r.clone(), &scenario.thresholds_for(&r.profile))).collect();
    let profiles: Vec<ProfileVerdict> = profiles
        .into_iter()
        .map(|p| {
            let th = scenario.thresholds_for(&p.profile);
            let ok = site_verdicts.iter().filter(|s| s.report.profile == p.profile && s.passed).count();
            judge_profile(p, &th, ok)
        })
        .collect();
    DrillReport {
        format: REPORT_FORMAT,
        scenario: ScenarioInfo {
            name: scenario.name.clone(),
            title: scenario.title.clone(),
            description: scenario.description.clone(),
            sites: scenario.sites,
            duration_s: scenario.duration.as_secs_f64(),
            join_spread_s: scenario.join_spread.as_secs_f64(),
            mix: scenario.mix.clone(),
            seed: scenario.seed,
            chair: scenario.chair.as_ref().map(|(p, c)| {
                format!(
                    "{p}, {} kbit/s video {}×{} {} fps, {} kbit/s audio",
                    c.video_kbps, c.width, c.height, c.fps, c.audio_kbps
                )
            }),
        },
        started_unix,
        bridge,
        passed: !profiles.is_empty() && profiles.iter().all(|p| p.passed),
        profiles,
        sites: site_verdicts,
        series,
        events,
        chair,
        swarm_cost: cost,
        duration_ms,
        rollcall: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{AudioReport, VideoReport};

    const MINIMAL: &str = "name = \"t\"\nsites = 10\nduration_s = 20\nmix = \"fibre:50,vsat:50\"\n";

    #[test]
    fn a_full_scenario_parses() {
        let s = Scenario::from_toml_str(&format!(
            "{MINIMAL}join_spread_s = 5\nseed = 9\n[chair]\nprofile = \"adsl\"\nvideo_kbps = 300\n\
             [[event]]\nat_s = 10\nchange = \"rate\"\nkbps = 250\ndirection = \"down\"\nshare = 0.5\nprofiles = [\"vsat\"]\n\
             [[event]]\nat_s = 15\nchange = \"outage\"\nduration_s = 2.5\n\
             [[event]]\nat_s = 18\nchange = \"profile\"\nname = \"3g\"\n\
             [thresholds]\naudio_continuity_min = 0.99\nfirst_frame_max_ms = 3000\n\
             [profile_thresholds.vsat]\naudio_continuity_min = 0.9\n"
        ))
        .unwrap();
        assert_eq!((s.sites, s.seed, s.join_spread), (10, 9, Duration::from_secs(5)));
        let (profile, chair) = s.chair.as_ref().unwrap();
        assert_eq!((profile.as_str(), chair.video_kbps, chair.fps), ("adsl", 300, 15));
        assert_eq!(s.events.len(), 3);
        assert_eq!(s.events[0].change, Change::Rate { dir: Some(Direction::Down), kbps: Some(250), queue_ms: None });
        assert_eq!(s.events[0].share, 0.5);
        assert_eq!(s.events[1].change, Change::Outage { dir: None, duration: Some(Duration::from_millis(2500)) });
        assert_eq!(s.thresholds_for("vsat").audio_continuity_min, Some(0.9));
        assert_eq!(s.thresholds_for("vsat").first_frame_max_ms, Some(3000.0));
        assert_eq!(s.thresholds_for("fibre").audio_continuity_min, Some(0.99));
    }

    #[test]
    fn bad_scenarios_name_what_is_wrong() {
        for (extra, what) in [
            ("bogus = 1\n", "bogus"),
            ("[[event]]\nat_s = 1\nchange = \"rate\"\n", "needs kbps"),
            ("[[event]]\nat_s = 1\nchange = \"rate\"\nkbps = 100\nloss = 0.1\n", "`loss` does not apply"),
            ("[[event]]\nat_s = 1\nchange = \"warp\"\n", "warp"),
            ("[[event]]\nat_s = 1\nchange = \"loss\"\nloss = 2.0\n", "not within 0..=1"),
            ("[[event]]\nat_s = 99\nchange = \"recover\"\n", "after the end"),
            ("[[event]]\nat_s = 1\nchange = \"recover\"\nprofiles = [\"3g\"]\n", "not in the mix"),
            ("[[event]]\nat_s = 1\nchange = \"recover\"\nshare = 1.5\n", "share"),
            ("[[event]]\nat_s = -1\nchange = \"recover\"\n", "at_s"),
            ("[[event]]\nat_s = 1\nchange = \"profile\"\nname = \"moon\"\n", "moon"),
            ("[thresholds]\naudio_continuity_min = 1.5\n", "audio_continuity_min"),
            ("[profile_thresholds.edge]\n", "edge"),
            ("[chair]\nprofile = \"moon\"\n", "chair.profile"),
            ("[chair]\nfps = 0\n", "chair.fps"),
        ] {
            let e = Scenario::from_toml_str(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
            assert!(e.contains(what), "{extra:?} → {e}");
        }
        for (text, what) in [
            ("name = \"t\"\nsites = 0\nduration_s = 20\nmix = \"fibre:100\"\n", "sites = 0"),
            ("name = \"t\"\nsites = 5\nduration_s = 20\nmix = \"fibre:90\"\n", "90%"),
            ("name = \"t\"\nsites = 5\nduration_s = 20\nmix = \"moon:100\"\n", "moon"),
            ("name = \"t\"\nsites = 5\nduration_s = 20\njoin_spread_s = 30\nmix = \"fibre:100\"\n", "join_spread_s"),
            ("name = \"\"\nsites = 5\nduration_s = 20\nmix = \"fibre:100\"\n", "name"),
            ("sites = 5\nduration_s = 20\nmix = \"fibre:100\"\n", "name"),
        ] {
            let e = Scenario::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(what), "{text:?} → {e}");
        }
    }

    fn site(profile: &str, continuity: f64, gap: f64, ttff: Option<f64>) -> SiteReport {
        SiteReport {
            profile: profile.into(),
            connected: true,
            first_frame_ms: ttff,
            audio: AudioReport { continuity: Some(continuity), longest_gap_ms: Some(gap), ..AudioReport::default() },
            video: VideoReport {
                watch_ms: 10_000.0,
                freeze_ms: 50.0,
                freeze_share: 0.005,
                fps: 15.0,
                ..VideoReport::default()
            },
            loss_after_repair: 0.001,
            ..SiteReport::default()
        }
    }

    #[test]
    fn sites_and_profiles_are_judged_against_their_thresholds() {
        let th = Thresholds {
            connected_min: Some(1.0),
            first_frame_max_ms: Some(2000.0),
            audio_continuity_min: Some(0.99),
            audio_gap_max_ms: Some(200.0),
            freeze_share_max: Some(0.01),
            loss_after_repair_max: Some(0.01),
            fps_min: Some(7.5),
        };
        let mut slow = site("vsat", 0.999, 60.0, Some(800.0));
        slow.video.fps = 3.75;
        assert_eq!(judge_site(slow, &th).failed, vec!["fps"]);
        let good = judge_site(site("3g", 0.999, 60.0, Some(800.0)), &th);
        assert!(good.passed, "{good:?}");
        let bad = judge_site(site("3g", 0.95, 400.0, None), &th);
        assert_eq!(bad.failed, vec!["first_frame_ms", "audio_continuity", "audio_gap_ms"]);
        let offline = judge_site(SiteReport { profile: "3g".into(), ..SiteReport::default() }, &th);
        assert!(offline.failed.contains(&"connected".to_owned()), "{offline:?}");
        // No threshold, no check: an empty table passes anything that happened.
        assert!(judge_site(site("3g", 0.1, 9999.0, None), &Thresholds::default()).passed);

        let sites = [site("3g", 0.999, 60.0, Some(800.0)), site("3g", 0.985, 120.0, Some(900.0))];
        let summary = crate::swarm::summarize("3g", sites.iter());
        let v = judge_profile(summary.clone(), &th, 1);
        let failed: Vec<&str> = v.checks.iter().filter(|c| !c.passed).map(|c| c.measure.as_str()).collect();
        assert_eq!(failed, Vec::<&str>::new(), "mean 0.992 ≥ 0.99: {v:?}");
        assert!(v.passed);
        let strict = Thresholds { audio_continuity_min: Some(0.995), ..th };
        let v = judge_profile(summary, &strict, 1);
        assert!(!v.passed);
        let c = v.checks.iter().find(|c| c.measure == "audio_continuity_mean").unwrap();
        assert!(!c.passed && (c.value.unwrap() - 0.992).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn the_shipped_drills_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/drills");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(Some(s.name.as_str()), path.file_stem().and_then(|n| n.to_str()), "name = file name");
                names.push(s.name);
            }
        }
        names.sort();
        for want in ["join-storm", "link-drop", "rural-mix", "vsat-day"] {
            assert!(names.iter().any(|n| n == want), "config/drills/{want}.toml missing: {names:?}");
        }
    }
}
