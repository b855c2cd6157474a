//! Synthetic media for a publishing site or a synthetic chair: VP8-shaped video and Opus-shaped audio RTP payloads
//! with the sizes, timestamps and keyframe structure of the real thing, and no codec behind them.
//!
//! What is real: the VP8 payload descriptor (RFC 7741: X, S, a 15-bit PictureID) and payload header (the frame tag
//! whose P bit is 0 on a keyframe, the keyframe start code and dimensions), so the bridge's keyframe detection and
//! slot switching see what a browser sends; frame sizes from the target bitrate and frame rate (a keyframe is
//! [`KEYFRAME_FACTOR`] times an average frame, delta frames are smaller so the average holds, ±15% spread); packets of
//! at most [`PublisherConfig::max_payload`] bytes; a 90 kHz video clock and a 48 kHz audio clock; a keyframe at the
//! start, on request (PLI/FIR) and every [`PublisherConfig::keyframe_interval`]; a keyframe on request is paid back
//! by the delta frames after it, so the bitrate holds however often subscribers ask (as a real encoder's rate
//! control does). Audio is one 20 ms packet every 20 ms with an Opus TOC byte (CELT fullband, 20 ms, mono).
//!
//! Sans-IO: [`Publisher::poll_timeout`] says when the next packet is due, [`Publisher::poll_packets`] hands out
//! everything due by `now`. The site writes them with `StreamTx::write_rtp` (RTP mode), as the bridge forwards.
//!
//! Simulcast ([`PublisherConfig::simulcast`]): the site runs one publisher per layer ([`PublisherConfig::layer`]),
//! each with its own sequence space.
//!
//! Temporal layers ([`PublisherConfig::temporal_layers`] 2 or 3, as Chromium's L1T2/L1T3): frames in libwebrtc's
//! pattern (TID 0,1 or 0,2,1,2), the descriptor carries TL0PICIDX, TID and Y, base-layer frames are larger (the
//! 60/40 and 40/20/40 rate split). Each frame's first packet also carries a frame-reference record
//! (`vp8::write_frame_ref`: which frame it is predicted from), which the synthetic receiver checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use str0m::media::MediaKind;

use crate::vp8;

/// A keyframe is this many average frames.
pub const KEYFRAME_FACTOR: f64 = 4.0;
/// At most this share of a delta frame goes to paying back an unscheduled keyframe (3 extra average frames are paid
/// back over the next 10 frames, 0.7 s at 15 fps).
const MAX_PAYBACK: f64 = 0.3;
/// If the caller falls this far behind, the sources skip ahead (as a camera would) instead of bursting.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// What a synthetic publisher sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublisherConfig {
    /// Send video.
    pub video: bool,
    /// Video target bitrate, kbit/s of RTP payload.
    pub video_kbps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// A keyframe at least this often.
    pub keyframe_interval: Duration,
    /// Largest RTP payload (descriptor included), bytes.
    pub max_payload: usize,
    /// Picture size written in keyframes.
    pub width: u16,
    /// Picture size written in keyframes.
    pub height: u16,
    /// Send audio.
    pub audio: bool,
    /// Audio bitrate, kbit/s of RTP payload.
    pub audio_kbps: u32,
    /// Audio packet duration, ms: 20 (a browser's default), 40 or 60 (the low-bandwidth profile).
    pub audio_ptime_ms: u32,
    /// Send video as three simulcast layers (rids `q`, `h`, `f`): this configuration is `h`; `q` is half its size at
    /// 30% of its bitrate, `f` twice its size at 3× (with the defaults: 320×180 at 150, 640×360 at 500, 1280×720 at
    /// 1,500 kbit/s), as the chair's browser does.
    pub simulcast: bool,
    /// Temporal layers per video layer: 1 (none), 2 or 3.
    pub temporal_layers: u8,
    /// With simulcast, the `q` layer's bitrate, kbit/s, instead of 30% of `h`'s (the chair page sends 100 in a
    /// meeting with satellite communes).
    pub q_kbps: Option<u32>,
}

/// Simulcast rids, lowest first.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

impl PublisherConfig {
    /// The video-only configuration of simulcast layer `rid` (`q` or `f`) derived from this one (`h`).
    pub fn layer(&self, rid: &str) -> PublisherConfig {
        let (num, den, kbps_pct) = match rid {
            "q" => (1, 2, 30),
            "f" => (2, 1, 300),
            _ => (1, 1, 100),
        };
        let kbps = match (rid, self.q_kbps) {
            ("q", Some(q)) => q,
            _ => self.video_kbps * kbps_pct / 100,
        };
        PublisherConfig {
            video_kbps: kbps.max(1),
            q_kbps: None,
            width: self.width * num / den,
            height: self.height * num / den,
            audio: false,
            simulcast: false,
            ..self.clone()
        }
    }
}

