//! Video FEC toward lossy subscribers (docs/adr/0004-video-fec-toward-lossy-links.md): how many media packets each
//! ULPFEC packet protects, from the loss a subscriber reports, and what that costs the allocator.
//!
//! The reports count the packets lost on the link, before any repair (libwebrtc's receive statistics, as str0m's,
//! see the packets as they arrive; what FEC rebuilds is not counted), so turning FEC on does not hide the loss that
//! turned it on.

use std::time::{Duration, Instant};

/// Below this loss (mean of the reports of the last 3 s) no FEC is sent: the loss audio RED starts at.
pub const FEC_LOSS: f32 = 0.005;
/// From this loss on, one FEC packet per [`GROUP_HEAVY`] media packets; below it, per [`GROUP_LIGHT`].
pub const FEC_HEAVY_LOSS: f32 = 0.03;
/// Media packets per FEC packet on a heavily lossy link (VSAT's 5%): a lost packet is rebuilt unless another of its
/// group of nine was lost too (66% of the losses at 5%). One per four (81%) measured worse in the vsat-video drill
/// (freeze 21.5% against 18.1%, loss after repair 2.0% against 0.5%): at 128 kbit/s its extra 15 kbit/s overflow
/// the modem's queue (docs/perf.md).
pub const GROUP_HEAVY: u8 = 8;
/// Media packets per FEC packet on a lightly lossy link (3G's 2%): 10% more bytes, and 82% of the losses rebuilt.
pub const GROUP_LIGHT: u8 = 10;
/// How long a lower loss must be reported before the FEC is thinned out or stopped: loss comes in spells, and the
/// first report after one is no sign that it ended. Not longer: FEC costs its share of the budget, and after a link
/// drop (whose overflowing queue reports loss) it held the climb back to 720p (link_drop: five sites in eight on
/// 720p 10 s after the recovery, with a 20 s hold).
pub const FEC_HOLD: Duration = Duration::from_secs(5);
/// A mean loss of this or more is an overloaded link's ([`crate::alloc::DROP_LOSS`]): more bytes make it worse,
/// so such reports neither start FEC nor hold it.
pub const FEC_MAX_LOSS: f32 = crate::alloc::DROP_LOSS;

/// The group size (media packets per FEC packet) a mean reported `loss` (0..=1) calls for; `None`: no FEC.
pub fn group_for(loss: f32) -> Option<u8> {
    if loss >= FEC_HEAVY_LOSS {
        Some(GROUP_HEAVY)
    } else if loss >= FEC_LOSS {
        Some(GROUP_LIGHT)
    } else {
        None
    }
}

/// How much protection a group size gives: more for a smaller group, none without FEC.
fn strength(group: Option<u8>) -> u8 {
    group.map_or(0, |k| u8::MAX - k)
}

/// The video FEC toward one subscriber: the group size its reports call for, stronger at once, weaker only after
/// [`FEC_HOLD`] of reports that say so.
#[derive(Debug, Default, Clone)]
pub struct FecRate {
    group: Option<u8>,
    /// The group size holds until then (from the latest report that called for it or for more).
    held_until: Option<Instant>,
}

impl FecRate {
    /// A loss report at `now`: the fraction it gives (0..=1) and the mean of the recent ones (below
    /// [`FEC_MAX_LOSS`]; above, it is ignored). Any report of
    /// [`FEC_LOSS`] or more turns FEC on (as audio RED: a report covers a second of video, and on a 1% link one in
    /// two has no loss); the heavy rate takes a mean of [`FEC_HEAVY_LOSS`] (one report alone may be a few packets).
    pub fn on_report(&mut self, now: Instant, loss: f32, mean: f32) {
        if mean >= FEC_MAX_LOSS {
            return;
        }
        let want = match group_for(mean) {
            None if loss >= FEC_LOSS => Some(GROUP_LIGHT),
            g => g,
        };
        let stronger = strength(want) >= strength(self.group);
        if stronger || self.held_until.is_none_or(|u| now >= u) {
            self.group = want;
            self.held_until = Some(now + FEC_HOLD);
        }
    }

