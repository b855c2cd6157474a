//! [`Link`]: one direction of an emulated link, driven in virtual time.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{LinkConfig, NetemError};

/// What [`Link::send`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    /// Accepted: [`Link::poll_deliver`] will hand it out at its delivery time (unless an outage flushes the link).
    Queued,
    /// Dropped at the tail: the capacity queue was full.
    DroppedQueueFull,
    /// Lost on the wire (random or burst loss). It still used its share of the capacity.
    DroppedLoss,
    /// Dropped because the link is in an outage ([`Link::set_outage`]).
    DroppedOutage,
}

/// Counters of one [`Link`] since it was created. `sent = delivered + dropped_* + in_flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to [`Link::send`].
    pub sent: u64,
    /// Bytes offered to [`Link::send`].
    pub sent_bytes: u64,
    /// Packets handed out by [`Link::poll_deliver`].
    pub delivered: u64,
    /// Bytes handed out by [`Link::poll_deliver`].
    pub delivered_bytes: u64,
    /// Packets dropped because the queue was full.
    pub dropped_queue: u64,
    /// Packets lost to random or burst loss.
    pub dropped_loss: u64,
    /// Packets dropped by an outage: sent during one, or queued or in flight when it began.
    pub dropped_outage: u64,
    /// Packets accepted and not yet delivered.
    pub in_flight: u64,
}

/// A packet accepted whose last bit has not left the capacity queue yet.
#[derive(Debug)]
struct Serial {
    seq: u64,
    size: usize,
    /// When its first bit went (or will go) on the wire.
    start: Instant,
    /// When its last bit leaves the capacity queue.
    finish: Instant,
    /// Its draw of jitter in `[-1, 1)`: one-way delay = `delay_ms + jitter × jitter_ms`.
    jitter: f64,
    /// Its delivery time; `None` for a lost packet, which only occupies capacity.
    delivery: Option<Instant>,
}

/// A packet that will be delivered: ordered by delivery time, then by send order.
#[derive(Debug)]
struct InFlight<T> {
    at: Instant,
    seq: u64,
    size: usize,
    packet: T,
}

impl<T> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for InFlight<T> {}

