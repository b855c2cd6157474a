//! The link model in virtual time: rate, queue, delay, jitter, loss, bursts, reconfiguration, outages, determinism.
//! Nothing here sleeps; `t0` is only the origin of virtual time.

use std::time::{Duration, Instant};

use diemcau_netem::{Burst, Link, LinkConfig, Profile, SendOutcome};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(rate_kbps: Option<u32>, queue_bytes: usize, delay_ms: u32) -> LinkConfig {
    LinkConfig { rate_kbps, queue_bytes, delay_ms, ..LinkConfig::default() }
}

/// Delivers, at their exact times, every packet due by `until`; appends `(packet, delivery time)`.
fn deliver_until<T>(link: &mut Link<T>, until: Instant, out: &mut Vec<(T, Instant)>) {
    while let Some(at) = link.poll_timeout().filter(|&at| at <= until) {
        while let Some(p) = link.poll_deliver(at) {
            out.push((p, at));
        }
    }
}

/// Sends `(time, size, packet)` in order, delivering in between, then drains the link.
fn run<T>(link: &mut Link<T>, sends: impl IntoIterator<Item = (Instant, usize, T)>) -> Vec<(T, Instant)> {
    let mut out = Vec::new();
    for (at, size, packet) in sends {
        deliver_until(link, at, &mut out);
        link.send(at, size, packet);
    }
    deliver_until(link, Instant::now() + Duration::from_secs(1_000_000), &mut out);
    out
}

/// kbit/s between the first and the last delivery (the first packet's bits arrived before the window opens).
fn throughput_kbps(delivered: &[(u64, Instant)], size: usize) -> f64 {
    let (first, last) = (delivered[0].1, delivered[delivered.len() - 1].1);
    ((delivered.len() - 1) * size * 8) as f64 / (last - first).as_secs_f64() / 1000.0
}

#[test]
fn rate_matches_capacity_for_back_to_back_packets() {
    let t0 = Instant::now();
    for kbps in [128, 330, 1_000, 12_000, 100_000] {
        // 10,000 packets of 1,200 bytes offered at once, queue large enough for all.
        let mut link = Link::new(cfg(Some(kbps), usize::MAX, 20), 1).unwrap();
        let got = run(&mut link, (0..10_000u64).map(|i| (t0, 1_200, i)));
        assert_eq!(got.len(), 10_000);
        let measured = throughput_kbps(&got, 1_200);
        let error = (measured - f64::from(kbps)) / f64::from(kbps);
        println!("back-to-back at {kbps} kbit/s: measured {measured:.3} kbit/s ({:+.4}%)", error * 100.0);
        assert!(error.abs() < 0.02, "{kbps} kbit/s measured {measured}");
        // Serialization is exact to the nanosecond: the last packet left 10,000 × 1,200 × 8 bits later.
        let expected = Duration::from_nanos(10_000 * 1_200 * 8 * 1_000_000 / u64::from(kbps));
        let last = got[got.len() - 1].1 - t0 - ms(20);
        assert!(last.abs_diff(expected) < Duration::from_micros(20), "{last:?} vs {expected:?}");
    }
}

#[test]
fn rate_holds_under_overload_with_a_bounded_queue() {
    let t0 = Instant::now();
    // 1 Mbit/s link, 2 Mbit/s offered for 60 s in 1,200-byte packets, 30 KB of queue: half is dropped at the tail.
    let mut link = Link::new(cfg(Some(1_000), 30_000, 50), 2).unwrap();
    let got = run(&mut link, (0..12_500u64).map(|i| (t0 + Duration::from_micros(4_800 * i), 1_200, i)));
    let measured = throughput_kbps(&got, 1_200);
    let stats = link.stats();
    println!("1 Mbit/s offered 2 Mbit/s: measured {measured:.3} kbit/s, {} dropped at the tail", stats.dropped_queue);
    assert!((measured - 1_000.0).abs() < 20.0, "{measured}");
    assert!(stats.dropped_queue > 6_000 && stats.dropped_queue < 6_300, "{stats:?}");
    assert_eq!(stats.sent, stats.delivered + stats.dropped_queue);
    assert_eq!(stats.delivered_bytes, stats.delivered * 1_200);
    // In order, and never more than 25 packets waiting behind the one on the wire: ≤ 26 × 9.6 ms + 50 ms one way.
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    let worst = got.iter().map(|&(i, at)| at - (t0 + Duration::from_micros(4_800 * i))).max().unwrap();
    assert!(worst <= Duration::from_micros(26 * 9_600 + 50_000) && worst > ms(250), "{worst:?}");
}

