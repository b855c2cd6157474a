//! Link parameters ([`LinkConfig`], [`Burst`]), two-way [`Profile`]s and the presets of `config/links.toml`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NetemError;

/// The preset file, embedded at build time so that every binary knows the same presets.
pub const PRESETS_TOML: &str = include_str!("../../../config/links.toml");

/// One direction of a link. Every key may be left out of a TOML table; an unknown key is an error.
///
/// The model, in the order a packet meets it (as libwebrtc's `SimulatedNetwork`):
/// 1. **Capacity queue.** A FIFO drained at `rate_kbps`. A packet that would make the bytes *waiting* (not counting
///    the packet being serialized) exceed `queue_bytes` is dropped (drop-tail). With no rate the link has infinite
///    capacity and no queue.
/// 2. **Loss.** Random loss (`loss`) and, if set, Gilbert–Elliott burst loss (`burst`), drawn once per packet that
///    entered the queue. A lost packet still uses its share of the capacity (it is lost on the wire, after the
///    bottleneck), so a lossy link's goodput is `rate × (1 − loss)`.
/// 3. **Propagation.** After its last bit is serialized the packet travels for `delay_ms ± jitter_ms` (uniform, so the
///    mean is `delay_ms`, as `tc netem delay D J`). Unless `reorder` is set, a packet never arrives before the one sent
///    before it (its arrival is held back to that packet's), which keeps the jitter but removes reordering. Jitter is
///    drawn independently per packet, so when packets follow each other much closer than `jitter_ms` the in-order
///    hold raises the mean delay towards `delay_ms + jitter_ms` (at 1,000 packets/s on 100 ± 20 ms: 113 ms).
///    With `jitter_memory_ms` the jitter wanders instead: each draw keeps `c = exp(−Δt / memory)` of the last one
///    (Δt: time since the last packet) and adds `√(1 − c²)` of a new uniform draw, clamped to `± jitter_ms`: the
///    spread is nearly kept (the clamp trims the standard deviation `jitter_ms / √3` by ~15%), closer to normal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// Capacity in kbit/s (1 kbit = 1,000 bits); `None` (key absent) = unlimited.
    pub rate_kbps: Option<u32>,
    /// Bytes that may wait behind the packet being serialized; beyond, packets are dropped (drop-tail).
    pub queue_bytes: usize,
    /// One-way propagation delay in milliseconds (the mean, when there is jitter).
    pub delay_ms: u32,
    /// Half-width of the uniform jitter around `delay_ms`, in milliseconds; at most `delay_ms`.
    pub jitter_ms: u32,
    /// How long the jitter remembers its last value, in milliseconds: 0 (the default) draws it anew for each packet;
    /// longer makes the delay wander (see above). GoogCC's trendline reads a ±20 ms jitter that moves within ~150 ms
    /// as queueing, and one that moves over seconds as the path's (docs/perf.md, 2026-12-03).
    pub jitter_memory_ms: u32,
    /// Whether jitter may reorder packets. When false a packet never leaves before the previous one.
    pub reorder: bool,
    /// Probability that a packet is lost, independently of all others, in `0..=1`.
    pub loss: f64,
    /// Burst loss on top of `loss` (a packet is lost if either model loses it).
    pub burst: Option<Burst>,
}

impl Default for LinkConfig {
    /// An ideal link: unlimited rate, no delay, no loss; 64 KiB of queue for when a rate is set.
    fn default() -> Self {
        Self {
            rate_kbps: None,
            queue_bytes: 64 * 1024,
            delay_ms: 0,
            jitter_ms: 0,
            jitter_memory_ms: 0,
            reorder: false,
            loss: 0.0,
            burst: None,
        }
    }
}

