//! What a synthetic site measures of the media it receives, from the RTP packets str0m hands out in RTP mode.
//!
//! Sans-IO like the rest: every input carries `now`, nothing reads a clock. One [`Metrics`] per site; inside it one
//! stream per receiving `mid` (a commune site has one audio and one video slot; a chair has its grid).
//!
//! Definitions (what a drill report means):
//! - **Loss after repair**: sequence numbers never received, counted once they are more than [`LOSS_AFTER`] old (from
//!   when a later packet showed the gap). str0m NACKs and unwraps RTX in RTP mode too, so a repaired packet arrives
//!   late with its original sequence number and is not lost. Audio is not retransmitted by the bridge.
//! - **Video frames**: a frame is the packets of one RTP timestamp; it is *complete* when its first packet (S bit,
//!   partition 0), its last (marker) and every sequence number between have arrived. It is *decoded* when it is a
//!   complete keyframe, or complete and directly follows the last decoded frame (no sequence gap but FEC packets; or,
//!   across a gap, its PictureID follows, as libwebrtc's VP8 reference finder goes by PictureID), as a decoder that
//!   needs every reference would. After a loss that is never repaired, nothing decodes until the next keyframe.
//! - **Time to first frame**: from the join start (before the WebSocket opens) to the first decoded keyframe.
//! - **Freezes**: WebRTC's definition with a fixed threshold — a gap between decoded frames longer than
//!   [`FREEZE_AFTER`] is a freeze, and its whole length counts as freeze time. A freeze still going on at the end of the
//!   run counts too.
//! - **Audio continuity**: the share of 20 ms slots, placed by the RTP timestamp (48 kHz), that received a packet,
//!   from the first audio packet to the last; silence at the end of the run (no audio for more than 200 ms) counts as
//!   missing. A packet counts whenever it arrives (there is no playout deadline). The longest gap is the longest run of
//!   missing slots, in ms.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::media::{MediaKind, Mid};

use crate::vp8;

/// A missing sequence number older than this is lost.
pub const LOSS_AFTER: Duration = Duration::from_secs(1);
/// A gap between decoded video frames longer than this is a freeze.
pub const FREEZE_AFTER: Duration = Duration::from_millis(500);
/// Audio packets are 20 ms: 960 ticks at 48 kHz.
pub const AUDIO_SLOT_TICKS: u64 = 960;
/// When the video decoder is stuck (complete frames it cannot decode) this long, the site asks for a keyframe.
pub const STUCK_BEFORE_PLI: Duration = Duration::from_millis(1000);

/// Gaps larger than this are counted lost at once instead of being tracked one by one.
const MAX_TRACKED_GAP: u64 = 4096;
/// Audio slots kept open for late packets (20 ms each: 20 s).
const AUDIO_WINDOW: u64 = 1024;
/// No audio for longer than this at the end of the run counts as missing slots.
const AUDIO_TRAILING_GRACE: Duration = Duration::from_millis(200);
/// Frames waiting for packets or for their reference, at most.
const MAX_PENDING_FRAMES: usize = 256;

/// One received RTP packet, as the metrics need it.
#[derive(Debug, Clone, Copy)]
pub struct PacketInfo<'a> {
    /// The transceiver it arrived on.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Extended sequence number (str0m's `RtpPacket::seq_no`; RTX already unwrapped).
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP payload.
    pub payload: &'a [u8],
}

/// Tracks received sequence numbers of one stream: loss after repair and late (repaired or reordered) arrivals.
#[derive(Debug, Default)]
struct SeqTracker {
    first: Option<u64>,
    highest: u64,
    /// Missing sequence numbers and when the gap was seen. Ordered by sequence number, which is also the order in
    /// which gaps are seen, so the first entry is the oldest.
    missing: BTreeMap<u64, Instant>,
    lost: u64,
    recovered: u64,
}

impl SeqTracker {
    /// Records `seq`; returns `false` for a duplicate or a packet from before the first one.
    fn on_seq(&mut self, now: Instant, seq: u64) -> bool {
        self.sweep(now);
        if self.first.is_none() {
            self.first = Some(seq);
            self.highest = seq;
            return true;
        }
        if seq > self.highest {
            let gap = seq - self.highest - 1;
            let tracked = gap.min(MAX_TRACKED_GAP);
            self.lost += gap - tracked;
            for s in (seq - tracked)..seq {
                self.missing.insert(s, now);
            }
            self.highest = seq;
            true
        } else if self.missing.remove(&seq).is_some() {
            self.recovered += 1;
            true
        } else {
            false
        }
    }

    /// Whether `seq` came already (or was given up on as lost).
    fn has(&self, seq: u64) -> bool {
        self.first.is_some_and(|f| seq >= f) && seq <= self.highest && !self.missing.contains_key(&seq)
    }

    fn sweep(&mut self, now: Instant) {
        while let Some((&seq, &seen)) = self.missing.first_key_value() {
            if now.saturating_duration_since(seen) <= LOSS_AFTER {
                break;
            }
            self.missing.remove(&seq);
            self.lost += 1;
        }
    }

    /// `(lost, expected)` as of `now`, without changing the state.
    fn loss(&self, now: Instant) -> (u64, u64) {
        let Some(first) = self.first else { return (0, 0) };
        let old = self.missing.values().take_while(|seen| now.saturating_duration_since(**seen) > LOSS_AFTER).count();
        (self.lost + old as u64, self.highest - first + 1)
    }
}

/// Extends 32-bit RTP timestamps to 64 bits (wrap-around), relative to the largest seen.
#[derive(Debug, Default)]
struct TsExtender {
    max: Option<u64>,
}

impl TsExtender {
    fn extend(&mut self, ts: u32) -> u64 {
        let Some(max) = self.max else {
            // Start in the middle of the range so that a packet slightly before the first does not underflow.
            let ext = (1u64 << 32) + u64::from(ts);
            self.max = Some(ext);
            return ext;
        };
        let roc = max >> 32;
        let candidates = [roc.wrapping_sub(1), roc, roc + 1].map(|r| (r << 32) | u64::from(ts));
        let ext = candidates.into_iter().min_by_key(|c| c.abs_diff(max)).unwrap_or(max);
        if ext > max {
            self.max = Some(ext);
        }
        ext
    }
}

