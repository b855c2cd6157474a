//! Scripted link changes ([`Timeline`]) and the two-way link that follows them ([`LinkPair`]).

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{Link, LinkConfig, LinkStats, NetemError, Profile, SendOutcome};

/// A direction of a [`LinkPair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Site → bridge ([`Profile::up`]).
    Up,
    /// Bridge → site ([`Profile::down`]).
    Down,
}

/// One change of a [`Timeline`]. `dir: None` means both directions.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Both directions take this profile's configuration (an outage in progress goes on).
    Profile(Profile),
    /// The rate becomes `kbps` (`None` = unlimited).
    Rate {
        /// Which direction(s).
        dir: Option<Direction>,
        /// New rate in kbit/s.
        kbps: Option<u32>,
        /// The queue is resized to hold this many ms at the new rate (a router's buffer set in time, as `tc tbf
        /// latency` does); `None`: it keeps its bytes (200 KB is 200 ms at 8 Mbit/s but 6.4 s at 250 kbit/s).
        queue_ms: Option<u32>,
    },
    /// The random loss becomes `loss`.
    Loss {
        /// Which direction(s).
        dir: Option<Direction>,
        /// New loss probability, `0..=1`.
        loss: f64,
    },
    /// The link is cut: everything queued or in flight, and everything sent, is dropped for `duration`
    /// (`None`: until a [`Change::Recover`]).
    Outage {
        /// Which direction(s).
        dir: Option<Direction>,
        /// How long; `None` = until recovered.
        duration: Option<Duration>,
    },
    /// Back to the starting profile, and any outage ends.
    Recover {
        /// Which direction(s).
        dir: Option<Direction>,
    },
}

/// A [`Change`] at a time from the start of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Time from the start of the run.
    pub at: Duration,
    /// What changes.
    pub change: Change,
}

/// Link changes over a run, sorted by time (steps at the same time apply in the order given).
///
/// In TOML (for drills), one `[[step]]` table per change, `change` naming its kind and `direction` (`"up"` or `"down"`)
/// optional, both by default:
/// ```toml
/// [[step]]
/// at_ms = 10000
/// change = "rate"        # kbps = a number, or "unlimited"
/// kbps = 250
/// direction = "down"
///
/// [[step]]
/// at_ms = 20000
/// change = "loss"        # loss = 0..=1
/// loss = 0.05
///
/// [[step]]
/// at_ms = 25000
/// change = "outage"      # duration_ms optional: without it, until a "recover"
/// duration_ms = 3000
///
/// [[step]]
/// at_ms = 30000
/// change = "profile"     # name = a preset of config/links.toml
/// name = "vsat"
///
/// [[step]]
/// at_ms = 40000
/// change = "recover"     # back to the starting profile
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    steps: Vec<Step>,
}

