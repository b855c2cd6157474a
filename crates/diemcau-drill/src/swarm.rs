//! [`Swarm`]: N synthetic sites joining one meeting through the real signalling, each behind its own emulated link,
//! for a fixed duration, then a [`SwarmReport`].
//!
//! Threads and polling (the packet path):
//! - Sites are spread over `threads` OS threads (site `i` on thread `i % threads`). Each thread owns its sites'
//!   `SyntheticSite`s and their UDP sockets (one per site: the bridge tells peers apart by source address) and runs
//!   one `mio::Poll` (epoll) over all of them: a readiness event names the site by its token, the thread drains that
//!   socket to `WouldBlock` (edge-triggered), feeds each datagram to the site, sends what the site's link lets up,
//!   and reschedules it. Timeouts (the `Rtc`'s, the link's deliveries, the publisher's frames) are a min-heap of
//!   `(Instant, site)` with lazy deletion, as in the bridge's shards. The clock is read once per turn.
//! - No task, future or channel per site or per packet; no lock on the packet path. Per-site figures for the
//!   signalling (`stats`) are published once a second through atomics.
//! - Signalling runs as one async task per site on the caller's tokio runtime: it is a few messages per site per
//!   second. A site is built (offer) and given its answer there, then handed to its thread through a channel and a
//!   `mio::Waker`; a bridge `offer` later goes the same way with a reply channel.
//!
//! The CPU time of the media threads (from `/proc/thread-self/schedstat`) is measured and reported per received RTP
//! packet and per site-second ([`CostReport`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use diemcau_netem::{Change, Profile, Step, Timeline};
use diemcau_proto::{ClientMsg, ClientStats, Role, ServerMsg};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::DrillError;
use crate::metrics::{SiteReport, Snapshot};
use crate::publisher::PublisherConfig;
use crate::signal::{SignalClient, Welcome};
use crate::site::{Datagram, SiteConfig, SyntheticSite};

const WAKER: Token = Token(usize::MAX);
/// How often the media threads publish per-site figures and the runner reports progress.
const TICK: Duration = Duration::from_secs(1);
/// How often a site sends `stats` (as the web client).
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How often a site sends `ping` (as the web client).
const PING_EVERY: Duration = Duration::from_secs(10);

/// What a swarm does.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The bridge's WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`.
    pub ws_url: String,
    /// One site per token: `(site id, join token)`. The role is the token's.
    pub tokens: Vec<(i64, String)>,
    /// Link presets and the percentage of sites behind each, e.g. `[("fibre", 50), ("3g", 50)]` (adds up to 100).
    pub mix: Vec<(String, u32)>,
    /// Sites publish synthetic camera and microphone ([`Self::publisher`]); otherwise they only receive.
    pub publish: bool,
    /// From the start of the swarm to the report.
    pub duration: Duration,
    /// Media threads.
    pub threads: usize,
    /// Seeds the profile assignment, the links and the publishers: the same seed replays the same drill.
    pub seed: u64,
    /// Join times are spread evenly over this.
    pub join_spread: Duration,
    /// What a publishing site sends.
    pub publisher: PublisherConfig,
    /// Scripted link changes, from each site's join start.
    pub timeline: Timeline,
    /// Link changes at times from the start of the swarm, each for a share of the sites (drills).
    pub events: Vec<LinkEvent>,
    /// The address the sites' sockets bind to (their ICE host candidate): loopback by default.
    pub bind_ip: IpAddr,
    /// Whose signalling the sites speak.
    pub backend: Backend,
    /// `Some(d)`: the media threads sleep up to `d` between turns instead of blocking in `epoll_wait` (see
    /// [`DEFAULT_TURN`]); `None`: they block, and every datagram can wake them.
    pub turn: Option<Duration>,
    /// Roll call: how long after being called each site (by token index) presses "Có mặt"; `None`, or an index past
    /// the end: it never answers.
    pub answers: Vec<Option<Duration>>,
    /// Sites connect media (a peer connection: offer, ICE, DTLS); `false`: signalling only (roll-call drills at a
    /// scale whose media one machine cannot carry beside the bridge).
    pub media: bool,
}

/// Whose signalling a swarm speaks.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// diemcau's `/ws`, one token per site (what browsers do).
    #[default]
    Diemcau,
    /// Janus' VideoRoom over its WebSocket API (`ws_url`, e.g. `ws://10.77.0.2:8188`), for the fan-out benchmark's
    /// comparison: a publishing site joins `room` as a publisher and stores its feed id in `feed`; a receiving site
    /// waits for `feed` (10 s at most) and subscribes to it, answering Janus' offer. Token strings are not used.
    Janus {
        /// The VideoRoom room.
        room: u64,
        /// The publisher's feed id, set by the publishing swarm, read by the subscribing one.
        feed: Arc<std::sync::OnceLock<u64>>,
    },
}

/// Media threads poll every millisecond rather than wait for each datagram. On one machine, a thread blocked in
/// `epoll_wait` on the sites' sockets makes every datagram the bridge sends to them wake it across cores (an
/// inter-processor interrupt, expensive in a VM): the bridge's `sendto` then cost ≈ 7 µs instead of ≈ 1 µs, and the
/// benchmark would charge the bridge for the test rig. Receive times are then known to 1 ms, far below what the
/// metrics resolve (500 ms freezes, 20 ms audio slots).
pub const DEFAULT_TURN: Duration = Duration::from_millis(1);

impl SwarmConfig {
    /// Receive-only sites on fibre for 30 s, one thread, all joining at once.
    pub fn new(ws_url: impl Into<String>, tokens: Vec<(i64, String)>) -> Self {
        Self {
            ws_url: ws_url.into(),
            tokens,
            mix: vec![("fibre".into(), 100)],
            publish: false,
            duration: Duration::from_secs(30),
            threads: 1,
            seed: 1,
            join_spread: Duration::ZERO,
            publisher: PublisherConfig::default(),
            timeline: Timeline::default(),
            events: Vec::new(),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            turn: Some(DEFAULT_TURN),
            backend: Backend::Diemcau,
            answers: Vec::new(),
            media: true,
        }
    }
}

/// A link change at a time from the start of the swarm, applied to a share of the sites (chosen with the swarm's
/// seed, so a drill replays the same way) behind some presets.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEvent {
    /// From the start of the swarm. A site that joins later gets the change as soon as it joins.
    pub at: Duration,
    /// What changes on each chosen site's link.
    pub change: Change,
    /// Share of the eligible sites, `0..=1`.
    pub share: f64,
    /// Presets whose sites are eligible; empty: all.
    pub profiles: Vec<String>,
}

/// Where a swarm's [`LinkEvent`] landed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventReport {
    /// From the start of the swarm, ms.
    pub at_ms: f64,
    /// The change, in words.
    pub change: String,
    /// The presets it was for (empty: all).
    pub profiles: Vec<String>,
    /// Sites it was applied to.
    pub sites: usize,
}