#[derive(Debug, Default)]
struct PendingFrame {
    start_seq: Option<u64>,
    end_seq: Option<u64>,
    packets: u64,
    keyframe: bool,
    height: Option<u16>,
    picture_id: Option<u16>,
    frame_ref: Option<(u32, Option<u32>)>,
}

#[derive(Debug, Clone, Copy)]
struct CompleteFrame {
    end_seq: u64,
    keyframe: bool,
    height: Option<u16>,
    picture_id: Option<u16>,
    frame_ref: Option<(u32, Option<u32>)>,
}

/// Frames remembered as decoded since the last keyframe (what later frames may reference).
const DECODED_MEMORY: usize = 32;

/// Reassembles frames and follows the decoding chain of one video stream.
#[derive(Debug, Default)]
struct VideoStream {
    ts: TsExtender,
    /// Incomplete frames by extended timestamp.
    pending: BTreeMap<u64, PendingFrame>,
    /// Complete frames not yet decoded, by first sequence number, with their timestamp.
    complete: BTreeMap<u64, (u64, CompleteFrame)>,
    /// `(extended ts, last seq)` of the last decoded frame.
    last_decoded: Option<(u64, u64)>,
    /// Sequence numbers of the stream that carried no media (FEC packets), after the last decoded frame.
    fillers: std::collections::BTreeSet<u64>,
    /// Since when complete frames wait that cannot be decoded.
    stuck_since: Option<Instant>,
    frames: u64,
    keyframes: u64,
    first_frame_at: Option<Instant>,
    last_frame_at: Option<Instant>,
    freezes: u64,
    freeze_time: Duration,
    longest_frame_gap: Duration,
    /// Height of the last decoded keyframe (the layer being received).
    height: Option<u16>,
    /// PictureID of the last decoded frame.
    last_picture_id: Option<u16>,
    /// Frame numbers (frame-reference records) decoded since the last keyframe, latest last.
    decoded: VecDeque<u32>,
    /// Frames that were complete and in sequence but could not be decoded: a PictureID gap or a reference never
    /// decoded (what libwebrtc's reference finder would hold back).
    broken_chain: u64,
    /// First sequence number of the last frame counted in `broken_chain`.
    broken_at: Option<u64>,
}

impl VideoStream {
    fn on_packet(&mut self, now: Instant, p: &PacketInfo<'_>) {
        let ts = self.ts.extend(p.ts);
        if self.last_decoded.is_some_and(|(last_ts, last_seq)| ts <= last_ts || p.seq <= last_seq) {
            return; // a late packet of a frame already decoded or skipped
        }
        let info = vp8::parse(p.payload).unwrap_or_default();
        let frame = self.pending.entry(ts).or_default();
        frame.packets += 1;
        if info.frame_start {
            frame.start_seq = Some(p.seq);
            frame.keyframe = info.keyframe;
            frame.height = info.height;
            frame.picture_id = info.picture_id;
            frame.frame_ref = info.frame_ref;
        }
        if p.marker {
            frame.end_seq = Some(p.seq);
        }
        if let (Some(start), Some(end)) = (frame.start_seq, frame.end_seq)
            && end >= start
            && frame.packets == end - start + 1
        {
            let done = CompleteFrame {
                end_seq: end,
                keyframe: frame.keyframe,
                height: frame.height,
                picture_id: frame.picture_id,
                frame_ref: frame.frame_ref,
            };
            self.pending.remove(&ts);
            self.complete.insert(start, (ts, done));
        }
        self.decode(now);
        while self.pending.len() > MAX_PENDING_FRAMES {
            self.pending.pop_first();
        }
        while self.complete.len() > MAX_PENDING_FRAMES {
            self.complete.pop_first();
        }
    }

    /// A packet of the stream that is not media (an FEC packet): its number fills the sequence between frames.
    fn on_filler(&mut self, now: Instant, seq: u64) {
        if self.last_decoded.is_some_and(|(_, last)| seq <= last) {
            return;
        }
        self.fillers.insert(seq);
        while self.fillers.len() > MAX_PENDING_FRAMES {
            self.fillers.pop_first();
        }
        self.decode(now);
    }

    fn decode(&mut self, now: Instant) {
        loop {
            let next = match self.last_decoded {
                Some((_, last_seq)) => {
                    // The frame right after the last decoded one, past the FEC packets between (libwebrtc's packet
                    // buffer takes those as padding); or, across numbers nothing filled (a lost FEC packet), a
                    // complete frame whose PictureID follows: libwebrtc's VP8 reference finder goes by PictureID,
                    // and a frame lost in between would have left a PictureID gap.
                    let mut want = last_seq + 1;
                    while self.fillers.contains(&want) {
                        want += 1;
                    }
                    let follows = |f: &CompleteFrame| match (self.last_picture_id, f.picture_id) {
                        (Some(last), Some(pid)) => pid == (last + 1) & 0x7fff || pid == (last + 1) & 0x7f,
                        _ => false,
                    };
                    let next = self.complete.get(&want).map(|f| (want, *f)).or_else(|| {
                        self.complete.range(want..).next().filter(|(_, (_, f))| follows(f)).map(|(s, f)| (*s, *f))
                    });
                    // In sequence, but is its chain whole? (A keyframe needs nothing.)
                    match next {
                        Some((start, (_, f))) if !f.keyframe && !self.chain_whole(&f) => {
                            if self.broken_at != Some(start) {
                                self.broken_at = Some(start);
                                self.broken_chain += 1;
                            }
                            None
                        }
                        other => other,
                    }
                }
                None => None,
            };
            let next = next.or_else(|| {
                let after = self.last_decoded.map_or(0, |(_, s)| s + 1);
                self.complete.range(after..).find(|(_, (_, f))| f.keyframe).map(|(s, f)| (*s, *f))
            });
            let Some((start, (ts, frame))) = next else { break };
            // Everything before this frame can no longer be decoded.
            self.complete = self.complete.split_off(&start);
            self.complete.remove(&start);
            self.pending = self.pending.split_off(&(ts + 1));
            self.last_decoded = Some((ts, frame.end_seq));
            self.fillers = self.fillers.split_off(&(frame.end_seq + 1));
            self.frames += 1;
            self.last_picture_id = frame.picture_id;
            if frame.keyframe {
                self.decoded.clear();
            }
            if let Some((n, _)) = frame.frame_ref {
                if self.decoded.len() == DECODED_MEMORY {
                    self.decoded.pop_front();
                }
                self.decoded.push_back(n);
            }
            if frame.keyframe {
                self.keyframes += 1;
                if frame.height.is_some() {
                    self.height = frame.height;
                }
            }
            if let Some(last) = self.last_frame_at {
                let gap = now.saturating_duration_since(last);
                self.longest_frame_gap = self.longest_frame_gap.max(gap);
                if gap > FREEZE_AFTER {
                    self.freezes += 1;
                    self.freeze_time += gap;
                }
            }
            self.first_frame_at.get_or_insert(now);
            self.last_frame_at = Some(now);
        }
        if self.complete.is_empty() {
            self.stuck_since = None;
        } else {
            self.stuck_since.get_or_insert(now);
        }
    }