impl Default for PublisherConfig {
    /// The chair's 360p layer: 500 kbit/s at 15 fps, a keyframe every 10 s; Opus at 32 kbit/s.
    fn default() -> Self {
        Self {
            video: true,
            video_kbps: 500,
            fps: 15,
            keyframe_interval: Duration::from_secs(10),
            max_payload: 1100,
            width: 640,
            height: 360,
            audio: true,
            audio_kbps: 32,
            audio_ptime_ms: 20,
            simulcast: false,
            temporal_layers: 1,
            q_kbps: None,
        }
    }
}

/// One RTP packet to write.
#[derive(Debug, Clone)]
pub struct OutPacket {
    /// Audio or video.
    pub kind: MediaKind,
    /// Extended sequence number (starts below 65,536: ROC 0).
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// Marker: the last packet of a video frame; the first packet of the audio stream.
    pub marker: bool,
    /// First packet of a keyframe.
    pub keyframe: bool,
    /// When the frame was "captured" (its scheduled time).
    pub capture: Instant,
    /// The payload.
    pub payload: Arc<[u8]>,
}

#[derive(Debug)]
struct VideoSource {
    next_at: Instant,
    start: Instant,
    frame_no: u64,
    seq: u64,
    ts0: u32,
    picture_id: u16,
    /// Position in the temporal pattern (0 at a keyframe).
    pos: u64,
    /// TL0PICIDX of the latest base-layer frame.
    tl0: u8,
    /// Frame numbers of the latest frame of each temporal layer (the references of the next frames).
    last_of_layer: [Option<u32>; 3],
    force_key: bool,
    last_key: Option<Instant>,
    /// Bytes sent over the target by keyframes asked for between the scheduled ones, paid back by the delta frames
    /// that follow (as a real encoder's rate control does: a PLI costs picture quality, not bitrate).
    debt: f64,
}

#[derive(Debug)]
struct AudioSource {
    next_at: Instant,
    start: Instant,
    n: u64,
    seq: u64,
    ts0: u32,
}

/// Counters of what a [`Publisher`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PublisherStats {
    /// Video frames.
    pub frames: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Keyframe requests received.
    pub keyframe_requests: u64,
    /// Video packets.
    pub video_packets: u64,
    /// Video payload bytes.
    pub video_bytes: u64,
    /// Audio packets.
    pub audio_packets: u64,
}

/// Synthetic video and audio, in virtual time.
#[derive(Debug)]
pub struct Publisher {
    cfg: PublisherConfig,
    rng: StdRng,
    video: Option<VideoSource>,
    audio: Option<AudioSource>,
    stats: PublisherStats,
}

impl Publisher {
    /// Sources starting at `start`; `seed` draws the initial sequence numbers, timestamps and the size spread.
    pub fn new(cfg: PublisherConfig, start: Instant, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let video = (cfg.video && cfg.fps > 0).then(|| VideoSource {
            next_at: start,
            start,
            frame_no: 0,
            seq: rng.random_range(0..30_000),
            ts0: rng.random(),
            picture_id: rng.random_range(0..0x8000),
            pos: 0,
            tl0: rng.random(),
            last_of_layer: [None; 3],
            force_key: true,
            last_key: None,
            debt: 0.0,
        });
        let audio = cfg.audio.then(|| AudioSource {
            next_at: start,
            start,
            n: 0,
            seq: rng.random_range(0..30_000),
            ts0: rng.random(),
        });
        Self { cfg, rng, video, audio, stats: PublisherStats::default() }
    }

    /// The configuration.
    pub fn config(&self) -> &PublisherConfig {
        &self.cfg
    }

    /// What was sent so far.
    pub fn stats(&self) -> PublisherStats {
        self.stats
    }

    /// Changes the video bitrate from the next frame on (a link check's uplink steps).
    pub fn set_video_kbps(&mut self, kbps: u32) {
        self.cfg.video_kbps = kbps.max(1);
    }