/// One second of one preset's sites, summed over them (see [`ProfileSeries`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Seconds from the start of the swarm (the end of the second measured).
    pub t_s: u32,
    /// Sites that had joined (their media running).
    pub joined: u32,
    /// Of which connected.
    pub connected: u32,
    /// Of which had decoded a frame.
    pub watching: u32,
    /// Of which had no new frame for over 500 ms (frozen).
    pub frozen: u32,
    /// Of which had received audio.
    pub hearing: u32,
    /// Mean receive rate over the connected sites, kbit/s (RTP payload).
    pub kbps_mean: f64,
    /// Mean decoded frames per second over the watching sites.
    pub fps_mean: f64,
    /// Audio packets received over those expected (20 ms each) by the hearing sites.
    pub audio_continuity: Option<f64>,
    /// Sites by the height of the layer they decode (the last keyframe's), e.g. `{"360": 40}`.
    pub layers: BTreeMap<u16, u32>,
}

/// A preset's time series, one point per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProfileSeries {
    /// The preset.
    pub profile: String,
    /// One per second from the start, in order.
    pub points: Vec<SeriesPoint>,
}

/// Sums of one second of one preset on one media thread.
#[derive(Debug, Clone, Default)]
struct Bucket {
    joined: u32,
    connected: u32,
    watching: u32,
    frozen: u32,
    hearing: u32,
    kbps_sum: f64,
    fps_sum: f64,
    audio_packets: f64,
    audio_expected: f64,
    layers: BTreeMap<u16, u32>,
}

impl Bucket {
    fn merge(&mut self, o: &Bucket) {
        self.joined += o.joined;
        self.connected += o.connected;
        self.watching += o.watching;
        self.frozen += o.frozen;
        self.hearing += o.hearing;
        self.kbps_sum += o.kbps_sum;
        self.fps_sum += o.fps_sum;
        self.audio_packets += o.audio_packets;
        self.audio_expected += o.audio_expected;
        for (h, n) in &o.layers {
            *self.layers.entry(*h).or_default() += n;
        }
    }

    fn point(&self, t_s: u32) -> SeriesPoint {
        let mean = |sum: f64, n: u32| if n > 0 { sum / f64::from(n) } else { 0.0 };
        SeriesPoint {
            t_s,
            joined: self.joined,
            connected: self.connected,
            watching: self.watching,
            frozen: self.frozen,
            hearing: self.hearing,
            kbps_mean: mean(self.kbps_sum, self.connected),
            fps_mean: mean(self.fps_sum, self.watching),
            audio_continuity: (self.audio_expected > 0.0).then(|| (self.audio_packets / self.audio_expected).min(1.0)),
            layers: self.layers.clone(),
        }
    }
}

/// When site `i` of `n` starts to join.
fn join_offset(i: usize, n: usize, spread: Duration) -> Duration {
    if n > 1 { spread.mul_f64(i as f64 / n as f64) } else { Duration::ZERO }
}

/// Describes a change for reports.
fn describe(change: &Change) -> String {
    let dir = |d: &Option<diemcau_netem::Direction>| match d {
        Some(diemcau_netem::Direction::Up) => " (up)",
        Some(diemcau_netem::Direction::Down) => " (down)",
        None => "",
    };
    match change {
        Change::Profile(_) => "new link profile".to_owned(),
        Change::Rate { dir: d, kbps: Some(k), queue_ms: Some(q) } => format!("rate {k} kbit/s, queue {q} ms{}", dir(d)),
        Change::Rate { dir: d, kbps: Some(k), .. } => format!("rate {k} kbit/s{}", dir(d)),
        Change::Rate { dir: d, kbps: None, .. } => format!("rate unlimited{}", dir(d)),
        Change::Loss { dir: d, loss } => format!("loss {:.1}%{}", loss * 100.0, dir(d)),
        Change::Outage { dir: d, duration: Some(t) } => format!("outage {:.1} s{}", t.as_secs_f64(), dir(d)),
        Change::Outage { dir: d, duration: None } => format!("outage{}", dir(d)),
        Change::Recover { dir: d } => format!("recover{}", dir(d)),
    }
}

/// Which preset of `mix` (an index into it) each of `n` sites gets: by largest remainder, so the counts add up to
/// `n`, then shuffled with `seed` so that join order interleaves the presets. A drill gives the sites its directory
/// link hints from the same assignment.
pub fn assign_presets(mix: &[(String, u32)], n: usize, seed: u64) -> Vec<usize> {
    let mut counts: Vec<(usize, usize, u64)> = mix
        .iter()
        .enumerate()
        .map(|(i, (_, pct))| {
            let exact = n as u64 * u64::from(*pct);
            (i, (exact / 100) as usize, exact % 100)
        })
        .collect();
    let mut left = n.saturating_sub(counts.iter().map(|c| c.1).sum::<usize>());
    let mut by_rest: Vec<usize> = (0..counts.len()).collect();
    by_rest.sort_by_key(|&i| (Reverse(counts[i].2), i));
    for i in by_rest {
        if left == 0 {
            break;
        }
        counts[i].1 += 1;
        left -= 1;
    }
    let mut which: Vec<usize> = counts.iter().flat_map(|&(i, c, _)| std::iter::repeat_n(i, c)).collect();
    which.shuffle(&mut StdRng::seed_from_u64(seed));
    which
}

/// Parses a mix such as `fibre:50,3g:50`.
pub fn parse_mix(text: &str) -> Result<Vec<(String, u32)>, DrillError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|part| {
            let (name, pct) = part
                .split_once(':')
                .ok_or_else(|| DrillError::Config(format!("mix entry `{part}`: expected PRESET:PERCENT")))?;
            let pct =
                pct.trim().trim_end_matches('%').parse::<u32>().map_err(|_| {
                    DrillError::Config(format!("mix entry `{part}`: the percentage is not a whole number"))
                })?;
            Ok((name.trim().to_owned(), pct))
        })
        .collect()
}

/// Progress, reported once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Since the swarm started.
    pub elapsed: Duration,
    /// Sites in the swarm.
    pub sites: usize,
    /// Sites that have their answer (signalling done).
    pub joined: usize,
    /// Sites with ICE and DTLS up.
    pub connected: usize,
    /// Sites that decoded video.
    pub receiving_video: usize,
    /// Sites that failed to join.
    pub failed: usize,
}

impl std::fmt::Display for Progress {
    /// `joined 180/200, connected 178, receiving video 170, failed 0` (the elapsed time is the caller's to show).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "joined {}/{}, connected {}, receiving video {}, failed {}",
            self.joined, self.sites, self.connected, self.receiving_video, self.failed
        )
    }
}

/// Aggregates over the sites behind one link preset.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProfileSummary {
    /// The preset.
    pub profile: String,
    /// Sites behind it.
    pub sites: usize,
    /// Of which connected.
    pub connected: usize,
    /// Of which decoded video.
    pub with_video: usize,
    /// Of which received audio.
    pub with_audio: usize,
    /// Median time to first frame, ms, over the sites with video.
    pub first_frame_median_ms: Option<f64>,
    /// 95th percentile (nearest rank) of the time to first frame, ms.
    pub first_frame_p95_ms: Option<f64>,
    /// Mean audio continuity over the sites with audio.
    pub audio_continuity_mean: Option<f64>,
    /// The longest audio gap of any site, ms.
    pub audio_worst_gap_ms: Option<f64>,
    /// Total freeze time over total watch time.
    pub freeze_share: f64,
    /// Mean frames decoded per second of watching, over the sites with video.
    pub fps_mean: Option<f64>,
    /// The lowest of the sites' frames per second.
    pub fps_min: Option<f64>,
    /// Mean of the sites' loss after repair.
    pub loss_after_repair_mean: f64,
}

