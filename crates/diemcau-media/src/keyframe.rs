//! Coalescing of keyframe requests toward one publishing track: whatever the number of subscribers asking, at most
//! one request per [`KEYFRAME_REQUEST_INTERVAL`](crate::KEYFRAME_REQUEST_INTERVAL) reaches the publisher, for all its
//! simulcast layers together, and the layer that has waited longest goes first (so a layer many subscribers keep
//! asking for cannot starve one a single joining site waits for).
//!
//! Pure: time is an argument.

use std::time::{Duration, Instant};

/// A request not repeated for this long is forgotten (those who wanted it left, or got a keyframe anyway).
const FORGET_AFTER: Duration = Duration::from_secs(2);

/// The keyframe requests of one track. `L` names a layer.
#[derive(Debug)]
pub struct KeyframeGate<L> {
    interval: Duration,
    last_sent: Option<Instant>,
    /// Layers asked for and not yet requested, in the order first asked: (layer, first asked, last asked).
    waiting: Vec<(L, Instant, Instant)>,
}

impl<L: Copy + PartialEq> KeyframeGate<L> {
    /// A gate letting one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        KeyframeGate { interval, last_sent: None, waiting: Vec::new() }
    }

    /// A subscriber asks for a keyframe of `layer` at `now`. Returns the layer to request of the publisher now, if
    /// any: the one waiting longest, once `interval` has passed since the last request.
    pub fn ask(&mut self, now: Instant, layer: L) -> Option<L> {
        match self.waiting.iter_mut().find(|w| w.0 == layer) {
            Some(w) => w.2 = now,
            None => self.waiting.push((layer, now, now)),
        }
        self.waiting.retain(|w| now.saturating_duration_since(w.2) <= FORGET_AFTER);
        if self.last_sent.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            return None;
        }
        let oldest = self.waiting.iter().enumerate().min_by_key(|(_, w)| w.1).map(|(i, _)| i)?;
        let (layer, _, _) = self.waiting.remove(oldest);
        self.last_sent = Some(now);
        Some(layer)
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
                if let Some(l) = g.ask(t0 + Duration::from_millis(ms), sub % 3) {
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
    fn the_layer_waiting_longest_goes_first() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        assert_eq!(g.ask(ms(0), 'h'), Some('h'));
        // A joiner waits for `q` from 100 ms; `h` is asked again and again after it.
        assert_eq!(g.ask(ms(100), 'q'), None);
        for m in (120..500).step_by(20) {
            assert_eq!(g.ask(ms(m), 'h'), None);
        }
        assert_eq!(g.ask(ms(500), 'h'), Some('q'), "q has waited longer");
        assert_eq!(g.ask(ms(1_000), 'h'), Some('h'));
        // Nothing waits: the next ask goes through at once once the interval is over.
        assert_eq!(g.ask(ms(1_600), 'f'), Some('f'));
    }

    #[test]
    fn a_request_nobody_repeats_is_forgotten() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        assert_eq!(g.ask(ms(0), 1), Some(1));
        assert_eq!(g.ask(ms(100), 2), None);
        // Layer 2's subscriber left; 3 s later a request for layer 3 is served, not the stale one.
        assert_eq!(g.ask(ms(3_100), 3), Some(3));
    }
}