impl Timeline {
    /// A timeline of these steps, sorted by time (stable).
    pub fn new(mut steps: Vec<Step>) -> Self {
        steps.sort_by_key(|s| s.at);
        Self { steps }
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Parses the TOML form (see the type's docs), resolving profile names against the presets, and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, NetemError> {
        let file: TimelineToml =
            toml::from_str(text).map_err(|source| NetemError::Parse { what: "timeline", source })?;
        let mut steps = Vec::with_capacity(file.step.len());
        for (i, step) in file.step.into_iter().enumerate() {
            let step = step.into_step().map_err(|e| e.within(&format!("timeline step {}:", i + 1)))?;
            steps.push(step);
        }
        let timeline = Self::new(steps);
        timeline.validate()?;
        Ok(timeline)
    }

    /// Checks the values carried by the steps (rates above 0, losses within `0..=1`, profiles).
    pub fn validate(&self) -> Result<(), NetemError> {
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("timeline step {} (at {:?}):", i + 1, step.at);
            match &step.change {
                Change::Profile(p) => p.validate().map_err(|e| e.within(&at))?,
                Change::Rate { kbps, queue_ms, .. } => {
                    if *queue_ms == Some(0) {
                        return Err(NetemError::invalid("queue_ms", "must be above 0").within(&at));
                    }
                    LinkConfig { rate_kbps: *kbps, ..LinkConfig::default() }.validate().map_err(|e| e.within(&at))?
                }
                Change::Loss { loss, .. } => {
                    LinkConfig { loss: *loss, ..LinkConfig::default() }.validate().map_err(|e| e.within(&at))?
                }
                Change::Outage { .. } | Change::Recover { .. } => {}
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineToml {
    #[serde(default)]
    step: Vec<StepToml>,
}

#[derive(Deserialize)]
#[serde(tag = "change", rename_all = "lowercase", deny_unknown_fields)]
enum StepToml {
    Profile { at_ms: u64, name: String },
    Rate { at_ms: u64, kbps: RateToml, direction: Option<Direction>, queue_ms: Option<u32> },
    Loss { at_ms: u64, loss: f64, direction: Option<Direction> },
    Outage { at_ms: u64, duration_ms: Option<u64>, direction: Option<Direction> },
    Recover { at_ms: u64, direction: Option<Direction> },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RateToml {
    Kbps(u32),
    Word(String),
}

impl StepToml {
    fn into_step(self) -> Result<Step, NetemError> {
        let (at_ms, change) = match self {
            Self::Profile { at_ms, name } => (at_ms, Change::Profile(Profile::preset(&name)?)),
            Self::Rate { at_ms, kbps, direction, queue_ms } => {
                let kbps = match kbps {
                    RateToml::Kbps(k) => Some(k),
                    RateToml::Word(w) if w == "unlimited" => None,
                    RateToml::Word(w) => {
                        return Err(NetemError::invalid("kbps", format!("`{w}`: expected a number or \"unlimited\"")));
                    }
                };
                (at_ms, Change::Rate { dir: direction, kbps, queue_ms })
            }
            Self::Loss { at_ms, loss, direction } => (at_ms, Change::Loss { dir: direction, loss }),
            Self::Outage { at_ms, duration_ms, direction } => {
                (at_ms, Change::Outage { dir: direction, duration: duration_ms.map(Duration::from_millis) })
            }
            Self::Recover { at_ms, direction } => (at_ms, Change::Recover { dir: direction }),
        };
        Ok(Step { at: Duration::from_millis(at_ms), change })
    }
}

/// Counters of both directions of a [`LinkPair`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairStats {
    /// Site → bridge.
    pub up: LinkStats,
    /// Bridge → site.
    pub down: LinkStats,
}

/// A site's two-way link: two independent [`Link`]s (each with its own random stream) that follow a [`Timeline`].
///
/// Sans-IO like [`Link`]: every call takes `now` and first applies the timeline steps due by then, each at its own
/// scheduled time, so an outage of 3 s lasts exactly 3 s of virtual time whatever the call pattern.
/// [`poll_timeout`](Self::poll_timeout) includes the next step.
#[derive(Debug)]
pub struct LinkPair<T> {
    start: Instant,
    base: Profile,
    up: Link<T>,
    down: Link<T>,
    steps: Vec<Step>,
    next: usize,
}

impl<T> LinkPair<T> {
    /// A pair starting at `start` with `profile`, following `timeline`; `seed` feeds both directions (differently).
    pub fn new(start: Instant, profile: Profile, timeline: Timeline, seed: u64) -> Result<Self, NetemError> {
        profile.validate()?;
        timeline.validate()?;
        let up = Link::new(profile.up.clone(), splitmix(seed))?;
        let down = Link::new(profile.down.clone(), splitmix(seed ^ 0x5bd1_e995_a5a5_5a5a))?;
        Ok(Self { start, base: profile, up, down, steps: timeline.steps, next: 0 })
    }

    /// The direction `dir`.
    pub fn link(&self, dir: Direction) -> &Link<T> {
        match dir {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    /// The direction `dir`, to change it by hand.
    pub fn link_mut(&mut self, dir: Direction) -> &mut Link<T> {
        match dir {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }

    /// Counters of both directions.
    pub fn stats(&self) -> PairStats {
        PairStats { up: self.up.stats(), down: self.down.stats() }
    }

    /// Applies the timeline steps due by `now`.
    pub fn advance(&mut self, now: Instant) {
        while let Some(step) = self.steps.get(self.next) {
            let at = self.start + step.at;
            if at > now {
                break;
            }
            let change = step.change.clone();
            self.next += 1;
            tracing::debug!(?change, "link change");
            self.apply(at, &change);
        }
    }

    /// Offers a packet to direction `dir` at `now`.
    pub fn send(&mut self, now: Instant, dir: Direction, size_bytes: usize, packet: T) -> SendOutcome {
        self.advance(now);
        self.link_mut(dir).send(now, size_bytes, packet)
    }

    /// The earliest of the next delivery in either direction and the next timeline step.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let step = self.steps.get(self.next).map(|s| self.start + s.at);
        [self.up.poll_timeout(), self.down.poll_timeout(), step].into_iter().flatten().min()
    }

    /// The next packet due by `now` in either direction, earliest first.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<(Direction, T)> {
        self.advance(now);
        let dir = match (self.up.poll_timeout(), self.down.poll_timeout()) {
            (Some(u), Some(d)) if d < u => Direction::Down,
            (Some(_), _) => Direction::Up,
            (None, Some(_)) => Direction::Down,
            (None, None) => return None,
        };
        self.link_mut(dir).poll_deliver(now).map(|p| (dir, p))
    }

    /// The next packet due by `now` in direction `dir`.
    pub fn poll_deliver_dir(&mut self, now: Instant, dir: Direction) -> Option<T> {
        self.advance(now);
        self.link_mut(dir).poll_deliver(now)
    }

    fn apply(&mut self, at: Instant, change: &Change) {
        let dirs = |dir: &Option<Direction>| match dir {
            Some(d) => vec![*d],
            None => vec![Direction::Up, Direction::Down],
        };
        let result = match change {
            Change::Profile(p) => self.up.set_config(at, p.up.clone()).and(self.down.set_config(at, p.down.clone())),
            Change::Rate { dir, kbps, queue_ms } => {
                dirs(dir).into_iter().try_for_each(|d| self.link_mut(d).set_rate_queue(at, *kbps, *queue_ms))
            }
            Change::Loss { dir, loss } => dirs(dir).into_iter().try_for_each(|d| self.link_mut(d).set_loss(at, *loss)),
            Change::Outage { dir, duration } => {
                for d in dirs(dir) {
                    self.link_mut(d).set_outage(at, duration.map(|len| at + len));
                }
                Ok(())
            }
            Change::Recover { dir } => dirs(dir).into_iter().try_for_each(|d| {
                let cfg = match d {
                    Direction::Up => self.base.up.clone(),
                    Direction::Down => self.base.down.clone(),
                };
                let link = self.link_mut(d);
                link.end_outage(at);
                link.set_config(at, cfg)
            }),
        };
        // Unreachable: the profile and every step were validated in `new`.
        if let Err(e) = result {
            tracing::warn!(error = %e, "link change rejected");
        }
    }
}

/// SplitMix64: spreads a user seed into well-mixed, distinct seeds for the two directions.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce5_e9b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRILL: &str = r#"
        [[step]]
        at_ms = 10000
        change = "rate"
        kbps = 250
        direction = "down"

        [[step]]
        at_ms = 5000
        change = "loss"
        loss = 0.05

        [[step]]
        at_ms = 25000
        change = "outage"
        duration_ms = 3000
        direction = "up"

        [[step]]
        at_ms = 30000
        change = "profile"
        name = "vsat"

        [[step]]
        at_ms = 35000
        change = "rate"
        kbps = "unlimited"

        [[step]]
        at_ms = 36000
        change = "outage"

        [[step]]
        at_ms = 40000
        change = "recover"
    "#;

    fn err(text: &str) -> String {
        match Timeline::from_toml_str(text) {
            Ok(t) => panic!("accepted: {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_kind_of_step_sorted_by_time() {
        let t = Timeline::from_toml_str(DRILL).unwrap();
        let s = |ms| Duration::from_millis(ms);
        let expected = vec![
            Step { at: s(5_000), change: Change::Loss { dir: None, loss: 0.05 } },
            Step {
                at: s(10_000),
                change: Change::Rate { dir: Some(Direction::Down), kbps: Some(250), queue_ms: None },
            },
            Step { at: s(25_000), change: Change::Outage { dir: Some(Direction::Up), duration: Some(s(3_000)) } },
            Step { at: s(30_000), change: Change::Profile(Profile::preset("vsat").unwrap()) },
            Step { at: s(35_000), change: Change::Rate { dir: None, kbps: None, queue_ms: None } },
            Step { at: s(36_000), change: Change::Outage { dir: None, duration: None } },
            Step { at: s(40_000), change: Change::Recover { dir: None } },
        ];
        assert_eq!(t.steps(), expected);
        assert_eq!(Timeline::from_toml_str("").unwrap(), Timeline::default());
    }

    #[test]
    fn rejects_unknown_keys_kinds_presets_and_values() {
        let e = err("[[step]]\nat_ms = 1\nchange = \"rate\"\nkbps = 5\nloss = 0.1\n");
        assert!(e.contains("unknown field `loss`"), "{e}");
        let e = err("[[step]]\nat_ms = 1\nchange = \"teleport\"\n");
        assert!(e.contains("unknown variant `teleport`"), "{e}");
        let e = err("[[steps]]\nat_ms = 1\nchange = \"recover\"\n");
        assert!(e.contains("unknown field `steps`"), "{e}");
        let e = err("[[step]]\nchange = \"recover\"\n");
        assert!(e.contains("missing field `at_ms`"), "{e}");
        let e = err("[[step]]\nat_ms = 1\nchange = \"recover\"\ndirection = \"left\"\n");
        assert!(e.contains("unknown variant `left`"), "{e}");
        let e = err("[[step]]\nat_ms = 1\nchange = \"profile\"\nname = \"moon\"\n");
        assert!(e.starts_with("unknown link preset `moon`; known presets: 3g, 4g"), "{e}");
        let e = err("[[step]]\nat_ms = 1\nchange = \"rate\"\nkbps = \"fast\"\n");
        assert_eq!(e, "timeline step 1: kbps: `fast`: expected a number or \"unlimited\"");
        let e = err("[[step]]\nat_ms = 1\nchange = \"rate\"\nkbps = 0\n");
        assert!(e.starts_with("timeline step 1 (at 1ms): rate_kbps: must be at least 1"), "{e}");
        let e = err("[[step]]\nat_ms = 1\nchange = \"loss\"\nloss = 5\n");
        assert!(e.starts_with("timeline step 1 (at 1ms): loss: 5 is out of range"), "{e}");
    }
}