impl LinkConfig {
    /// Checks every value; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<(), NetemError> {
        if self.rate_kbps == Some(0) {
            return Err(NetemError::invalid(
                "rate_kbps",
                "must be at least 1 (leave the key out for an unlimited rate)",
            ));
        }
        probability("loss", self.loss)?;
        if self.jitter_ms > self.delay_ms {
            return Err(NetemError::invalid(
                "jitter_ms",
                format!(
                    "{} is larger than delay_ms = {}: jitter is ± around the delay, so it cannot exceed it",
                    self.jitter_ms, self.delay_ms
                ),
            ));
        }
        if let Some(burst) = &self.burst {
            burst.validate().map_err(|e| e.within("burst"))?;
        }
        Ok(())
    }

    /// Long-run fraction of packets lost (random and burst loss together), ignoring queue drops.
    pub fn mean_loss(&self) -> f64 {
        let burst = self.burst.as_ref().map_or(0.0, Burst::mean_loss);
        1.0 - (1.0 - self.loss) * (1.0 - burst)
    }
}

/// Gilbert–Elliott burst loss: a two-state Markov chain stepped once per packet.
///
/// Before each packet the chain moves Good → Bad with probability `p_good_to_bad` and Bad → Good with `p_bad_to_good`;
/// the packet is then lost with probability `loss_in_bad` if the chain is Bad (never in Good; random loss is `loss` of
/// [`LinkConfig`]). Consequences, in packets:
/// - the chain stays Bad for `1 / p_bad_to_good` packets on average, so with `loss_in_bad = 1` the **mean burst length**
///   of consecutive losses is `1 / p_bad_to_good`;
/// - it is Bad a fraction `p_good_to_bad / (p_good_to_bad + p_bad_to_good)` of the time, and the mean loss is that
///   fraction times `loss_in_bad`.
///
/// To set a link by mean loss and mean burst length instead, use [`Burst::from_mean_burst`] (libwebrtc's
/// `avg_burst_loss_length` parametrisation), or compute: `p_bad_to_good = 1 / L`, `p_good_to_bad = p·(1/L)/(1 − p)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Probability, per packet, of entering the Bad state.
    pub p_good_to_bad: f64,
    /// Probability, per packet, of leaving the Bad state (> 0).
    pub p_bad_to_good: f64,
    /// Probability that a packet is lost while Bad.
    pub loss_in_bad: f64,
}

impl Burst {
    /// Burst loss with mean loss `mean_loss` (in `0..1`) in bursts of `mean_burst_len` (≥ 1) packets on average: every
    /// packet is lost while Bad.
    pub fn from_mean_burst(mean_loss: f64, mean_burst_len: f64) -> Result<Self, NetemError> {
        if !(mean_loss.is_finite() && (0.0..1.0).contains(&mean_loss)) {
            return Err(NetemError::invalid("mean_loss", format!("{mean_loss} must be in 0..1")));
        }
        if !(mean_burst_len.is_finite() && mean_burst_len >= 1.0) {
            return Err(NetemError::invalid("mean_burst_len", format!("{mean_burst_len} must be at least 1 packet")));
        }
        let p_bad_to_good = 1.0 / mean_burst_len;
        let burst =
            Self { p_good_to_bad: mean_loss * p_bad_to_good / (1.0 - mean_loss), p_bad_to_good, loss_in_bad: 1.0 };
        burst.validate()?;
        Ok(burst)
    }

    /// Checks the three probabilities.
    pub fn validate(&self) -> Result<(), NetemError> {
        probability("p_good_to_bad", self.p_good_to_bad)?;
        probability("p_bad_to_good", self.p_bad_to_good)?;
        probability("loss_in_bad", self.loss_in_bad)?;
        if self.p_bad_to_good == 0.0 {
            return Err(NetemError::invalid("p_bad_to_good", "must be above 0, or the link never leaves a burst"));
        }
        Ok(())
    }

    /// Fraction of time (of packets) the chain is Bad.
    pub fn bad_fraction(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total == 0.0 { 0.0 } else { self.p_good_to_bad / total }
    }

    /// Long-run fraction of packets this model loses.
    pub fn mean_loss(&self) -> f64 {
        self.bad_fraction() * self.loss_in_bad
    }

    /// Mean number of consecutive packets spent in the Bad state (the mean loss burst when `loss_in_bad = 1`).
    pub fn mean_burst_len(&self) -> f64 {
        1.0 / self.p_bad_to_good
    }
}

fn probability(what: &str, p: f64) -> Result<(), NetemError> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(NetemError::invalid(what, format!("{p} is out of range: a probability must be within 0..=1 (5% is 0.05)")))
    }
}

