//! The controller in virtual time, driven the way the shell drives it: decide, log, apply; deadlines from
//! `poll_timeout`.

use super::*;

/// A shell with a virtual clock (unix ms) and the log in memory.
struct Shell {
    c: Controller,
    now: i64,
    log: Vec<Logged>,
}

impl Shell {
    fn new(invited: &[i64]) -> Shell {
        let mut c = Controller::new(invited.to_vec());
        for s in invited {
            c.set_online(*s, true);
        }
        Shell { c, now: 1_000_000, log: Vec::new() }
    }

    fn commit(&mut self, ev: Event) {
        let l = self.c.stamp(self.now, ev);
        self.log.push(l.clone());
        self.c.apply(&l);
    }

    fn input(&mut self, i: Input) -> Result<Option<Event>, Refusal> {
        let ev = self.c.decide(self.now, i)?;
        if let Some(e) = &ev {
            self.commit(e.clone());
        }
        Ok(ev)
    }

    fn chair(&mut self, a: Action) -> Result<Option<Event>, Refusal> {
        self.input(Input::Chair(a))
    }

    fn present(&mut self, site_id: i64, audio: bool, video: bool) -> Result<Option<Event>, Refusal> {
        self.input(Input::Present { site_id, audio, video })
    }

    /// Advances the clock by `ms`, firing every deadline on the way at its own time.
    fn advance(&mut self, ms: i64) {
        let end = self.now + ms;
        while let Some(t) = self.c.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            let Some(ev) = self.c.on_timeout(self.now) else { break };
            self.commit(ev);
        }
        self.now = end;
    }

    fn outcome(&self, site: i64) -> Option<Outcome> {
        self.c.result(site).map(|r| r.outcome)
    }
}

fn start(mode: RollCallMode, order: Option<Vec<i64>>, seconds: Option<u32>) -> Action {
    Action::StartRollCall { mode, order, seconds }
}

#[test]
fn all_at_once_deadline_decides_no_answer_and_offline() {
    let mut s = Shell::new(&[2, 3, 4, 5]);
    s.c.set_online(5, false);
    s.chair(start(RollCallMode::AllAtOnce, None, None)).expect("start");
    let t0 = s.now;
    assert_eq!(s.c.poll_timeout(), Some(t0 + ALL_AT_ONCE_MS), "60 s by default");
    assert_eq!(s.c.site_view(2).called_until_ms, Some(t0 + ALL_AT_ONCE_MS));
    s.advance(5_000);
    s.present(2, true, true).expect("2");
    s.advance(1_000);
    s.present(3, true, false).expect("3");
    assert_eq!(s.c.counts().waiting, 2);
    // Nothing happens a millisecond before the deadline …
    s.advance(ALL_AT_ONCE_MS - 6_001);
    assert!(s.c.roll_call_active());
    assert_eq!(s.c.on_timeout(s.now), None);
    // … and at the deadline the rest are decided.
    s.advance(1);
    assert!(!s.c.roll_call_active());
    assert_eq!(s.outcome(2), Some(Outcome::PresentAv));
    assert_eq!(s.outcome(3), Some(Outcome::PresentAudioOnly));
    assert_eq!(s.outcome(4), Some(Outcome::NoAnswer));
    assert_eq!(s.outcome(5), Some(Outcome::Offline));
    assert_eq!(s.c.result(4).expect("4").at_ms, t0 + ALL_AT_ONCE_MS);
    assert_eq!(s.c.result(2).expect("2").at_ms, t0 + 5_000);
    let c = s.c.counts();
    assert_eq!((c.called, c.present_av, c.present_audio_only, c.no_answer, c.offline, c.waiting), (4, 1, 1, 1, 1, 0));
    // A late answer is refused, clearly.
    assert_eq!(s.present(4, true, true), Err(Refusal::NoRollCall));
    assert_eq!(s.c.poll_timeout(), None);
}

#[test]
fn everyone_answering_ends_the_roll_call_before_its_deadline() {
    let mut s = Shell::new(&[2, 3]);
    s.chair(start(RollCallMode::AllAtOnce, None, Some(30))).expect("start");
    assert_eq!(s.c.poll_timeout(), Some(s.now + 30_000));
    s.present(3, false, false).expect("3");
    s.present(2, true, true).expect("2");
    assert!(!s.c.roll_call_active());
    assert_eq!(s.outcome(3), Some(Outcome::PresentNoMedia));
}