/// What the media threads cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostReport {
    /// Media threads.
    pub threads: usize,
    /// CPU time of the media threads, ms (`None` where `/proc/thread-self/schedstat` cannot be read).
    pub cpu_ms: Option<f64>,
    /// RTP packets received by all sites.
    pub rtp_packets: u64,
    /// UDP datagrams received by all sites (RTP, RTCP, STUN, DTLS).
    pub datagrams_in: u64,
    /// UDP datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams the socket would not take (`WouldBlock`) or refused.
    pub send_errors: u64,
    /// Times the media threads woke up (one `epoll_wait` each).
    pub wakeups: u64,
    /// Site timeouts handled (link deliveries, `Rtc` timers, publisher frames).
    pub site_timeouts: u64,
    /// `cpu_ms / rtp_packets`, µs.
    pub cpu_us_per_rtp_packet: Option<f64>,
    /// CPU per site per second of the run, ms/s (‰ of a core).
    pub cpu_ms_per_site_second: Option<f64>,
}

impl std::fmt::Display for CostReport {
    /// One line: CPU, packets and datagrams, wake-ups, then µs per received RTP packet and ms per site-second.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        write!(
            f,
            "{:.1} ms CPU on {} media thread(s) for {} RTP packets ({} datagrams in, {} out; {} wakeups, {} site \
             timeouts): {:.2} µs per received RTP packet, {:.3} ms per site-second",
            v(self.cpu_ms),
            self.threads,
            self.rtp_packets,
            self.datagrams_in,
            self.datagrams_out,
            self.wakeups,
            self.site_timeouts,
            v(self.cpu_us_per_rtp_packet),
            v(self.cpu_ms_per_site_second)
        )
    }
}

/// The outcome of a swarm.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwarmReport {
    /// From start to report, ms.
    pub duration_ms: f64,
    /// One per token, in token order.
    pub sites: Vec<SiteReport>,
    /// Per link preset, in mix order.
    pub profiles: Vec<ProfileSummary>,
    /// What the media threads cost.
    pub cost: CostReport,
    /// Per link preset (mix order), one point per second.
    pub series: Vec<ProfileSeries>,
    /// The link events and the sites each was applied to.
    pub events: Vec<EventReport>,
}

/// A swarm, validated and ready to run.
#[derive(Debug)]
pub struct Swarm {
    cfg: SwarmConfig,
    /// Per site: the preset's name and profile.
    assignment: Vec<(String, Profile)>,
    /// Per site: its timeline (the common one plus the events that chose it).
    timelines: Vec<Timeline>,
    /// Per event: where it landed.
    events: Vec<EventReport>,
}

struct SitePlan {
    global: usize,
    site_id: i64,
    token: String,
    profile_name: String,
    profile_index: usize,
    profile: Profile,
    timeline: Timeline,
    seed: u64,
    at: Duration,
}

/// Per-site figures the media thread publishes for the site's `stats` messages.
#[derive(Debug, Default)]
struct SiteShared {
    frames: AtomicU64,
    audio_samples: AtomicU64,
    lost: AtomicU64,
    kbps_in: AtomicU64,
}

#[derive(Debug, Default)]
struct Counters {
    joined: AtomicUsize,
    connected: AtomicUsize,
    receiving: AtomicUsize,
    failed: AtomicUsize,
}

struct NewSite {
    global: usize,
    profile: usize,
    site: SyntheticSite,
    socket: std::net::UdpSocket,
    shared: Arc<SiteShared>,
}

enum ThreadCmd {
    Add(Box<NewSite>),
    Offer { global: usize, sdp: String, reply: oneshot::Sender<Result<String, DrillError>> },
    Candidate { global: usize, candidate: String },
    Stop,
}

#[derive(Clone)]
struct ThreadHandle {
    tx: mpsc::Sender<ThreadCmd>,
    waker: Arc<Waker>,
}

impl ThreadHandle {
    fn send(&self, cmd: ThreadCmd) -> Result<(), DrillError> {
        self.tx.send(cmd).map_err(|_| DrillError::Stopped)?;
        self.waker.wake().map_err(DrillError::Io)
    }
}

#[derive(Debug, Default)]
struct ThreadResult {
    reports: Vec<(usize, SiteReport)>,
    cpu: Option<Duration>,
    rtp_packets: u64,
    datagrams_in: u64,
    datagrams_out: u64,
    send_errors: u64,
    wakeups: u64,
    site_timeouts: u64,
    /// Per preset (mix order), per second from the start.
    buckets: Vec<Vec<Bucket>>,
}

struct SessionOutcome {
    global: usize,
    role: Option<Role>,
    error: Option<String>,
    /// The bridge's last `audio_only` notice.
    audio_only: Option<bool>,
}