/// Both directions of a site's link. `up` carries the site's packets towards the bridge, `down` the bridge's to the
/// site.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Site → bridge.
    pub up: LinkConfig,
    /// Bridge → site.
    pub down: LinkConfig,
}

impl Profile {
    /// The same configuration both ways.
    pub fn symmetric(cfg: LinkConfig) -> Self {
        Self { up: cfg.clone(), down: cfg }
    }

    /// Validates both directions; the error path starts with `up.` or `down.`.
    pub fn validate(&self) -> Result<(), NetemError> {
        self.up.validate().map_err(|e| e.within("up"))?;
        self.down.validate().map_err(|e| e.within("down"))
    }

    /// Parses one profile: a table `[up]` and a table `[down]`, then validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, NetemError> {
        let profile: Self =
            toml::from_str(text).map_err(|source| NetemError::Parse { what: "link profile", source })?;
        profile.validate()?;
        Ok(profile)
    }

    /// A preset of `config/links.toml` by name (`fibre`, `adsl`, `4g`, `3g`, `edge`, `vsat`, `congested`).
    pub fn preset(name: &str) -> Result<Self, NetemError> {
        let mut presets = Self::presets()?;
        presets.remove(name).ok_or_else(|| NetemError::UnknownPreset {
            name: name.to_owned(),
            known: presets.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
        })
    }

    /// All presets of `config/links.toml`, by name.
    pub fn presets() -> Result<BTreeMap<String, Self>, NetemError> {
        parse_presets(PRESETS_TOML)
    }

    /// Names of the presets, sorted.
    pub fn preset_names() -> Vec<String> {
        Self::presets().map(|p| p.into_keys().collect()).unwrap_or_default()
    }
}

