//! What a shard knows of one publishing track's layers: how many temporal layers each simulcast layer carries, and the
//! bitrate of each (simulcast layer, temporal layer) pair, measured from the packets that arrive.
//!
//! The allocator ([`crate::alloc`]) needs a price for every step of a track's ladder. Nominal prices (the chair
//! page's `maxBitrate` per layer) are what an encoder may reach, not what it sends: a talking head at 180p sends well
//! under its 150 kbit/s, and the base temporal layer's share depends on the encoder. So the shard counts what it
//! forwards — payload plus [`PACKET_OVERHEAD`] per packet, the part of the headers the subscriber's bandwidth
//! estimate also counts — over [`WINDOW`], smoothed; until a layer has been measured its nominal price stands in,
//! split between temporal layers as libwebrtc allocates them ([`temporal_share`]).
//!
//! Pure: packets and `Instant`s in.

use std::time::{Duration, Instant};

/// Simulcast layers tracked per track (index 0 without simulcast, 1..=3 for rids q, h, f).
pub const LAYERS: usize = 4;
/// Temporal layers tracked per simulcast layer (VP8 TID is 2 bits).
pub const TEMPORAL: usize = 4;
/// What a forwarded packet costs beyond its payload in the subscriber's estimate, bytes: RTP header with the
/// extensions the bridge writes (~24) and the SRTP tag (16).
pub const PACKET_OVERHEAD: usize = 40;
/// Measurement window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Weight of a new window's figure in the smoothed rate.
const SMOOTHING: f64 = 0.5;

/// The cumulative share of a simulcast layer's bitrate carried by temporal layers `0..=tid` when the encoder sends
/// `layers` of them (libwebrtc's VP8 rate allocation: 60/40 for two layers, 40/20/40 for three).
pub fn temporal_share(layers: u8, tid: u8) -> f64 {
    match (layers, tid) {
        (2, 0) => 0.6,
        (3, 0) => 0.4,
        (3, 1) => 0.6,
        (4, 0) => 0.25,
        (4, 1) => 0.4,
        (4, 2) => 0.6,
        _ => 1.0,
    }
}

/// One track's layers.
#[derive(Debug, Clone, Default)]
pub struct TrackLayers {
    /// Highest TID seen per simulcast layer (`None`: no temporal layers).
    max_tid: [Option<u8>; LAYERS],
    /// Bytes (with overhead) in the current window.
    bytes: [[u64; TEMPORAL]; LAYERS],
    /// Smoothed kbit/s per pair, once measured.
    kbps: [[Option<f64>; TEMPORAL]; LAYERS],
    /// Packets per simulcast layer in the current window, and the smoothed packets per second.
    packets: [u64; LAYERS],
    pps: [Option<f64>; LAYERS],
    window_start: Option<Instant>,
    /// Windows closed so far.
    windows: u64,
}