    /// A delta frame next in sequence decodes when its PictureID follows the last decoded one (the bridge closes up
    /// the numbers of frames it does not forward) and the frame it is predicted from was decoded.
    fn chain_whole(&self, f: &CompleteFrame) -> bool {
        let pid_follows = match (self.last_picture_id, f.picture_id) {
            (Some(last), Some(pid)) => pid == (last + 1) & 0x7fff || pid == (last + 1) & 0x7f,
            _ => true,
        };
        let reference_decoded = match f.frame_ref {
            Some((_, Some(r))) => self.decoded.contains(&r),
            _ => true,
        };
        pid_follows && reference_decoded
    }

    /// Freezes, including one still going on at `now`.
    fn freezes_at(&self, now: Instant) -> (u64, Duration) {
        match self.last_frame_at {
            Some(last) if now.saturating_duration_since(last) > FREEZE_AFTER => {
                (self.freezes + 1, self.freeze_time + now.saturating_duration_since(last))
            }
            _ => (self.freezes, self.freeze_time),
        }
    }
}

/// How many 20 ms slots an Opus packet covers, from its TOC byte (RFC 6716 §3.1): the frame duration of its
/// configuration times its frame count; at least one (a packet shorter than 20 ms, or unreadable, counts as one).
fn opus_slots(payload: &[u8]) -> u64 {
    let Some(&toc) = payload.first() else { return 1 };
    let config = toc >> 3;
    // Frame duration in tenths of a millisecond.
    let tenths: u64 = match config {
        0..=11 => [100, 200, 400, 600][usize::from(config % 4)],
        12..=15 => [100, 200][usize::from(config % 2)],
        _ => [25, 50, 100, 200][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => payload.get(1).map_or(1, |b| u64::from(b & 0x3f)),
    };
    (tenths * frames / 200).max(1)
}

/// Which 20 ms slots received audio, with a window open for late packets.
#[derive(Debug, Default)]
struct AudioStream {
    ts: TsExtender,
    origin: Option<u64>,
    /// Highest slot seen.
    max_slot: u64,
    /// The next slot to leave the window (every slot before it is counted in `final_*`).
    next_final: u64,
    /// Bitmap of slots in `next_final..=max_slot`, indexed by `slot % AUDIO_WINDOW`.
    window: Vec<u64>,
    final_slots: u64,
    final_covered: u64,
    /// Missing slots at the end of the finalized region (a gap that may go on).
    run: u64,
    longest_run: u64,
    last_arrival: Option<Instant>,
}

impl AudioStream {
    fn bit(&self, slot: u64) -> bool {
        let i = (slot % AUDIO_WINDOW) as usize;
        self.window.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, slot: u64, on: bool) {
        let i = (slot % AUDIO_WINDOW) as usize;
        if let Some(w) = self.window.get_mut(i / 64) {
            if on {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }

    fn finalize_one(&mut self) {
        let covered = self.bit(self.next_final);
        self.set(self.next_final, false);
        self.next_final += 1;
        self.final_slots += 1;
        if covered {
            self.final_covered += 1;
            self.run = 0;
        } else {
            self.run += 1;
            self.longest_run = self.longest_run.max(self.run);
        }
    }

    /// A packet at `ts` carrying `slots` 20 ms slots of audio.
    fn on_packet(&mut self, now: Instant, ts: u32, slots: u64) {
        let ts = self.ts.extend(ts);
        self.last_arrival = Some(now);
        let origin = match self.origin {
            Some(o) => o,
            None => {
                self.origin = Some(ts);
                self.window = vec![0; (AUDIO_WINDOW / 64) as usize];
                ts
            }
        };
        let Some(first) = ts.checked_sub(origin).map(|d| d / AUDIO_SLOT_TICKS) else { return };
        for slot in first..first + slots.clamp(1, 6) {
            self.cover(slot);
        }
    }

    fn cover(&mut self, slot: u64) {
        if slot > self.max_slot {
            // Slots that fall out of the window are final.
            let new_final = (slot + 1).saturating_sub(AUDIO_WINDOW);
            let individually = new_final.min(self.max_slot + 1);
            while self.next_final < individually {
                self.finalize_one();
            }
            if new_final > self.next_final {
                // A jump longer than the window: the whole stretch was silent.
                let silent = new_final - self.next_final;
                self.final_slots += silent;
                self.run += silent;
                self.longest_run = self.longest_run.max(self.run);
                self.next_final = new_final;
            }
            self.max_slot = slot;
        }
        if slot >= self.next_final {
            self.set(slot, true);
        }
    }

    /// `(covered, total, longest missing run)` in slots, as of `now`, without changing the state.
    fn coverage(&self, now: Instant) -> (u64, u64, u64) {
        if self.origin.is_none() {
            return (0, 0, 0);
        }
        let (mut covered, mut total, mut run, mut longest) =
            (self.final_covered, self.final_slots, self.run, self.longest_run);
        for slot in self.next_final..=self.max_slot {
            total += 1;
            if self.bit(slot) {
                covered += 1;
                run = 0;
            } else {
                run += 1;
                longest = longest.max(run);
            }
        }
        if let Some(last) = self.last_arrival {
            let silent = now.saturating_duration_since(last).saturating_sub(AUDIO_TRAILING_GRACE);
            let slots = (silent.as_millis() / 20) as u64;
            if slots > 0 {
                total += slots;
                longest = longest.max(run + slots);
            }
        }
        (covered, total, longest)
    }
}

#[derive(Debug)]
enum KindState {
    Video(VideoStream),
    Audio(AudioStream),
}

#[derive(Debug)]
struct Stream {
    mid: Mid,
    packets: u64,
    bytes: u64,
    first_at: Option<Instant>,
    seq: SeqTracker,
    state: KindState,
}

/// Everything a synthetic site measures. See the module docs for the definitions.
#[derive(Debug)]
pub struct Metrics {
    join_start: Instant,
    connected_at: Option<Instant>,
    streams: Vec<Stream>,
    keyframe_requests: u64,
    /// Bytes received in the last few 1 s windows, for `kbps_in`.
    rate: VecDeque<(Instant, u64)>,
    /// ULPFEC packets received, and media packets they rebuilt that had not come (nor come since).
    fec_packets: u64,
    fec_recovered: u64,
}

impl Metrics {
    /// Metrics of a site whose join started at `join_start` (before signalling).
    pub fn new(join_start: Instant) -> Self {
        Self {
            join_start,
            connected_at: None,
            streams: Vec::new(),
            keyframe_requests: 0,
            rate: VecDeque::new(),
            fec_packets: 0,
            fec_recovered: 0,
        }
    }

    /// When the join started.
    pub fn join_start(&self) -> Instant {
        self.join_start
    }

    /// ICE and DTLS are up.
    pub fn on_connected(&mut self, now: Instant) {
        self.connected_at.get_or_insert(now);
    }

    /// Whether the site ever connected.
    pub fn connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// The site asked for a keyframe.
    pub fn on_keyframe_request(&mut self) {
        self.keyframe_requests += 1;
    }

    /// One received RTP packet.
    /// An ULPFEC packet (inside RED) on video stream `mid`: its sequence number counts as received (it is part of
    /// the stream), its bytes go to no decoder.
    pub fn on_fec_packet(&mut self, now: Instant, mid: Mid, seq: u64, len: usize) {
        self.fec_packets += 1;
        if let Some(s) = self.streams.iter_mut().find(|s| s.mid == mid)
            && s.seq.on_seq(now, seq)
        {
            s.packets += 1;
            s.bytes += len as u64;
            if let KindState::Video(v) = &mut s.state {
                v.on_filler(now, seq);
            }
        }
    }

    /// A media packet rebuilt from FEC: counted as received like any other, and as recovered by FEC when it is new
    /// (it had been lost, and no resend came before it).
    pub fn on_fec_recovered(&mut self, now: Instant, p: PacketInfo<'_>) {
        let new = self.streams.iter().find(|s| s.mid == p.mid).is_some_and(|s| !s.seq.has(p.seq));
        if new {
            self.fec_recovered += 1;
            self.on_packet(now, p);
        }
    }

    pub fn on_packet(&mut self, now: Instant, p: PacketInfo<'_>) {
        let idx = match self.streams.iter().position(|s| s.mid == p.mid) {
            Some(i) => i,
            None => {
                let state = match p.kind {
                    MediaKind::Audio => KindState::Audio(AudioStream::default()),
                    MediaKind::Video => KindState::Video(VideoStream::default()),
                };
                self.streams.push(Stream {
                    mid: p.mid,
                    packets: 0,
                    bytes: 0,
                    first_at: None,
                    seq: SeqTracker::default(),
                    state,
                });
                self.streams.len() - 1
            }
        };
        let Some(s) = self.streams.get_mut(idx) else { return };
        if !s.seq.on_seq(now, p.seq) {
            return;
        }
        s.packets += 1;
        s.bytes += p.payload.len() as u64;
        s.first_at.get_or_insert(now);
        match &mut s.state {
            KindState::Video(v) => v.on_packet(now, &p),
            KindState::Audio(a) => a.on_packet(now, p.ts, opus_slots(p.payload)),
        }
    }

    /// Total video frames decoded (all video streams).
    pub fn frames_decoded(&self) -> u64 {
        self.video().map(|v| v.frames).sum()
    }

    /// Audio samples received (48 kHz, 960 per 20 ms packet).
    pub fn audio_samples(&self) -> u64 {
        self.streams.iter().filter(|s| matches!(s.state, KindState::Audio(_))).map(|s| s.packets).sum::<u64>()
            * AUDIO_SLOT_TICKS
    }

    /// Packets lost after repair, all streams, as of `now`.
    pub fn packets_lost(&self, now: Instant) -> u64 {
        self.streams.iter().map(|s| s.seq.loss(now).0).sum()
    }

    /// RTP packets received, all streams.
    pub fn packets(&self) -> u64 {
        self.streams.iter().map(|s| s.packets).sum()
    }

    /// RTP payload bytes received, all streams.
    pub fn bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.bytes).sum()
    }

    /// Whether a video frame was decoded.
    pub fn has_video(&self) -> bool {
        self.video().any(|v| v.frames > 0)
    }

    /// A video stream whose decoder has been stuck for [`STUCK_BEFORE_PLI`] (it needs a keyframe).
    pub fn stuck_video(&self, now: Instant) -> Option<Mid> {
        self.streams.iter().find_map(|s| match &s.state {
            KindState::Video(v)
                if v.stuck_since.is_some_and(|t| now.saturating_duration_since(t) >= STUCK_BEFORE_PLI) =>
            {
                Some(s.mid)
            }
            _ => None,
        })
    }

    /// Forgets the stuck state of `mid` after a keyframe request, so the next request waits again.
    pub fn reset_stuck(&mut self, mid: Mid, now: Instant) {
        for s in &mut self.streams {
            if s.mid == mid
                && let KindState::Video(v) = &mut s.state
                && v.stuck_since.is_some()
            {
                v.stuck_since = Some(now);
            }
        }
    }

    /// Inbound kbit/s over the last seconds (call once per second with the running byte count via `sample_rate`).
    pub fn sample_rate(&mut self, now: Instant) -> Option<f64> {
        let bytes = self.bytes();
        self.rate.push_back((now, bytes));
        while self.rate.len() > 3 {
            self.rate.pop_front();
        }
        let (t0, b0) = *self.rate.front()?;
        let secs = now.saturating_duration_since(t0).as_secs_f64();
        (secs > 0.0).then(|| (bytes - b0) as f64 * 8.0 / secs / 1000.0)
    }

    /// Running totals and the state at `now`, for time series (see [`Snapshot`]).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut snap = Snapshot { connected: self.connected_at.is_some(), ..Snapshot::default() };
        for s in &self.streams {
            snap.bytes += s.bytes;
            match &s.state {
                KindState::Video(v) => {
                    snap.frames += v.frames;
                    if let Some(last) = v.last_frame_at {
                        snap.watching = true;
                        snap.frozen |= now.saturating_duration_since(last) > FREEZE_AFTER;
                    }
                    snap.height = snap.height.max(v.height);
                }
                KindState::Audio(_) => {
                    snap.audio_packets += s.packets;
                    snap.hearing |= s.first_at.is_some();
                }
            }
        }
        snap
    }

    fn video(&self) -> impl Iterator<Item = &VideoStream> {
        self.streams.iter().filter_map(|s| match &s.state {
            KindState::Video(v) => Some(v),
            KindState::Audio(_) => None,
        })
    }

    /// The site's report as of `now`. `site_id` and `profile` are left for the caller to fill.
    pub fn summary(&self, now: Instant) -> SiteReport {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let since_join = |t: Instant| ms(t.saturating_duration_since(self.join_start));
        let mut video = VideoReport::default();
        let mut audio = AudioReport::default();
        let mut first_frame: Option<Instant> = None;
        let mut first_audio: Option<Instant> = None;
        let (mut a_cov, mut a_total) = (0u64, 0u64);
        let mut longest_run = 0u64;
        for s in &self.streams {
            let (lost, expected) = s.seq.loss(now);
            match &s.state {
                KindState::Video(v) => {
                    video.packets += s.packets;
                    video.bytes += s.bytes;
                    video.lost += lost;
                    video.expected += expected;
                    video.recovered += s.seq.recovered;
                    video.frames += v.frames;
                    video.keyframes += v.keyframes;
                    video.broken_chain += v.broken_chain;
                    let (n, t) = v.freezes_at(now);
                    video.freezes += n;
                    video.freeze_ms += ms(t);
                    video.longest_frame_gap_ms = video.longest_frame_gap_ms.max(ms(v.longest_frame_gap));
                    if let Some(f) = v.first_frame_at {
                        video.watch_ms += ms(now.saturating_duration_since(f));
                        first_frame = Some(first_frame.map_or(f, |x| x.min(f)));
                    }
                }
                KindState::Audio(a) => {
                    audio.packets += s.packets;
                    audio.bytes += s.bytes;
                    audio.lost += lost;
                    audio.expected += expected;
                    audio.recovered += s.seq.recovered;
                    let (c, t, run) = a.coverage(now);
                    a_cov += c;
                    a_total += t;
                    longest_run = longest_run.max(run);
                    if let Some(f) = s.first_at {
                        first_audio = Some(first_audio.map_or(f, |x| x.min(f)));
                    }
                }
            }
        }
        video.keyframe_requests = self.keyframe_requests;
        video.fec_packets = self.fec_packets;
        video.fec_recovered = self.fec_recovered;
        video.loss_after_repair = ratio(video.lost, video.expected);
        video.freeze_share = if video.watch_ms > 0.0 { video.freeze_ms / video.watch_ms } else { 0.0 };
        video.fps = if video.watch_ms > 0.0 { video.frames as f64 * 1000.0 / video.watch_ms } else { 0.0 };
        audio.loss = ratio(audio.lost, audio.expected);
        if a_total > 0 {
            audio.continuity = Some(a_cov as f64 / a_total as f64);
            audio.longest_gap_ms = Some(longest_run as f64 * 20.0);
        }
        SiteReport {
            connected: self.connected_at.is_some(),
            connect_ms: self.connected_at.map(since_join),
            first_frame_ms: first_frame.map(since_join),
            first_audio_ms: first_audio.map(since_join),
            duration_ms: since_join(now),
            loss_after_repair: ratio(video.lost + audio.lost, video.expected + audio.expected),
            video,
            audio,
            ..SiteReport::default()
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A site's running totals and state at one instant; the difference of two is what the site received in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// ICE and DTLS came up (at any time).
    pub connected: bool,
    /// RTP payload bytes received, all streams.
    pub bytes: u64,
    /// Video frames decoded.
    pub frames: u64,
    /// Audio packets received (20 ms each from the synthetic publisher and the browsers).
    pub audio_packets: u64,
    /// A frame was decoded once (freezes count from then on).
    pub watching: bool,
    /// Watching, and no frame for over 500 ms.
    pub frozen: bool,
    /// Audio arrived once.
    pub hearing: bool,
    /// Height of the last decoded keyframe: the layer received.
    pub height: Option<u16>,
}

/// Video received by one site (all its video slots together).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VideoReport {
    /// RTP packets received (repaired ones included, duplicates not).
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Frames decoded.
    pub frames: u64,
    /// Keyframes decoded.
    pub keyframes: u64,
    /// Frames complete and in sequence that could not be decoded: a PictureID gap or a reference never decoded.
    pub broken_chain: u64,
    /// Frames decoded per second of watching (`frames / watch_ms`).
    pub fps: f64,
    /// Keyframe requests (PLI) this site sent because its decoder was stuck.
    pub keyframe_requests: u64,
    /// Freezes (gaps between decoded frames over 500 ms), one going on at the end included.
    pub freezes: u64,
    /// Total length of the freezes, ms.
    pub freeze_ms: f64,
    /// Time since the first decoded frame, ms (what `freeze_ms` is a share of).
    pub watch_ms: f64,
    /// `freeze_ms / watch_ms`.
    pub freeze_share: f64,
    /// Longest gap between two decoded frames, ms.
    pub longest_frame_gap_ms: f64,
    /// Packets never received (1 s after the gap was seen). FEC packets lost on the way count too: they are not
    /// resent, and what they protect is repaired otherwise.
    pub lost: u64,
    /// Packets that arrived after a later one (repaired by RTX, or reordered).
    pub recovered: u64,
    /// Sequence numbers from the first to the highest received.
    pub expected: u64,
    /// `lost / expected`.
    pub loss_after_repair: f64,
    /// ULPFEC packets received (they are counted in `packets` too).
    pub fec_packets: u64,
    /// Media packets rebuilt from FEC that had not come otherwise (counted in `packets` and `recovered` too).
    pub fec_recovered: u64,
}

/// Audio received by one site (all its audio slots together).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AudioReport {
    /// RTP packets received.
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Packets never received.
    pub lost: u64,
    /// Packets that arrived after a later one.
    pub recovered: u64,
    /// Sequence numbers from the first to the highest received.
    pub expected: u64,
    /// `lost / expected`.
    pub loss: f64,
    /// Share of 20 ms slots that received audio; `None` before any audio.
    pub continuity: Option<f64>,
    /// Longest run of missing audio, ms.
    pub longest_gap_ms: Option<f64>,
}

