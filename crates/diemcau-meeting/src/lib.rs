//! The control of one meeting — roll call, floor, raised hands, mutes, lock — as a sans-IO state machine.
//!
//! A [`Controller`] never reads a clock or touches a socket or a database. The shell (`diemcau-signal`) drives it:
//!
//! 1. an input (a chair [`Action`], a site's "Có mặt" or hand) and the time go to [`Controller::decide`], which
//!    checks it against the state and answers the [`Event`] it becomes (or a [`Refusal`] that says why not, or
//!    nothing when it changes nothing: a second "Có mặt");
//! 2. the shell writes that event to the meeting's log ([`Controller::stamp`] gives it its sequence number) and
//!    only then [`Controller::apply`]s it and acknowledges;
//! 3. [`Controller::poll_timeout`] says when the next deadline falls; at or after it, [`Controller::on_timeout`]
//!    gives the event the deadline produces (a site's call expired, the roll call's deadline passed), which goes
//!    through the same log-then-apply path.
//!
//! The state is the replay of the log ([`Controller::restore`]): after a restart of the bridge the roll call in
//! progress continues with its deadline, and the floor holder, the hand queue, the mutes and the lock are as they
//! were. Whether a site is connected is live state, given with [`Controller::set_online`], never logged; the one
//! place it matters (a call ending unanswered: no answer or offline) is decided into the event.
//!
//! Every event costs O(1) to apply whatever the number of sites, except those that touch every site by nature
//! (a round starting, the all-at-once deadline, mute all): a roll call over 3,000 sites is 3,000 answers at the same
//! cost each.

pub mod convene;

use std::collections::{BTreeSet, HashMap, HashSet};

pub use diemcau_proto::control::{
    Action, ControlState, Counts, Event, Hand, Logged, Outcome, RollCallMode, RollCallState, SiteResult, SiteView,
};

/// Time to answer an all-at-once roll call, ms.
pub const ALL_AT_ONCE_MS: i64 = 60_000;
/// Time each site has to answer in a one-by-one roll call, ms.
pub const ONE_BY_ONE_MS: i64 = 20_000;
/// Longest time to answer the chair may set, s.
pub const MAX_SECONDS: u32 = 3_600;

/// Why an input was refused. The message is shown to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The site is not invited to this meeting (or is the chair).
    #[error("site {0} is not invited to this meeting")]
    NotInvited(i64),
    /// A roll call is already in progress.
    #[error("a roll call is already in progress: cancel it first")]
    RollCallInProgress,
    /// There is no roll call in progress.
    #[error("no roll call is in progress")]
    NoRollCall,
    /// The site is not being called now.
    #[error("site {0} is not being called now")]
    NotCalled(i64),
    /// Re-call with nobody to call.
    #[error("every site of the last roll call answered: there is nobody to call again")]
    NothingToRecall,
    /// Re-call before any roll call.
    #[error("no roll call has been held yet")]
    NoRollCallYet,
    /// The chosen order names a site twice, or is empty.
    #[error("the order {0}")]
    BadOrder(String),
    /// The time to answer is out of range.
    #[error("seconds must be between 1 and {MAX_SECONDS}")]
    BadSeconds,
    /// Taking the floor back when nobody holds it.
    #[error("nobody holds the floor")]
    NoFloor,
    /// The floor holder raised its hand.
    #[error("site {0} already holds the floor")]
    HoldsFloor(i64),
}

/// An input to the controller besides the chair's actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A chair action.
    Chair(Action),
    /// A site answered "Có mặt", with what of its media the bridge saw arrive in the seconds before.
    Present {
        /// The site.
        site_id: i64,
        /// Its audio arrived.
        audio: bool,
        /// Its video arrived.
        video: bool,
    },
    /// A site raised or lowered its hand.
    Hand {
        /// The site.
        site_id: i64,
        /// Raised.
        raised: bool,
    },
}