impl Swarm {
    /// Validates the configuration and assigns a link preset to every site.
    pub fn new(cfg: SwarmConfig) -> Result<Self, DrillError> {
        if cfg.tokens.is_empty() {
            return Err(DrillError::Config("no sites: give at least one token".into()));
        }
        if cfg.threads == 0 {
            return Err(DrillError::Config("threads must be at least 1".into()));
        }
        if cfg.duration.is_zero() {
            return Err(DrillError::Config("the duration must be above zero".into()));
        }
        if cfg.mix.is_empty() {
            return Err(DrillError::Config("the link mix is empty".into()));
        }
        let total: u32 = cfg.mix.iter().map(|(_, p)| *p).sum();
        if total != 100 {
            return Err(DrillError::Config(format!("the link mix adds up to {total}%, not 100%")));
        }
        cfg.timeline.validate()?;
        let mut profiles = Vec::with_capacity(cfg.mix.len());
        for (name, _) in &cfg.mix {
            profiles.push(Profile::preset(name)?);
        }
        let which = assign_presets(&cfg.mix, cfg.tokens.len(), cfg.seed);
        let n = cfg.tokens.len();
        let assignment: Vec<(String, Profile)> =
            which.into_iter().map(|i| (cfg.mix[i].0.clone(), profiles[i].clone())).collect();

        // Events: each picks its share of the eligible sites with the seed and lands on their own timelines, at its
        // time less the site's join offset.
        let mut per_site: Vec<Vec<Step>> = vec![cfg.timeline.steps().to_vec(); n];
        let mut events = Vec::with_capacity(cfg.events.len());
        let mut rng = StdRng::seed_from_u64(splitmix(cfg.seed ^ 0x6576_656e_7473));
        for (k, ev) in cfg.events.iter().enumerate() {
            if !(0.0..=1.0).contains(&ev.share) {
                return Err(DrillError::Config(format!("event {}: share {} is not within 0..=1", k + 1, ev.share)));
            }
            for p in &ev.profiles {
                if !cfg.mix.iter().any(|(name, _)| name == p) {
                    return Err(DrillError::Config(format!(
                        "event {}: profile `{p}` is not in the mix ({})",
                        k + 1,
                        cfg.mix.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            let mut eligible: Vec<usize> = (0..n)
                .filter(|&i| ev.profiles.is_empty() || ev.profiles.iter().any(|p| *p == assignment[i].0))
                .collect();
            eligible.shuffle(&mut rng);
            let take = (ev.share * eligible.len() as f64).round() as usize;
            for &i in &eligible[..take.min(eligible.len())] {
                let at = ev.at.saturating_sub(join_offset(i, n, cfg.join_spread));
                per_site[i].push(Step { at, change: ev.change.clone() });
            }
            events.push(EventReport {
                at_ms: ev.at.as_secs_f64() * 1000.0,
                change: describe(&ev.change),
                profiles: ev.profiles.clone(),
                sites: take.min(eligible.len()),
            });
        }
        let timelines: Vec<Timeline> = per_site.into_iter().map(Timeline::new).collect();
        for t in &timelines {
            t.validate()?;
        }
        Ok(Self { cfg, assignment, timelines, events })
    }

    /// Where each event landed (sites per event), known before the run.
    pub fn events(&self) -> &[EventReport] {
        &self.events
    }

    /// The preset each site will run behind, in token order.
    pub fn assignment(&self) -> impl Iterator<Item = &str> {
        self.assignment.iter().map(|(n, _)| n.as_str())
    }

    /// Runs the swarm on the current tokio runtime (for signalling) and `threads` media threads, calling `progress`
    /// once a second, and returns the report at the end of the duration.
    pub async fn run(self, mut progress: impl FnMut(&Progress)) -> Result<SwarmReport, DrillError> {
        let Swarm { cfg, assignment, timelines, events } = self;
        let n = cfg.tokens.len();
        let names: Vec<String> = assignment.iter().map(|(name, _)| name.clone()).collect();
        let counters = Arc::new(Counters::default());
        let started = Instant::now();

        let mut threads = Vec::with_capacity(cfg.threads);
        for t in 0..cfg.threads {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            let (done_tx, done_rx) = oneshot::channel();
            let c = counters.clone();
            let profiles = cfg.mix.len();
            let turn = cfg.turn;
            std::thread::Builder::new().name(format!("diemcau-swarm-{t}")).spawn(move || {
                let res = media_thread(poll, rx, c, started, profiles, turn);
                let _ = done_tx.send(res);
            })?;
            threads.push((ThreadHandle { tx, waker }, done_rx));
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = Vec::with_capacity(n);
        for (global, (((site_id, token), (profile_name, profile)), timeline)) in
            cfg.tokens.iter().zip(assignment).zip(timelines).enumerate()
        {
            let profile_index = cfg.mix.iter().position(|(name, _)| *name == profile_name).unwrap_or(0);
            let plan = SitePlan {
                global,
                site_id: *site_id,
                token: token.clone(),
                profile_name,
                profile_index,
                profile,
                timeline,
                seed: splitmix(cfg.seed.wrapping_add(global as u64)),
                at: join_offset(global, n, cfg.join_spread),
            };
            let ctx = SessionCtx {
                backend: cfg.backend.clone(),
                ws_url: cfg.ws_url.clone(),
                publish: cfg.publish.then(|| cfg.publisher.clone()),
                bind_ip: cfg.bind_ip,
                thread: threads[global % cfg.threads].0.clone(),
                counters: counters.clone(),
                stop: stop_rx.clone(),
                started,
                answer: cfg.answers.get(global).copied().flatten(),
                media: cfg.media,
            };
            sessions.push(tokio::spawn(session(plan, ctx)));
        }

        let end = started + cfg.duration;
        let mut tick = tokio::time::interval_at((started + TICK).into(), TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let p = Progress {
                        elapsed: started.elapsed(),
                        sites: n,
                        joined: counters.joined.load(Ordering::Relaxed),
                        connected: counters.connected.load(Ordering::Relaxed),
                        receiving_video: counters.receiving.load(Ordering::Relaxed),
                        failed: counters.failed.load(Ordering::Relaxed),
                    };
                    progress(&p);
                }
                _ = tokio::time::sleep_until(end.into()) => break,
            }
        }

        // Measurements end now: stop the media threads first, then close the WebSockets.
        let mut results = Vec::with_capacity(threads.len());
        for (handle, _) in &threads {
            let _ = handle.send(ThreadCmd::Stop);
        }
        for (_, done) in threads {
            match tokio::time::timeout(Duration::from_secs(10), done).await {
                Ok(Ok(r)) => results.push(r),
                _ => warn!("a media thread did not report"),
            }
        }
        let duration = started.elapsed();
        let _ = stop_tx.send(true);
        let mut outcomes = Vec::with_capacity(n);
        for s in sessions {
            if let Ok(Ok(o)) = tokio::time::timeout(Duration::from_secs(5), s).await {
                outcomes.push(o);
            }
        }
        let mut report = build_report(&cfg, &names, duration, results, outcomes);
        report.events = events;
        Ok(report)
    }
}

fn build_report(
    cfg: &SwarmConfig,
    names: &[String],
    duration: Duration,
    results: Vec<ThreadResult>,
    outcomes: Vec<SessionOutcome>,
) -> SwarmReport {
    let n = cfg.tokens.len();
    let mut sites: Vec<Option<SiteReport>> = vec![None; n];
    let mut cost = CostReport { threads: cfg.threads, ..CostReport::default() };
    let mut cpu = Some(Duration::ZERO);
    let mut buckets: Vec<Vec<Bucket>> = vec![Vec::new(); cfg.mix.len()];
    for r in results {
        for (p, series) in r.buckets.iter().enumerate() {
            let Some(into) = buckets.get_mut(p) else { continue };
            if into.len() < series.len() {
                into.resize(series.len(), Bucket::default());
            }
            for (a, b) in into.iter_mut().zip(series) {
                a.merge(b);
            }
        }
        for (g, rep) in r.reports {
            if let Some(s) = sites.get_mut(g) {
                *s = Some(rep);
            }
        }
        cpu = cpu.zip(r.cpu).map(|(a, b)| a + b);
        cost.rtp_packets += r.rtp_packets;
        cost.datagrams_in += r.datagrams_in;
        cost.datagrams_out += r.datagrams_out;
        cost.send_errors += r.send_errors;
        cost.wakeups += r.wakeups;
        cost.site_timeouts += r.site_timeouts;
    }
    let mut sites: Vec<SiteReport> = sites
        .into_iter()
        .enumerate()
        .map(|(g, s)| {
            s.unwrap_or_else(|| SiteReport {
                site_id: cfg.tokens[g].0,
                error: Some("did not join before the end".into()),
                ..SiteReport::default()
            })
        })
        .collect();
    for o in outcomes {
        let Some(s) = sites.get_mut(o.global) else { continue };
        s.told_audio_only = o.audio_only;
        if let Some(role) = o.role
            && s.role.is_empty()
        {
            s.role = role.as_str().to_owned();
        }
        if let Some(e) = o.error {
            s.error = Some(e);
        }
    }
    // Sites that never reached a media thread still have a profile.
    for (s, name) in sites.iter_mut().zip(names) {
        if s.profile.is_empty() {
            s.profile.clone_from(name);
        }
    }
    let secs = duration.as_secs_f64();
    if let Some(cpu) = cpu {
        let ms = cpu.as_secs_f64() * 1000.0;
        cost.cpu_ms = Some(ms);
        cost.cpu_us_per_rtp_packet = (cost.rtp_packets > 0).then(|| ms * 1000.0 / cost.rtp_packets as f64);
        cost.cpu_ms_per_site_second = (secs > 0.0).then(|| ms / n as f64 / secs);
    }
    let profiles =
        cfg.mix.iter().map(|(name, _)| summarize(name, sites.iter().filter(|s| &s.profile == name))).collect();
    let series = cfg
        .mix
        .iter()
        .zip(buckets)
        .map(|((name, _), b)| ProfileSeries {
            profile: name.clone(),
            // Bucket k holds the second that ended at k s; bucket 0 is empty.
            points: b.iter().enumerate().skip(1).map(|(k, b)| b.point(k as u32)).collect(),
        })
        .collect();
    SwarmReport { duration_ms: secs * 1000.0, sites, profiles, cost, series, events: Vec::new() }
}

/// Aggregates the reports of the sites behind one preset.
pub fn summarize<'a>(profile: &str, sites: impl Iterator<Item = &'a SiteReport>) -> ProfileSummary {
    let sites: Vec<&SiteReport> = sites.collect();
    let mut ttff: Vec<f64> = sites.iter().filter_map(|s| s.first_frame_ms).collect();
    ttff.sort_by(f64::total_cmp);
    let continuity: Vec<f64> = sites.iter().filter_map(|s| s.audio.continuity).collect();
    let (freeze, watch) = sites.iter().fold((0.0, 0.0), |(f, w), s| (f + s.video.freeze_ms, w + s.video.watch_ms));
    let fps: Vec<f64> = sites.iter().filter(|s| s.video.watch_ms > 0.0).map(|s| s.video.fps).collect();
    ProfileSummary {
        profile: profile.to_owned(),
        sites: sites.len(),
        connected: sites.iter().filter(|s| s.connected).count(),
        with_video: ttff.len(),
        with_audio: continuity.len(),
        first_frame_median_ms: percentile(&ttff, 50.0),
        first_frame_p95_ms: percentile(&ttff, 95.0),
        audio_continuity_mean: (!continuity.is_empty())
            .then(|| continuity.iter().sum::<f64>() / continuity.len() as f64),
        audio_worst_gap_ms: sites.iter().filter_map(|s| s.audio.longest_gap_ms).reduce(f64::max),
        freeze_share: if watch > 0.0 { freeze / watch } else { 0.0 },
        fps_mean: (!fps.is_empty()).then(|| fps.iter().sum::<f64>() / fps.len() as f64),
        fps_min: fps.iter().copied().reduce(f64::min),
        loss_after_repair_mean: if sites.is_empty() {
            0.0
        } else {
            sites.iter().map(|s| s.loss_after_repair).sum::<f64>() / sites.len() as f64
        },
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce5_e9b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct SessionCtx {
    backend: Backend,
    ws_url: String,
    publish: Option<PublisherConfig>,
    bind_ip: IpAddr,
    thread: ThreadHandle,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
    started: Instant,
    /// How long after its call this site answers the roll call (`None`: never).
    answer: Option<Duration>,
    /// Connect media (see [`SwarmConfig::media`]).
    media: bool,
}

/// One site's signalling for the whole run.
async fn session(plan: SitePlan, ctx: SessionCtx) -> SessionOutcome {
    match ctx.backend.clone() {
        Backend::Diemcau => diemcau_session(plan, ctx).await,
        Backend::Janus { room, feed } => janus_session(plan, ctx, room, feed).await,
    }
}

/// One site's life in Janus' VideoRoom: publish (and give the feed id out) or subscribe to the feed, then keep the
/// session (keepalives, trickled candidates) until the end.
async fn janus_session(
    plan: SitePlan,
    ctx: SessionCtx,
    room: u64,
    feed: Arc<std::sync::OnceLock<u64>>,
) -> SessionOutcome {
    let global = plan.global;
    let mut outcome = SessionOutcome { global, role: None, error: None, audio_only: None };
    let mut stop = ctx.stop.clone();
    tokio::select! {
        _ = tokio::time::sleep_until((ctx.started + plan.at).into()) => {}
        _ = stop.changed() => return outcome,
    }
    let join_start = Instant::now();
    let joined = tokio::select! {
        r = janus_join(&plan, &ctx, room, &feed, join_start) => r,
        _ = stop.changed() => Err(DrillError::Stopped),
    };
    let (mut client, handle) = match joined {
        Ok(v) => v,
        Err(e) => {
            debug!(site = plan.site_id, "janus join failed: {e}");
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
            outcome.error = Some(format!("join failed: {e}"));
            return outcome;
        }
    };
    outcome.role = Some(if ctx.publish.is_some() { Role::Chair } else { Role::Site });
    ctx.counters.joined.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            m = client.recv() => match m {
                Ok(crate::janus::Incoming::Trickle(t)) if t.handle == handle => {
                    if let Some(candidate) = t.candidate {
                        let _ = ctx.thread.send(ThreadCmd::Candidate { global, candidate });
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !*ctx.stop.borrow() {
                        outcome.error = Some(e.to_string());
                    }
                    break;
                }
            },
            _ = stop.changed() => {
                let _ = client.destroy().await;
                return outcome;
            }
        }
    }
    let _ = stop.changed().await;
    outcome
}

async fn janus_join(
    plan: &SitePlan,
    ctx: &SessionCtx,
    room: u64,
    feed: &std::sync::OnceLock<u64>,
    join_start: Instant,
) -> Result<(crate::janus::JanusClient, u64), DrillError> {
    let socket = std::net::UdpSocket::bind((ctx.bind_ip, 0))?;
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let mut client = crate::janus::JanusClient::connect(&ctx.ws_url).await?;
    let handle = client.attach().await?;
    let publishing = ctx.publish.is_some();
    let cfg = SiteConfig {
        site_id: plan.site_id,
        role: if publishing { Role::Chair } else { Role::Site },
        profile_name: plan.profile_name.clone(),
        profile: plan.profile.clone(),
        timeline: plan.timeline.clone(),
        seed: plan.seed,
        local_addr,
        publish: ctx.publish.clone(),
        recv_video_slots: 0,
        recv_audio_slots: 0,
    };
    let mut site = if publishing {
        let (mut site, offer) = SyntheticSite::new(Instant::now(), join_start, cfg)?;
        let published = client.publish(handle, room, &format!("site-{}", plan.site_id), &offer).await?;
        site.apply_answer(Instant::now(), &published.answer)?;
        let _ = feed.set(published.feed);
        site
    } else {
        let deadline = Instant::now() + Duration::from_secs(10);
        let feed = loop {
            if let Some(f) = feed.get() {
                break *f;
            }
            if Instant::now() > deadline {
                return Err(DrillError::Signal("no Janus publisher to subscribe to after 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let offer = client.subscribe(handle, room, feed).await?;
        let (site, answer) = SyntheticSite::new_answerer(Instant::now(), join_start, cfg, &offer)?;
        client.start(handle, room, &answer).await?;
        site
    };
    for c in client.take_trickles(handle).into_iter().flatten() {
        if let Err(e) = site.add_remote_candidate(&c) {
            debug!("trickled candidate refused: {e}");
        }
    }
    let shared = Arc::new(SiteShared::default());
    let new = NewSite { global: plan.global, profile: plan.profile_index, site, socket, shared };
    ctx.thread.send(ThreadCmd::Add(Box::new(new)))?;
    Ok((client, handle))
}

/// One site's life in a diemcau meeting.
async fn diemcau_session(plan: SitePlan, mut ctx: SessionCtx) -> SessionOutcome {
    let global = plan.global;
    let mut outcome = SessionOutcome { global, role: None, error: None, audio_only: None };
    tokio::select! {
        _ = tokio::time::sleep_until((ctx.started + plan.at).into()) => {}
        _ = ctx.stop.changed() => return outcome,
    }
    let join_start = Instant::now();
    let mut stop = ctx.stop.clone();
    let joined = tokio::select! {
        r = join(&plan, &ctx, join_start) => r,
        _ = stop.changed() => Err(DrillError::Stopped),
    };
    let (mut client, welcome, shared) = match joined {
        Ok(v) => v,
        Err(e) => {
            debug!(site = plan.site_id, "join failed: {e}");
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
            outcome.error = Some(format!("join failed: {e}"));
            return outcome;
        }
    };
    outcome.role = Some(welcome.role);
    ctx.counters.joined.fetch_add(1, Ordering::Relaxed);
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut ping = tokio::time::interval(PING_EVERY);
    stats.tick().await;
    ping.tick().await;
    // When to press "Có mặt" (after a call arrives, by the plan's delay).
    let mut present_at: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(present_at.unwrap_or(far)), if present_at.is_some() => {
                present_at = None;
                if let Err(e) = client.send(&ClientMsg::Present {}).await {
                    outcome.error = Some(e.to_string());
                    break;
                }
            }
            msg = client.recv() => match msg {
                Ok(ServerMsg::SiteControl { view, .. }) => {
                    let answered = view.result.is_some_and(|r| r.outcome.present());
                    if view.called_until_ms.is_some() && !answered && present_at.is_none()
                        && let Some(d) = ctx.answer
                    {
                        present_at = Some(tokio::time::Instant::now() + d);
                    }
                }
                Ok(ServerMsg::Offer { sdp }) => {
                    let (reply, rx) = oneshot::channel();
                    let answer = match ctx.thread.send(ThreadCmd::Offer { global, sdp, reply }) {
                        Ok(()) => rx.await.unwrap_or(Err(DrillError::Stopped)),
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok(sdp) => {
                            if let Err(e) = client.send(&ClientMsg::Answer { sdp }).await {
                                outcome.error = Some(e.to_string());
                                break;
                            }
                        }
                        Err(e) => warn!(site = plan.site_id, "cannot answer the bridge's offer: {e}"),
                    }
                }
                Ok(ServerMsg::Error { code, message }) => warn!(site = plan.site_id, "bridge error {code}: {message}"),
                Ok(ServerMsg::AudioOnly { on }) => outcome.audio_only = Some(on),
                Ok(_) => {}
                Err(e) => {
                    if !*ctx.stop.borrow() {
                        outcome.error = Some(e.to_string());
                    }
                    break;
                }
            },
            _ = stats.tick() => {
                let kbps = f64::from_bits(shared.kbps_in.load(Ordering::Relaxed));
                let s = ClientStats {
                    frames_decoded: shared.frames.load(Ordering::Relaxed),
                    audio_samples: shared.audio_samples.load(Ordering::Relaxed),
                    packets_lost: shared.lost.load(Ordering::Relaxed) as i64,
                    rtt_ms: None,
                    kbps_in: (kbps > 0.0).then_some(kbps),
                    kbps_out: None,
                    ..ClientStats::default()
                };
                if let Err(e) = client.send(&ClientMsg::Stats(s)).await {
                    outcome.error = Some(e.to_string());
                    break;
                }
            }
            _ = ping.tick() => {
                if let Err(e) = client.send(&ClientMsg::Ping {}).await {
                    outcome.error = Some(e.to_string());
                    break;
                }
            }
            _ = ctx.stop.changed() => {
                client.close().await;
                return outcome;
            }
        }
    }
    // The connection ended early: wait for the end so the outcome is reported with the rest.
    let _ = ctx.stop.changed().await;
    outcome
}

async fn join(
    plan: &SitePlan,
    ctx: &SessionCtx,
    join_start: Instant,
) -> Result<(SignalClient, Welcome, Arc<SiteShared>), DrillError> {
    let socket = std::net::UdpSocket::bind((ctx.bind_ip, 0))?;
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let (mut client, welcome) = SignalClient::connect(&ctx.ws_url, &plan.token).await?;
    if !ctx.media {
        return Ok((client, welcome, Arc::new(SiteShared::default())));
    }
    let chair = welcome.role == Role::Chair;
    let cfg = SiteConfig {
        site_id: plan.site_id,
        role: welcome.role,
        profile_name: plan.profile_name.clone(),
        profile: plan.profile.clone(),
        timeline: plan.timeline.clone(),
        seed: plan.seed,
        local_addr,
        publish: ctx.publish.clone(),
        recv_video_slots: if chair { welcome.grid_size } else { 0 },
        recv_audio_slots: if chair { welcome.audio_slots } else { 0 },
    };
    let (mut site, offer) = SyntheticSite::new(Instant::now(), join_start, cfg)?;
    let answer = client.offer(offer).await?;
    site.apply_answer(Instant::now(), &answer)?;
    let shared = Arc::new(SiteShared::default());
    let new = NewSite { global: plan.global, profile: plan.profile_index, site, socket, shared: shared.clone() };
    ctx.thread.send(ThreadCmd::Add(Box::new(new)))?;
    Ok((client, welcome, shared))
}

struct Slot {
    global: usize,
    profile: usize,
    /// The snapshot at the last tick, and when.
    last: Option<(Instant, Snapshot)>,
    site: SyntheticSite,
    socket: UdpSocket,
    shared: Arc<SiteShared>,
    /// The timer entry that is live in the heap, if any.
    timer: Option<Instant>,
    connected: bool,
    receiving: bool,
}

/// CPU time of the calling thread (Linux: `/proc/thread-self/schedstat`, ns on the CPU).
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

struct MediaThread {
    poll: Poll,
    slots: Vec<Option<Slot>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    out: Vec<Datagram>,
    buf: Vec<u8>,
    counters: Arc<Counters>,
    datagrams_out: u64,
    send_errors: u64,
    site_timeouts: u64,
    started: Instant,
    buckets: Vec<Vec<Bucket>>,
}

fn media_thread(
    poll: Poll,
    rx: mpsc::Receiver<ThreadCmd>,
    counters: Arc<Counters>,
    started: Instant,
    profiles: usize,
    turn: Option<Duration>,
) -> ThreadResult {
    let cpu0 = thread_cpu_time();
    let mut t = MediaThread {
        poll,
        slots: Vec::new(),
        timers: BinaryHeap::new(),
        out: Vec::new(),
        buf: vec![0u8; 2048],
        counters,
        datagrams_out: 0,
        send_errors: 0,
        site_timeouts: 0,
        started,
        buckets: vec![Vec::new(); profiles],
    };
    let mut wakeups = 0u64;
    let mut events = Events::with_capacity(1024);
    // Ticks on whole seconds from the start, so that every thread's second k lands in the same bucket.
    let mut next_tick = started + TICK;
    while next_tick <= Instant::now() {
        next_tick += TICK;
    }
    let mut due = Vec::new();
    'run: loop {
        let now = Instant::now();
        let wake = t.timers.peek().map_or(next_tick, |r| r.0.0.min(next_tick));
        let mut timeout = wake.saturating_duration_since(now);
        if let Some(turn) = turn {
            // Sleep instead of blocking in epoll_wait: a sender (the bridge, on the other core) then finds no thread
            // waiting on our sockets and sends without waking one — as it would towards a network card — and the
            // next turn takes every datagram that arrived meanwhile.
            if !timeout.is_zero() {
                std::thread::sleep(timeout.min(turn));
            }
            timeout = Duration::ZERO;
        }
        if let Err(e) = t.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            warn!("swarm poll failed: {e}");
            break;
        }
        wakeups += 1;
        let now = Instant::now();
        let mut commands = false;
        for ev in &events {
            if ev.token() == WAKER {
                commands = true;
            } else {
                t.readable(ev.token().0, now);
            }
        }
        if commands {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    ThreadCmd::Add(new) => t.add(*new, now),
                    ThreadCmd::Offer { global, sdp, reply } => {
                        let res = match t.slots.iter_mut().flatten().find(|s| s.global == global) {
                            Some(s) => s.site.handle_offer(now, &sdp),
                            None => Err(DrillError::Stopped),
                        };
                        let _ = reply.send(res);
                    }
                    ThreadCmd::Candidate { global, candidate } => {
                        if let Some(s) = t.slots.iter_mut().flatten().find(|s| s.global == global)
                            && let Err(e) = s.site.add_remote_candidate(&candidate)
                        {
                            debug!("trickled candidate refused: {e}");
                        }
                    }
                    ThreadCmd::Stop => break 'run,
                }
            }
        }
        // Every due site once this turn; what comes due while handling them waits for the next turn.
        while let Some(Reverse((at, i))) = t.timers.peek().copied() {
            if at > now {
                break;
            }
            t.timers.pop();
            // Only the live entry counts; taking it makes any duplicate of it stale.
            if let Some(Some(s)) = t.slots.get_mut(i)
                && s.timer == Some(at)
            {
                s.timer = None;
                due.push(i);
            }
        }
        for i in due.drain(..) {
            t.timeout(i, now);
        }
        if now >= next_tick {
            while next_tick <= now {
                next_tick += TICK;
            }
            t.tick(now);
        }
    }
    let now = Instant::now();
    let cpu = cpu0.zip(thread_cpu_time()).map(|(a, b)| b.saturating_sub(a));
    let mut res = ThreadResult {
        cpu,
        datagrams_out: t.datagrams_out,
        send_errors: t.send_errors,
        wakeups,
        site_timeouts: t.site_timeouts,
        buckets: std::mem::take(&mut t.buckets),
        ..ThreadResult::default()
    };
    for s in t.slots.into_iter().flatten() {
        res.rtp_packets += s.site.metrics().packets();
        res.datagrams_in += s.site.datagrams_in();
        res.reports.push((s.global, s.site.report(now)));
    }
    res
}

impl MediaThread {
    fn add(&mut self, new: NewSite, now: Instant) {
        let i = self.slots.iter().position(Option::is_none).unwrap_or(self.slots.len());
        let mut socket = UdpSocket::from_std(new.socket);
        if let Err(e) = self.poll.registry().register(&mut socket, Token(i), Interest::READABLE) {
            warn!("cannot poll a site's socket: {e}");
            return;
        }
        let slot = Slot {
            global: new.global,
            profile: new.profile,
            last: None,
            site: new.site,
            socket,
            shared: new.shared,
            timer: None,
            connected: false,
            receiving: false,
        };
        if i == self.slots.len() {
            self.slots.push(Some(slot));
        } else {
            self.slots[i] = Some(slot);
        }
        // Run it now: the answer is applied and ICE can start.
        self.timeout(i, now);
    }

    fn readable(&mut self, i: usize, now: Instant) {
        let Some(Some(slot)) = self.slots.get_mut(i) else { return };
        loop {
            match slot.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let data = self.buf.get(..n).unwrap_or_default();
                    slot.site.handle_datagram(now, from, data, &mut self.out);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP port unreachable and the like: nothing to read now.
                    debug!("site socket: {e}");
                    break;
                }
            }
        }
        Self::flush(slot, &mut self.out, &mut self.datagrams_out, &mut self.send_errors);
        Self::schedule(&mut self.timers, slot, i, now);
    }