#[test]
fn queue_limit_drops_at_the_tail() {
    let t0 = Instant::now();
    // 1,000-byte packets on a 1 Mbit/s link (8 ms each): one on the wire plus 6,000 bytes waiting.
    let mut link = Link::new(cfg(Some(1_000), 6_000, 0), 3).unwrap();
    let outcomes: Vec<_> = (0..20).map(|i| link.send(t0, 1_000, i)).collect();
    assert!(outcomes[..7].iter().all(|&o| o == SendOutcome::Queued), "{outcomes:?}");
    assert!(outcomes[7..].iter().all(|&o| o == SendOutcome::DroppedQueueFull), "{outcomes:?}");
    assert_eq!(link.queued_bytes(), 6_000);
    assert_eq!(link.stats().dropped_queue, 13);
    // 8 ms later the first packet has left: room for exactly one more.
    assert_eq!(link.send(t0 + ms(8), 1_000, 20), SendOutcome::Queued);
    assert_eq!(link.send(t0 + ms(8), 1_000, 21), SendOutcome::DroppedQueueFull);
    let mut got = Vec::new();
    deliver_until(&mut link, t0 + ms(1_000), &mut got);
    let seqs: Vec<_> = got.iter().map(|&(s, _)| s).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5, 6, 20]);

    // No queue at all: only the packet on the wire.
    let mut bare = Link::new(cfg(Some(1_000), 0, 0), 3).unwrap();
    assert_eq!(bare.send(t0, 1_000, 0), SendOutcome::Queued);
    assert_eq!(bare.send(t0 + ms(1), 100, 1), SendOutcome::DroppedQueueFull);
    assert_eq!(bare.send(t0 + ms(8), 100, 2), SendOutcome::Queued);
}

#[test]
fn a_rate_change_with_queue_ms_resizes_the_queue_in_time() {
    let t0 = Instant::now();
    // 8 Mbit/s with 200 KB of queue (200 ms); down to 250 kbit/s keeping the bytes: 6.4 s of queue.
    let mut kept = Link::new(cfg(Some(8_000), 200_000, 0), 4).unwrap();
    kept.set_rate(t0, Some(250)).unwrap();
    // …or resized to 200 ms at 250 kbit/s: 6,250 bytes, five 1,200-byte packets behind the one on the wire.
    let mut timed = Link::new(cfg(Some(8_000), 200_000, 0), 4).unwrap();
    timed.set_rate_queue(t0, Some(250), Some(200)).unwrap();
    let queued = |link: &mut Link<u32>| (0..100).filter(|i| link.send(t0, 1_200, *i) == SendOutcome::Queued).count();
    assert_eq!(queued(&mut kept), 100);
    assert_eq!(queued(&mut timed), 6);
    // An unlimited rate keeps the bytes; a tiny queue still holds one full-size packet.
    let mut open = Link::new(cfg(Some(8_000), 200_000, 0), 4).unwrap();
    open.set_rate_queue(t0, None, Some(10)).unwrap();
    assert_eq!(queued(&mut open), 100);
    let mut tiny = Link::new(cfg(Some(100), 200_000, 0), 4).unwrap();
    tiny.set_rate_queue(t0, Some(100), Some(1)).unwrap();
    assert_eq!(queued(&mut tiny), 2, "the packet on the wire and one of 1,200 bytes in 1,500");
}

#[test]
fn delay_is_exact_without_jitter() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(None, 0, 37), 4).unwrap();
    let got = run(&mut link, (0..1_000u64).map(|i| (t0 + Duration::from_micros(1_337 * i), 1_200, i)));
    assert_eq!(got.len(), 1_000);
    for (i, at) in got {
        assert_eq!(at - (t0 + Duration::from_micros(1_337 * i)), ms(37));
    }
    // With a rate, on an idle link: serialization (1,000 bytes at 1 Mbit/s = 8 ms) plus the delay.
    let mut link = Link::new(cfg(Some(1_000), 10_000, 37), 4).unwrap();
    link.send(t0, 1_000, 0u64);
    assert_eq!(link.poll_timeout(), Some(t0 + ms(45)));
    assert_eq!(link.poll_deliver(t0 + ms(44)), None);
    assert_eq!(link.poll_deliver(t0 + ms(45)), Some(0));
}

fn jitter_cfg(reorder: bool) -> LinkConfig {
    LinkConfig { delay_ms: 100, jitter_ms: 20, reorder, ..LinkConfig::default() }
}

