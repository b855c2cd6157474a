//! `diemcau` — the command line: run the bridge, manage the sites directory, meetings and tokens.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use diemcau::Config;
use diemcau_proto::Role;
use diemcau_store::Store;
use diemcau_store::token::{self, Claims};

#[derive(Parser)]
#[command(name = "diemcau", version, about = "Video-conference bridge for province-to-commune meetings")]
struct Cli {
    /// Configuration file overlaid on the embedded defaults.
    #[arg(long, global = true, env = "DIEMCAU_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bridge (HTTP + WebSocket signalling + UDP media) and print the demo links.
    Serve,
    /// The sites directory.
    Sites {
        #[command(subcommand)]
        cmd: SitesCmd,
    },
    /// Meetings.
    Meeting {
        #[command(subcommand)]
        cmd: MeetingCmd,
    },
    /// Join synthetic sites (real WebRTC endpoints, each behind an emulated link) to a meeting of the bridge whose
    /// database this config names, measure what they receive, and report per site and per link profile.
    Swarm {
        /// Meeting id.
        #[arg(long, default_value_t = 1)]
        meeting: i64,
        /// How many of the meeting's invited sites join (in invitation order).
        #[arg(long, default_value_t = 10)]
        sites: usize,
        /// Link presets and shares, e.g. `3g:40,adsl:40,vsat:20` (presets: config/links.toml).
        #[arg(long, default_value = "fibre:100")]
        mix: String,
        /// Seconds from the start to the report.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Seconds over which the joins are spread.
        #[arg(long, default_value_t = 2)]
        join_spread: u64,
        /// Media threads of the swarm.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// WebSocket URL of the bridge (default: from the config's http.listen).
        #[arg(long)]
        url: Option<String>,
        /// Write the full JSON report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Bandwidth drills: a scenario file (config/drills/*.toml) run against a bridge started on loopback.
    Drill {
        #[command(subcommand)]
        cmd: DrillCmd,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Check the link from this machine to a bridge, as a commune's `/check` page does (≈ 15 s): downlink and uplink
    /// capacity, loss, round-trip time and the recommended profile; the bridge stores the result with the site.
    CheckLink {
        /// The bridge's base URL, e.g. `http://10.0.0.5:8080` (default: from the config's http.listen).
        #[arg(long)]
        url: Option<String>,
        /// A join token of the site being checked (`diemcau token --meeting M --site S`).
        #[arg(long)]
        token: String,
        /// Put an emulated link between this machine and the bridge (a preset of config/links.toml), to rehearse
        /// what a commune on that link would measure.
        #[arg(long, default_value = "fibre")]
        link: String,
        /// Write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Mint a join token (prints the token and the page URL).
    Token {
        /// Meeting id (not for `--role standby`).
        #[arg(long)]
        meeting: Option<i64>,
        /// Site id.
        #[arg(long)]
        site: i64,
        /// chair, site, technician, or standby (the site's page that waits to be rung for a convened meeting).
        #[arg(long, default_value = "site")]
        role: String,
        /// Lifetime in hours (default from the config; 90 days for a standby token).
        #[arg(long)]
        ttl_hours: Option<u32>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Roll call: CPU per answer as the meeting grows, the controller alone and with each answer logged to a real
    /// SQLite file first (as the bridge does), and the cost of the deadline event.
    Rollcall {
        /// Invited sites per step.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,3000,10000")]
        steps: Vec<usize>,
        /// Where the temporary SQLite files go.
        #[arg(long, default_value = "target/bench-rollcall")]
        work_dir: std::path::PathBuf,
    },
    /// Fan-out: a synthetic chair, steps of N synthetic subscribers; bridge CPU and RSS per subscriber, forwarding
    /// delay, delivered packets. The bridge runs as a child process (this binary's `serve`).
    Fanout {
        /// Subscribers per step.
        #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
        steps: Vec<usize>,
        /// Seconds after the last join before measuring.
        #[arg(long, default_value_t = 5)]
        settle: u64,
        /// Seconds measured per step.
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// Subscribers joining per second.
        #[arg(long, default_value_t = 200.0)]
        join_rate: f64,
        /// Media threads of the synthetic subscribers.
        #[arg(long, default_value_t = 2)]
        swarm_threads: usize,
        /// Shard threads of the bridge.
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// The chair's video bitrate (the 360p layer), kbit/s.
        #[arg(long, default_value_t = 500)]
        video_kbps: u32,
        /// The chair sends one layer instead of three simulcast layers (subscribers get the 360p layer either way).
        #[arg(long)]
        single_layer: bool,
        /// Systems to measure, in order: `diemcau`, `janus` (Debian's janus in a network namespace; needs root).
        #[arg(long, value_delimiter = ',', default_value = "diemcau")]
        systems: Vec<String>,
        /// Where scripts/janus (setup, start, stop) is.
        #[arg(long, default_value = "scripts/janus")]
        janus_scripts: PathBuf,
        /// Scratch directory.
        #[arg(long, default_value = "target/bench/work")]
        work_dir: PathBuf,
        /// The JSON rows.
        #[arg(long, default_value = "target/bench/fanout.json")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DrillCmd {
    /// Run a drill and write DIR/report.json and DIR/report.html. Exit status 0: every profile passed its
    /// thresholds; 3: the drill ran but some did not; 1: it could not run.
    Run {
        /// The scenario (TOML), e.g. config/drills/rural-mix.toml.
        file: PathBuf,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Override the scenario's number of sites.
        #[arg(long)]
        sites: Option<usize>,
        /// Override the scenario's duration, seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Override the scenario's media threads.
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Subcommand)]
enum SitesCmd {
    /// Import or update sites from a CSV file (columns: code,name,kind,parent_code,link_hint).
    Import {
        /// The CSV file (UTF-8).
        file: PathBuf,
    },
    /// List the directory.
    List,
}

#[derive(Subcommand)]
enum MeetingCmd {
    /// Create a meeting.
    Create {
        /// Title shown to every site.
        #[arg(long)]
        title: String,
        /// Chairing site id.
        #[arg(long)]
        chair: i64,
        /// Invited site ids, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "invite_all")]
        invite: Vec<i64>,
        /// Invite every other site of the directory.
        #[arg(long)]
        invite_all: bool,
    },
    /// List meetings.
    List,
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::defaults(),
    })
}

fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let db = cfg.data.dir.join("diemcau.sqlite3");
    Store::open(&db).with_context(|| format!("opening the database {}", db.display()))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = diemcau::start(cfg).await?;
    println!("diemcau listening on {} (media UDP {:?})", running.base_url, running.media_addrs);
    println!("chair: {}", running.links.chair);
    println!("site: {}", running.links.site);
    println!("tech: {}", running.links.tech);
    println!("standby: {}", running.links.standby);
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs a drill; `Ok(false)` when it ran but did not pass.
fn drill_run(
    cfg: Config,
    file: &std::path::Path,
    out: &std::path::Path,
    sites: Option<usize>,
    duration: Option<u64>,
    threads: Option<usize>,
) -> anyhow::Result<bool> {
    let mut scenario = diemcau_drill::Scenario::load(file)?;
    if let Some(n) = sites {
        anyhow::ensure!(
            (1..=diemcau_drill::drill::MAX_SITES).contains(&n),
            "--sites {n}: expected 1..={}",
            diemcau_drill::drill::MAX_SITES
        );
        scenario.sites = n;
    }
    if let Some(d) = duration {
        let d = std::time::Duration::from_secs(d);
        anyhow::ensure!(d > scenario.join_spread, "--duration must be longer than the join spread");
        scenario.duration = d;
    }
    if let Some(t) = threads {
        anyhow::ensure!((1..=64).contains(&t), "--threads {t}: expected 1..=64");
        scenario.threads = t;
    }
    eprintln!(
        "drill {}: {} sites ({}), {} s, output {}",
        scenario.name,
        scenario.sites,
        scenario.mix.iter().map(|(p, s)| format!("{p} {s}%")).collect::<Vec<_>>().join(", "),
        scenario.duration.as_secs(),
        out.display()
    );
    let total = scenario.duration.as_secs_f64();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let live = |url: &str| eprintln!("Theo dõi trực tiếp (live, /tech): {url}");
    let output = rt.block_on(diemcau::drill::run(cfg, &scenario, out, live, |p| {
        let done = (p.elapsed.as_secs_f64() / total).min(1.0);
        let bar = "#".repeat((done * 20.0).round() as usize);
        eprintln!("[{bar:<20}] {:>3.0}% {:>4.0} s: {p}", done * 100.0, p.elapsed.as_secs_f64());
    }))?;
    let r = &output.report;
    println!("profile	sites	connected	video	first frame p95 ms	audio continuity	worst gap ms	freeze %	fps min	result");
    for p in &r.profiles {
        let s = &p.summary;
        let f = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "–".into());
        println!(
            "{}	{}	{}	{}	{}	{}	{}	{:.2}	{}	{}",
            s.profile,
            s.sites,
            s.connected,
            s.with_video,
            f(s.first_frame_p95_ms, 0),
            f(s.audio_continuity_mean, 4),
            f(s.audio_worst_gap_ms, 0),
            100.0 * s.freeze_share,
            f(s.fps_min, 1),
            if p.passed { "passed" } else { "FAILED" }
        );
        for c in p.checks.iter().filter(|c| !c.passed) {
            let v = c.value.map(|v| format!("{v:.4}")).unwrap_or_else(|| "nothing measured".into());
            println!("  {}: {v}, threshold {} {}", c.measure, c.op, c.limit);
        }
    }
    if let Some(rc) = &r.rollcall {
        println!(
            "roll call: {} sites, present {} (planned {}), absent {} (planned {}, of which offline {}), last answer {} ms after the start: {}",
            rc.sites,
            rc.present,
            rc.expected_present,
            rc.absent,
            rc.expected_absent,
            rc.offline,
            rc.last_answer_ms.map(|t| t.to_string()).unwrap_or_else(|| "–".into()),
            if rc.matches { "counts match" } else { "COUNTS DO NOT MATCH" }
        );
    }
    println!("{}", if r.passed { "drill passed" } else { "drill FAILED its thresholds" });
    println!("report: {}", output.html.display());
    println!("data: {}", output.json.display());
    Ok(r.passed)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = load_config(cli.config.as_ref())?;
    if let Cmd::Drill { cmd: DrillCmd::Run { file, out, sites, duration, threads } } = &cli.cmd {
        let passed = drill_run(cfg, file, out, *sites, *duration, *threads)?;
        return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(3) });
    }
    if let Cmd::Bench { cmd } = cli.cmd {
        bench(cmd)?;
        return Ok(ExitCode::SUCCESS);
    }
    run_other(cli, cfg).map(|()| ExitCode::SUCCESS)
}