    /// The next frame is a keyframe (on PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.stats.keyframe_requests += 1;
        if let Some(v) = &mut self.video {
            v.force_key = true;
        }
    }

    /// When the next packet is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.video.as_ref().map(|v| v.next_at), self.audio.as_ref().map(|a| a.next_at)].into_iter().flatten().min()
    }

    /// Appends every packet due by `now` to `out`, in time order per source.
    pub fn poll_packets(&mut self, now: Instant, out: &mut Vec<OutPacket>) {
        while let Some(a) = &mut self.audio
            && a.next_at <= now
        {
            let ptime = match self.cfg.audio_ptime_ms {
                40 => 40,
                60 => 60,
                _ => 20,
            };
            let frame = Duration::from_millis(ptime);
            if now.saturating_duration_since(a.next_at) > MAX_CATCH_UP {
                a.n = (now.saturating_duration_since(a.start).as_millis() / u128::from(ptime)) as u64;
            }
            let capture = a.start + frame * (a.n as u32);
            let size = (self.cfg.audio_kbps as usize * ptime as usize / 8).max(3);
            let mut payload = Vec::with_capacity(size);
            // TOC, mono, one frame: config 31 (CELT FB 20 ms), 10 or 11 (SILK WB 40 or 60 ms) — what Opus uses.
            payload.push(match ptime {
                40 => 10 << 3,
                60 => 11 << 3,
                _ => 31 << 3,
            });
            payload.resize(size, (a.n as u8) | 1);
            out.push(OutPacket {
                kind: MediaKind::Audio,
                seq: a.seq,
                ts: a.ts0.wrapping_add((a.n * 48 * ptime) as u32),
                marker: self.stats.audio_packets == 0,
                keyframe: false,
                capture,
                payload: payload.into(),
            });
            self.stats.audio_packets += 1;
            a.seq += 1;
            a.n += 1;
            a.next_at = a.start + frame * (a.n as u32);
        }
        while self.video.as_ref().is_some_and(|v| v.next_at <= now) {
            self.video_frame(now, out);
        }
    }

    fn video_frame(&mut self, now: Instant, out: &mut Vec<OutPacket>) {
        let cfg = &self.cfg;
        let Some(v) = &mut self.video else { return };
        let fps = u64::from(cfg.fps.max(1));
        let at = |n: u64| v.start + Duration::from_nanos(n * 1_000_000_000 / fps);
        if now.saturating_duration_since(v.next_at) > MAX_CATCH_UP {
            v.frame_no = now.saturating_duration_since(v.start).as_nanos() as u64 * fps / 1_000_000_000;
        }
        let capture = at(v.frame_no);
        let scheduled = v.last_key.is_none_or(|k| capture.saturating_duration_since(k) >= cfg.keyframe_interval);
        let keyframe = v.force_key || scheduled;
        let avg = f64::from(cfg.video_kbps) * 1000.0 / 8.0 / fps as f64;
        let per_interval = (cfg.keyframe_interval.as_secs_f64() * fps as f64).max(2.0);
        let delta = ((avg * per_interval - avg * KEYFRAME_FACTOR) / (per_interval - 1.0)).max(avg * 0.2);
        let size = if keyframe {
            let size = avg * KEYFRAME_FACTOR * self.rng.random_range(0.95..1.05);
            if !scheduled {
                v.debt += size - delta;
            }
            size
        } else {
            let payback = v.debt.min(delta * MAX_PAYBACK);
            v.debt -= payback;
            (delta - payback) * self.rng.random_range(0.85..1.15)
        };
        // Temporal layer of this frame, what it is predicted from, and its size by libwebrtc's rate split.
        let layers = cfg.temporal_layers.clamp(1, 3);
        if keyframe {
            v.pos = 0;
        }
        let (tid, weight) = match (layers, v.pos % 4) {
            (2, p) if p % 2 == 1 => (1, 0.8),
            (2, _) => (0, 1.2),
            (3, 0) => (0, 1.6),
            (3, 2) => (1, 0.8),
            (3, _) => (2, 0.8),
            _ => (0, 1.0),
        };
        // A keyframe is a keyframe's size whatever its layer.
        let weight = if keyframe { 1.0 } else { weight };
        let reference = if keyframe {
            None
        } else {
            // Base frames from the base layer before; TID 1, and TID 2 right after a base frame, from that base frame
            // (layer sync); the other TID 2 frame from the TID 1 frame before it.
            match tid {
                0 => v.last_of_layer[0],
                2 if v.pos % 4 == 3 => v.last_of_layer[1],
                _ => v.last_of_layer[0],
            }
        };
        let sync = tid > 0 && reference == v.last_of_layer[0];
        if tid == 0 {
            v.tl0 = v.tl0.wrapping_add(1);
        }
        let temporal = (layers > 1).then_some(vp8::Temporal { tl0_pic_idx: v.tl0, tid, sync });
        let size = ((size * weight) as usize).max(16);
        let descriptor = if temporal.is_some() { vp8::TEMPORAL_DESCRIPTOR_LEN } else { vp8::DESCRIPTOR_LEN };
        let budget = cfg.max_payload.saturating_sub(descriptor).max(16);
        let packets = size.div_ceil(budget);
        let frame = v.frame_no as u32;
        let ts = v.ts0.wrapping_add((v.frame_no * 90_000 / fps) as u32);
        let fill = (v.frame_no as u8) | 0x40;
        let mut left = size;
        for i in 0..packets {
            let chunk = left / (packets - i);
            left -= chunk;
            let mut p = Vec::with_capacity(descriptor + chunk);
            vp8::write_descriptor(&mut p, i == 0, v.picture_id, temporal);
            if i == 0 {
                vp8::write_payload_header(&mut p, keyframe, (size / 8) as u32, cfg.width, cfg.height);
                vp8::write_frame_ref(&mut p, frame, reference);
            }
            p.resize((descriptor + chunk).max(p.len()), fill);
            self.stats.video_packets += 1;
            self.stats.video_bytes += p.len() as u64;
            out.push(OutPacket {
                kind: MediaKind::Video,
                seq: v.seq,
                ts,
                marker: i + 1 == packets,
                keyframe: keyframe && i == 0,
                capture,
                payload: p.into(),
            });
            v.seq += 1;
        }
        self.stats.frames += 1;
        if keyframe {
            self.stats.keyframes += 1;
            v.last_key = Some(capture);
            v.force_key = false;
            v.last_of_layer = [None; 3];
        }
        v.last_of_layer[usize::from(tid)] = Some(frame);
        v.pos += 1;
        v.picture_id = (v.picture_id + 1) & 0x7fff;
        v.frame_no += 1;
        v.next_at = at(v.frame_no);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &mut Publisher, t0: Instant, until: Duration, step: Duration) -> Vec<OutPacket> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t <= until {
            p.poll_packets(t0 + t, &mut out);
            t += step;
        }
        out
    }

    #[test]
    fn temporal_layers_follow_libwebrtcs_pattern_and_rate_split() {
        let t0 = Instant::now();
        let cfg = PublisherConfig { audio: false, fps: 30, video_kbps: 150, temporal_layers: 3, ..Default::default() };
        let mut p = Publisher::new(cfg, t0, 3);
        let out = run(&mut p, t0, Duration::from_secs(20) - Duration::from_millis(1), Duration::from_millis(5));
        let mut bytes = [0usize; 3];
        let mut frames = Vec::new();
        for o in &out {
            let info = vp8::parse(&o.payload).expect("valid");
            let tid = info.tid.expect("TID in every packet");
            bytes[usize::from(tid)] += o.payload.len();
            if info.frame_start {
                frames.push((tid, info.frame_ref.expect("reference record")));
            }
        }
        assert_eq!(frames.len(), 600);
        // 0,2,1,2 from the keyframe; each frame predicted from the one libwebrtc's pattern says.
        for (i, (tid, (n, reference))) in frames.iter().enumerate() {
            assert_eq!(*n as usize, i);
            assert_eq!(*tid, [0, 2, 1, 2][i % 4], "frame {i}");
            let want = match i % 4 {
                _ if i == 0 => None,
                0 => Some(i as u32 - 4),
                3 => Some(i as u32 - 1),
                k => Some(i as u32 - k as u32),
            };
            // Scheduled keyframes (every 10 s: frames 300) restart the chain.
            if i != 300 {
                assert_eq!(*reference, want, "frame {i}");
            }
        }
        // The base layer (7.5 fps) carries ~40% of the bitrate, TID 1 ~20%, TID 2 ~40%.
        let total: usize = bytes.iter().sum();
        let share = |t: usize| bytes[t] as f64 / total as f64;
        assert!((0.36..0.46).contains(&share(0)), "{}", share(0));
        assert!((0.16..0.24).contains(&share(1)), "{}", share(1));
        assert!((0.36..0.44).contains(&share(2)), "{}", share(2));
        let kbps = total as f64 * 8.0 / 20.0 / 1000.0;
        assert!((135.0..165.0).contains(&kbps), "{kbps}");
    }

    #[test]
    fn video_frames_have_realistic_sizes_and_valid_descriptors() {
        let t0 = Instant::now();
        let mut p = Publisher::new(PublisherConfig { audio: false, ..Default::default() }, t0, 1);
        let out = run(&mut p, t0, Duration::from_secs(20) - Duration::from_millis(1), Duration::from_millis(5));
        assert_eq!(p.stats().frames, 300, "15 fps for 20 s");
        assert!(out.iter().all(|o| o.payload.len() <= 1100 && o.kind == MediaKind::Video));
        // Sequence numbers are continuous; frames end with the marker; timestamps step 6000 (90 kHz / 15).
        for w in out.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
            if w[0].marker {
                assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 6000);
            } else {
                assert_eq!(w[1].ts, w[0].ts);
            }
        }
        // Every frame start parses as such, keyframes exactly where flagged.
        let mut frames: Vec<(usize, bool)> = Vec::new(); // (bytes, keyframe)
        for o in &out {
            let info = vp8::parse(&o.payload).unwrap();
            assert_eq!(info.keyframe, o.keyframe);
            if info.frame_start {
                frames.push((0, info.keyframe));
            }
            frames.last_mut().unwrap().0 += o.payload.len();
        }
        assert_eq!(frames.len(), 300);
        let keys: Vec<usize> = frames.iter().enumerate().filter(|(_, f)| f.1).map(|(i, _)| i).collect();
        assert_eq!(keys, vec![0, 150], "a keyframe at the start and every 10 s");
        let delta: Vec<usize> = frames.iter().filter(|f| !f.1).map(|f| f.0).collect();
        let mean = delta.iter().sum::<usize>() as f64 / delta.len() as f64;
        assert!((3_900.0..4_300.0).contains(&mean), "delta frames ≈ 4.1 KB: {mean}");
        assert!(frames[0].0 > 15_000, "keyframe ≈ 4 average frames: {}", frames[0].0);
        let kbps = p.stats().video_bytes as f64 * 8.0 / 20.0 / 1000.0;
        assert!((475.0..525.0).contains(&kbps), "{kbps}");
    }

    #[test]
    fn keyframe_on_request() {
        let t0 = Instant::now();
        let mut p = Publisher::new(PublisherConfig { audio: false, ..Default::default() }, t0, 2);
        let mut out = Vec::new();
        p.poll_packets(t0, &mut out);
        p.poll_packets(t0 + Duration::from_millis(70), &mut out);
        p.request_keyframe();
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_nanos(2 * 1_000_000_000 / 15)));
        out.clear();
        p.poll_packets(t0 + Duration::from_millis(140), &mut out);
        assert!(out[0].keyframe);
        assert_eq!(out.iter().filter(|o| o.keyframe).count(), 1);
        out.clear();
        p.poll_packets(t0 + Duration::from_millis(210), &mut out);
        assert!(!out.iter().any(|o| o.keyframe));
        assert_eq!(p.stats().keyframes, 2);
        assert_eq!(p.stats().keyframe_requests, 1);
    }

    #[test]
    fn keyframes_on_request_cost_quality_not_bitrate() {
        let t0 = Instant::now();
        let mut p = Publisher::new(PublisherConfig { audio: false, ..Default::default() }, t0, 5);
        let mut out = Vec::new();
        // A keyframe asked for every second (subscribers switching layers) for 20 s.
        for ms in (0..20_000).step_by(5) {
            if ms % 1000 == 500 {
                p.request_keyframe();
            }
            p.poll_packets(t0 + Duration::from_millis(ms), &mut out);
        }
        assert_eq!(p.stats().keyframes, 21);
        let kbps = p.stats().video_bytes as f64 * 8.0 / 20.0 / 1000.0;
        assert!((470.0..530.0).contains(&kbps), "the target holds: {kbps} kbit/s");
    }

    #[test]
    fn audio_is_20ms_packets_of_80_bytes_at_48khz() {
        let t0 = Instant::now();
        let mut p = Publisher::new(PublisherConfig { video: false, ..Default::default() }, t0, 3);
        let out = run(&mut p, t0, Duration::from_millis(999), Duration::from_millis(7));
        assert_eq!(out.len(), 50);
        assert!(out.iter().all(|o| o.payload.len() == 80 && o.payload[0] == 0xf8 && o.kind == MediaKind::Audio));
        assert!(out[0].marker && !out[1].marker);
        for w in out.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 960);
            assert_eq!(w[1].capture - w[0].capture, Duration::from_millis(20));
        }
    }

    #[test]
    fn a_stalled_caller_skips_ahead_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Publisher::new(PublisherConfig::default(), t0, 4);
        let mut out = Vec::new();
        p.poll_packets(t0, &mut out);
        out.clear();
        p.poll_packets(t0 + Duration::from_secs(5), &mut out);
        let frames = out.iter().filter(|o| o.kind == MediaKind::Video && o.marker).count();
        let audio = out.iter().filter(|o| o.kind == MediaKind::Audio).count();
        assert_eq!((frames, audio), (1, 1));
        assert!(p.poll_timeout().unwrap() > t0 + Duration::from_secs(5));
    }
}