/// 20,000 packets `gap_ms` apart through a 100 ± 20 ms link: (one-way delays in send order, reordered pairs).
fn jitter_run(reorder: bool, gap_ms: u64) -> (Vec<f64>, usize) {
    let t0 = Instant::now();
    let mut link = Link::new(jitter_cfg(reorder), 5).expect("valid config");
    let got = run(&mut link, (0..20_000u64).map(|i| (t0 + ms(gap_ms * i), 100, i)));
    assert_eq!(got.len(), 20_000);
    let reordered = got.windows(2).filter(|w| w[1].0 < w[0].0).count();
    let mut delays = vec![0.0; got.len()];
    for &(i, at) in &got {
        delays[i as usize] = (at - (t0 + ms(gap_ms * i))).as_secs_f64() * 1000.0;
    }
    (delays, reordered)
}

#[test]
fn jitter_is_uniform_around_the_delay_and_may_reorder() {
    let (delays, reordered) = jitter_run(true, 1);
    let n = delays.len() as f64;
    let mean = delays.iter().sum::<f64>() / n;
    let sd = (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (min, max) = delays.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    println!("100 ± 20 ms, reorder: mean {mean:.3} ms, sd {sd:.3} ms, range {min:.3}..{max:.3}, {reordered} reordered");
    assert!((mean - 100.0).abs() < 0.5, "mean {mean}");
    // Uniform on ±20 ms: standard deviation 20/√3 = 11.55 ms.
    assert!((sd - 20.0 / 3f64.sqrt()).abs() < 0.5, "sd {sd}");
    assert!(min >= 80.0 && max <= 120.0, "{min}..{max}");
    assert!(min < 81.0 && max > 119.0, "the whole range is used: {min}..{max}");
    assert!(reordered > 1_000, "{reordered}");
}

#[test]
fn jitter_without_reorder_keeps_order() {
    let stats = |delays: &[f64]| {
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let (min, max) = delays.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        (mean, min, max)
    };
    // Packets 1 ms apart, much closer than the jitter: holding each behind its predecessor raises the mean delay
    // (head-of-line blocking, as on a link that repairs losses in order), but it stays within the bounds.
    let (delays, reordered) = jitter_run(false, 1);
    let (mean, min, max) = stats(&delays);
    println!("100 ± 20 ms, in order, 1 ms apart: mean {mean:.3} ms, range {min:.3}..{max:.3}");
    assert_eq!(reordered, 0);
    assert!(min >= 80.0 && max <= 120.0, "{min}..{max}");
    assert!(mean > 100.0 && mean < 120.0 && max - min > 15.0, "{mean} {min}..{max}");
    // Packets 50 ms apart never catch up with each other: the full uniform jitter, in order.
    let (delays, reordered) = jitter_run(false, 50);
    let (mean, min, max) = stats(&delays);
    println!("100 ± 20 ms, in order, 50 ms apart: mean {mean:.3} ms, range {min:.3}..{max:.3}");
    assert_eq!(reordered, 0);
    assert!((mean - 100.0).abs() < 0.5 && (80.0..81.0).contains(&min) && max <= 120.0 && max > 119.0);
}

#[test]
fn jitter_with_memory_wanders_with_nearly_the_same_spread() {
    // Packets 5 ms apart, reordering allowed so that the delays are the draws themselves.
    let delays = |memory_ms: u32| {
        let t0 = Instant::now();
        let cfg = LinkConfig { jitter_memory_ms: memory_ms, ..jitter_cfg(true) };
        let mut link = Link::new(cfg, 5).expect("valid config");
        let got = run(&mut link, (0..60_000u64).map(|i| (t0 + ms(5 * i), 100, i)));
        let mut d = vec![0.0; got.len()];
        for &(i, at) in &got {
            d[i as usize] = (at - (t0 + ms(5 * i))).as_secs_f64() * 1000.0;
        }
        d
    };
    let stats = |d: &[f64]| {
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        // How far the delay moves from one packet to the next.
        let step = d.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (n - 1.0);
        let (min, max) = d.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        (mean, sd, step, min, max)
    };
    let (m0, sd0, step0, ..) = stats(&delays(0));
    let (m1, sd1, step1, min1, max1) = stats(&delays(100));
    println!(
        "100 ± 20 ms, 5 ms apart: memory 0: mean {m0:.2}, sd {sd0:.2}, step {step0:.2} ms; memory 100 ms: mean {m1:.2}, sd {sd1:.2}, step {step1:.2} ms, {min1:.1}..{max1:.1}"
    );
    assert!((m1 - 100.0).abs() < 1.0, "mean {m1}");
    // The clamp to ±20 ms trims the spread a little (the sum of draws is closer to normal than uniform).
    assert!(sd1 < sd0 && sd1 > 0.8 * sd0, "the spread is nearly kept: {sd1} against {sd0}");
    assert!(min1 >= 80.0 && max1 <= 120.0, "{min1}..{max1}");
    // Uniform draws 5 ms apart move 20 × 2/3 = 13.3 ms on average; with 100 ms of memory, a fraction of that.
    assert!((step0 - 13.3).abs() < 0.5, "{step0}");
    assert!(step1 < step0 / 3.0, "{step1} against {step0}");
}

/// Sends `n` packets on an unlimited link with no delay; returns the loss verdicts in order.
fn loss_pattern(cfg: LinkConfig, seed: u64, n: u64) -> Vec<bool> {
    let t0 = Instant::now();
    let mut link = Link::new(cfg, seed).expect("valid config");
    let lost: Vec<bool> = (0..n)
        .map(|i| {
            let outcome = link.send(t0 + Duration::from_micros(i), 100, ());
            link.poll_deliver(t0 + Duration::from_micros(i));
            outcome == SendOutcome::DroppedLoss
        })
        .collect();
    let stats = link.stats();
    assert_eq!(stats.dropped_loss, lost.iter().filter(|&&l| l).count() as u64);
    assert_eq!(stats.delivered + stats.dropped_loss, n);
    lost
}

/// Lengths of the runs of consecutive losses.
fn bursts(lost: &[bool]) -> Vec<usize> {
    lost.split(|&l| !l).map(<[bool]>::len).filter(|&len| len > 0).collect()
}

#[test]
fn random_loss_matches_its_rate() {
    for (loss, seed) in [(0.05, 6), (0.01, 7), (0.3, 8)] {
        let lost = loss_pattern(LinkConfig { loss, ..LinkConfig::default() }, seed, 100_000);
        let measured = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        let runs = bursts(&lost);
        let mean_run = runs.iter().sum::<usize>() as f64 / runs.len() as f64;
        println!(
            "random loss {:.1}%: measured {:.3}% over 10^5 packets, mean run {mean_run:.3} (theory {:.3})",
            loss * 100.0,
            measured * 100.0,
            1.0 / (1.0 - loss)
        );
        // 5% ± 0.3% is more than 4 standard deviations (0.069%) at 10^5 packets.
        assert!((measured - loss).abs() < 0.003, "{measured} for {loss}");
        assert!((mean_run - 1.0 / (1.0 - loss)).abs() < 0.05, "independent losses: {mean_run}");
    }
}

#[test]
fn gilbert_elliott_bursts_match_theory() {
    let burst = Burst { p_good_to_bad: 0.02, p_bad_to_good: 0.25, loss_in_bad: 1.0 };
    let (theory_len, theory_loss) = (burst.mean_burst_len(), burst.mean_loss());
    assert_eq!(theory_len, 4.0);
    let lost = loss_pattern(LinkConfig { burst: Some(burst), ..LinkConfig::default() }, 9, 1_000_000);
    let runs = bursts(&lost);
    let mean_len = runs.iter().sum::<usize>() as f64 / runs.len() as f64;
    let loss = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
    println!(
        "Gilbert-Elliott: mean burst {mean_len:.3} (theory {theory_len:.3}), loss {:.3}% (theory {:.3}%), {} bursts",
        loss * 100.0,
        theory_loss * 100.0,
        runs.len()
    );
    // ~18,500 bursts: the standard error of the mean length is ~0.6%.
    assert!((mean_len / theory_len - 1.0).abs() < 0.05, "{mean_len}");
    assert!((loss / theory_loss - 1.0).abs() < 0.05, "{loss}");

    // The libwebrtc-style parametrisation: 5% loss in bursts of 3.
    let burst = Burst::from_mean_burst(0.05, 3.0).unwrap();
    assert!((burst.mean_loss() - 0.05).abs() < 1e-12 && (burst.mean_burst_len() - 3.0).abs() < 1e-12);
    let lost = loss_pattern(LinkConfig { burst: Some(burst), ..LinkConfig::default() }, 10, 1_000_000);
    let runs = bursts(&lost);
    let mean_len = runs.iter().sum::<usize>() as f64 / runs.len() as f64;
    let loss = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
    println!("from_mean_burst(5%, 3): mean burst {mean_len:.3}, loss {:.3}%", loss * 100.0);
    assert!((mean_len / 3.0 - 1.0).abs() < 0.05 && (loss / 0.05 - 1.0).abs() < 0.05, "{mean_len} {loss}");
}

#[test]
fn lost_packets_still_use_capacity() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkConfig { loss: 0.5, ..cfg(Some(1_000), usize::MAX, 0) }, 11).unwrap();
    let outcomes: Vec<_> = (0..1_000u64).map(|i| link.send(t0, 1_000, i)).collect();
    let last_kept = outcomes.iter().rposition(|&o| o == SendOutcome::Queued).unwrap() as u64;
    let mut got = Vec::new();
    deliver_until(&mut link, t0 + Duration::from_secs(100), &mut got);
    let &(seq, at) = got.last().unwrap();
    assert_eq!(seq, last_kept);
    assert_eq!(at - t0, ms(8 * (last_kept + 1)), "a kept packet waits for the lost ones before it");
}