fn bench(cmd: BenchCmd) -> anyhow::Result<()> {
    if let BenchCmd::Rollcall { steps, work_dir } = &cmd {
        std::fs::create_dir_all(work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
        println!(
            "sites\tcontroller µs/answer (CPU)\twith SQLite log µs/answer (CPU)\twith SQLite log µs/answer (wall)"
        );
        for (i, n) in steps.iter().enumerate() {
            eprintln!("[{}/{}] {n} sites…", i + 1, steps.len());
            let r = diemcau::bench_rollcall::run(&[*n], work_dir)?;
            for s in r {
                println!("{}\t{:.3}\t{:.1}\t{:.1}", s.sites, s.controller_us, s.with_store_us, s.with_store_wall_us);
            }
        }
        return Ok(());
    }
    let BenchCmd::Fanout {
        steps,
        settle,
        window,
        join_rate,
        swarm_threads,
        shards,
        video_kbps,
        single_layer,
        systems,
        janus_scripts,
        work_dir,
        out,
    } = cmd
    else {
        anyhow::bail!("unknown bench");
    };
    for s in &systems {
        anyhow::ensure!(s == "diemcau" || s == "janus", "--systems: `{s}` is neither diemcau nor janus");
    }
    anyhow::ensure!(!steps.is_empty() && steps.iter().all(|n| *n >= 1), "--steps: numbers of subscribers ≥ 1");
    anyhow::ensure!(join_rate > 0.0, "--join-rate must be above 0");
    anyhow::ensure!(window >= 1, "--window must be at least 1 s");
    std::fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let opts = diemcau::bench::FanoutOptions {
        steps,
        settle: std::time::Duration::from_secs(settle),
        window: std::time::Duration::from_secs(window),
        join_rate,
        swarm_threads: swarm_threads.max(1),
        shards: shards.max(1),
        publisher: diemcau_drill::PublisherConfig {
            video_kbps,
            simulcast: !single_layer,
            ..diemcau_drill::PublisherConfig::default()
        },
        work_dir,
        bridge_exe: std::env::current_exe()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    for system in &systems {
        let got = if system == "janus" {
            rt.block_on(diemcau::bench::fanout_janus(&opts, &janus_scripts, |line| eprintln!("{line}")))?
        } else {
            rt.block_on(diemcau::bench::fanout_diemcau(&opts, |line| eprintln!("{line}")))?
        };
        rows.extend(got);
        // Written after each system, so a failure later keeps what was measured.
        diemcau::bench::write_json(&out, &rows)?;
    }
    println!(
        "system\tsubscribers\tconnected\tcpu µs/sub-s\tcpu µs/packet\tRSS KB/sub\tfwd p50 ms\tfwd p99 ms\tdelivered\t\
         bridge cores\tswarm cores"
    );
    for r in &rows {
        let f = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "–".into());
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.system,
            r.subscribers,
            r.connected,
            f(r.cpu_s_per_sub_s.map(|v| v * 1e6), 1),
            f(r.cpu_us_per_packet, 1),
            f(r.rss_kb_per_sub, 0),
            f(r.fwd_p50_ms, 3),
            f(r.fwd_p99_ms, 3),
            f(r.delivered_ratio, 4),
            f(r.bridge_cpu_cores, 2),
            f(r.swarm_cpu_cores, 2)
        );
    }
    let per = |sys: &str, n: usize| rows.iter().find(|r| r.system == sys && r.subscribers == n);
    if systems.len() == 2 {
        println!(
            "subscribers\tCPU/sub-s diemcau/janus\tCPU/packet diemcau/janus\tRSS diemcau/janus\tdelivered diemcau/janus"
        );
        for n in &opts.steps {
            let (Some(d), Some(j)) = (per("diemcau", *n), per("janus", *n)) else { continue };
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            println!(
                "{n}\t{}\t{}\t{}\t{}",
                ratio(d.cpu_s_per_sub_s, j.cpu_s_per_sub_s),
                ratio(d.cpu_us_per_packet, j.cpu_us_per_packet),
                ratio(d.rss_kb_per_sub, j.rss_kb_per_sub),
                ratio(d.delivered_ratio, j.delivered_ratio)
            );
        }
    }
    println!("rows: {}", out.display());
    Ok(())
}