/// Parses a file of named profiles (`[NAME.up]`, `[NAME.down]` tables, as `config/links.toml`) and validates each.
pub fn parse_presets(text: &str) -> Result<BTreeMap<String, Profile>, NetemError> {
    let presets: BTreeMap<String, Profile> =
        toml::from_str(text).map_err(|source| NetemError::Parse { what: "link profiles", source })?;
    for (name, profile) in &presets {
        profile.validate().map_err(|e| e.within(&format!("preset `{name}`:")))?;
    }
    Ok(presets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Profile::from_toml_str(text) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn preset_file_parses_and_every_preset_validates() {
        let presets = Profile::presets().unwrap();
        let names: Vec<_> = presets.keys().map(String::as_str).collect();
        assert_eq!(names, ["3g", "4g", "adsl", "congested", "edge", "fibre", "vsat"]);
        for (name, p) in &presets {
            p.validate().unwrap();
            // Every preset limits the rate, so every one has a queue worth at least 100 ms.
            for cfg in [&p.up, &p.down] {
                let kbps = cfg.rate_kbps.unwrap_or_else(|| panic!("{name}: no rate"));
                assert!(cfg.queue_bytes as f64 >= f64::from(kbps) * 1000.0 / 8.0 * 0.1, "{name}: {cfg:?}");
            }
        }
        assert_eq!(Profile::preset_names(), names);
    }

    #[test]
    fn presets_have_the_documented_values() {
        let vsat = Profile::preset("vsat").unwrap();
        assert_eq!(vsat.up, vsat.down);
        assert_eq!((vsat.up.rate_kbps, vsat.up.delay_ms, vsat.up.loss), (Some(128), 200, 0.05));
        assert_eq!(vsat.up.delay_ms + vsat.down.delay_ms, 400, "400 ms RTT");
        let fibre = Profile::preset("fibre").unwrap();
        assert_eq!((fibre.down.rate_kbps, fibre.down.delay_ms), (Some(100_000), 5));
        let adsl = Profile::preset("adsl").unwrap();
        assert_eq!((adsl.down.rate_kbps, adsl.up.rate_kbps, adsl.down.delay_ms), (Some(8_000), Some(1_000), 20));
        let g4 = Profile::preset("4g").unwrap();
        assert_eq!((g4.down.rate_kbps, g4.up.rate_kbps, g4.down.delay_ms), (Some(12_000), Some(4_000), 40));
        let g3 = Profile::preset("3g").unwrap();
        assert_eq!(
            (g3.down.rate_kbps, g3.up.rate_kbps, g3.down.delay_ms, g3.down.loss),
            (Some(780), Some(330), 100, 0.01)
        );
        let edge = Profile::preset("edge").unwrap();
        assert_eq!((edge.down.rate_kbps, edge.up.rate_kbps), (Some(240), Some(200)));
        assert_eq!(edge.up.delay_ms + edge.down.delay_ms, 400, "400 ms RTT");
        let congested = Profile::preset("congested").unwrap();
        let burst = congested.down.burst.clone().unwrap();
        assert_eq!(burst.mean_burst_len(), 4.0);
        assert!((congested.down.mean_loss() - 0.043).abs() < 0.001, "{}", congested.down.mean_loss());
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let e = Profile::preset("satellite").unwrap_err().to_string();
        assert_eq!(e, "unknown link preset `satellite`; known presets: 3g, 4g, adsl, congested, edge, fibre, vsat");
    }

    #[test]
    fn profile_parses_with_defaults() {
        let p = Profile::from_toml_str("[up]\nrate_kbps = 500\n[down]\ndelay_ms = 30\njitter_ms = 5\n").unwrap();
        assert_eq!(p.up, LinkConfig { rate_kbps: Some(500), ..LinkConfig::default() });
        assert_eq!(p.down, LinkConfig { delay_ms: 30, jitter_ms: 5, ..LinkConfig::default() });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = err("[up]\nrate_kbit = 500\n[down]\n");
        assert!(e.contains("unknown field `rate_kbit`") && e.contains("rate_kbps"), "{e}");
        let e = err("[up]\n[down]\n[sideways]\n");
        assert!(e.contains("unknown field `sideways`"), "{e}");
        let e = err("[up]\nburst = { p_good_to_bad = 0.1, p_bad_to_good = 0.5, loss_in_bad = 1.0, len = 3 }\n[down]\n");
        assert!(e.contains("unknown field `len`"), "{e}");
        let e = parse_presets("[vsat.up]\nlos = 0.05\n[vsat.down]\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `los`"), "{e}");
        let e = err("[up]\nloss = \"5%\"\n[down]\n");
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn validation_names_the_field_and_the_range() {
        let e = err("[up]\n[down]\nloss = 1.5\n");
        assert_eq!(e, "down.loss: 1.5 is out of range: a probability must be within 0..=1 (5% is 0.05)");
        let e = err("[up]\nloss = -0.1\n[down]\n");
        assert!(e.starts_with("up.loss: -0.1 is out of range"), "{e}");
        let e = err("[up]\nrate_kbps = 0\n[down]\n");
        assert_eq!(e, "up.rate_kbps: must be at least 1 (leave the key out for an unlimited rate)");
        let e = err("[up]\ndelay_ms = 10\njitter_ms = 20\n[down]\n");
        assert!(e.starts_with("up.jitter_ms: 20 is larger than delay_ms = 10"), "{e}");
        let e = err("[up]\nburst = { p_good_to_bad = 0.1, p_bad_to_good = 0.0, loss_in_bad = 1.0 }\n[down]\n");
        assert_eq!(e, "up.burst.p_bad_to_good: must be above 0, or the link never leaves a burst");
        let e = err("[up]\nburst = { p_good_to_bad = 2.0, p_bad_to_good = 0.5, loss_in_bad = 1.0 }\n[down]\n");
        assert!(e.starts_with("up.burst.p_good_to_bad: 2 is out of range"), "{e}");
        let e = parse_presets("[x.up]\n[x.down]\nloss = 7.0\n").unwrap_err().to_string();
        assert!(e.starts_with("preset `x`: down.loss: 7 is out of range"), "{e}");
        assert!(LinkConfig { loss: f64::NAN, ..LinkConfig::default() }.validate().is_err());
    }

    #[test]
    fn burst_from_mean_parametrisation() {
        let b = Burst::from_mean_burst(0.1, 2.0).unwrap();
        assert_eq!(b.p_bad_to_good, 0.5);
        assert!((b.mean_loss() - 0.1).abs() < 1e-12);
        assert!(Burst::from_mean_burst(1.0, 2.0).is_err());
        assert!(Burst::from_mean_burst(0.1, 0.5).is_err());
    }
}