/// The round in progress.
#[derive(Debug, Clone)]
struct Round {
    round: u32,
    mode: RollCallMode,
    sites: Vec<i64>,
    per_call_ms: i64,
    started_ms: i64,
    /// All at once: the round's; one by one: the current site's.
    deadline_ms: i64,
    /// One by one: index of the site being called.
    next: usize,
    /// All at once: called sites not decided yet.
    pending: HashSet<i64>,
}

impl Round {
    fn calling(&self) -> Option<i64> {
        match self.mode {
            RollCallMode::OneByOne => self.sites.get(self.next).copied(),
            RollCallMode::AllAtOnce => None,
        }
    }

    fn is_called(&self, site: i64) -> bool {
        match self.mode {
            RollCallMode::OneByOne => self.calling() == Some(site),
            RollCallMode::AllAtOnce => self.pending.contains(&site),
        }
    }
}

/// The control state of one meeting.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Invited sites (the chair excluded) in directory order.
    invited: Vec<i64>,
    invited_set: HashSet<i64>,
    online: HashSet<i64>,
    round: Option<Round>,
    /// The sites of the last round begun, with its mode and time per call (for a re-call).
    last_round: Option<(RollCallMode, i64, Vec<i64>)>,
    rounds: u32,
    results: HashMap<i64, SiteResult>,
    counts: Counts,
    floor: Option<i64>,
    hands: Vec<Hand>,
    muted: BTreeSet<i64>,
    locked: bool,
    seq: u64,
}

impl Controller {
    /// A meeting with these invited sites (the chair excluded), in directory order, and nothing logged yet.
    pub fn new(invited: Vec<i64>) -> Controller {
        let invited_set = invited.iter().copied().collect();
        Controller {
            invited,
            invited_set,
            online: HashSet::new(),
            round: None,
            last_round: None,
            rounds: 0,
            results: HashMap::new(),
            counts: Counts::default(),
            floor: None,
            hands: Vec::new(),
            muted: BTreeSet::new(),
            locked: false,
            seq: 0,
        }
    }