/// The emulated link's own counters for the site.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkReport {
    /// Datagrams the link delivered to the site.
    pub down_delivered: u64,
    /// Datagrams towards the site the link dropped (loss, full queue, outage).
    pub down_dropped: u64,
    /// Datagrams the link delivered to the bridge.
    pub up_delivered: u64,
    /// Datagrams towards the bridge the link dropped.
    pub up_dropped: u64,
}

/// What one synthetic site saw. Times are from the join start, in ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SiteReport {
    /// The site's id in the directory.
    pub site_id: i64,
    /// The link preset it ran behind.
    pub profile: String,
    /// `chair` or `site`, as the bridge welcomed it (empty if it never was).
    pub role: String,
    /// Why it could not join or stay, if so.
    pub error: Option<String>,
    /// ICE and DTLS came up.
    pub connected: bool,
    /// Join start → connected.
    pub connect_ms: Option<f64>,
    /// Join start → first decoded keyframe.
    pub first_frame_ms: Option<f64>,
    /// Join start → first audio packet.
    pub first_audio_ms: Option<f64>,
    /// Join start → the end of the measurement.
    pub duration_ms: f64,
    /// Video received.
    pub video: VideoReport,
    /// Audio received.
    pub audio: AudioReport,
    /// Lost after repair over expected, audio and video together.
    pub loss_after_repair: f64,
    /// The emulated link's counters.
    pub link: LinkReport,
    /// The bridge's last "audio only" notice (`true`: every video toward it paused), if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub told_audio_only: Option<bool>,
    /// What it published, all simulcast layers together (absent when it did not publish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<crate::publisher::PublisherStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A VP8 payload: descriptor + (for a frame start) payload header + filler.
    fn vp8(start: bool, key: bool, picture_id: u16) -> Vec<u8> {
        let mut p = Vec::new();
        vp8::write_descriptor(&mut p, start, picture_id, None);
        if start {
            vp8::write_payload_header(&mut p, key, 100, 320, 180);
        }
        p.resize(200, 0);
        p
    }

    struct Feed {
        m: Metrics,
        t0: Instant,
        seq: u64,
        ts: u32,
        video: Mid,
        audio: Mid,
    }

    impl Feed {
        fn new() -> Self {
            let t0 = Instant::now();
            Feed { m: Metrics::new(t0), t0, seq: 1000, ts: 5000, video: Mid::from("1"), audio: Mid::from("0") }
        }

        /// One video frame of `n` packets at `at`, minus the packets whose index is in `drop`.
        /// Returns the sequence numbers of the frame.
        fn frame(&mut self, at: Duration, n: u64, key: bool, drop: &[u64]) -> Vec<u64> {
            let seqs: Vec<u64> = (0..n).map(|i| self.seq + i).collect();
            for i in 0..n {
                if drop.contains(&i) {
                    continue;
                }
                self.video_packet(at, self.seq + i, self.ts, i == 0, key, i + 1 == n);
            }
            self.seq += n;
            self.ts = self.ts.wrapping_add(6000);
            seqs
        }

        fn video_packet(&mut self, at: Duration, seq: u64, ts: u32, start: bool, key: bool, marker: bool) {
            // One PictureID per frame (frames are 6,000 ticks apart from 5,000).
            let payload = vp8(start, key, (ts.wrapping_sub(5000) / 6000) as u16 & 0x7fff);
            let p = PacketInfo { mid: self.video, kind: MediaKind::Video, seq, ts, marker, payload: &payload };
            self.m.on_packet(self.t0 + at, p);
        }

        fn audio(&mut self, at: Duration, seq: u64, ts: u32) {
            let payload = [0xf8u8; 80];
            let p = PacketInfo { mid: self.audio, kind: MediaKind::Audio, seq, ts, marker: false, payload: &payload };
            self.m.on_packet(self.t0 + at, p);
        }
    }

    #[test]
    fn first_frame_waits_for_a_complete_keyframe() {
        let mut f = Feed::new();
        f.m.on_connected(f.t0 + ms(300));
        // A delta frame first (joined mid-stream): not decodable.
        f.frame(ms(400), 3, false, &[]);
        // A keyframe missing its middle packet: not complete.
        let key = f.frame(ms(466), 4, true, &[2]);
        let r = f.m.summary(f.t0 + ms(500));
        assert_eq!(r.first_frame_ms, None);
        assert_eq!(r.connect_ms, Some(300.0));
        // The missing packet is repaired (RTX) at 600 ms: the keyframe completes and decodes then.
        f.video_packet(ms(600), key[2], f.ts.wrapping_sub(6000), false, false, false);
        let r = f.m.summary(f.t0 + ms(600));
        assert_eq!(r.first_frame_ms, Some(600.0));
        assert_eq!(r.video.frames, 1);
        assert_eq!(r.video.keyframes, 1);
        assert_eq!(r.video.recovered, 1);
        assert_eq!(f.m.frames_decoded(), 1);
    }

    #[test]
    fn repaired_packets_are_not_lost_and_old_gaps_are() {
        let mut f = Feed::new();
        f.frame(ms(0), 3, true, &[]);
        // Frame 2 loses packet 1; it is repaired 300 ms later.
        let s2 = f.frame(ms(66), 3, false, &[1]);
        f.frame(ms(133), 3, false, &[]);
        f.video_packet(ms(366), s2[1], 5000 + 6000, false, false, false);
        // Frame 4 loses packet 0 for good (the gap shows at 400 ms).
        f.frame(ms(400), 3, false, &[0]);
        let r = f.m.summary(f.t0 + ms(900));
        assert_eq!(r.video.lost, 0, "not lost before it is 1 s old");
        assert_eq!(r.video.recovered, 1);
        let r = f.m.summary(f.t0 + ms(1_300));
        assert_eq!(r.video.lost, 0, "400 ms + 1 s not passed yet");
        let r = f.m.summary(f.t0 + ms(1_500));
        assert_eq!(r.video.lost, 1);
        assert_eq!(r.video.expected, 12);
        assert!((r.video.loss_after_repair - 1.0 / 12.0).abs() < 1e-9);
        // Frames 1-3 decode (frame 2 once repaired, frame 3 then follows); frame 4 never does.
        assert_eq!(r.video.frames, 3);
        assert_eq!(f.m.packets_lost(f.t0 + ms(1_500)), 1);
    }

    #[test]
    fn a_broken_chain_freezes_until_the_next_keyframe() {
        let mut f = Feed::new();
        let mut t = 0;
        // 1 s of frames at 15 fps.
        for i in 0..15 {
            f.frame(ms(t), 2, i == 0, &[]);
            t += 66;
        }
        // A frame loses a packet for good: the following deltas cannot decode.
        f.frame(ms(t), 2, false, &[1]);
        t += 66;
        for _ in 0..20 {
            f.frame(ms(t), 2, false, &[]);
            t += 66;
        }
        let stuck_at = t;
        assert!(f.m.stuck_video(f.t0 + ms(t)).is_some(), "decoder stuck for > 1 s wants a keyframe");
        // A keyframe ends the freeze.
        f.frame(ms(t), 4, true, &[]);
        assert!(f.m.stuck_video(f.t0 + ms(t)).is_none());
        for _ in 0..5 {
            t += 66;
            f.frame(ms(t), 2, false, &[]);
        }
        let r = f.m.summary(f.t0 + ms(t));
        assert_eq!(r.video.frames, 15 + 1 + 5);
        assert_eq!(r.video.keyframes, 2);
        assert_eq!(r.video.freezes, 1);
        // The last good frame at 14 × 66 ms, the keyframe at `stuck_at`.
        let gap = (stuck_at - 14 * 66) as f64;
        assert_eq!(r.video.freeze_ms, gap);
        assert_eq!(r.video.longest_frame_gap_ms, gap);
        assert!(r.video.freeze_share > 0.5 && r.video.freeze_share < 0.7, "{}", r.video.freeze_share);
    }

    #[test]
    fn fec_packets_between_frames_and_lost_ones_do_not_stop_the_picture() {
        let mut f = Feed::new();
        let mut t = 0;
        f.frame(ms(t), 2, true, &[]);
        // Each frame is followed by an FEC packet on the next number; one in three of those is lost.
        for i in 0..30 {
            t += 66;
            f.frame(ms(t), 2, false, &[]);
            if i % 3 != 0 {
                f.m.on_fec_packet(f.t0 + ms(t), f.video, f.seq, 100);
            }
            f.seq += 1;
        }
        let r = f.m.summary(f.t0 + ms(t));
        assert_eq!(r.video.frames, 31, "every frame decodes: {:?}", r.video);
        assert_eq!(r.video.fec_packets, 20);
        // A frame lost whole (its one packet) leaves a PictureID gap: the next deltas wait for a keyframe.
        t += 66;
        f.frame(ms(t), 1, false, &[0]);
        for _ in 0..3 {
            t += 66;
            f.frame(ms(t), 2, false, &[]);
        }
        assert_eq!(f.m.summary(f.t0 + ms(t)).video.frames, 31);
    }

    #[test]
    fn an_ongoing_freeze_counts_at_the_end() {
        let mut f = Feed::new();
        f.frame(ms(0), 2, true, &[]);
        f.frame(ms(66), 2, false, &[]);
        let r = f.m.summary(f.t0 + ms(500));
        assert_eq!((r.video.freezes, r.video.freeze_ms), (0, 0.0));
        let r = f.m.summary(f.t0 + ms(2_066));
        assert_eq!((r.video.freezes, r.video.freeze_ms), (1, 2_000.0));
    }

    #[test]
    fn audio_continuity_and_longest_gap() {
        let mut f = Feed::new();
        // 10 s of audio (500 packets); lose packets 100..110 (200 ms) and every 50th else.
        let ts0 = u32::MAX - 48_000; // the timestamp wraps during the run
        for i in 0..500u64 {
            let lost = (100..110).contains(&i) || (i % 50 == 25);
            if !lost {
                f.audio(ms(i * 20), 7 + i, ts0.wrapping_add((i * 960) as u32));
            }
        }
        let r = f.m.summary(f.t0 + ms(499 * 20));
        let missing = 10 + 10; // the burst, and 25, 75, …, 475
        assert_eq!(r.audio.packets, 500 - missing);
        let c = r.audio.continuity.unwrap();
        assert!((c - 480.0 / 500.0).abs() < 1e-9, "{c}");
        assert_eq!(r.audio.longest_gap_ms, Some(200.0));
        assert_eq!(f.m.audio_samples(), 480 * 960);
        // Two seconds later with no audio: 1.8 s more missing (after the 200 ms grace).
        let r = f.m.summary(f.t0 + ms(499 * 20 + 2_000));
        assert_eq!(r.audio.longest_gap_ms, Some(1_800.0));
        assert!(r.audio.continuity.unwrap() < 0.85);
    }

    #[test]
    fn audio_late_packets_fill_their_slot_and_long_silences_are_counted() {
        let mut f = Feed::new();
        f.audio(ms(0), 1, 0);
        f.audio(ms(40), 3, 1920);
        f.audio(ms(45), 2, 960); // reordered
        // 30 s of silence (beyond the 20 s window), then audio again.
        f.audio(ms(30_060), 4, 960 * 1503);
        f.audio(ms(30_080), 5, 960 * 1504);
        let r = f.m.summary(f.t0 + ms(30_080));
        assert_eq!(r.audio.packets, 5);
        assert_eq!(r.audio.recovered, 1);
        assert_eq!(r.audio.longest_gap_ms, Some(1_500.0 * 20.0));
        let c = r.audio.continuity.unwrap();
        assert!((c - 5.0 / 1505.0).abs() < 1e-9, "{c}");
    }

    #[test]
    fn opus_packets_cover_their_duration() {
        assert_eq!(opus_slots(&[31 << 3, 0]), 1, "CELT 20 ms");
        assert_eq!(opus_slots(&[11 << 3, 0]), 3, "SILK 60 ms");
        assert_eq!(opus_slots(&[10 << 3, 0]), 2, "SILK 40 ms");
        assert_eq!(opus_slots(&[31 << 3 | 1, 0]), 2, "two 20 ms frames");
        assert_eq!(opus_slots(&[31 << 3 | 3, 3]), 3, "code 3, three frames");
        assert_eq!(opus_slots(&[16 << 3]), 1, "2.5 ms counts as a slot");
        assert_eq!(opus_slots(&[]), 1);
        // 60 ms packets, one lost: 57 of 60 slots heard, a 60 ms gap.
        let t0 = Instant::now();
        let mut m = Metrics::new(t0);
        for n in 0..20u32 {
            if n == 7 {
                continue;
            }
            let info = PacketInfo {
                mid: Mid::from("0"),
                kind: MediaKind::Audio,
                seq: u64::from(n),
                ts: n * 2880,
                marker: false,
                payload: &[11 << 3, 1, 2, 3],
            };
            m.on_packet(t0 + ms(u64::from(n) * 60), info);
        }
        let r = m.summary(t0 + ms(1200));
        assert_eq!(r.audio.continuity, Some(57.0 / 60.0));
        assert_eq!(r.audio.longest_gap_ms, Some(60.0));
    }

    /// One single-packet frame with a frame-reference record.
    fn referenced_frame(m: &mut Metrics, at: Instant, seq: u64, pid: u16, frame: u32, reference: Option<u32>) {
        let mut p = Vec::new();
        vp8::write_descriptor(&mut p, true, pid, None);
        vp8::write_payload_header(&mut p, reference.is_none(), 100, 320, 180);
        vp8::write_frame_ref(&mut p, frame, reference);
        p.resize(200, 0x41);
        let ts = 5000 + frame * 6000;
        let info = PacketInfo { mid: Mid::from("1"), kind: MediaKind::Video, seq, ts, marker: true, payload: &p };
        m.on_packet(at, info);
    }

    #[test]
    fn frames_with_a_missing_reference_or_picture_id_are_not_decoded() {
        let t0 = Instant::now();
        let mut m = Metrics::new(t0);
        referenced_frame(&mut m, t0, 1, 10, 0, None);
        referenced_frame(&mut m, t0 + ms(33), 2, 11, 1, Some(0));
        // In sequence, PictureID follows, but predicted from frame 2, which never came (a wrongly dropped layer).
        referenced_frame(&mut m, t0 + ms(66), 3, 12, 3, Some(2));
        let r = m.summary(t0 + ms(100));
        assert_eq!((r.video.frames, r.video.broken_chain), (2, 1));
        // A keyframe restarts the chain; then a PictureID gap (a frame the bridge skipped without closing up).
        referenced_frame(&mut m, t0 + ms(100), 4, 13, 5, None);
        referenced_frame(&mut m, t0 + ms(133), 5, 15, 6, Some(5));
        let r = m.summary(t0 + ms(200));
        assert_eq!((r.video.frames, r.video.broken_chain), (3, 2));
    }

    #[test]
    fn duplicates_and_garbage_are_harmless() {
        let mut f = Feed::new();
        f.frame(ms(0), 2, true, &[]);
        f.video_packet(ms(10), 1000, 5000, true, true, false); // duplicate
        let garbage: [&[u8]; 3] = [&[], &[0xff], &[0x90, 0x80]];
        for (i, g) in garbage.into_iter().enumerate() {
            let p = PacketInfo {
                mid: f.video,
                kind: MediaKind::Video,
                seq: 2000 + i as u64,
                ts: 1,
                marker: true,
                payload: g,
            };
            f.m.on_packet(f.t0 + ms(20), p);
        }
        let r = f.m.summary(f.t0 + ms(30));
        assert_eq!(r.video.frames, 1);
        assert_eq!(r.video.packets, 5);
    }
}