#[test]
fn simultaneous_and_repeated_answers_count_once() {
    let mut s = Shell::new(&[2, 3, 4]);
    s.chair(start(RollCallMode::AllAtOnce, None, None)).expect("start");
    // Two sites in the same millisecond, and one of them twice.
    assert!(s.present(2, true, true).expect("2").is_some());
    assert!(s.present(3, true, true).expect("3").is_some());
    assert_eq!(s.present(2, true, true), Ok(None), "a second Có mặt changes nothing and is not logged");
    assert_eq!(s.log.len(), 3);
    assert_eq!(s.c.counts().present_av, 2);
    assert_eq!(s.c.counts().waiting, 1);
    // Not invited: refused by name.
    assert_eq!(s.present(99, true, true), Err(Refusal::NotInvited(99)));
}

#[test]
fn one_by_one_calls_each_site_in_turn_with_its_own_time() {
    let mut s = Shell::new(&[2, 3, 4, 5]);
    s.c.set_online(4, false);
    s.chair(start(RollCallMode::OneByOne, Some(vec![5, 3, 4]), None)).expect("start");
    let t0 = s.now;
    let st = s.c.state();
    assert_eq!(st.roll_call.as_ref().and_then(|r| r.calling), Some(5));
    assert_eq!(s.c.poll_timeout(), Some(t0 + ONE_BY_ONE_MS));
    // Site 3 answers out of turn: refused; site 2 is not in the order.
    assert_eq!(s.present(3, true, true), Err(Refusal::NotCalled(3)));
    assert_eq!(s.present(2, true, true), Err(Refusal::NotCalled(2)));
    assert_eq!(s.c.site_view(3).called_until_ms, None);
    // Site 5 answers after 4 s: site 3 is called at once, with a full 20 s.
    s.advance(4_000);
    s.present(5, true, true).expect("5");
    assert_eq!(s.c.state().roll_call.and_then(|r| r.calling), Some(3));
    assert_eq!(s.c.poll_timeout(), Some(t0 + 4_000 + ONE_BY_ONE_MS));
    assert_eq!(s.c.concerns(&s.log[s.log.len() - 1].event), Some(vec![5, 3]), "site 3's page learns it is called");
    // Site 3 never answers (connected), then site 4 (offline): each expires after its 20 s.
    s.advance(ONE_BY_ONE_MS);
    assert_eq!(s.outcome(3), Some(Outcome::NoAnswer));
    assert_eq!(s.c.state().roll_call.and_then(|r| r.calling), Some(4));
    s.advance(ONE_BY_ONE_MS - 1);
    assert!(s.c.roll_call_active());
    s.advance(1);
    assert_eq!(s.outcome(4), Some(Outcome::Offline));
    assert!(!s.c.roll_call_active(), "the last site decided ends the roll call");
    assert_eq!(s.outcome(2), None, "site 2 was not called");
    assert_eq!(s.c.result(4).expect("4").at_ms, t0 + 4_000 + 2 * ONE_BY_ONE_MS);
}

#[test]
fn recall_calls_only_the_sites_that_did_not_answer() {
    let mut s = Shell::new(&[2, 3, 4]);
    s.chair(start(RollCallMode::AllAtOnce, None, Some(10))).expect("start");
    s.present(2, true, true).expect("2");
    s.advance(10_000);
    assert_eq!(s.outcome(3), Some(Outcome::NoAnswer));
    // The chair calls again: sites 3 and 4 only, round 2.
    s.chair(Action::Recall { seconds: None }).expect("recall");
    let st = s.c.state();
    let rc = st.roll_call.expect("round 2");
    assert_eq!((rc.round, rc.sites.clone()), (2, vec![3, 4]));
    assert_eq!(st.counts.called, 2);
    assert_eq!(s.present(2, true, true), Err(Refusal::NotCalled(2)), "site 2 already answered in round 1");
    s.present(3, true, true).expect("3");
    s.advance(10_000);
    assert_eq!(s.c.result(3).map(|r| (r.outcome, r.round)), Some((Outcome::PresentAv, 2)));
    assert_eq!(s.c.result(2).map(|r| r.round), Some(1), "round 1's answer stands");
    // Site 4 still missing: a third round has only it; once it answers nobody is left.
    s.chair(Action::Recall { seconds: None }).expect("recall 3");
    s.present(4, true, false).expect("4");
    assert_eq!(s.chair(Action::Recall { seconds: None }), Err(Refusal::NothingToRecall));
}

