//! The per-subscriber allocator: from a subscriber's bandwidth estimate and what it could receive, which layer of
//! each track it gets. Pure; time is an argument. (mediasoup's `DistributeAvailableOutgoingBitrate` and LiveKit's
//! `AllocateOptimal` solve the same problem.)
//!
//! [`allocate`] fills the budget in [`Priority`] order: audio is always given (it is what a commune must never lose);
//! then every video gets its lowest layer, most important first, while it fits; then layers are raised one at a
//! time, each time the most important track that can still go up (so the chair's video reaches its top layer before a
//! thumbnail gets a second one). A video that does not fit at its lowest layer is paused (`None`): below the audio
//! budget a site receives audio only.
//!
//! [`Allocator`] adds hysteresis so that layers don't flap: a lower estimate is followed at once (the link is already
//! overloaded); a higher one only after it has allowed a raise, with [`HEADROOM`] to spare, for [`HOLD`] — and then
//! by one layer per track per hold.

use std::time::{Duration, Instant};

/// Importance of a track to a subscriber, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// The chair's microphone.
    ChairAudio,
    /// The floor holder's microphone.
    FloorAudio,
    /// The chair's camera.
    ChairVideo,
    /// The floor holder's camera.
    FloorVideo,
    /// A shared screen or dashboard.
    Screen,
    /// Any other site's camera (a tile of the chair's grid).
    Thumbnail,
}

impl Priority {
    fn is_audio(self) -> bool {
        matches!(self, Priority::ChairAudio | Priority::FloorAudio)
    }
}

/// One track a subscriber could receive.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The caller's key for the track (e.g. the slot).
    pub id: u64,
    /// Its importance.
    pub priority: Priority,
    /// Bitrate of each layer it can be received at, kbit/s, lowest first (spatial and temporal layers in one
    /// ladder, e.g. 180p at 7.5, 15, 30 fps, then 360p, then 720p). Audio has one.
    pub layers_kbps: Vec<u32>,
}

/// The layer given to one track: an index into its `layers_kbps`, or `None` (paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The track's key.
    pub id: u64,
    /// The layer, or `None` when paused.
    pub layer: Option<usize>,
}

/// A raise needs the estimate to exceed what the raised allocation costs by this factor.
pub const HEADROOM: f64 = 1.15;
/// How long a raise must have been possible before it is made.
pub const HOLD: Duration = Duration::from_secs(2);
/// How long the estimate must stay below a video's lowest layer before that video is paused (lowering between layers
/// is at once). A keyframe burst or a jitter spike reads as overuse, and GoogCC then sets the estimate to 0.85 × the
/// throughput it measured — below the lowest layer when that is all that flows (3G in the rural-mix drill); pausing on
/// every such dip left sites audio-only for 5–15 s while padding grew the estimate back.
pub const PAUSE_HOLD: Duration = Duration::from_millis(1500);
/// A video paused again within this time of being resumed was a failed attempt: the next resume waits twice as long
/// as the last (from [`HOLD`] up to [`MAX_RESUME_HOLD`]). Each attempt on a link that cannot carry the lowest layer
/// (VSAT: 128 kbit/s for 180p + audio) overflows its queue and costs audio.
pub const FAILED_RESUME: Duration = Duration::from_secs(10);
/// The longest wait before trying a paused video again.
pub const MAX_RESUME_HOLD: Duration = Duration::from_secs(64);

fn cost(w: &Wanted, layer: Option<usize>) -> i64 {
    layer.and_then(|l| w.layers_kbps.get(l)).map_or(0, |k| i64::from(*k))
}

