//! A site's two-way link following a timeline, in virtual time: the drills' rate drop, an outage, a profile switch.

use std::time::{Duration, Instant};

use diemcau_netem::{Change, Direction, LinkConfig, LinkPair, Profile, SendOutcome, Step, Timeline};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn link(kbps: u32, delay_ms: u32) -> LinkConfig {
    LinkConfig { rate_kbps: Some(kbps), queue_bytes: 30_000, delay_ms, ..LinkConfig::default() }
}

/// A delivered packet: direction, sequence number, time since start.
type Delivery = (Direction, u64, Duration);

/// Sends `per_second` packets of `size` bytes each way for `run`, polling the pair at its own timeouts.
fn drive(pair: &mut LinkPair<u64>, t0: Instant, run: Duration, per_second: u64, size: usize) -> Vec<Delivery> {
    let gap = Duration::from_secs(1) / per_second as u32;
    let mut out = Vec::new();
    let mut next_send = t0;
    let mut seq = 0;
    let end = t0 + run;
    loop {
        let wake = pair.poll_timeout().filter(|&t| t <= next_send && t <= end);
        let now = match wake {
            Some(t) => t,
            None if next_send <= end => next_send,
            None => break,
        };
        while let Some((dir, p)) = pair.poll_deliver(now) {
            out.push((dir, p, now - t0));
        }
        if now == next_send {
            pair.send(now, Direction::Up, size, seq);
            pair.send(now, Direction::Down, size, seq);
            seq += 1;
            next_send += gap;
        }
    }
    out
}

/// kbit/s delivered in direction `dir` within `[from, to)`.
fn kbps(out: &[Delivery], dir: Direction, from: Duration, to: Duration, size: usize) -> f64 {
    let n = out.iter().filter(|&&(d, _, at)| d == dir && at >= from && at < to).count();
    (n * size * 8) as f64 / (to - from).as_secs_f64() / 1000.0
}

#[test]
fn rate_drop_then_recover() {
    // 1.5 Mbit/s each way; down falls to 250 kbit/s at 10 s; everything recovers at 20 s. 2 Mbit/s offered.
    let timeline = Timeline::new(vec![
        Step { at: secs(20), change: Change::Recover { dir: None } },
        Step { at: secs(10), change: Change::Rate { dir: Some(Direction::Down), kbps: Some(250), queue_ms: None } },
    ]);
    let t0 = Instant::now();
    let mut pair = LinkPair::new(t0, Profile::symmetric(link(1_500, 50)), timeline, 1).unwrap();
    let out = drive(&mut pair, t0, secs(30), 250, 1_000);
    let window = |dir, a, b| kbps(&out, dir, secs(a), secs(b), 1_000);
    let (before, during, after) =
        (window(Direction::Down, 2, 10), window(Direction::Down, 11, 20), window(Direction::Down, 21, 30));
    println!("down: {before:.1} kbit/s, then {during:.1} after the drop, then {after:.1} after recovery");
    assert!((before - 1_500.0).abs() < 30.0 && (during - 250.0).abs() < 5.0 && (after - 1_500.0).abs() < 30.0);
    // Up was never touched.
    let up = window(Direction::Up, 11, 20);
    assert!((up - 1_500.0).abs() < 30.0, "{up}");
    assert_eq!(pair.link(Direction::Down).config(), &link(1_500, 50));
}

#[test]
fn outage_in_one_direction_for_its_duration() {
    let timeline = Timeline::new(vec![Step {
        at: secs(2),
        change: Change::Outage { dir: Some(Direction::Up), duration: Some(secs(3)) },
    }]);
    let t0 = Instant::now();
    let mut pair = LinkPair::new(t0, Profile::symmetric(link(1_000, 100)), timeline, 2).unwrap();
    let out = drive(&mut pair, t0, secs(8), 50, 200);
    let up: Vec<_> = out.iter().filter(|d| d.0 == Direction::Up).map(|d| d.2).collect();
    // Up: nothing arrives from 2 s (what was in flight is dropped) until 5 s + the delay and serialization.
    assert!(up.iter().all(|&at| at < secs(2) || at >= secs(5) + ms(100)), "{up:?}");
    assert!(up.iter().any(|&at| at < secs(5) + ms(120)), "resumes right after the outage");
    // Down: every packet sent by 7.8 s arrives.
    assert!(out.iter().filter(|d| d.0 == Direction::Down).count() >= 390);
    let stats = pair.stats();
    println!("outage: {stats:?}");
    // 3 s of sends (150) + the 5 packets in flight when it began.
    assert_eq!(stats.up.dropped_outage, 155);
    assert_eq!(stats.down.dropped_outage, 0);
}