#[test]
fn rate_change_applies_to_bits_not_yet_serialized() {
    let t0 = Instant::now();
    // 100 packets of 1,000 bytes at once on 1 Mbit/s (8 ms each); at 100 ms the rate falls to 250 kbit/s (32 ms each).
    let mut link = Link::new(cfg(Some(1_000), usize::MAX, 10), 12).unwrap();
    for i in 0..100u64 {
        link.send(t0, 1_000, i);
    }
    let mut got = Vec::new();
    deliver_until(&mut link, t0 + ms(100), &mut got);
    link.set_rate(t0 + ms(100), Some(250)).unwrap();
    deliver_until(&mut link, t0 + Duration::from_secs(100), &mut got);
    let arrival = |i: usize| got[i].1 - t0;
    // Packets 0..=11 finished before the change: 8, 16 … 96 ms (+10 ms of delay).
    for (i, _) in got.iter().enumerate().take(12) {
        assert_eq!(arrival(i), ms(8 * (i as u64 + 1) + 10));
    }
    // Packet 12 was half serialized: its last 4,000 bits take 16 ms at 250 kbit/s; then 32 ms each.
    assert_eq!(arrival(12), ms(116 + 10));
    assert_eq!(arrival(13), ms(148 + 10));
    assert_eq!(arrival(99), ms(116 + 32 * 87 + 10));

    // Overload before and after a drop from 1.5 Mbit/s to 250 kbit/s: throughput follows within 2%.
    let mut link = Link::new(cfg(Some(1_500), 20_000, 20), 13).unwrap();
    let mut got = Vec::new();
    for i in 0..40_000u64 {
        let at = t0 + Duration::from_micros(1_000 * i); // 1,000 packets/s × 1,000 bytes = 8 Mbit/s offered
        if i == 20_000 {
            link.set_rate(at, Some(250)).unwrap();
        }
        deliver_until(&mut link, at, &mut got);
        link.send(at, 1_000, i);
    }
    deliver_until(&mut link, t0 + Duration::from_secs(1_000), &mut got);
    let before: Vec<_> = got.iter().copied().filter(|&(_, at)| at < t0 + Duration::from_secs(20)).collect();
    let after: Vec<_> = got.iter().copied().filter(|&(_, at)| at > t0 + Duration::from_secs(21)).collect();
    let (kbps_before, kbps_after) = (throughput_kbps(&before, 1_000), throughput_kbps(&after, 1_000));
    println!("rate drop 1500 -> 250 kbit/s: measured {kbps_before:.2} then {kbps_after:.2} kbit/s");
    assert!((kbps_before / 1_500.0 - 1.0).abs() < 0.02 && (kbps_after / 250.0 - 1.0).abs() < 0.02);
}

