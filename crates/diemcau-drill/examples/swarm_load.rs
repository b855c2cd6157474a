//! The swarm's own cost under load (a measurement, not a test):
//!
//! ```sh
//! DIEMCAU_SWARM_SITES=300 cargo run --release -p diemcau-drill --example swarm_load
//! ```
//!
//! A meeting of N communes (imported into the in-process bridge's directory), a synthetic chair publishing the 360p
//! layer, N receiving sites on one media thread. Prints the media thread's CPU per received RTP packet and per
//! site-second (`swarm cost:`). Environment: `DIEMCAU_SWARM_SITES` (200), `DIEMCAU_SWARM_SECS` (12),
//! `DIEMCAU_SWARM_MIX` (`fibre:100`), `DIEMCAU_SWARM_THREADS` (1).

use std::time::Duration;

use diemcau_drill::{Swarm, SwarmConfig, parse_mix};
use diemcau_proto::Role;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = env("DIEMCAU_SWARM_SITES", 200);
    let secs: u64 = env("DIEMCAU_SWARM_SECS", 12);
    let threads: usize = env("DIEMCAU_SWARM_THREADS", 1);
    let mix = std::env::var("DIEMCAU_SWARM_MIX").unwrap_or_else(|_| "fibre:100".into());

    let dir = tempfile::tempdir()?;
    let running = diemcau::start(diemcau::Config::for_tests(dir.path())).await?;
    let store = running.state.store();
    let mut csv = String::from("code,name,kind,parent_code,link_hint\n");
    for i in 0..n {
        csv.push_str(&format!("LOAD{i:05},Xã tải {i},commune,,fibre\n"));
    }
    store.import_sites_csv(csv.as_bytes())?;
    let ids: Vec<i64> = store.sites()?.iter().filter(|s| s.code.starts_with("LOAD")).map(|s| s.id).collect();
    let chair_id = running.demo.chair_site_id;
    let meeting = store.create_meeting("Tải thử", chair_id, &ids)?;
    let token = |role, id| running.state.mint_token(meeting, id, role, 3600);
    let ws_url = format!("ws://{}/ws", running.http_addr);

    let mut chair = SwarmConfig::new(ws_url.clone(), vec![(chair_id, token(Role::Chair, chair_id))]);
    chair.publish = true;
    chair.duration = Duration::from_secs(secs + 3);
    let mut sites = SwarmConfig::new(ws_url, ids.iter().map(|&id| (id, token(Role::Site, id))).collect());
    sites.mix = parse_mix(&mix)?;
    sites.duration = Duration::from_secs(secs);
    sites.threads = threads;
    sites.join_spread = Duration::from_secs(2);

    // Kernel receive-buffer drops per socket (/proc/net/udp `drops`), read just before the end: the bridge's shard
    // sockets apart from the sites' sockets.
    let bridge_ports: Vec<u16> = running.media_addrs.iter().map(|a| a.port()).collect();
    let drops = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs).saturating_sub(Duration::from_millis(300))).await;
        let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        let (mut bridge, mut others) = (0u64, 0u64);
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f.get(1).and_then(|a| a.split(':').nth(1)).and_then(|p| u16::from_str_radix(p, 16).ok());
            let d: u64 = f.last().and_then(|d| d.parse().ok()).unwrap_or(0);
            if port.is_some_and(|p| bridge_ports.contains(&p)) { bridge += d } else { others += d }
        }
        (bridge, others)
    });
    let chair_run = tokio::spawn(Swarm::new(chair)?.run(|_| {}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = Swarm::new(sites)?
        .run(|p| {
            eprintln!(
                "{:>4.1} s: {}/{} joined, {} connected, {} with video, {} failed",
                p.elapsed.as_secs_f64(),
                p.joined,
                p.sites,
                p.connected,
                p.receiving_video,
                p.failed
            )
        })
        .await?;
    chair_run.await??;
    let (bridge_drops, other_drops) = drops.await?;
    eprintln!("kernel receive-buffer drops: bridge sockets {bridge_drops}, other sockets {other_drops}");
    running.shutdown().await;

    eprintln!("{}", serde_json::to_string_pretty(&report.profiles)?);
    for s in report.sites.iter().filter(|s| !s.connected || s.first_frame_ms.is_none()) {
        eprintln!("not receiving: {}", serde_json::to_string(s)?);
    }
    eprintln!("swarm cost: {n} sites over {:.1} s: {}", report.duration_ms / 1000.0, report.cost);
    Ok(())
}
