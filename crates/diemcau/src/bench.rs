//! `diemcau bench fanout`: the fan-out benchmark. A bridge runs as its own process (so its CPU and memory are its
//! own, read from `/proc/<pid>`), a synthetic chair publishes three simulcast layers (320×180 at 150, 640×360 at 500,
//! 1280×720 at 1,500 kbit/s) and Opus to it, subscribers get the 360p layer, and steps of N synthetic
//! subscribers (str0m clients, [`diemcau_drill::Swarm`]) join, settle and are measured over a fixed window:
//! - bridge CPU seconds per subscriber-second (`utime + stime` of the bridge process over the window),
//! - bridge RSS per subscriber (resident memory at the end of the window less the chair-only baseline),
//! - forwarding delay p50/p99 from the bridge's own histogram (`GET /api/bridge/metrics`, the window's buckets),
//! - delivered / expected RTP packets at the subscribers.
//!
//! The synthetic sites need CPU of their own (≈ 1 core per 800 receiving sites here), on the same machine: the
//! report carries their CPU too, so a reader can tell a saturated machine from a saturated bridge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use diemcau_drill::{PublisherConfig, Swarm, SwarmConfig, SwarmReport};
use diemcau_proto::Role;
use diemcau_store::Store;
use diemcau_store::token::{self, Claims};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Subscribers per step, ascending.
    pub steps: Vec<usize>,
    /// Seconds after the last join before the window opens.
    pub settle: Duration,
    /// The measured window.
    pub window: Duration,
    /// Joins per second while a step's subscribers join.
    pub join_rate: f64,
    /// Media threads of the synthetic subscribers.
    pub swarm_threads: usize,
    /// Shard threads of the bridge.
    pub shards: usize,
    /// What the chair sends.
    pub publisher: PublisherConfig,
    /// Scratch directory (database, config, logs).
    pub work_dir: PathBuf,
    /// The `diemcau` binary to start as the bridge.
    pub bridge_exe: PathBuf,
}

/// One row of `target/bench/fanout.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FanoutRow {
    /// `diemcau` or `janus`.
    pub system: String,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Of which connected (ICE + DTLS).
    pub connected: usize,
    /// Of which decoded video.
    pub receiving: usize,
    /// Bridge CPU seconds per subscriber-second over the window.
    pub cpu_s_per_sub_s: Option<f64>,
    /// Bridge CPU over the window, share of one core.
    pub bridge_cpu_cores: Option<f64>,
    /// Bridge RSS per subscriber, KB (end of window less the chair-only baseline).
    pub rss_kb_per_sub: Option<f64>,
    /// Bridge RSS at the end of the window, KB.
    pub rss_kb: Option<u64>,
    /// Forwarding delay, median over the window, ms (the bridge's own histogram).
    pub fwd_p50_ms: Option<f64>,
    /// Forwarding delay, 99th percentile, ms.
    pub fwd_p99_ms: Option<f64>,
    /// RTP packets the subscribers received over those they should have (from first to last sequence number).
    pub delivered_ratio: Option<f64>,
    /// RTP packets per second forwarded to each subscriber (received at the subscribers, per second of their run).
    pub packets_per_sub_s: Option<f64>,
    /// CPU of the synthetic subscribers' media threads, share of one core.
    pub swarm_cpu_cores: Option<f64>,
    /// Bridge CPU per packet delivered to a subscriber, µs (`cpu_s_per_sub_s / packets_per_sub_s`): stays
    /// meaningful when the machine saturates and per-subscriber figures fall because packets stop flowing.
    pub cpu_us_per_packet: Option<f64>,
}