impl<T> PartialOrd for InFlight<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for InFlight<T> {
    /// Reversed, so that `BinaryHeap` pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One direction of an emulated link, carrying packets of type `T` (bytes, or any value a test wants to follow).
///
/// Sans-IO: the caller passes the time to every call and polls deliveries; nothing reads a clock or sleeps. Time must
/// not go backwards: an earlier `now` than one already seen is taken as the latest seen. The model is described on
/// [`LinkConfig`]. Given the same seed, configuration and calls, a link behaves identically (the random numbers come
/// from `rand`'s `StdRng`, so a different `rand` version may draw differently).
///
/// Typical loop: `send` what arrives, sleep until [`poll_timeout`](Self::poll_timeout), then
/// [`poll_deliver`](Self::poll_deliver) until it returns `None`.
#[derive(Debug)]
pub struct Link<T> {
    cfg: LinkConfig,
    rng: StdRng,
    /// The latest time seen.
    now: Option<Instant>,
    /// Gilbert–Elliott state: true = Bad.
    bad: bool,
    serial: VecDeque<Serial>,
    serial_bytes: usize,
    /// Delivery time of the last delivered-to-be packet that has left `serial` (the in-order floor for recomputing).
    fixed_delivery: Option<Instant>,
    /// Delivery time of the last delivered-to-be packet accepted (the in-order floor for the next one).
    last_delivery: Option<Instant>,
    /// The last packet's jitter draw and when it was made (for `jitter_memory_ms`).
    last_jitter: Option<(Instant, f64)>,
    flight: BinaryHeap<InFlight<T>>,
    next_seq: u64,
    /// `Some(until)` while in an outage; `until = None` lasts until [`Link::end_outage`].
    outage: Option<Option<Instant>>,
    stats: LinkStats,
}

impl<T> Link<T> {
    /// A link with `cfg` (validated) whose random draws come from `seed`.
    pub fn new(cfg: LinkConfig, seed: u64) -> Result<Self, NetemError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            rng: StdRng::seed_from_u64(seed),
            now: None,
            bad: false,
            serial: VecDeque::new(),
            serial_bytes: 0,
            fixed_delivery: None,
            last_delivery: None,
            last_jitter: None,
            flight: BinaryHeap::new(),
            next_seq: 0,
            outage: None,
            stats: LinkStats::default(),
        })
    }

    /// The current configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Counters since creation.
    pub fn stats(&self) -> LinkStats {
        LinkStats { in_flight: self.flight.len() as u64, ..self.stats }
    }

    /// Offers a packet of `size_bytes` (the size on the wire, which sets its serialization time) at `now`.
    pub fn send(&mut self, now: Instant, size_bytes: usize, packet: T) -> SendOutcome {
        let now = self.settle(now);
        self.stats.sent += 1;
        self.stats.sent_bytes += size_bytes as u64;
        if self.is_down(now) {
            self.stats.dropped_outage += 1;
            return SendOutcome::DroppedOutage;
        }
        // On an idle link the packet goes straight on the wire; otherwise it waits, if there is room.
        let busy = !self.serial.is_empty();
        if busy && self.waiting_bytes(now).saturating_add(size_bytes) > self.cfg.queue_bytes {
            self.stats.dropped_queue += 1;
            return SendOutcome::DroppedQueueFull;
        }

        // Four draws per packet on the wire, whatever the configuration, so that changing one parameter mid-run does
        // not shift the random stream of the others.
        let u_loss: f64 = self.rng.random();
        let u_step: f64 = self.rng.random();
        let u_bad: f64 = self.rng.random();
        let u = self.rng.random::<f64>() * 2.0 - 1.0;
        let jitter = match self.last_jitter {
            Some((at, last)) if self.cfg.jitter_memory_ms > 0 => {
                let dt = now.saturating_duration_since(at).as_secs_f64() * 1000.0;
                let c = (-dt / f64::from(self.cfg.jitter_memory_ms)).exp();
                (c * last + (1.0 - c * c).sqrt() * u).clamp(-1.0, 1.0)
            }
            _ => u,
        };
        self.last_jitter = Some((now, jitter));
        let lost = u_loss < self.cfg.loss || self.burst_loses(u_step, u_bad);

        let start = self.serial.back().map_or(now, |s| s.finish.max(now));
        let finish = start + serialization(size_bytes, self.cfg.rate_kbps);
        let seq = self.next_seq;
        self.next_seq += 1;
        let delivery = if lost {
            self.stats.dropped_loss += 1;
            None
        } else {
            let at = self.delivery_time(finish, jitter, self.last_delivery);
            self.last_delivery = Some(at);
            self.flight.push(InFlight { at, seq, size: size_bytes, packet });
            Some(at)
        };
        if finish > now {
            self.serial.push_back(Serial { seq, size: size_bytes, start, finish, jitter, delivery });
            self.serial_bytes += size_bytes;
        } else if delivery.is_some() {
            self.fixed_delivery = delivery;
        }
        if lost { SendOutcome::DroppedLoss } else { SendOutcome::Queued }
    }

    /// When the next packet is due, if any packet is on its way.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flight.peek().map(|p| p.at)
    }

    /// The next packet whose delivery time is `<= now`, in delivery order (send order among equal times).
    pub fn poll_deliver(&mut self, now: Instant) -> Option<T> {
        let now = self.settle(now);
        if self.flight.peek().is_none_or(|p| p.at > now) {
            return None;
        }
        let p = self.flight.pop()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += p.size as u64;
        Some(p.packet)
    }

    /// Replaces the configuration from `now` on. The new rate applies to every bit not yet serialized (the rest of
    /// the packet on the wire, then the queue), the new delay and jitter to packets not yet fully serialized; packets
    /// already propagating keep their delivery time, and packets already accepted keep their loss verdict. A smaller
    /// queue only affects packets sent from now on.
    pub fn set_config(&mut self, now: Instant, cfg: LinkConfig) -> Result<(), NetemError> {
        cfg.validate()?;
        let now = self.settle(now);
        let old_rate = self.cfg.rate_kbps;
        if cfg.burst.is_none() {
            self.bad = false;
        }
        self.cfg = cfg;
        self.reschedule(now, old_rate);
        self.settle(now);
        Ok(())
    }

    /// Sets only the rate (`None` = unlimited), as [`set_config`](Self::set_config).
    pub fn set_rate(&mut self, now: Instant, rate_kbps: Option<u32>) -> Result<(), NetemError> {
        self.set_rate_queue(now, rate_kbps, None)
    }

    /// Sets the rate and, with `queue_ms`, resizes the queue to hold that many ms at it (at least one 1,500-byte
    /// packet; an unlimited rate keeps the queue's bytes), as [`set_config`](Self::set_config).
    pub fn set_rate_queue(
        &mut self,
        now: Instant,
        rate_kbps: Option<u32>,
        queue_ms: Option<u32>,
    ) -> Result<(), NetemError> {
        let queue_bytes = match (rate_kbps, queue_ms) {
            (Some(kbps), Some(ms)) => (u64::from(kbps) * u64::from(ms) / 8).clamp(1500, usize::MAX as u64) as usize,
            _ => self.cfg.queue_bytes,
        };
        let cfg = LinkConfig { rate_kbps, queue_bytes, ..self.cfg.clone() };
        self.set_config(now, cfg)
    }

    /// Sets only the random loss, as [`set_config`](Self::set_config).
    pub fn set_loss(&mut self, now: Instant, loss: f64) -> Result<(), NetemError> {
        let cfg = LinkConfig { loss, ..self.cfg.clone() };
        self.set_config(now, cfg)
    }

    /// Cuts the link at `now` until `until` (`None`: until [`end_outage`](Self::end_outage)). Everything queued or
    /// propagating is dropped, and so is every packet sent before the link is back.
    pub fn set_outage(&mut self, now: Instant, until: Option<Instant>) {
        let now = self.settle(now);
        self.stats.dropped_outage += self.flight.len() as u64;
        self.flight.clear();
        self.serial.clear();
        self.serial_bytes = 0;
        self.fixed_delivery = None;
        self.last_delivery = None;
        if until.is_none_or(|u| u > now) {
            self.outage = Some(until);
        }
    }

    /// Ends an outage at `now` (nothing if there is none).
    pub fn end_outage(&mut self, now: Instant) {
        self.settle(now);
        self.outage = None;
    }

    /// Whether the link is in an outage at `now`.
    pub fn is_down(&self, now: Instant) -> bool {
        match self.outage {
            None => false,
            Some(None) => true,
            Some(Some(until)) => now < until,
        }
    }

    /// Bytes waiting behind the packet being serialized, as of the last call.
    pub fn queued_bytes(&self) -> usize {
        match (self.serial.front(), self.now) {
            (Some(head), Some(now)) if head.start <= now => self.serial_bytes - head.size,
            _ => self.serial_bytes,
        }
    }

    /// Takes `now` as the latest time and retires what finished serializing by then.
    fn settle(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |seen| seen.max(now));
        self.now = Some(now);
        while let Some(head) = self.serial.front() {
            if head.finish > now {
                break;
            }
            self.serial_bytes -= head.size;
            if head.delivery.is_some() {
                self.fixed_delivery = head.delivery;
            }
            self.serial.pop_front();
        }
        if self.outage.is_some_and(|u| u.is_some_and(|u| u <= now)) {
            self.outage = None;
        }
        now
    }

    fn waiting_bytes(&self, now: Instant) -> usize {
        match self.serial.front() {
            Some(head) if head.start <= now => self.serial_bytes - head.size,
            _ => self.serial_bytes,
        }
    }

    /// Steps the Gilbert–Elliott chain for one packet; whether it loses the packet.
    fn burst_loses(&mut self, u_step: f64, u_bad: f64) -> bool {
        let Some(burst) = &self.cfg.burst else { return false };
        self.bad = if self.bad { u_step >= burst.p_bad_to_good } else { u_step < burst.p_good_to_bad };
        self.bad && u_bad < burst.loss_in_bad
    }

    fn delivery_time(&self, finish: Instant, jitter: f64, floor: Option<Instant>) -> Instant {
        let base = i128::from(self.cfg.delay_ms) * 1_000_000;
        let spread = (jitter * f64::from(self.cfg.jitter_ms) * 1e6).round() as i128;
        let delay_ns = u64::try_from((base + spread).max(0)).unwrap_or(u64::MAX);
        let at = finish + Duration::from_nanos(delay_ns);
        match floor {
            Some(floor) if !self.cfg.reorder => at.max(floor),
            _ => at,
        }
    }

    /// Recomputes the finish and delivery times of the packets not yet serialized after a configuration change.
    fn reschedule(&mut self, now: Instant, old_rate: Option<u32>) {
        if self.serial.is_empty() {
            return;
        }
        let new_rate = self.cfg.rate_kbps;
        let mut floor = self.fixed_delivery;
        let mut prev_finish = now;
        let mut moved: Vec<(u64, Instant)> = Vec::new();
        let mut serial = std::mem::take(&mut self.serial);
        for (i, s) in serial.iter_mut().enumerate() {
            if i == 0 && s.start <= now {
                // The head is on the wire: what is left of it goes at the new rate.
                let left_ns = s.finish.saturating_duration_since(now).as_nanos();
                let work = left_ns * u128::from(old_rate.unwrap_or(0));
                s.finish = now
                    + nanos(match new_rate {
                        Some(kbps) => work.div_ceil(u128::from(kbps)),
                        None => 0,
                    });
            } else {
                s.start = prev_finish;
                s.finish = s.start + serialization(s.size, new_rate);
            }
            prev_finish = s.finish;
            if s.delivery.is_some() {
                let at = self.delivery_time(s.finish, s.jitter, floor);
                floor = Some(at);
                s.delivery = Some(at);
                moved.push((s.seq, at));
            }
        }
        self.serial = serial;
        self.last_delivery = floor;
        if moved.is_empty() {
            return;
        }
        let mut flight = std::mem::take(&mut self.flight).into_vec();
        for p in &mut flight {
            if let Ok(i) = moved.binary_search_by_key(&p.seq, |&(seq, _)| seq) {
                p.at = moved[i].1;
            }
        }
        self.flight = BinaryHeap::from(flight);
    }
}

/// Time to serialize `size` bytes at `rate_kbps` (zero when unlimited), rounded up to the nanosecond.
fn serialization(size: usize, rate_kbps: Option<u32>) -> Duration {
    match rate_kbps {
        // bits × 10^6 / kbit/s = ns
        Some(kbps) if kbps > 0 => nanos((size as u128 * 8_000_000).div_ceil(u128::from(kbps))),
        _ => Duration::ZERO,
    }
}

fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}