/// The allocation of `budget_kbps` over `wanted`, in the order given.
pub fn allocate(budget_kbps: u32, wanted: &[Wanted]) -> Vec<Choice> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|i| wanted[*i].priority);
    let mut layer: Vec<Option<usize>> = vec![None; wanted.len()];
    let mut left = i64::from(budget_kbps);
    // Audio first, always.
    for &i in &order {
        let w = &wanted[i];
        if w.priority.is_audio() && !w.layers_kbps.is_empty() {
            layer[i] = Some(0);
            left -= cost(w, Some(0));
        }
    }
    // Every video at its lowest layer, while it fits.
    for &i in &order {
        let w = &wanted[i];
        if !w.priority.is_audio() && !w.layers_kbps.is_empty() && cost(w, Some(0)) <= left {
            layer[i] = Some(0);
            left -= cost(w, Some(0));
        }
    }
    // Then one layer at a time, the most important track that can still go up.
    loop {
        let raise = order.iter().copied().find(|&i| {
            let w = &wanted[i];
            match layer[i] {
                Some(l) if !w.priority.is_audio() && l + 1 < w.layers_kbps.len() => {
                    cost(w, Some(l + 1)) - cost(w, Some(l)) <= left
                }
                _ => false,
            }
        });
        let Some(i) = raise else { break };
        let w = &wanted[i];
        let l = layer[i].unwrap_or(0);
        left -= cost(w, Some(l + 1)) - cost(w, Some(l));
        layer[i] = Some(l + 1);
    }
    wanted.iter().zip(layer).map(|(w, layer)| Choice { id: w.id, layer }).collect()
}

/// What the allocation `choices` of `wanted` costs, kbit/s, and what it would cost after its next raise (the same
/// order as [`allocate`]: the most important paused video's lowest layer, else the most important video that can
/// still go up, one layer); `None` when everything is at its top. The bridge pads its traffic to a subscriber up to
/// the second (with [`HEADROOM`], never past the estimate), so the estimate is probed one layer at a time — a
/// 128 kbit/s link is never asked for the 720p layer's rate.
pub fn next_step(wanted: &[Wanted], choices: &[Choice]) -> (u32, Option<u32>) {
    let layer = |w: &Wanted| choices.iter().find(|c| c.id == w.id).and_then(|c| c.layer);
    let used: i64 = wanted.iter().map(|w| cost(w, layer(w))).sum();
    let mut order: Vec<&Wanted> =
        wanted.iter().filter(|w| !w.priority.is_audio() && !w.layers_kbps.is_empty()).collect();
    order.sort_by_key(|w| w.priority);
    let paused = order.iter().find(|w| layer(w).is_none()).map(|w| cost(w, Some(0)));
    let raise = || {
        order.iter().find_map(|w| {
            let l = layer(w)?;
            (l + 1 < w.layers_kbps.len()).then(|| cost(w, Some(l + 1)) - cost(w, Some(l)))
        })
    };
    let clamp = |k: i64| u32::try_from(k.max(0)).unwrap_or(u32::MAX);
    (clamp(used), paused.or_else(raise).map(|d| clamp(used + d)))
}

/// [`allocate`] with hysteresis, for one subscriber.
#[derive(Debug, Default)]
pub struct Allocator {
    current: Vec<Choice>,
    /// Since when a raise has been possible without interruption.
    raise_possible_since: Option<Instant>,
    /// Since when the estimate has been too low for some flowing video's lowest layer.
    pause_wanted_since: Option<Instant>,
    /// When a paused video was last resumed.
    resumed_at: Option<Instant>,
    /// How long a resume must have been possible before it is made (`None`: [`HOLD`]).
    resume_hold: Option<Duration>,
}

impl Allocator {
    /// A subscriber's allocator; everything starts paused but audio (the first update decides).
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// The current choice.
    pub fn current(&self) -> &[Choice] {
        &self.current
    }