#[test]
fn lifting_the_rate_releases_the_queue_at_once() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(Some(100), usize::MAX, 5), 14).unwrap();
    for i in 0..10u64 {
        link.send(t0, 1_250, i); // 100 ms each
    }
    let mut got = Vec::new();
    deliver_until(&mut link, t0 + ms(250), &mut got);
    assert_eq!(got.len(), 2);
    link.set_rate(t0 + ms(250), None).unwrap();
    deliver_until(&mut link, t0 + ms(1_000), &mut got);
    assert_eq!(got.len(), 10);
    assert!(got[2..].iter().all(|&(_, at)| at == t0 + ms(255)), "{got:?}");
}

#[test]
fn delay_change_spares_packets_already_propagating() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(Some(1_000), usize::MAX, 100), 15).unwrap();
    link.send(t0, 1_000, 0u64); // serialized by 8 ms, arrives at 108 ms
    link.send(t0, 1_000, 1); // serialized by 16 ms
    link.set_config(t0 + ms(10), cfg(Some(1_000), usize::MAX, 20)).unwrap();
    let mut got = Vec::new();
    deliver_until(&mut link, t0 + ms(1_000), &mut got);
    // Packet 1 would arrive at 36 ms but, without reordering, waits for packet 0.
    assert_eq!(got, [(0, t0 + ms(108)), (1, t0 + ms(108))]);
    let mut link = Link::new(LinkConfig { reorder: true, ..cfg(Some(1_000), usize::MAX, 100) }, 15).unwrap();
    link.send(t0, 1_000, 0u64);
    link.send(t0, 1_000, 1);
    link.set_config(t0 + ms(10), LinkConfig { reorder: true, ..cfg(Some(1_000), usize::MAX, 20) }).unwrap();
    let mut got = Vec::new();
    deliver_until(&mut link, t0 + ms(1_000), &mut got);
    assert_eq!(got, [(1, t0 + ms(36)), (0, t0 + ms(108))]);
}