fn run_other(cli: Cli, cfg: Config) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Drill { .. } | Cmd::Bench { .. } => Ok(()),
        Cmd::Serve => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(serve(cfg))
        }
        Cmd::Sites { cmd: SitesCmd::Import { file } } => {
            let store = open_store(&cfg)?;
            let f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let r = store.import_sites_csv(f).with_context(|| format!("importing {}", file.display()))?;
            println!("{}: {} inserted, {} updated", file.display(), r.inserted, r.updated);
            Ok(())
        }
        Cmd::Sites { cmd: SitesCmd::List } => {
            let store = open_store(&cfg)?;
            for s in store.sites()? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.id,
                    s.code,
                    s.kind.as_str(),
                    s.parent_id.map(|p| p.to_string()).unwrap_or_default(),
                    s.link_hint.unwrap_or_default(),
                    s.name
                );
            }
            Ok(())
        }
        Cmd::Meeting { cmd: MeetingCmd::Create { title, chair, invite, invite_all } } => {
            let store = open_store(&cfg)?;
            let invited: Vec<i64> = if invite_all {
                store.sites()?.into_iter().map(|s| s.id).filter(|id| *id != chair).collect()
            } else {
                invite
            };
            let id = store.create_meeting(&title, chair, &invited)?;
            println!("meeting {id} created with {} invited sites", invited.len());
            Ok(())
        }
        Cmd::Meeting { cmd: MeetingCmd::List } => {
            let store = open_store(&cfg)?;
            for m in store.meetings()? {
                println!("{}\t{}\tchair {}\t{} invited", m.id, m.title, m.chair_site_id, m.invited.len());
            }
            Ok(())
        }
        Cmd::Swarm { meeting, sites, mix, duration, join_spread, threads, url, out } => {
            let store = open_store(&cfg)?;
            let m = store.meeting(meeting)?.with_context(|| format!("meeting {meeting} does not exist"))?;
            anyhow::ensure!(sites >= 1, "--sites must be at least 1");
            anyhow::ensure!(
                sites <= m.invited.len(),
                "--sites {sites}: meeting {meeting} invites only {} sites",
                m.invited.len()
            );
            let secret = store.secret()?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
            let exp = now + duration as i64 + 3600;
            let tokens: Vec<(i64, String)> = m.invited[..sites]
                .iter()
                .map(|id| {
                    (*id, token::sign(&secret, &Claims { meeting_id: meeting, site_id: *id, role: Role::Site, exp }))
                })
                .collect();
            let url = url.unwrap_or_else(|| format!("ws://{}/ws", cfg.http.listen));
            let mut sc = diemcau_drill::SwarmConfig::new(url, tokens);
            sc.mix = diemcau_drill::parse_mix(&mix)?;
            sc.duration = std::time::Duration::from_secs(duration);
            sc.join_spread = std::time::Duration::from_secs(join_spread);
            sc.threads = threads.max(1);
            let swarm = diemcau_drill::Swarm::new(sc)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = rt.block_on(swarm.run(|p| eprintln!("[{:>4.0} s] {p}", p.elapsed.as_secs_f64())))?;
            println!(
                "profile\tsites\tconnected\tvideo\taudio\tfirst frame p50 ms\taudio continuity\tworst gap ms\tfreeze %"
            );
            for p in &report.profiles {
                let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into());
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.2}",
                    p.profile,
                    p.sites,
                    p.connected,
                    p.with_video,
                    p.with_audio,
                    f(p.first_frame_median_ms),
                    p.audio_continuity_mean.map(|x| format!("{:.4}", x)).unwrap_or_else(|| "–".into()),
                    f(p.audio_worst_gap_ms),
                    100.0 * p.freeze_share
                );
            }
            if let Some(path) = out {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("report: {}", path.display());
            }
            Ok(())
        }
        Cmd::CheckLink { url, token, link, json } => check_link(&cfg, url, token, &link, json),
        Cmd::Token { meeting, site, role, ttl_hours } => {
            let store = open_store(&cfg)?;
            let base = if cfg.http.public_url.is_empty() {
                format!("{}://{}", if cfg.http.tls_cert.is_empty() { "http" } else { "https" }, cfg.http.listen)
            } else {
                cfg.http.public_url.trim_end_matches('/').to_string()
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
            if role == "standby" {
                anyhow::ensure!(meeting.is_none(), "--role standby is for no meeting: leave --meeting out");
                store.site(site)?.with_context(|| format!("site {site} is not in the directory"))?;
                let secs = ttl_hours.map_or(diemcau_signal::STANDBY_TTL_SECS, |h| i64::from(h) * 3600);
                let claims =
                    Claims { meeting_id: token::STANDBY_MEETING, site_id: site, role: Role::Site, exp: now + secs };
                let tok = token::sign(&store.secret()?, &claims);
                println!("{tok}");
                println!("{base}/site?standby={tok}");
                return Ok(());
            }
            let meeting = meeting.context("--meeting is required (except for --role standby)")?;
            let role = Role::parse(&role)
                .with_context(|| format!("--role {role:?}: expected chair, site, technician or standby"))?;
            let m = store.meeting(meeting)?.with_context(|| format!("meeting {meeting} does not exist"))?;
            let allowed = match role {
                Role::Chair | Role::Technician => site == m.chair_site_id,
                Role::Site => m.invited.contains(&site),
            };
            anyhow::ensure!(allowed, "site {site} cannot join meeting {meeting} as {}", role.as_str());
            let hours = i64::from(ttl_hours.unwrap_or(cfg.meeting.token_ttl_hours));
            let tok = token::sign(
                &store.secret()?,
                &Claims { meeting_id: meeting, site_id: site, role, exp: now + hours * 3600 },
            );
            let page = match role {
                Role::Chair => "chair",
                Role::Site => "site",
                Role::Technician => "tech",
            };
            println!("{tok}");
            println!("{base}/{page}?token={tok}");
            Ok(())
        }
    }
}