    /// Media packets per FEC packet now; `None`: no FEC.
    pub fn group(&self) -> Option<u8> {
        self.group
    }
}

/// A video layer's cost with FEC at one packet per `group` media packets (an FEC packet is about as large as the
/// largest of its group, so the ratio is rounded up).
pub fn with_fec(kbps: u32, group: Option<u8>) -> u32 {
    match group {
        Some(k) if k > 0 => kbps.saturating_add(kbps.div_ceil(u32::from(k))),
        _ => kbps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_follows_the_loss_reported() {
        for (loss, group) in [
            (0.0, None),
            (0.004, None),
            (0.005, Some(GROUP_LIGHT)),
            (0.02, Some(GROUP_LIGHT)),
            (0.03, Some(GROUP_HEAVY)),
            (0.05, Some(GROUP_HEAVY)),
            (0.4, Some(GROUP_HEAVY)),
        ] {
            assert_eq!(group_for(loss), group, "loss {loss}");
        }
    }

    #[test]
    fn more_fec_at_once_less_only_after_the_hold() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = FecRate::default();
        assert_eq!(r.group(), None, "none before any report");
        r.on_report(t0, 0.02, 0.02);
        assert_eq!(r.group(), Some(GROUP_LIGHT));
        // Heavier loss: more FEC at once.
        r.on_report(t0 + s(1), 0.05, 0.035);
        assert_eq!(r.group(), Some(GROUP_HEAVY));
        // Lighter, or none: held for FEC_HOLD after the last heavy report...
        r.on_report(t0 + s(2), 0.0, 0.02);
        r.on_report(t0 + s(5), 0.01, 0.01);
        assert_eq!(r.group(), Some(GROUP_HEAVY));
        // ...then thinned out, and held again before it stops.
        r.on_report(t0 + s(6), 0.01, 0.01);
        assert_eq!(r.group(), Some(GROUP_LIGHT));
        r.on_report(t0 + s(10), 0.0, 0.0);
        assert_eq!(r.group(), Some(GROUP_LIGHT));
        // A report of loss renews the hold, even when the mean is below FEC_LOSS.
        r.on_report(t0 + s(10), 0.01, 0.003);
        r.on_report(t0 + s(14), 0.0, 0.0);
        assert_eq!(r.group(), Some(GROUP_LIGHT));
        r.on_report(t0 + s(15), 0.0, 0.0);
        assert_eq!(r.group(), None);
        // One heavy report alone is not a heavy mean.
        r.on_report(t0 + s(16), 0.06, 0.02);
        assert_eq!(r.group(), Some(GROUP_LIGHT));
    }

    #[test]
    fn an_overloaded_link_gets_no_fec() {
        let t0 = Instant::now();
        let mut r = FecRate::default();
        // A link drop: its queue overflows, 30% lost.
        r.on_report(t0, 0.3, 0.3);
        assert_eq!(r.group(), None, "no FEC into an overloaded link");
        // Lossy below overload: FEC; an overloaded spell then does not hold it.
        r.on_report(t0, 0.05, 0.05);
        assert_eq!(r.group(), Some(GROUP_HEAVY));
        r.on_report(t0 + Duration::from_secs(4), 0.4, 0.2);
        r.on_report(t0 + Duration::from_secs(6), 0.0, 0.0);
        assert_eq!(r.group(), None);
    }

    #[test]
    fn fec_costs_a_group_share_rounded_up() {
        assert_eq!(with_fec(100, None), 100);
        assert_eq!(with_fec(100, Some(4)), 125);
        assert_eq!(with_fec(101, Some(4)), 127);
        assert_eq!(with_fec(300, Some(10)), 330);
        assert_eq!(with_fec(u32::MAX, Some(4)), u32::MAX);
    }
}