    /// The allocation for the estimate `estimate_kbps` at `now`. A track seen for the first time starts at its
    /// lowest layer if that fits (without headroom: the start estimate is low by design, ≤ 300 kbit/s, and a keyframe
    /// burst in the measured price would otherwise leave a joining site without picture); audio always follows the
    /// estimate at once.
    pub fn update(&mut self, now: Instant, estimate_kbps: u32, wanted: &[Wanted]) -> &[Choice] {
        // The current layer of each track wanted now; `None` for a track never allocated before.
        let prev: Vec<Option<Option<usize>>> = wanted
            .iter()
            .map(|w| {
                let c = self.current.iter().find(|c| c.id == w.id)?;
                Some(c.layer.filter(|l| *l < w.layers_kbps.len()))
            })
            .collect();
        let cur: Vec<Option<usize>> = prev.iter().map(|p| p.flatten()).collect();
        let mut keep = allocate(estimate_kbps, wanted);
        let video = |i: usize| !wanted[i].priority.is_audio();
        // A flowing video the estimate would pause keeps its lowest layer until that has lasted PAUSE_HOLD.
        let pausing: Vec<usize> =
            (0..wanted.len()).filter(|&i| video(i) && cur[i].is_some() && keep[i].layer.is_none()).collect();
        if pausing.is_empty() {
            self.pause_wanted_since = None;
        } else {
            let since = *self.pause_wanted_since.get_or_insert(now);
            if now.saturating_duration_since(since) < PAUSE_HOLD {
                for i in pausing {
                    keep[i].layer = Some(0);
                }
            }
        }
        let roomy = allocate((f64::from(estimate_kbps) / HEADROOM) as u32, wanted);
        let must_lower = (0..wanted.len()).any(|i| video(i) && below(keep[i].layer, cur[i]));
        let next: Vec<Option<usize>> = if must_lower {
            // Over budget: the sustainable allocation at once.
            self.raise_possible_since = None;
            keep.iter().map(|k| k.layer).collect()
        } else {
            let can_raise = (0..wanted.len()).any(|i| video(i) && prev[i].is_some() && below(cur[i], roomy[i].layer));
            // Resuming a paused video waits the back-off after failed attempts; other raises wait HOLD.
            let resuming = (0..wanted.len())
                .any(|i| video(i) && prev[i].is_some() && cur[i].is_none() && roomy[i].layer.is_some());
            let hold = if resuming { self.resume_hold.unwrap_or(HOLD) } else { HOLD };
            let raise_now = if can_raise {
                let since = *self.raise_possible_since.get_or_insert(now);
                let due = now.saturating_duration_since(since) >= hold;
                if due {
                    self.raise_possible_since = Some(now);
                }
                due
            } else {
                self.raise_possible_since = None;
                false
            };
            (0..wanted.len())
                .map(|i| match prev[i] {
                    // A new track starts where the estimate allows with headroom, else at its lowest layer if
                    // that fits at all (so that a site joining on the initial estimate climbs no more steps than
                    // it must: with L1T3 the 180p layer alone is three).
                    None => roomy[i].layer.or(keep[i].layer.map(|_| 0)),
                    Some(c) if raise_now && below(c, roomy[i].layer) => Some(c.map_or(0, |l| l + 1)),
                    Some(c) => c,
                })
                .collect()
        };
        // Back-off bookkeeping: a pause soon after a resume doubles the next wait; a lasting one resets it.
        let paused_now = (0..wanted.len()).any(|i| video(i) && cur[i].is_some() && next[i].is_none());
        let resumed_now =
            (0..wanted.len()).any(|i| video(i) && prev[i].is_some() && cur[i].is_none() && next[i].is_some());
        if paused_now {
            let failed = self.resumed_at.is_some_and(|r| now.saturating_duration_since(r) < FAILED_RESUME);
            self.resume_hold = failed.then(|| (self.resume_hold.unwrap_or(HOLD) * 2).min(MAX_RESUME_HOLD));
        }
        if resumed_now {
            self.resumed_at = Some(now);
        }
        self.current = (0..wanted.len())
            .map(|i| Choice { id: wanted[i].id, layer: if video(i) { next[i] } else { keep[i].layer } })
            .collect();
        &self.current
    }
}