    fn timeout(&mut self, i: usize, now: Instant) {
        let Some(Some(slot)) = self.slots.get_mut(i) else { return };
        self.site_timeouts += 1;
        slot.site.handle_timeout(now, &mut self.out);
        Self::flush(slot, &mut self.out, &mut self.datagrams_out, &mut self.send_errors);
        Self::schedule(&mut self.timers, slot, i, now);
    }

    fn flush(slot: &mut Slot, out: &mut Vec<Datagram>, sent: &mut u64, errors: &mut u64) {
        for d in out.drain(..) {
            match slot.socket.send_to(&d.bytes, d.addr) {
                Ok(_) => *sent += 1,
                Err(_) => *errors += 1,
            }
            slot.site.recycle(d.bytes);
        }
    }

    fn schedule(timers: &mut BinaryHeap<Reverse<(Instant, usize)>>, slot: &mut Slot, i: usize, now: Instant) {
        let mut at = slot.site.poll_timeout();
        if at <= now && slot.timer.is_none() {
            // Everything due was handled this turn; never spin on a site.
            at = now + Duration::from_millis(1);
        }
        if slot.timer.is_none_or(|t| at < t) {
            slot.timer = Some(at);
            timers.push(Reverse((at, i)));
        }
    }

    fn tick(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.started).as_secs_f64().round() as usize;
        for slot in self.slots.iter_mut().flatten() {
            let snap = slot.site.metrics().snapshot(now);
            if let Some(series) = self.buckets.get_mut(slot.profile) {
                if series.len() <= second {
                    series.resize(second + 1, Bucket::default());
                }
                let b = &mut series[second];
                b.joined += 1;
                b.connected += u32::from(snap.connected);
                b.watching += u32::from(snap.watching);
                b.frozen += u32::from(snap.frozen);
                b.hearing += u32::from(snap.hearing);
                if let Some(h) = snap.height {
                    *b.layers.entry(h).or_default() += 1;
                }
                if let Some((at, last)) = slot.last {
                    let dt = now.saturating_duration_since(at).as_secs_f64();
                    if dt > 0.0 {
                        if snap.connected {
                            b.kbps_sum += (snap.bytes - last.bytes) as f64 * 8.0 / dt / 1000.0;
                        }
                        if snap.watching {
                            b.fps_sum += (snap.frames - last.frames) as f64 / dt;
                        }
                        if snap.hearing && last.hearing {
                            b.audio_packets += (snap.audio_packets - last.audio_packets) as f64;
                            b.audio_expected += dt * 50.0;
                        }
                    }
                }
            }
            slot.last = Some((now, snap));
            let kbps = slot.site.metrics_mut().sample_rate(now);
            let m = slot.site.metrics();
            slot.shared.frames.store(m.frames_decoded(), Ordering::Relaxed);
            slot.shared.audio_samples.store(m.audio_samples(), Ordering::Relaxed);
            slot.shared.lost.store(m.packets_lost(now), Ordering::Relaxed);
            slot.shared.kbps_in.store(kbps.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
            let connected = slot.site.is_connected();
            if connected != slot.connected {
                slot.connected = connected;
                if connected {
                    self.counters.connected.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.connected.fetch_sub(1, Ordering::Relaxed);
                }
            }
            if !slot.receiving && m.has_video() {
                slot.receiving = true;
                self.counters.receiving.fetch_add(1, Ordering::Relaxed);
                info!(site = slot.site.site_id(), "receiving video");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize) -> Vec<(i64, String)> {
        (0..n).map(|i| (i as i64 + 10, format!("t{i}"))).collect()
    }

    #[test]
    fn mix_parses_and_assigns_by_largest_remainder() {
        assert_eq!(parse_mix("fibre:50, 3g:50%").unwrap(), vec![("fibre".into(), 50), ("3g".into(), 50)]);
        assert!(parse_mix("fibre").is_err());
        assert!(parse_mix("fibre:x").is_err());
        let mut cfg = SwarmConfig::new("ws://x/ws", tokens(10));
        cfg.mix = parse_mix("fibre:34,3g:33,vsat:33").unwrap();
        let s = Swarm::new(cfg.clone()).unwrap();
        let names: Vec<&str> = s.assignment().collect();
        let count = |p: &str| names.iter().filter(|n| **n == p).count();
        assert_eq!((count("fibre"), count("3g"), count("vsat")), (4, 3, 3));
        // Seeded: the same seed gives the same assignment.
        let again: Vec<String> = Swarm::new(cfg).unwrap().assignment().map(str::to_owned).collect();
        assert_eq!(names, again);
    }

    #[test]
    fn events_land_on_their_share_of_the_eligible_sites_at_the_swarm_time() {
        let mut cfg = SwarmConfig::new("ws://x/ws", tokens(20));
        cfg.mix = parse_mix("fibre:50,3g:50").unwrap();
        cfg.join_spread = Duration::from_secs(10);
        cfg.events = vec![
            LinkEvent {
                at: Duration::from_secs(8),
                change: Change::Rate { dir: None, kbps: Some(250), queue_ms: None },
                share: 0.4,
                profiles: vec!["3g".into()],
            },
            LinkEvent {
                at: Duration::from_secs(12),
                change: Change::Recover { dir: None },
                share: 1.0,
                profiles: vec![],
            },
        ];
        let s = Swarm::new(cfg.clone()).unwrap();
        assert_eq!(s.events().iter().map(|e| e.sites).collect::<Vec<_>>(), vec![4, 20]);
        assert_eq!(s.events()[0].change, "rate 250 kbit/s");
        let mut hit = 0;
        for (i, ((name, _), t)) in s.assignment.iter().zip(&s.timelines).enumerate() {
            let offset = join_offset(i, 20, Duration::from_secs(10));
            let rate: Vec<&Step> = t.steps().iter().filter(|st| matches!(st.change, Change::Rate { .. })).collect();
            if !rate.is_empty() {
                hit += 1;
                assert_eq!(name, "3g", "only 3G sites are eligible");
                // 8 s from the start of the swarm is 8 s less the join offset on the site's own clock (0 if later).
                assert_eq!(rate[0].at, Duration::from_secs(8).saturating_sub(offset));
            }
            assert_eq!(t.steps().last().map(|st| st.at), Some(Duration::from_secs(12) - offset));
        }
        assert_eq!(hit, 4);
        // The same seed picks the same sites.
        let again = Swarm::new(cfg.clone()).unwrap();
        assert_eq!(again.timelines, s.timelines);

        cfg.events[0].profiles = vec!["vsat".into()];
        assert!(Swarm::new(cfg.clone()).unwrap_err().to_string().contains("`vsat` is not in the mix"));
        cfg.events[0].profiles.clear();
        cfg.events[0].share = 1.5;
        assert!(Swarm::new(cfg).unwrap_err().to_string().contains("share"));
    }

    #[test]
    fn buckets_merge_and_become_means() {
        let mut a =
            Bucket { joined: 2, connected: 2, watching: 1, kbps_sum: 600.0, fps_sum: 15.0, ..Bucket::default() };
        a.layers.insert(360, 1);
        a.audio_packets = 95.0;
        a.audio_expected = 100.0;
        let mut b = Bucket { joined: 1, connected: 1, watching: 1, frozen: 1, kbps_sum: 300.0, ..Bucket::default() };
        b.layers.insert(360, 1);
        a.merge(&b);
        let p = a.point(7);
        assert_eq!((p.t_s, p.joined, p.connected, p.watching, p.frozen), (7, 3, 3, 2, 1));
        assert!((p.kbps_mean - 300.0).abs() < 1e-9 && (p.fps_mean - 7.5).abs() < 1e-9);
        assert_eq!(p.audio_continuity, Some(0.95));
        assert_eq!(p.layers.get(&360), Some(&2));
        assert_eq!(Bucket::default().point(1).audio_continuity, None);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let ok = SwarmConfig::new("ws://x/ws", tokens(2));
        for (cfg, what) in [
            (SwarmConfig { tokens: vec![], ..ok.clone() }, "no sites"),
            (SwarmConfig { threads: 0, ..ok.clone() }, "threads"),
            (SwarmConfig { mix: vec![("fibre".into(), 60)], ..ok.clone() }, "adds up to 60%"),
            (SwarmConfig { mix: vec![("moon".into(), 100)], ..ok.clone() }, "moon"),
            (SwarmConfig { duration: Duration::ZERO, ..ok.clone() }, "duration"),
        ] {
            let e = Swarm::new(cfg).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn summaries_take_percentiles_and_shares() {
        let site = |ttff: Option<f64>, cont: Option<f64>, gap: Option<f64>, freeze: f64, watch: f64| SiteReport {
            profile: "3g".into(),
            connected: true,
            first_frame_ms: ttff,
            audio: crate::metrics::AudioReport { continuity: cont, longest_gap_ms: gap, ..Default::default() },
            video: crate::metrics::VideoReport { freeze_ms: freeze, watch_ms: watch, ..Default::default() },
            loss_after_repair: 0.01,
            ..SiteReport::default()
        };
        let sites = [
            site(Some(500.0), Some(1.0), Some(0.0), 0.0, 5000.0),
            site(Some(900.0), Some(0.9), Some(120.0), 1000.0, 5000.0),
            site(Some(700.0), None, None, 0.0, 0.0),
            SiteReport { profile: "3g".into(), ..SiteReport::default() },
        ];
        let s = summarize("3g", sites.iter());
        assert_eq!((s.sites, s.connected, s.with_video, s.with_audio), (4, 3, 3, 2));
        assert_eq!(s.first_frame_median_ms, Some(700.0));
        assert_eq!(s.first_frame_p95_ms, Some(900.0));
        assert_eq!(s.audio_continuity_mean, Some(0.95));
        assert_eq!(s.audio_worst_gap_ms, Some(120.0));
        assert!((s.freeze_share - 0.1).abs() < 1e-9);
        assert!((s.loss_after_repair_mean - 0.0075).abs() < 1e-9);
        assert_eq!(percentile(&[], 50.0), None);
    }
}
