//! The pre-meeting link check, as a sans-IO plan: time and measurements in, actions out.
//!
//! About 15 s once media is up:
//! 1. **Downlink.** The bridge sends a probe train (fixed-size RTP packets, never resent) at 64, 256, 1,024 and
//!    4,096 kbit/s; the client reports what arrived (`check_report`, cumulative, a few times a second). A step's
//!    delivered rate is measured over its reports after a settling time (the reports arrive one way-delay late).
//!    A step that delivers less than [`SATURATED`] of its rate found the link's capacity: a drop-tail queue passes
//!    its capacity, so what arrived *is* the capacity, and the ladder stops.
//! 2. **Uplink.** The client sends video at 150, 500 and 1,500 kbit/s; the bridge measures what arrives (its own
//!    per-peer byte counters, once a second) and its loss (the bridge's receiver reports).
//! 3. **Verdict.** Capacities, loss, the median RTT, and a [`LinkProfile`] to join with ([`recommend`]).
//!
//! The shell (`check.rs`) runs the actions: probe rates to the data plane, `check_step` and `check_result` to the
//! client.

use std::time::{Duration, Instant};

use diemcau_proto::{CheckPhase, CheckReport, CheckStep, LinkCheckResult, LinkProfile};

/// A step delivering less than this share of its rate has met the link's capacity.
pub const SATURATED: f64 = 0.85;

/// One rung of the ladder.
#[derive(Debug, Clone, Copy)]
struct Rung {
    phase: CheckPhase,
    kbps: u32,
    packet_bytes: usize,
    duration: Duration,
    /// Measure from this long after the step began.
    settle: Duration,
}

const fn down(kbps: u32, packet_bytes: usize, ms: u64, settle_ms: u64) -> Rung {
    Rung {
        phase: CheckPhase::Down,
        kbps,
        packet_bytes,
        duration: Duration::from_millis(ms),
        settle: Duration::from_millis(settle_ms),
    }
}

const fn up(kbps: u32, ms: u64, settle_ms: u64) -> Rung {
    Rung {
        phase: CheckPhase::Up,
        kbps,
        packet_bytes: 0,
        duration: Duration::from_millis(ms),
        settle: Duration::from_millis(settle_ms),
    }
}

/// The ladder. The first rung is long and slow: it fits a 128 kbit/s satellite link and measures its random loss.
const LADDER: [Rung; 7] = [
    down(64, 200, 3000, 1000),
    down(256, 1000, 1500, 600),
    down(1024, 1100, 1500, 600),
    down(4096, 1100, 1500, 600),
    up(150, 2000, 900),
    up(500, 2000, 900),
    up(1500, 2000, 900),
];

/// Quiet time between the two directions, so the downlink's queue drains before the uplink is measured.
const PAUSE: Duration = Duration::from_millis(500);

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set the bridge's probe train toward the client (`kbps == 0` stops it).
    Probe {
        /// Rate, kbit/s of payload.
        kbps: u32,
        /// Payload bytes per packet.
        packet_bytes: usize,
    },
    /// Tell the client a step begins.
    Step {
        /// Direction.
        phase: CheckPhase,
        /// Rate.
        kbps: u32,
        /// Progress of the whole check.
        percent: u8,
    },
    /// The check is over.
    Finish(LinkCheckResult),
}

/// The state of one link check.
#[derive(Debug)]
pub struct LinkCheck {
    start: Instant,
    /// Index of the current rung; `None` before the first poll.
    rung: Option<usize>,
    rung_start: Instant,
    /// The downlink is done: waiting out [`PAUSE`] before the uplink.
    paused_until: Option<Instant>,
    reports: Vec<(Instant, CheckReport)>,
    up_samples: Vec<(Instant, Option<f64>, Option<f64>)>,
    /// Round-trip samples (bridge's, client's) with the rung they were taken in.
    rtt_bridge: Vec<(Option<usize>, f64)>,
    rtt_client: Vec<(Option<usize>, f64)>,
    steps: Vec<CheckStep>,
    /// Loss counted over the downlink steps the link carried: (lost, received).
    down_loss: (i64, i64),
    /// The same over a saturated first step, used only when no step was carried.
    first_loss: Option<(i64, i64)>,
    done: bool,
}