fn check_link(
    cfg: &Config,
    url: Option<String>,
    token: String,
    link: &str,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    use diemcau_drill::check::{CheckEvent, CheckOptions, run_check};
    use diemcau_proto::CheckPhase;
    let base = url.unwrap_or_else(|| format!("http://{}", cfg.http.listen));
    let base = base.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        anyhow::bail!("--url {base:?}: expected http://host:port or https://host:port");
    };
    let profile = diemcau_netem::Profile::preset(link).with_context(|| format!("--link {link:?}"))?;
    let opts = CheckOptions { ws_url: format!("{ws_base}/ws/check"), token, profile, seed: 1, bind_ip: None };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    eprintln!("Kiểm tra đường truyền tới {base} (link check, ≈ 15 s)…");
    let result = rt.block_on(run_check(&opts, |e| match e {
        CheckEvent::Answered => eprintln!("  kết nối media (connecting media)…"),
        CheckEvent::Step { phase, kbps, percent } if *kbps > 0 => {
            let what = match phase {
                CheckPhase::Down => "chiều xuống (downlink)",
                CheckPhase::Up => "chiều lên (uplink)",
            };
            let bar = "█".repeat(usize::from(*percent) / 5) + &"░".repeat(20 - usize::from(*percent) / 5);
            eprintln!("  [{bar}] {percent:>3}%  {what} {kbps} kbit/s");
        }
        CheckEvent::Step { .. } => {}
    }))?;
    let kbps = |v: Option<f64>, saturated: bool| match v {
        Some(v) if saturated => format!("{v:.0} kbit/s"),
        Some(v) => format!("≥ {v:.0} kbit/s"),
        None => "–".into(),
    };
    let opt = |v: Option<f64>, unit: &str| v.map(|v| format!("{v:.1} {unit}")).unwrap_or_else(|| "–".into());
    println!("Chiều xuống (downlink)   {}", kbps(result.down_kbps, result.down_saturated));
    println!("Chiều lên (uplink)       {}", kbps(result.up_kbps, result.up_saturated));
    println!("Mất gói xuống (loss)     {}", opt(result.down_loss_pct, "%"));
    println!("Mất gói lên (loss up)    {}", opt(result.up_loss_pct, "%"));
    println!("Trễ khứ hồi (RTT)        {}", opt(result.rtt_ms, "ms"));
    println!("Khuyến nghị (profile)    {}", result.recommended.as_str());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A drill runs a bridge and hundreds of sites in this process: their per-join lines would bury the progress.
    let default_filter =
        if matches!(cli.cmd, Cmd::Drill { .. } | Cmd::Bench { .. }) { "warn" } else { "info,str0m=warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