#[test]
fn outage_drops_everything_until_it_ends() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(Some(1_000), usize::MAX, 50), 16).unwrap();
    for i in 0..5u64 {
        link.send(t0, 1_000, i);
    }
    link.set_outage(t0 + ms(20), Some(t0 + ms(520)));
    assert!(link.is_down(t0 + ms(519)) && !link.is_down(t0 + ms(520)));
    assert_eq!(link.poll_timeout(), None);
    assert_eq!(link.send(t0 + ms(300), 1_000, 5), SendOutcome::DroppedOutage);
    assert_eq!(link.send(t0 + ms(520), 1_000, 6), SendOutcome::Queued);
    let mut got = Vec::new();
    deliver_until(&mut link, t0 + ms(2_000), &mut got);
    assert_eq!(got, [(6, t0 + ms(578))]);
    let stats = link.stats();
    assert_eq!((stats.sent, stats.delivered, stats.dropped_outage, stats.in_flight), (7, 1, 6, 0));

    // An open-ended outage lasts until ended.
    link.set_outage(t0 + ms(3_000), None);
    assert_eq!(link.send(t0 + ms(60_000), 10, 7), SendOutcome::DroppedOutage);
    link.end_outage(t0 + ms(60_001));
    assert_eq!(link.send(t0 + ms(60_002), 10, 8), SendOutcome::Queued);
}

/// Drives a `congested` link (jitter, random and burst loss, small queue) with a bursty source.
fn trace(t0: Instant, seed: u64) -> (Vec<(u64, Instant)>, diemcau_netem::LinkStats) {
    let congested = Profile::preset("congested").expect("preset");
    let mut link = Link::new(congested.down, seed).expect("valid preset");
    // Bursts of 6 packets every 33 ms (a 30 fps video frame), 400 to 1,200 bytes: ~1.16 Mbit/s into 1 Mbit/s.
    let sends = (0..20_000u64).map(|i| (t0 + ms(33 * (i / 6)), 400 + (i as usize * 37) % 800, i));
    let got = run(&mut link, sends);
    (got, link.stats())
}

#[test]
fn same_seed_same_outcome_different_seed_different() {
    let t0 = Instant::now();
    let (a, stats_a) = trace(t0, 42);
    let (b, stats_b) = trace(t0, 42);
    let (c, stats_c) = trace(t0, 43);
    assert_eq!(stats_a, stats_b);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(stats_a, stats_c);
    println!("congested, seed 42: {stats_a:?}");
    println!("congested, seed 43: {stats_c:?}");
    assert!(stats_a.dropped_loss > 0 && stats_a.dropped_queue > 0);
}

#[test]
fn time_never_goes_backwards() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(None, 0, 10), 17).unwrap();
    link.send(t0 + ms(100), 10, 0u64);
    // An earlier `now` counts as the latest seen: the packet leaves 10 ms after 100 ms, not after 50.
    link.send(t0 + ms(50), 10, 1);
    assert_eq!(link.poll_deliver(t0 + ms(109)), None);
    assert_eq!(link.poll_deliver(t0 + ms(110)), Some(0));
    assert_eq!(link.poll_deliver(t0 + ms(110)), Some(1));
}