/// CPU time (user + system) of a process, from `/proc/<pid>/stat` (clock ticks of 1/100 s, Linux's `USER_HZ`).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the man page, so utime (14) and stime (15) are at 11 and 12 here.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Resident memory of a process, KB (`VmRSS` of `/proc/<pid>/status`).
pub fn process_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A minimal HTTP/1.0 GET on loopback (the bench's only HTTP client: `/healthz` and the metrics).
async fn http_get(addr: SocketAddr, path: &str, bearer: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The bridge child process; killed (SIGTERM, then SIGKILL) on drop.
struct Bridge {
    child: Child,
    http: SocketAddr,
    admin: String,
}

impl Bridge {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Only our own child, by its PID.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The quantile `q` of the samples in `now` less `before` (both `[upper µs, count]`, ascending), ms.
pub fn window_quantile_ms(before: &[(u64, u64)], now: &[(u64, u64)], q: f64) -> Option<f64> {
    let earlier: std::collections::HashMap<u64, u64> = before.iter().copied().collect();
    let window: Vec<(u64, u64)> =
        now.iter().map(|(ub, c)| (*ub, c.saturating_sub(earlier.get(ub).copied().unwrap_or(0)))).collect();
    let total: u64 = window.iter().map(|w| w.1).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (ub, c) in window {
        seen += c;
        if seen >= rank {
            return Some(ub as f64 / 1000.0);
        }
    }
    None
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Prepares the directory (sites, a meeting), starts the bridge and waits for `/healthz`.
async fn start_bridge(opts: &FanoutOptions, sites: usize) -> anyhow::Result<(Bridge, i64, i64, Vec<i64>, Vec<u8>)> {
    let data = opts.work_dir.join("diemcau-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let store = Store::open(&data.join("diemcau.sqlite3"))?;
    let demo = store.seed_demo()?;
    let mut csv = String::from("code,name,kind,parent_code,link_hint\n");
    for i in 1..=sites {
        csv.push_str(&format!("BENCH-{i:05},Xã đo tải {i:05},commune,,\n"));
    }
    store.import_sites_csv(csv.as_bytes())?;
    let ids: Vec<i64> = store.sites()?.into_iter().filter(|s| s.code.starts_with("BENCH-")).map(|s| s.id).collect();
    let meeting = store.create_meeting("Đo tải phân phối · fan-out bench", demo.chair_site_id, &ids)?;
    let secret = store.secret()?;
    drop(store);

    let port = free_port()?;
    let admin = format!("bench-{}", std::process::id());
    let cfg = opts.work_dir.join("diemcau-bench.toml");
    std::fs::write(
        &cfg,
        format!(
            // Not adaptive: every subscriber takes the 360p layer, the benchmark's fixed workload.
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[media]\nbind = \"127.0.0.1\"\nport = 0\nshards = {}\n\
             adaptive = false\n[data]\ndir = {:?}\n[admin]\ntoken = \"{admin}\"\n",
            opts.shards,
            data.display().to_string()
        ),
    )?;
    let log = std::fs::File::create(opts.work_dir.join("diemcau-bridge.log"))?;
    let child = Command::new(&opts.bridge_exe)
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the bridge {}", opts.bridge_exe.display()))?;
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    let bridge = Bridge { child, http, admin };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = http_get(http, "/healthz", "").await {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the bridge did not answer /healthz within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((bridge, meeting, demo.chair_site_id, ids, secret))
}

fn mint(secret: &[u8], meeting: i64, site: i64, role: Role) -> String {
    let exp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
            + 24 * 3600;
    token::sign(secret, &Claims { meeting_id: meeting, site_id: site, role, exp })
}

/// Aggregates the subscribers' side of a step into `row`.
fn fill_from_swarm(row: &mut FanoutRow, report: &SwarmReport) {
    row.connected = report.sites.iter().filter(|s| s.connected).count();
    row.receiving = report.sites.iter().filter(|s| s.video.frames > 0).count();
    let (got, expected) = report.sites.iter().fold((0u64, 0u64), |(g, e), s| {
        let exp = s.video.expected + s.audio.expected;
        let lost = s.video.lost + s.audio.lost;
        (g + exp.saturating_sub(lost), e + exp)
    });
    row.delivered_ratio = (expected > 0).then(|| got as f64 / expected as f64);
    let secs: f64 = report.sites.iter().map(|s| s.duration_ms / 1000.0).sum();
    let packets: u64 = report.sites.iter().map(|s| s.video.packets + s.audio.packets).sum();
    row.packets_per_sub_s = (secs > 0.0).then(|| packets as f64 / secs);
    row.swarm_cpu_cores = report.cost.cpu_ms.map(|ms| ms / report.duration_ms.max(1.0));
}

/// How one step's swarm reaches the system under test.
struct Target<'a> {
    system: &'static str,
    /// The process whose CPU and memory are measured.
    pid: u32,
    /// The bridge's metrics endpoint (diemcau only): `(address, admin token)`.
    metrics: Option<(SocketAddr, String)>,
    /// A swarm config for `n` subscribers (ws URL, tokens, backend, bind address filled in).
    subscribers: &'a dyn Fn(usize) -> SwarmConfig,
}

/// Runs the steps against one system whose chair is already publishing.
async fn run_steps(
    opts: &FanoutOptions,
    target: &Target<'_>,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<FanoutRow>> {
    let mut rows = Vec::with_capacity(opts.steps.len());
    for &n in &opts.steps {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let baseline_rss = process_rss_kb(target.pid);
        let join_spread = Duration::from_secs_f64((n as f64 / opts.join_rate).max(1.0));
        let mut sc = (target.subscribers)(n);
        sc.threads = opts.swarm_threads;
        sc.join_spread = join_spread;
        sc.duration = join_spread + opts.settle + opts.window + Duration::from_millis(500);
        sc.seed = n as u64;
        let swarm = Swarm::new(sc)?;

        // The window's sampler runs beside the swarm, on the swarm's clock.
        let pid = target.pid;
        let open_at = tokio::time::Instant::now() + join_spread + opts.settle;
        let window = opts.window;
        let metrics = target.metrics.clone();
        let sampler = tokio::spawn(async move {
            tokio::time::sleep_until(open_at).await;
            let d0 = match &metrics {
                Some((http, admin)) => Bridge::delays_of(*http, admin).await.ok(),
                None => None,
            };
            let (c0, t0) = (process_cpu(pid), Instant::now());
            tokio::time::sleep(window).await;
            let (c1, t1) = (process_cpu(pid), Instant::now());
            let rss = process_rss_kb(pid);
            let d1 = match &metrics {
                Some((http, admin)) => Bridge::delays_of(*http, admin).await.ok(),
                None => None,
            };
            (c0.zip(c1).map(|(a, b)| (b.saturating_sub(a), t1 - t0)), rss, d0.zip(d1))
        });
        let started = Instant::now();
        let system = target.system;
        let report = swarm
            .run(|p| {
                if p.elapsed.as_secs() % 5 == 0 {
                    progress(&format!("{system} {n}: {:>3.0} s, {p}", p.elapsed.as_secs_f64()));
                }
            })
            .await?;
        let (cpu, rss, delays) = sampler.await?;
        let mut row = FanoutRow { system: system.into(), subscribers: n, rss_kb: rss, ..FanoutRow::default() };
        if let Some((cpu, wall)) = cpu {
            let secs = wall.as_secs_f64();
            row.bridge_cpu_cores = Some(cpu.as_secs_f64() / secs);
            row.cpu_s_per_sub_s = Some(cpu.as_secs_f64() / secs / n as f64);
        }
        row.rss_kb_per_sub = rss.zip(baseline_rss).map(|(a, b)| a.saturating_sub(b) as f64 / n as f64);
        if let Some((d0, d1)) = delays {
            row.fwd_p50_ms = window_quantile_ms(&d0, &d1, 0.5);
            row.fwd_p99_ms = window_quantile_ms(&d0, &d1, 0.99);
        }
        fill_from_swarm(&mut row, &report);
        row.cpu_us_per_packet =
            row.cpu_s_per_sub_s.zip(row.packets_per_sub_s).filter(|(_, p)| *p > 0.0).map(|(c, p)| c / p * 1e6);
        progress(&format!("{system} {n}: done in {:.0} s: {}", started.elapsed().as_secs_f64(), describe(&row)));
        rows.push(row);
    }
    Ok(rows)
}

/// Starts a publishing chair swarm in the background; the returned sender stops it.
fn spawn_chair(cfg: SwarmConfig) -> anyhow::Result<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let chair = Swarm::new(cfg)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::select! {
            r = chair.run(|_| {}) => {
                if let Err(e) = r {
                    tracing::warn!("the benchmark's chair stopped: {e}");
                }
            }
            _ = stop_rx => {}
        }
    });
    Ok((stop_tx, task))
}

/// Runs the diemcau steps; `progress` gets a line now and then.
pub async fn fanout_diemcau(opts: &FanoutOptions, mut progress: impl FnMut(&str)) -> anyhow::Result<Vec<FanoutRow>> {
    let max = opts.steps.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(max > 0, "no steps");
    let (bridge, meeting, chair_id, ids, secret) = start_bridge(opts, max).await?;
    let ws_url = format!("ws://{}/ws", bridge.http);
    progress(&format!("diemcau bridge pid {} on {}", bridge.pid(), bridge.http));

    let mut chair = SwarmConfig::new(ws_url.clone(), vec![(chair_id, mint(&secret, meeting, chair_id, Role::Chair))]);
    chair.publish = true;
    chair.publisher = opts.publisher.clone();
    chair.duration = Duration::from_secs(24 * 3600);
    let (stop, chair_task) = spawn_chair(chair)?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let make = |n: usize| {
        let tokens = ids.iter().take(n).map(|id| (*id, mint(&secret, meeting, *id, Role::Site))).collect();
        SwarmConfig::new(ws_url.clone(), tokens)
    };
    let target = Target {
        system: "diemcau",
        pid: bridge.pid(),
        metrics: Some((bridge.http, bridge.admin.clone())),
        subscribers: &make,
    };
    let rows = run_steps(opts, &target, &mut progress).await;
    let _ = stop.send(());
    let _ = chair_task.await;
    drop(bridge);
    rows
}

/// Janus started with `scripts/janus/start`, stopped with `scripts/janus/stop` (its PID only, then the namespace).
struct Janus {
    dir: PathBuf,
    scripts: PathBuf,
    pid: u32,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = Command::new(self.scripts.join("stop")).arg(&self.dir).stdout(Stdio::null()).status();
    }
}

/// Janus' address inside the benchmark's namespace and the host side of its veth (see `scripts/janus/setup`).
const JANUS_WS: &str = "ws://10.77.0.2:8188";
const JANUS_HOST_IP: [u8; 4] = [10, 77, 0, 1];
const JANUS_ROOM: u64 = 1234;

/// Runs the same steps against Janus' VideoRoom (Debian's `janus`, set up and started by `scripts_dir/setup` and
/// `start` in a network namespace; needs root).
pub async fn fanout_janus(
    opts: &FanoutOptions,
    scripts_dir: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<FanoutRow>> {
    let dir = opts.work_dir.join("janus");
    let run = |script: &str| -> anyhow::Result<String> {
        let out = Command::new(scripts_dir.join(script))
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", scripts_dir.join(script).display()))?;
        anyhow::ensure!(out.status.success(), "{} failed ({})", scripts_dir.join(script).display(), out.status);
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    run("setup")?;
    let pid: u32 = run("start")?.lines().last().unwrap_or_default().trim().parse().context("janus start: no PID")?;
    let janus = Janus { dir: dir.clone(), scripts: scripts_dir.to_path_buf(), pid };
    progress(&format!("janus pid {} on {JANUS_WS}", janus.pid));

    let feed = std::sync::Arc::new(std::sync::OnceLock::new());
    let backend = diemcau_drill::Backend::Janus { room: JANUS_ROOM, feed: feed.clone() };
    let mut chair = SwarmConfig::new(JANUS_WS, vec![(1, String::new())]);
    chair.backend = backend.clone();
    chair.bind_ip = JANUS_HOST_IP.into();
    chair.publish = true;
    chair.publisher = opts.publisher.clone();
    chair.duration = Duration::from_secs(24 * 3600);
    let (stop, chair_task) = spawn_chair(chair)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while feed.get().is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the chair did not publish to Janus within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let make = |n: usize| {
        let mut c = SwarmConfig::new(JANUS_WS, (0..n).map(|i| (i as i64 + 100, String::new())).collect());
        c.backend = backend.clone();
        c.bind_ip = JANUS_HOST_IP.into();
        c
    };
    let target = Target { system: "janus", pid: janus.pid, metrics: None, subscribers: &make };
    let rows = run_steps(opts, &target, &mut progress).await;
    let _ = stop.send(());
    let _ = chair_task.await;
    drop(janus);
    rows
}

impl Bridge {
    async fn delays_of(http: SocketAddr, admin: &str) -> anyhow::Result<Vec<(u64, u64)>> {
        let (status, body) = http_get(http, "/api/bridge/metrics", admin).await?;
        anyhow::ensure!(status == 200, "GET /api/bridge/metrics: HTTP {status}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["forward_delay"]["buckets"]
            .as_array()
            .map(|a| a.iter().filter_map(|b| Some((b.get(0)?.as_u64()?, b.get(1)?.as_u64()?))).collect())
            .unwrap_or_default())
    }
}

/// One line about a row.
pub fn describe(r: &FanoutRow) -> String {
    let f = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "–".into());
    format!(
        "{}/{} connected, {} receiving, bridge {} cores = {} µs CPU per subscriber-second, {} KB RSS per subscriber, \
         fwd p50 {} ms p99 {} ms, delivered {}, swarm {} cores",
        r.connected,
        r.subscribers,
        r.receiving,
        f(r.bridge_cpu_cores, 2),
        f(r.cpu_s_per_sub_s.map(|v| v * 1e6), 1),
        f(r.rss_kb_per_sub, 0),
        f(r.fwd_p50_ms, 3),
        f(r.fwd_p99_ms, 3),
        f(r.delivered_ratio, 4),
        f(r.swarm_cpu_cores, 2)
    )
}

/// Writes the rows as JSON (creating the directory).
pub fn write_json(path: &Path, rows: &[FanoutRow]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(rows)?).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_quantiles_subtract_the_earlier_read() {
        let before = [(10, 100), (20, 5)];
        let now = [(10, 100), (20, 15), (40, 10), (80, 1)];
        // The window holds 10 × 20 µs, 10 × 40 µs, 1 × 80 µs.
        assert_eq!(window_quantile_ms(&before, &now, 0.5), Some(0.04));
        assert_eq!(window_quantile_ms(&before, &now, 0.4), Some(0.02));
        assert_eq!(window_quantile_ms(&before, &now, 0.99), Some(0.08));
        assert_eq!(window_quantile_ms(&now, &now, 0.5), None);
    }

    #[test]
    fn this_process_has_cpu_and_rss() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_cpu(pid).is_some_and(|c| c > Duration::ZERO));
        assert!(process_rss_kb(pid).is_some_and(|kb| kb > 1000));
        assert_eq!(process_cpu(u32::MAX), None);
    }
}