#[test]
fn profile_switch_and_timeouts_follow_the_timeline() {
    let timeline = Timeline::from_toml_str(
        "[[step]]\nat_ms = 1000\nchange = \"profile\"\nname = \"vsat\"\n\
         [[step]]\nat_ms = 4000\nchange = \"outage\"\n\
         [[step]]\nat_ms = 5000\nchange = \"recover\"\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let fibre = Profile::preset("fibre").unwrap();
    let mut pair: LinkPair<u32> = LinkPair::new(t0, fibre.clone(), timeline, 3).unwrap();
    // Nothing in flight: the next wake-up is the next step.
    assert_eq!(pair.poll_timeout(), Some(t0 + secs(1)));
    assert_eq!(pair.send(t0, Direction::Down, 100, 1), SendOutcome::Queued);
    assert_eq!(pair.poll_timeout(), Some(t0 + ms(5) + Duration::from_nanos(8_000)));
    assert_eq!(pair.poll_deliver(t0 + ms(10)), Some((Direction::Down, 1)));
    // After the switch (applied at exactly 1 s, even if the next call comes later), VSAT's 200 ± 10 ms.
    pair.advance(t0 + ms(1_500));
    assert_eq!(pair.link(Direction::Up).config(), &Profile::preset("vsat").unwrap().up);
    let sent_at = t0 + ms(1_500);
    let mut delivered = None;
    for i in 0..10 {
        if pair.send(sent_at, Direction::Down, 100, 2 + i) == SendOutcome::Queued {
            delivered = Some(2 + i);
            break;
        }
    }
    let expected = delivered.unwrap();
    let at = pair.poll_timeout().unwrap();
    let delay = at - sent_at;
    assert!(delay >= ms(190) && delay <= ms(216), "{delay:?}");
    assert_eq!(pair.poll_deliver(at), Some((Direction::Down, expected)));
    // Open-ended outage at 4 s, recovered at 5 s: back to fibre.
    assert_eq!(pair.send(t0 + ms(4_500), Direction::Up, 100, 100), SendOutcome::DroppedOutage);
    assert_eq!(pair.poll_timeout(), Some(t0 + secs(5)));
    assert_eq!(pair.send(t0 + ms(5_000), Direction::Up, 100, 101), SendOutcome::Queued);
    assert_eq!(pair.link(Direction::Up).config(), &fibre.up);
    assert_eq!(pair.poll_timeout(), Some(t0 + ms(5_005) + Duration::from_nanos(8_000)));
    assert_eq!(pair.poll_timeout().and_then(|at| pair.poll_deliver(at)), Some((Direction::Up, 101)));
}

#[test]
fn directions_are_independent_and_seeded() {
    let run = |seed| {
        let t0 = Instant::now();
        let lossy = Profile::symmetric(LinkConfig { loss: 0.2, ..LinkConfig::default() });
        let mut pair = LinkPair::new(t0, lossy, Timeline::default(), seed).unwrap();
        let mut lost = |dir| {
            (0..1_000u64).map(|i| pair.send(t0 + ms(i), dir, 100, i) == SendOutcome::DroppedLoss).collect::<Vec<_>>()
        };
        let up = lost(Direction::Up);
        let down = lost(Direction::Down);
        (up, down)
    };
    let (up, down) = run(9);
    assert_ne!(up, down, "the same seed must not give both directions the same losses");
    assert_eq!(run(9), (up.clone(), down));
    assert_ne!(run(10).0, up);
}

#[test]
fn an_invalid_step_is_refused_up_front() {
    let t0 = Instant::now();
    let bad = Timeline::new(vec![Step { at: secs(1), change: Change::Loss { dir: None, loss: 1.2 } }]);
    let e = LinkPair::<()>::new(t0, Profile::default(), bad, 0).unwrap_err().to_string();
    assert!(e.starts_with("timeline step 1 (at 1s): loss: 1.2 is out of range"), "{e}");
}