impl LinkCheck {
    /// A check starting at `now` (media is up).
    pub fn new(now: Instant) -> LinkCheck {
        LinkCheck {
            start: now,
            rung: None,
            rung_start: now,
            paused_until: None,
            reports: Vec::new(),
            up_samples: Vec::new(),
            rtt_bridge: Vec::new(),
            rtt_client: Vec::new(),
            steps: Vec::new(),
            down_loss: (0, 0),
            first_loss: None,
            done: false,
        }
    }

    /// The total planned time, for progress.
    fn planned() -> Duration {
        LADDER.iter().map(|r| r.duration).sum::<Duration>() + PAUSE
    }

    fn percent(&self, now: Instant) -> u8 {
        let done = now.saturating_duration_since(self.start).as_secs_f64() / Self::planned().as_secs_f64();
        (done * 100.0).clamp(0.0, 99.0) as u8
    }

    /// A `check_report` from the client arrived at `now`.
    pub fn on_report(&mut self, now: Instant, r: &CheckReport) {
        if let Some(rtt) = r.rtt_ms.filter(|v| v.is_finite() && *v >= 0.0) {
            self.rtt_client.push((self.rung, rtt));
        }
        self.reports.push((now, r.clone()));
    }

    /// The bridge's own figures for the peer (refreshed about once a second): bitrate received, loss received,
    /// round-trip time.
    pub fn on_bridge_stats(&mut self, now: Instant, kbps_in: Option<f64>, loss_in_pct: Option<f64>, rtt: Option<f64>) {
        if let Some(rtt) = rtt.filter(|v| v.is_finite() && *v > 0.0) {
            self.rtt_bridge.push((self.rung, rtt));
        }
        self.up_samples.push((now, kbps_in, loss_in_pct));
    }

    /// When [`LinkCheck::poll`] has something to do next.
    pub fn poll_timeout(&self) -> Instant {
        if let Some(p) = self.paused_until {
            return p;
        }
        match self.rung {
            None => self.start,
            Some(i) => self.rung_start + LADDER[i].duration,
        }
    }