    /// The meeting as its log leaves it.
    pub fn restore<'a>(invited: Vec<i64>, log: impl IntoIterator<Item = &'a Logged>) -> Controller {
        let mut c = Controller::new(invited);
        for l in log {
            c.apply(l);
        }
        c
    }

    /// Whether `site` is connected (live state, not logged).
    pub fn set_online(&mut self, site: i64, online: bool) {
        if online {
            self.online.insert(site);
        } else {
            self.online.remove(&site);
        }
    }

    fn invited(&self, site: i64) -> Result<(), Refusal> {
        if self.invited_set.contains(&site) { Ok(()) } else { Err(Refusal::NotInvited(site)) }
    }

    /// What `input` at `now_ms` becomes: the event to log and apply, nothing when it changes nothing, or why not.
    pub fn decide(&self, now_ms: i64, input: Input) -> Result<Option<Event>, Refusal> {
        let _ = now_ms; // decisions depend on the state only; deadlines are in on_timeout
        match input {
            Input::Present { site_id, audio, video } => {
                self.invited(site_id)?;
                let Some(r) = &self.round else { return Err(Refusal::NoRollCall) };
                if r.is_called(site_id) {
                    Ok(Some(Event::Confirmed { site_id, audio, video }))
                } else if self.results.get(&site_id).is_some_and(|x| x.round == r.round && x.outcome.present()) {
                    Ok(None) // a second "Có mặt"
                } else {
                    Err(Refusal::NotCalled(site_id))
                }
            }
            Input::Hand { site_id, raised } => {
                self.invited(site_id)?;
                let up = self.hands.iter().any(|h| h.site_id == site_id);
                match (raised, up) {
                    (true, _) if self.floor == Some(site_id) => Err(Refusal::HoldsFloor(site_id)),
                    (true, false) => Ok(Some(Event::HandRaised { site_id })),
                    (false, true) => Ok(Some(Event::HandLowered { site_id })),
                    _ => Ok(None),
                }
            }
            Input::Chair(a) => self.decide_chair(a),
        }
    }

    fn decide_chair(&self, a: Action) -> Result<Option<Event>, Refusal> {
        match a {
            Action::StartRollCall { mode, order, seconds } => {
                if self.round.is_some() {
                    return Err(Refusal::RollCallInProgress);
                }
                let sites = match order {
                    None => self.invited.clone(),
                    Some(o) => {
                        let mut seen = HashSet::new();
                        for s in &o {
                            self.invited(*s)?;
                            if !seen.insert(*s) {
                                return Err(Refusal::BadOrder(format!("names site {s} twice")));
                            }
                        }
                        o
                    }
                };
                if sites.is_empty() {
                    return Err(Refusal::BadOrder("has no site to call".into()));
                }
                let per_call_ms = per_call_ms(mode, seconds)?;
                Ok(Some(Event::RollCallStarted { round: self.rounds + 1, mode, sites, per_call_ms }))
            }
            Action::Recall { seconds } => {
                if self.round.is_some() {
                    return Err(Refusal::RollCallInProgress);
                }
                let Some((mode, per_call_ms, sites)) = &self.last_round else { return Err(Refusal::NoRollCallYet) };
                let again: Vec<i64> = sites
                    .iter()
                    .copied()
                    .filter(|s| !self.results.get(s).is_some_and(|r| r.outcome.present()))
                    .collect();
                if again.is_empty() {
                    return Err(Refusal::NothingToRecall);
                }
                let per_call_ms = match seconds {
                    None => *per_call_ms,
                    Some(_) => crate::per_call_ms(*mode, seconds)?,
                };
                Ok(Some(Event::RollCallStarted { round: self.rounds + 1, mode: *mode, sites: again, per_call_ms }))
            }
            Action::CancelRollCall {} => {
                if self.round.is_none() {
                    return Err(Refusal::NoRollCall);
                }
                Ok(Some(Event::RollCallCancelled))
            }
            Action::GiveFloor { site_id } => {
                self.invited(site_id)?;
                Ok((self.floor != Some(site_id)).then_some(Event::FloorGiven { site_id }))
            }
            Action::TakeFloor {} => {
                if self.floor.is_none() {
                    return Err(Refusal::NoFloor);
                }
                Ok(Some(Event::FloorTaken))
            }
            Action::LowerHand { site_id } => {
                self.invited(site_id)?;
                Ok(self.hands.iter().any(|h| h.site_id == site_id).then_some(Event::HandLowered { site_id }))
            }
            Action::MuteAll {} => Ok(Some(Event::MutedAll)),
            Action::Mute { site_id } => {
                self.invited(site_id)?;
                Ok((!self.muted.contains(&site_id)).then_some(Event::Muted { site_id }))
            }
            Action::Unmute { site_id } => {
                self.invited(site_id)?;
                Ok(self.muted.contains(&site_id).then_some(Event::Unmuted { site_id }))
            }
            Action::Lock { locked } => Ok((locked != self.locked).then_some(Event::Locked { locked })),
        }
    }

    /// When the next deadline falls (unix ms), if a roll call is in progress.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.round.as_ref().map(|r| r.deadline_ms)
    }

    /// The event a deadline at or before `now_ms` produces, if one has passed.
    pub fn on_timeout(&self, now_ms: i64) -> Option<Event> {
        let r = self.round.as_ref()?;
        if now_ms < r.deadline_ms {
            return None;
        }
        match r.mode {
            RollCallMode::OneByOne => {
                let site_id = r.calling()?;
                Some(Event::CallExpired { site_id, online: self.online.contains(&site_id) })
            }
            RollCallMode::AllAtOnce => {
                let mut offline: Vec<i64> = r.pending.iter().copied().filter(|s| !self.online.contains(s)).collect();
                offline.sort_unstable();
                Some(Event::DeadlinePassed { offline })
            }
        }
    }

    /// The next log entry for `event` decided at `at_ms` (the controller's sequence, not yet applied).
    pub fn stamp(&self, at_ms: i64, event: Event) -> Logged {
        Logged { seq: self.seq + 1, at_ms, event }
    }

    /// Applies a logged event (after it was written). Entries older than the last applied are ignored.
    pub fn apply(&mut self, l: &Logged) {
        if l.seq <= self.seq {
            return;
        }
        self.seq = l.seq;
        let at = l.at_ms;
        match &l.event {
            Event::RollCallStarted { round, mode, sites, per_call_ms } => {
                let pending = match mode {
                    RollCallMode::AllAtOnce => sites.iter().copied().collect(),
                    RollCallMode::OneByOne => HashSet::new(),
                };
                self.rounds = *round;
                self.counts = Counts { called: count(sites.len()), waiting: count(sites.len()), ..Counts::default() };
                self.last_round = Some((*mode, *per_call_ms, sites.clone()));
                self.round = Some(Round {
                    round: *round,
                    mode: *mode,
                    sites: sites.clone(),
                    per_call_ms: *per_call_ms,
                    started_ms: at,
                    deadline_ms: at.saturating_add(*per_call_ms),
                    next: 0,
                    pending,
                });
            }
            Event::Confirmed { site_id, audio, video } => {
                let outcome = match (audio, video) {
                    (true, true) => Outcome::PresentAv,
                    (true, false) => Outcome::PresentAudioOnly,
                    _ => Outcome::PresentNoMedia,
                };
                self.decided(at, *site_id, outcome, *audio, *video);
            }
            Event::CallExpired { site_id, online } => {
                let outcome = if *online { Outcome::NoAnswer } else { Outcome::Offline };
                self.decided(at, *site_id, outcome, false, false);
            }
            Event::DeadlinePassed { offline } => {
                let offline: HashSet<i64> = offline.iter().copied().collect();
                if let Some(r) = self.round.take() {
                    let mut pending: Vec<i64> = r.pending.iter().copied().collect();
                    pending.sort_unstable();
                    self.round = Some(r);
                    for s in pending {
                        let outcome = if offline.contains(&s) { Outcome::Offline } else { Outcome::NoAnswer };
                        self.decided(at, s, outcome, false, false);
                    }
                }
                self.round = None;
            }
            Event::RollCallCancelled => {
                self.round = None;
                self.counts.waiting = 0;
            }
            Event::FloorGiven { site_id } => {
                if let Some(prev) = self.floor.replace(*site_id)
                    && prev != *site_id
                {
                    self.muted.insert(prev);
                }
                self.muted.remove(site_id);
                self.hands.retain(|h| h.site_id != *site_id);
            }
            Event::FloorTaken => {
                if let Some(prev) = self.floor.take() {
                    self.muted.insert(prev);
                }
            }
            Event::HandRaised { site_id } => {
                if !self.hands.iter().any(|h| h.site_id == *site_id) {
                    self.hands.push(Hand { site_id: *site_id, since_ms: at });
                }
            }
            Event::HandLowered { site_id } => self.hands.retain(|h| h.site_id != *site_id),
            Event::MutedAll => {
                self.muted = self.invited.iter().copied().filter(|s| Some(*s) != self.floor).collect();
            }
            Event::Muted { site_id } => {
                self.muted.insert(*site_id);
            }
            Event::Unmuted { site_id } => {
                self.muted.remove(site_id);
            }
            Event::Locked { locked } => self.locked = *locked,
        }
    }

    /// Records a site's result in the round in progress and moves the round on.
    fn decided(&mut self, at: i64, site: i64, outcome: Outcome, audio: bool, video: bool) {
        let Some(r) = &mut self.round else { return };
        let called = match r.mode {
            RollCallMode::AllAtOnce => r.pending.remove(&site),
            RollCallMode::OneByOne => r.calling() == Some(site),
        };
        if !called {
            return;
        }
        self.results.insert(site, SiteResult { outcome, at_ms: at, audio, video, round: r.round });
        let c = &mut self.counts;
        c.waiting = c.waiting.saturating_sub(1);
        match outcome {
            Outcome::PresentAv => c.present_av += 1,
            Outcome::PresentAudioOnly => c.present_audio_only += 1,
            Outcome::PresentNoMedia => c.present_no_media += 1,
            Outcome::NoAnswer => c.no_answer += 1,
            Outcome::Offline => c.offline += 1,
        }
        let done = match r.mode {
            RollCallMode::AllAtOnce => r.pending.is_empty(),
            RollCallMode::OneByOne => {
                r.next += 1;
                r.deadline_ms = at.saturating_add(r.per_call_ms);
                r.next >= r.sites.len()
            }
        };
        if done {
            self.round = None;
        }
    }

    /// The whole state, for the chair's console.
    pub fn state(&self) -> ControlState {
        let mut results: Vec<(i64, SiteResult)> = self.results.iter().map(|(s, r)| (*s, *r)).collect();
        results.sort_unstable_by_key(|(s, _)| *s);
        ControlState {
            roll_call: self.round.as_ref().map(|r| RollCallState {
                round: r.round,
                mode: r.mode,
                started_ms: r.started_ms,
                deadline_ms: r.deadline_ms,
                calling: r.calling(),
                sites: r.sites.clone(),
            }),
            results,
            counts: self.counts,
            rounds: self.rounds,
            floor: self.floor,
            hands: self.hands.clone(),
            muted: self.muted.iter().copied().collect(),
            locked: self.locked,
            seq: self.seq,
        }
    }

    /// What the state means for one site's page.
    pub fn site_view(&self, site: i64) -> SiteView {
        let called_until_ms = self.round.as_ref().filter(|r| r.is_called(site)).map(|r| r.deadline_ms);
        SiteView {
            called_until_ms,
            result: self.results.get(&site).copied(),
            floor: self.floor,
            hand_position: self.hands.iter().position(|h| h.site_id == site).map(|i| count(i + 1)),
            muted_by_chair: self.muted.contains(&site),
        }
    }

    /// Counts of the current (or last) round.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The latest result of `site`.
    pub fn result(&self, site: i64) -> Option<SiteResult> {
        self.results.get(&site).copied()
    }

    /// The floor holder.
    pub fn floor(&self) -> Option<i64> {
        self.floor
    }

    /// Whether the chair muted `site`.
    pub fn is_muted(&self, site: i64) -> bool {
        self.muted.contains(&site)
    }

    /// Whether the meeting is locked.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// Whether a roll call is in progress.
    pub fn roll_call_active(&self) -> bool {
        self.round.is_some()
    }

    /// The mode of the roll call in progress.
    pub fn mode(&self) -> Option<RollCallMode> {
        self.round.as_ref().map(|r| r.mode)
    }

    /// Sequence number of the last event applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The sites whose own page an applied event changes (`None`: every site, e.g. a round starting or the floor
    /// changing hands). Call after [`Controller::apply`]: a one-by-one call moving on concerns the next site too.
    pub fn concerns(&self, event: &Event) -> Option<Vec<i64>> {
        let calling = self.round.as_ref().and_then(Round::calling);
        match event {
            Event::Confirmed { site_id, .. } | Event::CallExpired { site_id, .. } => {
                Some(std::iter::once(*site_id).chain(calling).collect())
            }
            Event::Muted { site_id } | Event::Unmuted { site_id } => Some(vec![*site_id]),
            Event::HandRaised { .. } | Event::HandLowered { .. } => Some(self.hands_and(event)),
            Event::Locked { .. } => Some(Vec::new()),
            _ => None,
        }
    }

    /// The sites with a raised hand, and the one the hand event is about (their queue places change).
    fn hands_and(&self, event: &Event) -> Vec<i64> {
        let mut v: Vec<i64> = self.hands.iter().map(|h| h.site_id).collect();
        if let Event::HandRaised { site_id } | Event::HandLowered { site_id } = event
            && !v.contains(site_id)
        {
            v.push(*site_id);
        }
        v
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn per_call_ms(mode: RollCallMode, seconds: Option<u32>) -> Result<i64, Refusal> {
    match seconds {
        None => Ok(match mode {
            RollCallMode::AllAtOnce => ALL_AT_ONCE_MS,
            RollCallMode::OneByOne => ONE_BY_ONE_MS,
        }),
        Some(s) if (1..=MAX_SECONDS).contains(&s) => Ok(i64::from(s) * 1000),
        Some(_) => Err(Refusal::BadSeconds),
    }
}

#[cfg(test)]
mod tests;