impl TrackLayers {
    /// Counts one packet of simulcast layer `layer` and temporal layer `tid` (`None`: none signalled) with `payload`
    /// bytes. Returns true when it shows a temporal layer not seen before (the ladder changed).
    pub fn record(&mut self, now: Instant, layer: usize, tid: Option<u8>, payload: usize) -> bool {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            self.close_window(elapsed);
            self.window_start = Some(now);
        }
        let layer = layer.min(LAYERS - 1);
        let t = usize::from(tid.unwrap_or(0)).min(TEMPORAL - 1);
        self.bytes[layer][t] += (payload + PACKET_OVERHEAD) as u64;
        self.packets[layer] += 1;
        match tid {
            Some(tid) if self.max_tid[layer].is_none_or(|m| tid > m) => {
                self.max_tid[layer] = Some(tid.min(TEMPORAL as u8 - 1));
                true
            }
            _ => false,
        }
    }

    /// How many measurement windows have closed (changes when the figures do).
    pub fn windows(&self) -> u64 {
        self.windows
    }

    fn close_window(&mut self, elapsed: Duration) {
        self.windows += 1;
        let secs = elapsed.as_secs_f64().max(1e-3);
        let smooth = |old: Option<f64>, now: f64| Some(old.map_or(now, |old| old + SMOOTHING * (now - old)));
        for ((bytes, kbps), (packets, pps)) in
            self.bytes.iter_mut().zip(self.kbps.iter_mut()).zip(self.packets.iter_mut().zip(self.pps.iter_mut()))
        {
            // A simulcast layer that sent nothing in the window keeps its last figures (paused by dynacast, or gone).
            if *packets == 0 {
                continue;
            }
            *pps = smooth(*pps, *packets as f64 / secs);
            *packets = 0;
            for (b, k) in bytes.iter_mut().zip(kbps.iter_mut()) {
                *k = smooth(*k, *b as f64 * 8.0 / secs / 1000.0);
                *b = 0;
            }
        }
    }

    /// The share of [`kbps`](Self::kbps) that is packet overhead, kbit/s (0 until measured): what a redundant copy
    /// of the payload (RED) does not repeat.
    pub fn overhead_kbps(&self, layer: usize) -> u32 {
        let pps = self.pps.get(layer).copied().flatten().unwrap_or(0.0);
        (pps * PACKET_OVERHEAD as f64 * 8.0 / 1000.0).round() as u32
    }

    /// How many temporal layers simulcast layer `layer` carries (1 without temporal layers).
    pub fn temporal_layers(&self, layer: usize) -> u8 {
        self.max_tid.get(layer).copied().flatten().map_or(1, |m| m + 1)
    }

    /// What simulcast layer `layer` measures with all its temporal layers, kbit/s (`None` until measured).
    pub fn measured_kbps(&self, layer: usize) -> Option<u32> {
        let k = self.kbps.get(layer)?;
        let sum: Option<f64> = k.iter().take(usize::from(self.temporal_layers(layer))).copied().sum();
        sum.map(|s| s.round().clamp(0.0, f64::from(u32::MAX)) as u32)
    }

    /// What simulcast layer `layer` costs with its temporal layers `0..=max_tid` (`u8::MAX`: all), kbit/s: measured,
    /// else `nominal_kbps` (the whole layer's nominal rate) times the temporal share.
    pub fn kbps(&self, layer: usize, max_tid: u8, nominal_kbps: u32) -> u32 {
        let n = self.temporal_layers(layer);
        let top = max_tid.min(n - 1);
        let measured = self.kbps.get(layer).and_then(|k| {
            let sum: Option<f64> = k.iter().take(usize::from(top) + 1).copied().sum();
            sum.filter(|s| *s > 0.0)
        });
        let kbps = measured.unwrap_or_else(|| f64::from(nominal_kbps) * temporal_share(n, top));
        kbps.round().clamp(1.0, f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L1T3 at 30 fps: frames 0,2,1,2 by TID; sizes as libwebrtc's 40/20/40 split of `kbps`.
    fn feed(t: &mut TrackLayers, t0: Instant, layer: usize, kbps: f64, secs: u64) -> bool {
        let mut grew = false;
        for f in 0..secs * 30 {
            let tid = [0u8, 2, 1, 2][(f % 4) as usize];
            let share = [0.4 / 0.25, 0.2 / 0.25, 0.4 / 0.5][usize::from(tid)];
            let bytes = kbps * 1000.0 / 8.0 / 30.0 * share - PACKET_OVERHEAD as f64;
            grew |= t.record(t0 + Duration::from_millis(f * 1000 / 30), layer, Some(tid), bytes as usize);
        }
        grew
    }

    #[test]
    fn nominal_prices_are_split_by_temporal_share_until_measured() {
        let mut t = TrackLayers::default();
        assert_eq!(t.temporal_layers(1), 1);
        assert_eq!(t.kbps(1, 0, 150), 150, "no temporal layers: the whole layer");
        let t0 = Instant::now();
        assert!(t.record(t0, 1, Some(0), 100));
        assert!(t.record(t0, 1, Some(2), 100));
        assert!(!t.record(t0, 1, Some(1), 100), "TID 1 is below the highest seen");
        assert_eq!(t.temporal_layers(1), 3);
        // Not measured yet (the first window is still open): nominal × 40%, 60%, 100%.
        assert_eq!(
            [t.kbps(1, 0, 150), t.kbps(1, 1, 150), t.kbps(1, 2, 150), t.kbps(1, u8::MAX, 150)],
            [60, 90, 150, 150]
        );
    }

    #[test]
    fn measured_rates_replace_nominal_ones() {
        let mut t = TrackLayers::default();
        let t0 = Instant::now();
        // The 180p layer really sends 100 kbit/s, not its nominal 150.
        assert!(feed(&mut t, t0, 1, 100.0, 5));
        let (t0k, t1k, all) = (t.kbps(1, 0, 150), t.kbps(1, 1, 150), t.kbps(1, u8::MAX, 150));
        assert!((38..=42).contains(&t0k), "{t0k}");
        assert!((58..=62).contains(&t1k), "{t1k}");
        assert!((97..=103).contains(&all), "{all}");
        // Another simulcast layer is priced on its own.
        assert_eq!(t.kbps(2, u8::MAX, 500), 500);
        // 30 packets/s of 40 bytes of headers: 9.6 kbit/s.
        assert_eq!((t.overhead_kbps(1), t.overhead_kbps(2)), (10, 0));
    }

    #[test]
    fn a_silent_layer_keeps_its_last_price() {
        let mut t = TrackLayers::default();
        let t0 = Instant::now();
        feed(&mut t, t0, 1, 100.0, 3);
        feed(&mut t, t0 + Duration::from_secs(3), 2, 400.0, 3);
        let q = t.kbps(1, u8::MAX, 150);
        assert!((95..=105).contains(&q), "{q}");
    }
}