    /// Advances the plan to `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if let Some(until) = self.paused_until {
            if now < until {
                return out;
            }
            self.paused_until = None;
            let first_up = LADDER.iter().position(|r| r.phase == CheckPhase::Up).unwrap_or(LADDER.len());
            self.begin(first_up, now, &mut out);
            return out;
        }
        let Some(i) = self.rung else {
            self.begin(0, now, &mut out);
            return out;
        };
        let rung = LADDER[i];
        if now < self.rung_start + rung.duration {
            return out;
        }
        let step = self.measure(i, now);
        let saturated = step.delivered_kbps.is_none_or(|d| d < f64::from(rung.kbps) * SATURATED);
        self.steps.push(step);
        let next = i + 1;
        let next_phase = LADDER.get(next).map(|r| r.phase);
        match (rung.phase, next_phase) {
            (CheckPhase::Down, Some(CheckPhase::Down)) if !saturated => self.begin(next, now, &mut out),
            (CheckPhase::Down, _) => {
                out.push(Action::Probe { kbps: 0, packet_bytes: 0 });
                self.paused_until = Some(now + PAUSE);
                self.rung = None;
            }
            (CheckPhase::Up, Some(CheckPhase::Up)) if !saturated => self.begin(next, now, &mut out),
            (CheckPhase::Up, _) => {
                out.push(Action::Step { phase: CheckPhase::Up, kbps: 0, percent: 100 });
                out.push(Action::Finish(self.result(now)));
                self.done = true;
            }
        }
        out
    }

    fn begin(&mut self, i: usize, now: Instant, out: &mut Vec<Action>) {
        let Some(rung) = LADDER.get(i) else { return };
        self.rung = Some(i);
        self.rung_start = now;
        out.push(Action::Step { phase: rung.phase, kbps: rung.kbps, percent: self.percent(now) });
        if rung.phase == CheckPhase::Down {
            out.push(Action::Probe { kbps: rung.kbps, packet_bytes: rung.packet_bytes });
        }
    }

    /// What step `i`, which began at `rung_start`, delivered.
    fn measure(&mut self, i: usize, now: Instant) -> CheckStep {
        let rung = LADDER[i];
        let from = self.rung_start + rung.settle;
        match rung.phase {
            CheckPhase::Down => {
                let window: Vec<&(Instant, CheckReport)> =
                    self.reports.iter().filter(|(t, _)| *t >= from && *t <= now).collect();
                let (delivered, loss) = match (window.first(), window.last()) {
                    (Some((t0, a)), Some((t1, b)))
                        if t1.saturating_duration_since(*t0) >= Duration::from_millis(300) =>
                    {
                        let secs = t1.saturating_duration_since(*t0).as_secs_f64();
                        let kbps = b.rx_bytes.saturating_sub(a.rx_bytes) as f64 * 8.0 / secs / 1000.0;
                        // Client figures: saturating, whatever they say.
                        let lost = b.rx_lost.saturating_sub(a.rx_lost).max(0);
                        let got = i64::try_from(b.rx_packets.saturating_sub(a.rx_packets)).unwrap_or(i64::MAX);
                        let carried = kbps >= f64::from(rung.kbps) * SATURATED;
                        if carried {
                            self.down_loss.0 = self.down_loss.0.saturating_add(lost);
                            self.down_loss.1 = self.down_loss.1.saturating_add(got);
                        } else if i == 0 {
                            self.first_loss = Some((lost, got));
                        }
                        let loss = loss_pct(lost, got);
                        (Some(kbps), loss)
                    }
                    _ => (None, None),
                };
                self.reports.retain(|(t, _)| *t > now);
                CheckStep { phase: rung.phase, kbps: rung.kbps, delivered_kbps: delivered, loss_pct: loss }
            }
            CheckPhase::Up => {
                let window: Vec<&(Instant, Option<f64>, Option<f64>)> =
                    self.up_samples.iter().filter(|(t, _, _)| *t >= from && *t <= now).collect();
                let delivered = mean(window.iter().filter_map(|(_, k, _)| *k));
                let loss = mean(window.iter().filter_map(|(_, _, l)| *l));
                CheckStep { phase: rung.phase, kbps: rung.kbps, delivered_kbps: delivered, loss_pct: loss }
            }
        }
    }

    fn result(&self, now: Instant) -> LinkCheckResult {
        let best = |phase: CheckPhase| {
            self.steps
                .iter()
                .filter(|s| s.phase == phase)
                .filter_map(|s| s.delivered_kbps.map(|d| d.min(f64::from(s.kbps))))
                .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))))
        };
        let saturated = |phase: CheckPhase| {
            self.steps
                .iter()
                .filter(|s| s.phase == phase)
                .any(|s| s.delivered_kbps.is_none_or(|d| d < f64::from(s.kbps) * SATURATED))
        };
        let (lost, got) = if self.down_loss.0.saturating_add(self.down_loss.1) > 0 {
            self.down_loss
        } else {
            self.first_loss.unwrap_or((0, 0))
        };
        let down_loss_pct = loss_pct(lost, got);
        // Uplink loss over the steps the link carried (a saturated step's loss is its queue overflowing).
        let ups: Vec<&CheckStep> = self.steps.iter().filter(|s| s.phase == CheckPhase::Up).collect();
        let carried = |s: &&&CheckStep| s.delivered_kbps.is_some_and(|d| d >= f64::from(s.kbps) * SATURATED);
        let up_loss_pct = mean(ups.iter().filter(carried).filter_map(|s| s.loss_pct))
            .or_else(|| ups.first().and_then(|s| s.loss_pct));
        // The round trip of the unloaded link: samples of the first, slow step (later ones include the queues the
        // check itself fills); all samples if it has none.
        let samples = if self.rtt_bridge.is_empty() { &self.rtt_client } else { &self.rtt_bridge };
        let first: Vec<f64> = samples.iter().filter(|(r, _)| *r == Some(0)).map(|(_, v)| *v).collect();
        let all: Vec<f64> = samples.iter().map(|(_, v)| *v).collect();
        let rtt_ms = median(&first).or_else(|| median(&all));
        let down_kbps = best(CheckPhase::Down);
        let up_kbps = best(CheckPhase::Up);
        LinkCheckResult {
            down_kbps,
            down_saturated: saturated(CheckPhase::Down),
            up_kbps,
            up_saturated: saturated(CheckPhase::Up),
            down_loss_pct,
            up_loss_pct,
            rtt_ms,
            recommended: recommend(down_kbps, up_kbps, down_loss_pct),
            steps: self.steps.clone(),
            duration_ms: u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `lost` of `lost + received` packets, percent.
fn loss_pct(lost: i64, received: i64) -> Option<f64> {
    let total = lost as f64 + received as f64;
    (total > 0.0).then(|| lost as f64 * 100.0 / total)
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| sum / n as f64)
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

/// The profile a site should join with. Downlink: the chair's 720p layer + audio needs ~2 Mbit/s, 360p ~650 kbit/s,
/// 180p ~220 kbit/s; below that, audio only. Uplink caps it (a site holding the floor sends 360p + 180p ≈ 650 kbit/s,
/// 180p alone ≈ 200), when measured. Loss above 10% costs one step (retransmission eats the headroom).
pub fn recommend(down_kbps: Option<f64>, up_kbps: Option<f64>, down_loss_pct: Option<f64>) -> LinkProfile {
    let down = match down_kbps {
        Some(d) if d >= 2000.0 => LinkProfile::Full,
        Some(d) if d >= 650.0 => LinkProfile::Standard,
        Some(d) if d >= 220.0 => LinkProfile::Low,
        _ => LinkProfile::AudioOnly,
    };
    let up = match up_kbps {
        None => LinkProfile::Full,
        Some(u) if u >= 650.0 => LinkProfile::Full,
        Some(u) if u >= 200.0 => LinkProfile::Low,
        Some(_) => LinkProfile::AudioOnly,
    };
    let p = down.min(up);
    if down_loss_pct.is_some_and(|l| l > 10.0) {
        match p {
            LinkProfile::Full => LinkProfile::Standard,
            LinkProfile::Standard => LinkProfile::Low,
            _ => LinkProfile::AudioOnly,
        }
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated link: the probe arrives at `min(rate, capacity)` with `loss` and a one-way delay; the client
    /// reports every 250 ms; the uplink carries `min(rate, up_capacity)`.
    fn run(down_capacity: f64, up_capacity: f64, loss: f64) -> LinkCheckResult {
        let t0 = Instant::now();
        let mut lc = LinkCheck::new(t0);
        let mut probe: (u32, usize) = (0, 0);
        let mut up_rate = 0u32;
        let (mut rx_bytes, mut rx_packets, mut lost) = (0f64, 0f64, 0f64);
        let dt = Duration::from_millis(50);
        let mut now = t0;
        let mut ticks = 0u64;
        loop {
            for a in lc.poll(now) {
                match a {
                    Action::Probe { kbps, packet_bytes } => probe = (kbps, packet_bytes),
                    Action::Step { phase: CheckPhase::Up, kbps, .. } => up_rate = kbps,
                    Action::Step { .. } => {}
                    Action::Finish(r) => return r,
                }
            }
            if probe.0 > 0 {
                let sent_bytes = f64::from(probe.0) * 1000.0 / 8.0 * dt.as_secs_f64();
                let arrived = sent_bytes.min(down_capacity * 1000.0 / 8.0 * dt.as_secs_f64());
                let pkts = arrived / probe.1 as f64;
                rx_bytes += arrived * (1.0 - loss);
                rx_packets += pkts * (1.0 - loss);
                lost += pkts * loss + (sent_bytes - arrived) / probe.1 as f64;
            }
            ticks += 1;
            if ticks.is_multiple_of(5) {
                let r = CheckReport {
                    rx_packets: rx_packets as u64,
                    rx_bytes: rx_bytes as u64,
                    rx_lost: lost as i64,
                    rtt_ms: Some(80.0),
                };
                lc.on_report(now, &r);
            }
            if ticks.is_multiple_of(20) {
                let kbps = f64::from(up_rate).min(up_capacity);
                lc.on_bridge_stats(now, Some(kbps), Some(loss * 100.0), Some(75.0));
            }
            now += dt;
            assert!(now - t0 < Duration::from_secs(30), "the check never finished");
        }
    }

    #[test]
    fn fibre_carries_every_step() {
        let r = run(100_000.0, 100_000.0, 0.0);
        assert!(!r.down_saturated && !r.up_saturated, "{r:?}");
        assert!((r.down_kbps.unwrap() - 4096.0).abs() < 200.0, "{r:?}");
        assert!((r.up_kbps.unwrap() - 1500.0).abs() < 1.0, "{r:?}");
        assert_eq!(r.recommended, LinkProfile::Full);
        assert_eq!(r.steps.len(), 7);
        assert_eq!(r.rtt_ms, Some(75.0));
        assert!(r.duration_ms >= 14_000 && r.duration_ms <= 15_000, "{}", r.duration_ms);
    }

    #[test]
    fn a_3g_link_is_found_at_its_capacity() {
        let r = run(780.0, 330.0, 0.0);
        assert!(r.down_saturated && r.up_saturated, "{r:?}");
        let down = r.down_kbps.unwrap();
        assert!((down - 780.0).abs() < 40.0, "{down}");
        // The ladder stopped at the first step over capacity.
        assert_eq!(r.steps.iter().filter(|s| s.phase == CheckPhase::Down).count(), 3, "{r:?}");
        assert_eq!(r.steps.iter().filter(|s| s.phase == CheckPhase::Up).count(), 2, "{r:?}");
        assert!((r.up_kbps.unwrap() - 330.0).abs() < 1.0);
        assert_eq!(r.recommended, LinkProfile::Low);
        assert_eq!(r.down_loss_pct, Some(0.0));
    }

    #[test]
    fn a_lossy_satellite_link_gets_audio_only_with_its_loss() {
        let r = run(128.0, 128.0, 0.05);
        let down = r.down_kbps.unwrap();
        assert!(down > 100.0 && down < 130.0, "{r:?}");
        let loss = r.down_loss_pct.unwrap();
        assert!((loss - 5.0).abs() < 1.5, "{loss}");
        assert_eq!(r.recommended, LinkProfile::AudioOnly);
        assert!(r.duration_ms < 10_000, "a saturated link stops early: {}", r.duration_ms);
    }

    #[test]
    fn without_reports_nothing_is_made_up() {
        let t0 = Instant::now();
        let mut lc = LinkCheck::new(t0);
        let mut now = t0;
        let result = loop {
            if let Some(Action::Finish(r)) = lc.poll(now).into_iter().find(|a| matches!(a, Action::Finish(_))) {
                break r;
            }
            now = lc.poll_timeout().max(now + Duration::from_millis(10));
        };
        assert_eq!(result.down_kbps, None);
        assert_eq!(result.up_kbps, None);
        assert_eq!(result.rtt_ms, None);
        assert!(result.down_saturated);
        assert_eq!(result.recommended, LinkProfile::AudioOnly);
    }

    #[test]
    fn absurd_client_counters_do_not_panic_the_check() {
        let t0 = Instant::now();
        let mut lc = LinkCheck::new(t0);
        let mut now = t0;
        let mut finished = false;
        for i in 0..400u64 {
            for a in lc.poll(now) {
                finished |= matches!(a, Action::Finish(_));
            }
            let r = CheckReport {
                rx_packets: if i % 2 == 0 { u64::MAX } else { 0 },
                rx_bytes: if i % 3 == 0 { u64::MAX } else { 1 },
                rx_lost: if i % 2 == 0 { i64::MAX } else { i64::MIN },
                rtt_ms: Some(f64::NAN),
            };
            lc.on_report(now, &r);
            lc.on_bridge_stats(now, Some(f64::INFINITY), Some(-5.0), Some(-1.0));
            now += Duration::from_millis(50);
        }
        assert!(finished);
    }

    #[test]
    fn recommendation_table() {
        use LinkProfile::*;
        let rows = [
            (Some(5000.0), Some(2000.0), Some(0.0), Full),
            (Some(5000.0), Some(300.0), None, Low),
            (Some(5000.0), Some(100.0), None, AudioOnly),
            (Some(5000.0), None, None, Full),
            (Some(1000.0), Some(1000.0), Some(1.0), Standard),
            (Some(1000.0), Some(1000.0), Some(12.0), Low),
            (Some(300.0), Some(300.0), None, Low),
            (Some(120.0), Some(120.0), Some(5.0), AudioOnly),
            (None, None, None, AudioOnly),
        ];
        for (down, up, loss, want) in rows {
            assert_eq!(recommend(down, up, loss), want, "{down:?} {up:?} {loss:?}");
        }
    }
}
