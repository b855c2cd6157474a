//! Rural links in user space: a deterministic, sans-IO network link emulator and a UDP relay built on it.
//!
//! Drills, benchmarks and tests use this crate to put the links of the field — ADSL, 4G, 3G, EDGE, and VSAT at
//! 128 kbit/s with 5% loss and 400 ms RTT — between synthetic commune sites and the bridge. The kernel's `netem`
//! qdisc is not available on the machines we run on, so the emulation is ours, and it is better for it: seeded, so a
//! drill or a failing test replays exactly, and driven in virtual time, so a 60 s VSAT scenario runs in milliseconds.
//!
//! The model follows libwebrtc's `SimulatedNetwork` (see [`LinkConfig`] for the details):
//! - a **capacity queue** drained at the link rate, drop-tail beyond a queue limit in bytes;
//! - **base delay plus jitter** (uniform ±, optionally reordering);
//! - **random loss** and **Gilbert–Elliott burst loss** ([`Burst`]); **outages**;
//! - each **direction independent** ([`Profile`] = `up` + `down`).
//!
//! Layers, bottom to top:
//! - [`Link<T>`]: one direction. `send(now, size, packet)`, `poll_timeout()`, `poll_deliver(now)`,
//!   `set_config(now, cfg)`. Generic over the packet, so a scenario test can pass str0m datagrams, plain bytes, or
//!   sequence numbers. No clock reads, no IO, no threads.
//! - [`Profile`]: both directions; presets (`fibre`, `adsl`, `4g`, `3g`, `edge`, `vsat`, `congested`) live in
//!   `config/links.toml`, embedded in the binary and parsed strictly ([`Profile::preset`]).
//! - [`Timeline`]: scripted changes over a run (set a profile, a rate, a loss; an outage; recover), parseable from
//!   TOML for drills; [`LinkPair`] holds a site's two directions and applies the timeline as time advances.
//! - [`relay::UdpRelay`]: the only IO — a tokio task relaying one client's UDP datagrams to a target through a
//!   [`LinkPair`], for runs with real sockets (browsers, webrtc-rs sites). It reads the clock once per turn.
//!
//! Virtual-time use, as str0m's tests drive their peers:
//! ```
//! use std::time::{Duration, Instant};
//! use diemcau_netem::{Link, Profile, SendOutcome};
//!
//! let vsat = Profile::preset("vsat")?;
//! let mut down = Link::new(vsat.down, 7)?;
//! let t0 = Instant::now(); // the origin of virtual time; nothing sleeps
//! let mut outcome = SendOutcome::DroppedLoss;
//! for i in 0..20u64 {
//!     outcome = down.send(t0 + Duration::from_millis(20 * i), 160, i); // 64 kbit/s of audio-sized packets
//! }
//! assert_ne!(outcome, SendOutcome::DroppedQueueFull);
//! let mut got = Vec::new();
//! while let Some(at) = down.poll_timeout() {
//!     while let Some(seq) = down.poll_deliver(at) {
//!         got.push((seq, at - t0));
//!     }
//! }
//! assert!(got.iter().all(|&(_, at)| at >= Duration::from_millis(190))); // 200 ms ± 10 ms one way
//! # Ok::<(), diemcau_netem::NetemError>(())
//! ```

mod config;
mod error;
mod link;
pub mod relay;
mod timeline;

pub use config::{Burst, LinkConfig, PRESETS_TOML, Profile, parse_presets};
pub use error::NetemError;
pub use link::{Link, LinkStats, SendOutcome};
pub use timeline::{Change, Direction, LinkPair, PairStats, Step, Timeline};
