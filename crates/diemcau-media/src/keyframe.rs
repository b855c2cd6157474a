//! Coalescing of keyframe requests toward one publishing track: whatever the number of subscribers asking, at most
//! two requests per second (two per 2 × [`KEYFRAME_REQUEST_INTERVAL`](crate::KEYFRAME_REQUEST_INTERVAL)) reach the
//! publisher, for all its simulcast layers together, and the layer that has waited longest goes first (so a layer many
//! subscribers keep asking for cannot starve one a single joining site waits for).
//!
//! Requests are spaced by the interval, except an *urgent* one: a subscriber that shows no picture of the track at all
//! (it joined, resumed, or its decoder asked) may take the second request of the window at once. Without that, a
//! joining site waited up to the whole interval behind another site's switch to a larger layer, whose old layer goes on
//! meanwhile (`e2e_chromium`: a site's first chair frame 1.1 s after connecting on a loaded machine).
//!
//! Pure: time is an argument.

use std::time::{Duration, Instant};

/// A request not repeated for this long is forgotten (those who wanted it left, or got a keyframe anyway).
const FORGET_AFTER: Duration = Duration::from_secs(2);
/// An urgent request never follows another sooner than this: Chromium ignores a keyframe request within 300 ms of the
/// last one it acted on, and acting on one makes a keyframe on every simulcast layer (libwebrtc's
/// `EncoderRtcpFeedback`, `min_keyframe_send_interval`). Sent sooner, the request is lost and still fills the window:
/// a joiner asking for `q` 120 ms after its first ask for `h` got its first frame 1.07 s after connecting.
pub const PUBLISHER_MIN_INTERVAL: Duration = Duration::from_millis(300);

/// A layer asked for and not yet requested.
#[derive(Debug)]
struct Waiting<L> {
    layer: L,
    first: Instant,
    last: Instant,
    urgent: bool,
}

/// The keyframe requests of one track. `L` names a layer.
#[derive(Debug)]
pub struct KeyframeGate<L> {
    interval: Duration,
    /// The last two requests sent, latest last.
    sent: [Option<Instant>; 2],
    /// Layers asked for and not yet requested, in the order first asked.
    waiting: Vec<Waiting<L>>,
}

impl<L: Copy + PartialEq> KeyframeGate<L> {
    /// A gate letting one request through per `interval` on average (two per two intervals).
    pub fn new(interval: Duration) -> Self {
        KeyframeGate { interval, sent: [None, None], waiting: Vec::new() }
    }

    /// A subscriber asks for a keyframe of `layer` at `now`; `urgent` when it shows no picture of the track. Returns
    /// the layer to request of the publisher now, if any: the one waiting longest (an urgent one first when only
    /// urgent ones may go).
    pub fn ask(&mut self, now: Instant, layer: L, urgent: bool) -> Option<L> {
        match self.waiting.iter_mut().find(|w| w.layer == layer) {
            Some(w) => {
                w.last = now;
                w.urgent |= urgent;
            }
            None => self.waiting.push(Waiting { layer, first: now, last: now, urgent }),
        }
        self.waiting.retain(|w| now.saturating_duration_since(w.last) <= FORGET_AFTER);
        let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        // Two in the window already: nothing goes.
        if since(self.sent[0]) < 2 * self.interval {
            return None;
        }
        let spaced = since(self.sent[1]) >= self.interval;
        let soonest = since(self.sent[1]) >= PUBLISHER_MIN_INTERVAL.min(self.interval);
        let pick = self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| spaced || (soonest && w.urgent))
            .min_by_key(|(_, w)| (!w.urgent, w.first))
            .map(|(i, _)| i)?;
        let w = self.waiting.remove(pick);
        self.sent = [self.sent[1], Some(now)];
        Some(w.layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_askers_make_two_requests_a_second() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        let mut sent = Vec::new();
        // 1,000 subscribers ask every 20 ms (each packet of the layer they wait for), for 3 s, over three layers.
        for ms in (0..3_000u64).step_by(20) {
            for sub in 0..1_000u64 {
                if let Some(l) = g.ask(t0 + Duration::from_millis(ms), sub % 3, false) {
                    sent.push((ms, l));
                }
            }
        }
        assert_eq!(sent.len(), 6, "{sent:?}");
        for w in sent.windows(2) {
            assert!(w[1].0 - w[0].0 >= 500, "{sent:?}");
        }
        // Every layer is served in turn.
        assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2], "{sent:?}");
    }

    #[test]
    fn a_thousand_urgent_askers_make_two_requests_a_second() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        let mut sent = Vec::new();
        // 1,000 subscribers with no picture ask every 20 ms for 3 s, over three layers.
        for ms in (0..3_000u64).step_by(20) {
            for sub in 0..1_000u64 {
                if let Some(l) = g.ask(t0 + Duration::from_millis(ms), sub % 3, true) {
                    sent.push((ms, l));
                }
            }
        }
        assert_eq!(sent.len(), 6, "{sent:?}");
        // Never more than two within any second, never two within 300 ms, each pair two layers.
        for w in sent.windows(3) {
            assert!(w[2].0 - w[0].0 >= 1_000, "{sent:?}");
        }
        for w in sent.windows(2) {
            assert!(w[1].0 - w[0].0 >= 300, "{sent:?}");
        }
        assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2], "{sent:?}");
    }

    #[test]
    fn a_site_with_no_picture_does_not_wait_behind_a_switch() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        // A subscriber switching to `h` (it goes on seeing `q` meanwhile).
        assert_eq!(g.ask(ms(0), 'h', false), Some('h'));
        // Another switch waits for the interval.
        assert_eq!(g.ask(ms(50), 'f', false), None);
        // A joiner with no picture asks for `q`: served before the older switch, as soon as the publisher would act on
        // it.
        assert_eq!(g.ask(ms(100), 'q', true), None);
        assert_eq!(g.ask(ms(300), 'q', true), Some('q'));
        // Two went out within the second: nothing more until it is over, urgent or not.
        assert_eq!(g.ask(ms(400), 'h', true), None);
        assert_eq!(g.ask(ms(900), 'f', false), None);
        // Then the one with no picture first, though the switch to `f` asked before it.
        assert_eq!(g.ask(ms(1_000), 'f', false), Some('h'));
        // An urgent ask waits for the publisher's 300 ms, whatever the layer.
        assert_eq!(g.ask(ms(1_250), 'h', true), None);
        assert_eq!(g.ask(ms(1_300), 'h', true), Some('h'));
    }

    #[test]
    fn the_layer_waiting_longest_goes_first() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        assert_eq!(g.ask(ms(0), 'h', false), Some('h'));
        // A joiner waits for `q` from 100 ms; `h` is asked again and again after it.
        assert_eq!(g.ask(ms(100), 'q', false), None);
        for m in (120..500).step_by(20) {
            assert_eq!(g.ask(ms(m), 'h', false), None);
        }
        assert_eq!(g.ask(ms(500), 'h', false), Some('q'), "q has waited longer");
        assert_eq!(g.ask(ms(1_000), 'h', false), Some('h'));
        // Nothing waits: the next ask goes through at once once the interval is over.
        assert_eq!(g.ask(ms(1_600), 'f', false), Some('f'));
    }

    #[test]
    fn a_request_nobody_repeats_is_forgotten() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        assert_eq!(g.ask(ms(0), 1, false), Some(1));
        assert_eq!(g.ask(ms(100), 2, false), None);
        // Layer 2's subscriber left; 3 s later a request for layer 3 is served, not the stale one.
        assert_eq!(g.ask(ms(3_100), 3, false), Some(3));
    }
}