#[test]
fn cancel_stops_the_round_and_refusals_say_why() {
    let mut s = Shell::new(&[2, 3]);
    assert_eq!(s.chair(Action::Recall { seconds: None }), Err(Refusal::NoRollCallYet));
    assert_eq!(s.chair(Action::CancelRollCall {}), Err(Refusal::NoRollCall));
    assert_eq!(
        s.chair(start(RollCallMode::AllAtOnce, Some(vec![2, 2]), None)).map(|_| ()),
        Err(Refusal::BadOrder("names site 2 twice".into()))
    );
    assert_eq!(
        s.chair(start(RollCallMode::AllAtOnce, Some(vec![]), None)).map(|_| ()),
        Err(Refusal::BadOrder("has no site to call".into()))
    );
    assert_eq!(s.chair(start(RollCallMode::AllAtOnce, Some(vec![7]), None)), Err(Refusal::NotInvited(7)));
    assert_eq!(s.chair(start(RollCallMode::AllAtOnce, None, Some(0))), Err(Refusal::BadSeconds));
    assert_eq!(s.chair(start(RollCallMode::AllAtOnce, None, Some(MAX_SECONDS + 1))), Err(Refusal::BadSeconds));
    assert!(s.log.is_empty(), "nothing refused is logged");
    s.chair(start(RollCallMode::AllAtOnce, None, None)).expect("start");
    assert_eq!(s.chair(start(RollCallMode::OneByOne, None, None)), Err(Refusal::RollCallInProgress));
    s.present(2, true, true).expect("2");
    s.chair(Action::CancelRollCall {}).expect("cancel");
    assert!(!s.c.roll_call_active());
    assert_eq!(s.c.poll_timeout(), None);
    assert_eq!(s.outcome(3), None, "a cancelled round decides nobody else");
    assert_eq!(s.c.counts().waiting, 0);
    // A re-call after a cancel calls the sites without an answer.
    s.chair(Action::Recall { seconds: None }).expect("recall");
    assert_eq!(s.c.state().roll_call.map(|r| r.sites), Some(vec![3]));
}

#[test]
fn floor_handover_mutes_the_previous_holder_and_takes_the_hand() {
    let mut s = Shell::new(&[2, 3, 4]);
    s.input(Input::Hand { site_id: 3, raised: true }).expect("3 raises");
    s.advance(2_000);
    s.input(Input::Hand { site_id: 4, raised: true }).expect("4 raises");
    let hands = s.c.state().hands;
    assert_eq!(hands.iter().map(|h| (h.site_id, h.since_ms)).collect::<Vec<_>>(), vec![(3, s.now - 2_000), (4, s.now)]);
    assert_eq!(s.c.site_view(4).hand_position, Some(2));
    assert_eq!(s.input(Input::Hand { site_id: 4, raised: true }), Ok(None), "raising twice keeps its place");
    s.chair(Action::MuteAll {}).expect("mute all");
    assert!(s.c.is_muted(2) && s.c.is_muted(3) && s.c.is_muted(4));
    // Site 2 gets the floor: unmuted.
    s.chair(Action::GiveFloor { site_id: 2 }).expect("give 2");
    assert_eq!(s.c.floor(), Some(2));
    assert!(!s.c.is_muted(2));
    assert_eq!(s.input(Input::Hand { site_id: 2, raised: true }), Err(Refusal::HoldsFloor(2)));
    // The floor goes to site 3, first in the queue: site 2 is muted again, site 3's hand is lowered, 4 moves up.
    s.chair(Action::GiveFloor { site_id: 3 }).expect("give 3");
    assert_eq!(s.c.floor(), Some(3));
    assert!(s.c.is_muted(2) && !s.c.is_muted(3));
    assert_eq!(s.c.site_view(4).hand_position, Some(1));
    assert_eq!(s.c.site_view(3).hand_position, None);
    assert_eq!(s.c.site_view(4).floor, Some(3));
    assert_eq!(s.chair(Action::GiveFloor { site_id: 3 }), Ok(None));
    // Mute all spares the holder.
    s.chair(Action::MuteAll {}).expect("mute all");
    assert!(!s.c.is_muted(3));
    s.chair(Action::TakeFloor {}).expect("take");
    assert_eq!(s.c.floor(), None);
    assert!(s.c.is_muted(3));
    assert_eq!(s.chair(Action::TakeFloor {}), Err(Refusal::NoFloor));
    s.chair(Action::Unmute { site_id: 4 }).expect("unmute 4");
    assert!(!s.c.is_muted(4));
    assert_eq!(s.chair(Action::Unmute { site_id: 4 }), Ok(None));
    s.chair(Action::LowerHand { site_id: 4 }).expect("lower 4");
    assert!(s.c.state().hands.is_empty());
    s.chair(Action::Lock { locked: true }).expect("lock");
    assert!(s.c.locked());
    assert_eq!(s.chair(Action::GiveFloor { site_id: 1 }), Err(Refusal::NotInvited(1)));
}