/// `a` is a lower layer than `b` (paused is the lowest).
fn below(a: Option<usize>, b: Option<usize>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chair's ladder: 180p at 7.5/15/30 fps, 360p, 720p.
    const CHAIR: [u32; 5] = [45, 90, 150, 500, 1500];

    fn w(id: u64, priority: Priority, layers: &[u32]) -> Wanted {
        Wanted { id, priority, layers_kbps: layers.to_vec() }
    }

    fn site_view() -> Vec<Wanted> {
        vec![
            w(1, Priority::ChairAudio, &[32]),
            w(2, Priority::ChairVideo, &CHAIR),
            w(3, Priority::FloorAudio, &[32]),
            w(4, Priority::FloorVideo, &[150, 500]),
        ]
    }

    fn layers(c: &[Choice]) -> Vec<Option<usize>> {
        c.iter().map(|c| c.layer).collect()
    }

    #[test]
    fn a_new_track_starts_at_its_lowest_layer_when_it_just_fits() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        // Audio 80 (with RED) + 180p 200 (a keyframe in the measured price) = 280 ≤ 300, under 280 × HEADROOM.
        let wanted = [w(1, Priority::ChairAudio, &[80]), w(2, Priority::ChairVideo, &[200, 520, 1560])];
        assert_eq!(layers(a.update(t0, 300, &wanted)), vec![Some(0), Some(0)]);
        let mut b = Allocator::new();
        assert_eq!(layers(b.update(t0, 270, &wanted)), vec![Some(0), None], "does not fit: paused");
    }

    #[test]
    fn a_new_track_starts_at_the_highest_layer_that_fits_with_headroom() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        // 180p at 7.5 / 15 / 30 fps, 360p at 15 / 30 fps; 300 kbit/s: 300 / 1.15 = 260 ≥ 80 + 150, < 80 + 300.
        let wanted = [w(1, Priority::ChairAudio, &[80]), w(2, Priority::ChairVideo, &[60, 90, 150, 300, 500])];
        assert_eq!(layers(a.update(t0, 300, &wanted)), vec![Some(0), Some(2)]);
        // Later raises wait HOLD, one step at a time.
        assert_eq!(layers(a.update(t0 + Duration::from_millis(100), 2000, &wanted)), vec![Some(0), Some(2)]);
        assert_eq!(layers(a.update(t0 + HOLD + Duration::from_millis(100), 2000, &wanted)), vec![Some(0), Some(3)]);
    }

    #[test]
    fn allocation_table() {
        let rows: [(u32, [Option<usize>; 4]); 9] = [
            // Below the audio budget: audio only (audio is never paused).
            (20, [Some(0), None, Some(0), None]),
            (64, [Some(0), None, Some(0), None]),
            // VSAT: 128 kbit/s → both audios + the chair at 180p 7.5 fps.
            (128, [Some(0), Some(0), Some(0), None]),
            (160, [Some(0), Some(1), Some(0), None]),
            // The floor holder's lowest layer (150) does not fit: the chair climbs to 180p@30.
            (214, [Some(0), Some(2), Some(0), None]),
            // Every video's lowest layer comes before any raise: the floor holder's base (150) before 180p@15.
            (300, [Some(0), Some(0), Some(0), Some(0)]),
            (400, [Some(0), Some(2), Some(0), Some(0)]),
            (750, [Some(0), Some(3), Some(0), Some(0)]),
            (5000, [Some(0), Some(4), Some(0), Some(1)]),
        ];
        for (budget, want) in rows {
            assert_eq!(layers(&allocate(budget, &site_view())), want.to_vec(), "budget {budget}");
        }
    }

    #[test]
    fn thumbnails_come_after_the_chair_and_the_screen() {
        let mut v = vec![
            w(10, Priority::Thumbnail, &[50, 150]),
            w(11, Priority::Thumbnail, &[50, 150]),
            w(1, Priority::ChairAudio, &[32]),
            w(5, Priority::Screen, &[300, 800]),
            w(2, Priority::ChairVideo, &CHAIR),
        ];
        // 32 + 45 (chair base) + 300 (screen base) + 2 × 50 = 477; the rest raises the chair first.
        let c = allocate(1000, &v);
        assert_eq!(layers(&c), vec![Some(0), Some(0), Some(0), Some(0), Some(3)], "{c:?}");
        // Too little for the thumbnails' base after the screen's: they pause, the chair does not.
        v.truncate(5);
        let c = allocate(400, &v);
        assert_eq!(layers(&c), vec![None, None, Some(0), Some(0), Some(0)], "{c:?}");
    }

    #[test]
    fn allocations_never_exceed_the_budget_beyond_audio() {
        let v = site_view();
        for budget in (0..3000).step_by(7) {
            let c = allocate(budget, &v);
            let total: i64 = c.iter().zip(&v).map(|(c, w)| cost(w, c.layer)).sum();
            let audio: i64 = 64;
            assert!(total <= i64::from(budget).max(audio), "budget {budget}: {total}");
        }
    }

    /// The estimate falls from 1.5 Mbit/s to 250 kbit/s at 10 s and comes back at 20 s.
    #[test]
    fn steps_down_at_once_and_back_up_one_layer_per_hold() {
        let t0 = Instant::now();
        let view = vec![w(1, Priority::ChairAudio, &[32]), w(2, Priority::ChairVideo, &CHAIR)];
        let mut a = Allocator::new();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let estimate = |ms: u64| if (10_000..20_000).contains(&ms) { 250 } else { 1500 };
        let mut log: Vec<(u64, Option<usize>)> = Vec::new();
        for ms in (0..40_000).step_by(100) {
            let c = a.update(at(ms), estimate(ms), &view).to_vec();
            assert_eq!(c[0].layer, Some(0), "audio is never paused");
            if log.last().map(|l| l.1) != Some(c[1].layer) {
                log.push((ms, c[1].layer));
            }
        }
        // Starts at the highest layer the estimate allows with headroom: 360p (720p at 1,500 needs 1,532 × 1.15).
        assert_eq!(log[0], (0, Some(3)), "{log:?}");
        assert_eq!(log.iter().rfind(|(ms, _)| *ms < 10_000).map(|l| l.1), Some(Some(3)), "{log:?}");
        // The drop: down within the same update.
        assert!(log.contains(&(10_000, Some(2))), "{log:?}");
        // No flapping while the estimate is flat.
        assert_eq!(log.iter().filter(|(ms, _)| (10_000..20_000).contains(ms)).count(), 1, "{log:?}");
        // Recovery: back at 360p within 10 s.
        let back = log.iter().find(|(ms, l)| *ms >= 20_000 && *l == Some(3)).map(|l| l.0);
        assert!(back.is_some_and(|ms| ms <= 30_000), "{log:?}");
    }

    #[test]
    fn a_short_dip_below_the_lowest_layer_does_not_pause() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let view = vec![w(1, Priority::ChairAudio, &[32]), w(2, Priority::ChairVideo, &[150, 500])];
        let mut a = Allocator::new();
        assert_eq!(a.update(at(0), 300, &view)[1].layer, Some(0));
        // A 1 s dip to 150 (< 32 + 150): the lowest layer goes on.
        for ms in (100..1_100).step_by(100) {
            assert_eq!(a.update(at(ms), 150, &view)[1].layer, Some(0), "at {ms} ms");
        }
        assert_eq!(a.update(at(1_200), 300, &view)[1].layer, Some(0));
        // A lasting one pauses after PAUSE_HOLD, counted from its start.
        for ms in (2_000..3_500).step_by(100) {
            assert_eq!(a.update(at(ms), 150, &view)[1].layer, Some(0), "at {ms} ms");
        }
        assert_eq!(a.update(at(3_500), 150, &view)[1].layer, None);
        assert_eq!(a.update(at(3_600), 150, &view)[1].layer, None, "paused stays paused");
        // A higher layer still steps down at once.
        let mut a = Allocator::new();
        a.update(at(0), 300, &view);
        for ms in (100..3_000).step_by(100) {
            a.update(at(ms), 800, &view);
        }
        assert_eq!(a.current()[1].layer, Some(1));
        assert_eq!(a.update(at(3_000), 300, &view)[1].layer, Some(0));
    }

    /// VSAT: the estimate climbs past what 180p + audio needs (padding), the video resumes, the link cannot carry
    /// it, the estimate falls and it pauses again — each new attempt waits twice as long.
    #[test]
    fn failed_resumes_back_off() {
        let t0 = Instant::now();
        let view = vec![w(1, Priority::ChairAudio, &[32]), w(2, Priority::ChairVideo, &[150, 500])];
        let mut a = Allocator::new();
        a.update(t0, 100, &view);
        assert_eq!(a.current()[1].layer, None, "starts paused");
        // Every second the estimate is 250 (a resume fits) for 4 s of a 6 s cycle... but each time the video flows
        // the estimate falls to 100 three seconds after the resume.
        let mut resumes = Vec::new();
        let mut resumed: Option<u64> = None;
        for ms in (0..120_000u64).step_by(100) {
            let est = match resumed {
                Some(r) if ms >= r + 3_000 => 100,
                Some(_) => 250,
                None => 250,
            };
            let before = a.current()[1].layer;
            let after = a.update(t0 + Duration::from_millis(ms), est, &view)[1].layer;
            if before.is_none() && after.is_some() {
                resumes.push(ms);
                resumed = Some(ms);
            }
            if before.is_some() && after.is_none() {
                resumed = None;
            }
        }
        let waits: Vec<u64> = resumes.windows(2).map(|w| w[1] - w[0]).collect();
        // Resume, 3 s + 1.5 s to pause again, then 2, 4, 8, 16… s of hold before the next try.
        assert!(resumes.len() >= 4 && resumes.len() <= 7, "{resumes:?}");
        for w in waits.windows(2) {
            assert!(w[1] > w[0] + 1_000, "each wait longer than the last: {waits:?}");
        }
    }

    #[test]
    fn the_next_step_is_one_layer_of_the_most_important_track() {
        let view = site_view();
        let at = |l: [Option<usize>; 4]| -> Vec<Choice> {
            view.iter().zip(l).map(|(w, layer)| Choice { id: w.id, layer }).collect()
        };
        // Audio only: the next step is the chair's base layer.
        assert_eq!(next_step(&view, &at([Some(0), None, Some(0), None])), (64, Some(109)));
        // The chair at its base, the floor holder paused: the floor holder's base comes first.
        assert_eq!(next_step(&view, &at([Some(0), Some(0), Some(0), None])), (109, Some(259)));
        // Both at their base: the chair goes up one layer (45 → 90).
        assert_eq!(next_step(&view, &at([Some(0), Some(0), Some(0), Some(0)])), (259, Some(304)));
        // The chair at its top: the floor holder's next layer.
        assert_eq!(next_step(&view, &at([Some(0), Some(4), Some(0), Some(0)])), (1714, Some(2064)));
        // Everything at the top: nothing to probe for.
        assert_eq!(next_step(&view, &at([Some(0), Some(4), Some(0), Some(1)])), (2064, None));
    }

    #[test]
    fn a_small_wobble_does_not_raise() {
        let t0 = Instant::now();
        let view = vec![w(1, Priority::ChairAudio, &[32]), w(2, Priority::ChairVideo, &CHAIR)];
        let mut a = Allocator::new();
        // 532 fits 360p exactly but not with 15% headroom: it stays at 180p@30 for good.
        for s in 0..30 {
            a.update(t0 + Duration::from_secs(s), 540, &view);
        }
        assert_eq!(a.current()[1].layer, Some(2));
        // 620 = 532 × 1.165: raised after the hold.
        a.update(t0 + Duration::from_secs(30), 620, &view);
        assert_eq!(a.current()[1].layer, Some(2), "not before the hold");
        a.update(t0 + Duration::from_secs(32), 620, &view);
        assert_eq!(a.current()[1].layer, Some(3));
    }
}
