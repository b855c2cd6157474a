//! `diemcau drill run`: a [`Scenario`] against a bridge started in this process on loopback (its own temporary
//! database, so a drill never touches a real directory), a synthetic chair and the scenario's synthetic communes;
//! writes `report.json` and `report.html` into the output directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use diemcau_drill::drill::{DrillReport, judge};
use diemcau_drill::{Progress, Scenario, Swarm, SwarmConfig, report_html};
use diemcau_proto::Role;

use crate::Config;

/// The files a drill wrote.
#[derive(Debug, Clone)]
pub struct DrillOutput {
    /// The report.
    pub report: DrillReport,
    /// `DIR/report.json`.
    pub json: PathBuf,
    /// `DIR/report.html`.
    pub html: PathBuf,
}

/// Removes the drill's temporary bridge directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `scenario` against a bridge configured as `cfg` (its listen addresses, ports and data directory are replaced:
/// loopback, ephemeral ports, a temporary directory), calling `progress` once a second, and writes the reports into
/// `out` (created if missing). `live` gets, once the drill's meeting exists, the address of its technician page
/// (`/tech?token=…` on the drill's bridge): live charts of the synthetic sites while the drill runs.
pub async fn run(
    cfg: Config,
    scenario: &Scenario,
    out: &Path,
    live: impl FnOnce(&str),
    progress: impl FnMut(&Progress),
) -> anyhow::Result<DrillOutput> {
    std::fs::create_dir_all(out).with_context(|| format!("creating the output directory {}", out.display()))?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let tmp = TempDir(std::env::temp_dir().join(format!("diemcau-drill-{}-{nanos}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;

    let mut cfg = cfg;
    cfg.http.listen = ([127, 0, 0, 1], 0).into();
    cfg.http.public_url.clear();
    cfg.http.tls_cert.clear();
    cfg.http.tls_key.clear();
    cfg.media.bind = [127, 0, 0, 1].into();
    cfg.media.port = 0;
    cfg.media.advertise.clear();
    cfg.data.dir = tmp.0.clone();
    let running = crate::start(cfg).await.context("starting the bridge for the drill")?;
    let res = drive(&running, scenario, live, progress).await;
    running.shutdown().await;
    let report = res?;

    let json = out.join("report.json");
    let html = out.join("report.html");
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&html, report_html::render(&report)?).with_context(|| format!("writing {}", html.display()))?;
    Ok(DrillOutput { report, json, html })
}

async fn drive(
    running: &crate::Running,
    scenario: &Scenario,
    live: impl FnOnce(&str),
    progress: impl FnMut(&Progress),
) -> anyhow::Result<DrillReport> {
    let store = running.state.store();
    // The drill's communes: one row each in this temporary directory, then a meeting inviting them all. Each row's
    // link hint is the preset its synthetic site will run on (the swarm's own assignment), as a real directory
    // records each commune's link: the bridge starts its estimate of a satellite site low.
    let presets = diemcau_drill::swarm::assign_presets(&scenario.mix, scenario.sites, scenario.seed);
    let mut csv = String::from("code,name,kind,parent_code,link_hint\n");
    for i in 1..=scenario.sites {
        let hint = presets.get(i - 1).and_then(|p| scenario.mix.get(*p)).map_or("", |m| m.0.as_str());
        csv.push_str(&format!("DRILL-{i:05},Xã diễn tập {i:05},commune,,{hint}\n"));
    }
    store.import_sites_csv(csv.as_bytes()).context("adding the drill's sites")?;
    let mut drill_sites: Vec<_> = store.sites()?.into_iter().filter(|s| s.code.starts_with("DRILL-")).collect();
    drill_sites.sort_by(|a, b| a.code.cmp(&b.code));
    let ids: Vec<i64> = drill_sites.into_iter().map(|s| s.id).collect();
    anyhow::ensure!(ids.len() == scenario.sites, "expected {} drill sites, found {}", scenario.sites, ids.len());
    let chair_id = running.demo.chair_site_id;
    let title = if scenario.title.is_empty() { scenario.name.clone() } else { scenario.title.clone() };
    let meeting = store.create_meeting(&title, chair_id, &ids).context("creating the drill's meeting")?;
    let ttl = (scenario.duration.as_secs() as i64 + 3600).max(3600);
    let ws_url = format!("ws://{}/ws", running.http_addr);
    let tech = running.state.mint_token(meeting, chair_id, Role::Technician, ttl);
    live(&format!("http://{}/tech?token={tech}", running.http_addr));

    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let chair_run = match &scenario.chair {
        Some((profile, publisher)) => {
            let token = running.state.mint_token(meeting, chair_id, Role::Chair, ttl);
            let mut c = SwarmConfig::new(ws_url.clone(), vec![(chair_id, token)]);
            c.mix = vec![(profile.clone(), 100)];
            c.publish = true;
            c.publisher = publisher.clone();
            // The chair is there before the first commune and stays until after the last measurement.
            c.duration = scenario.duration + Duration::from_secs(3);
            c.seed = scenario.seed ^ 0xc4a1;
            let swarm = Swarm::new(c)?;
            let handle = tokio::spawn(swarm.run(|_| {}));
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some(handle)
        }
        None => None,
    };

    let tokens: Vec<(i64, String)> =
        ids.iter().map(|id| (*id, running.state.mint_token(meeting, *id, Role::Site, ttl))).collect();
    let mut sc = SwarmConfig::new(ws_url, tokens);
    sc.mix = scenario.mix.clone();
    sc.duration = scenario.duration;
    sc.join_spread = scenario.join_spread;
    sc.threads = scenario.threads;
    sc.seed = scenario.seed;
    sc.publish = scenario.sites_publish;
    sc.media = scenario.sites_media;
    sc.events = scenario.events.clone();
    // The roll call: exactly round(share × sites) never answer (chosen by the seed); the others answer uniformly
    // within `answer_within` of their call.
    let mut rollcall_task = None;
    if let Some(plan) = &scenario.rollcall {
        let n = scenario.sites;
        let silent = ((plan.silent_share * n as f64).round() as usize).min(n);
        let mut order: Vec<usize> = (0..n).collect();
        let mut x = scenario.seed ^ 0x5eed_ca11;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in (1..n).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let mut answers = vec![None; n];
        let within = plan.answer_within.as_millis().max(1) as u64;
        for i in order.into_iter().skip(silent) {
            answers[i] = Some(Duration::from_millis(next() % within));
        }
        sc.answers = answers;
        let state = running.state.clone();
        let (start, seconds) = (plan.start, plan.seconds);
        rollcall_task = Some(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            let action = diemcau_proto::control::Action::StartRollCall {
                mode: diemcau_proto::control::RollCallMode::AllAtOnce,
                order: None,
                seconds: Some(seconds),
            };
            tokio::task::spawn_blocking(move || state.act(meeting, action).map(|l| l.map(|l| l.at_ms))).await
        }));
    }
    let sites = Swarm::new(sc)?.run(progress).await?;

    let chair = match chair_run {
        Some(h) => Some(h.await.context("the synthetic chair")??.sites.into_iter().next().unwrap_or_default()),
        None => None,
    };
    let mut report = judge(scenario, sites, chair, started_unix, "in-process bridge on loopback".into());
    if let (Some(plan), Some(task)) = (&scenario.rollcall, rollcall_task) {
        let started_ms = task
            .await
            .context("the roll call task")?
            .context("the roll call task")?
            .map_err(|e| anyhow::anyhow!("starting the roll call: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("the roll call did not start"))?;
        let a = running.state.attendance(meeting).map_err(|e| anyhow::anyhow!("attendance report: {e}"))?;
        let count = |k: &str| a["totals"][k].as_u64().unwrap_or(0) as u32;
        let sites = scenario.sites as u32;
        let expected_absent = ((plan.silent_share * f64::from(sites)).round() as u32).min(sites);
        let last_answer_ms = a["sites"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["result"].as_str().is_some_and(|o| o.starts_with("present")))
            .filter_map(|r| r["result_at_ms"].as_i64())
            .max()
            .map(|t| t - started_ms);
        let r = diemcau_drill::drill::RollCallReport {
            sites,
            expected_present: sites - expected_absent,
            expected_absent,
            present: count("present"),
            absent: count("no_answer") + count("offline"),
            offline: count("offline"),
            matches: count("present") == sites - expected_absent
                && count("no_answer") + count("offline") == expected_absent,
            last_answer_ms,
        };
        report.passed &= r.matches;
        report.rollcall = Some(r);
    }
    Ok(report)
}