#[test]
fn a_restart_restores_the_roll_call_with_its_deadline_the_floor_and_the_queue() {
    let mut s = Shell::new(&[2, 3, 4, 5]);
    s.chair(Action::GiveFloor { site_id: 5 }).expect("floor");
    s.input(Input::Hand { site_id: 4, raised: true }).expect("hand");
    s.chair(Action::Mute { site_id: 2 }).expect("mute");
    s.chair(start(RollCallMode::OneByOne, None, Some(15))).expect("start");
    s.present(2, true, true).expect("2");
    s.advance(3_000);
    // The bridge stops here. What reaches the log is JSON in SQLite: read back through serde, as the store does.
    let stored: Vec<String> = s.log.iter().map(|l| serde_json::to_string(l).expect("json")).collect();
    let read: Vec<Logged> = stored.iter().map(|j| serde_json::from_str(j).expect("parse")).collect();
    let mut r = Controller::restore(vec![2, 3, 4, 5], &read);
    assert_eq!(r.state(), s.c.state(), "the restored state is the state before the restart");
    assert_eq!(r.state().roll_call.and_then(|rc| rc.calling), Some(3));
    assert_eq!(r.poll_timeout(), s.c.poll_timeout());
    assert_eq!((r.floor(), r.is_muted(2)), (Some(5), true));
    assert_eq!(r.state().hands.len(), 1);
    // Sites come back; site 3 never answers: its call ends at the deadline set before the restart.
    for site in [2, 3, 4, 5] {
        r.set_online(site, true);
    }
    let deadline = r.poll_timeout().expect("deadline");
    assert_eq!(r.on_timeout(deadline - 1), None);
    let ev = r.on_timeout(deadline).expect("expiry");
    assert_eq!(ev, Event::CallExpired { site_id: 3, online: true });
    let l = r.stamp(deadline, ev);
    assert_eq!(l.seq, read.len() as u64 + 1, "the log goes on where it stopped");
    r.apply(&l);
    assert_eq!(r.result(3).map(|x| x.outcome), Some(Outcome::NoAnswer));
    // Applying an entry twice (a replay overlapping what was applied) changes nothing.
    let before = r.state();
    r.apply(&l);
    assert_eq!(r.state(), before);
}

#[test]
fn the_log_wire_shape_is_stable() {
    let l = Logged { seq: 3, at_ms: 17, event: Event::Confirmed { site_id: 9, audio: true, video: false } };
    assert_eq!(
        serde_json::to_string(&l).expect("json"),
        r#"{"seq":3,"at_ms":17,"event":{"type":"confirmed","site_id":9,"audio":true,"video":false}}"#
    );
    let a: Action = serde_json::from_str(r#"{"action":"start_roll_call"}"#).expect("defaults");
    assert_eq!(a, Action::StartRollCall { mode: RollCallMode::AllAtOnce, order: None, seconds: None });
    assert!(serde_json::from_str::<Action>(r#"{"action":"give_floor"}"#).is_err());
    assert!(serde_json::from_str::<Action>(r#"{"action":"mute_all","x":1}"#).is_err());
}

/// A 3,000-site roll call: one log entry per answer, and the counts match who answered, who did not and who was
/// offline. (Its cost per answer as sites grow is shown by the roll-call bench, not here.)
#[test]
fn three_thousand_sites_answer_with_the_counts_right() {
    let ids: Vec<i64> = (1..=3000).collect();
    let mut s = Shell::new(&ids);
    for id in ids.iter().filter(|i| *i % 10 == 0) {
        s.c.set_online(*id, false); // 300 offline
    }
    s.chair(start(RollCallMode::AllAtOnce, None, None)).expect("start");
    for id in ids.iter().filter(|i| *i % 10 != 0 && *i % 7 != 0) {
        s.present(*id, true, *id % 3 != 0).expect("answer");
    }
    s.advance(ALL_AT_ONCE_MS);
    let c = s.c.counts();
    let answered = ids.iter().filter(|i| *i % 10 != 0 && *i % 7 != 0).count() as u32;
    let no_answer = ids.iter().filter(|i| *i % 10 != 0 && *i % 7 == 0).count() as u32;
    assert_eq!(c.present_av + c.present_audio_only, answered);
    assert_eq!(c.no_answer, no_answer);
    assert_eq!(c.offline, 300);
    assert_eq!(c.called, 3000);
    assert_eq!(s.log.len() as u32, 1 + answered + 1, "start, one entry per answer, the deadline");
}
