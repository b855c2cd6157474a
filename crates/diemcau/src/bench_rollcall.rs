//! `diemcau bench rollcall`: the cost of one roll-call answer as the meeting grows — the controller's decide and
//! apply alone, and with the log entry written to a real SQLite file (WAL, `synchronous = FULL`) as the bridge does
//! before acknowledging. CPU time of the measuring thread (`/proc/thread-self/schedstat`), not wall time.

use std::time::Instant;

use anyhow::Context;
use diemcau_meeting::{Action, Controller, Input, RollCallMode};
use diemcau_proto::SiteKind;
use diemcau_store::{NewSite, Store};
use serde::Serialize;

/// One step of the bench.
#[derive(Debug, Serialize)]
pub struct RollCallStep {
    /// Invited sites (all answer).
    pub sites: usize,
    /// CPU per answer, controller only (decide + apply, with its share of the round's start and deadline), µs.
    pub controller_us: f64,
    /// CPU per answer with the log write, µs.
    pub with_store_us: f64,
    /// Wall time per answer with the log write, µs (fsync included).
    pub with_store_wall_us: f64,
}

/// CPU time of this thread, ns.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").context("reading /proc/thread-self/schedstat")?;
    s.split_whitespace().next().and_then(|v| v.parse().ok()).context("parsing schedstat")
}

/// Runs the bench for each number of sites in `steps`, in `dir` (a temporary SQLite file per step).
pub fn run(steps: &[usize], dir: &std::path::Path) -> anyhow::Result<Vec<RollCallStep>> {
    let mut out = Vec::new();
    for &n in steps {
        anyhow::ensure!(n >= 10, "--steps: at least 10 sites");
        // Controller only: whole rounds (start, 90% answer, the deadline decides the rest) repeated until about two
        // million answers, so the thread's CPU clock (updated at scheduler ticks) is read over seconds.
        let ids: Vec<i64> = (1..=n as i64).collect();
        let start = Action::StartRollCall { mode: RollCallMode::AllAtOnce, order: None, seconds: Some(60) };
        let answering: Vec<i64> = ids.iter().copied().filter(|i| i % 10 != 0).collect();
        let rounds = (2_000_000 / answering.len()).max(3);
        let t0 = thread_cpu_ns()?;
        for _ in 0..rounds {
            let mut c = Controller::new(ids.clone());
            let ev = c.decide(0, Input::Chair(start.clone()))?.context("start")?;
            let l = c.stamp(0, ev);
            c.apply(&l);
            for (k, s) in answering.iter().enumerate() {
                let at = 1 + k as i64;
                if let Some(ev) = c.decide(at, Input::Present { site_id: *s, audio: true, video: true })? {
                    let l = c.stamp(at, ev);
                    c.apply(&l);
                }
            }
            let ev = c.on_timeout(60_000).context("deadline")?;
            let l = c.stamp(60_000, ev);
            c.apply(&l);
            anyhow::ensure!(c.counts().present_av as usize == answering.len(), "every answer counted");
        }
        let controller_us = (thread_cpu_ns()? - t0) as f64 / 1000.0 / (rounds * answering.len()) as f64;

        // With the store: a real file, the sites and the meeting, every answer logged before it is applied.
        let path = dir.join(format!("rollcall-{n}.sqlite3"));
        let _ = std::fs::remove_file(&path);
        let store = Store::open(&path)?;
        let chair = store.insert_site(&NewSite {
            code: "BENCH-CHAIR".into(),
            name: "Chủ trì".into(),
            kind: SiteKind::Province,
            parent_id: None,
            link_hint: None,
        })?;
        let mut csv = String::from("code,name,kind,parent_code,link_hint\n");
        for i in 1..=n {
            csv.push_str(&format!("B-{i:06},Xã {i:06},commune,,\n"));
        }
        store.import_sites_csv(csv.as_bytes())?;
        let site_ids: Vec<i64> =
            store.sites()?.into_iter().filter(|s| s.code.starts_with("B-")).map(|s| s.id).collect();
        let meeting = store.create_meeting("Bench", chair, &site_ids)?;
        let mut c = Controller::new(site_ids.clone());
        let ev = c.decide(0, Input::Chair(start.clone()))?.context("start")?;
        let l = c.stamp(0, ev);
        store.append_control(meeting, &l)?;
        c.apply(&l);
        let wall = Instant::now();
        let t2 = thread_cpu_ns()?;
        for (k, s) in site_ids.iter().enumerate() {
            let at = 1 + k as i64;
            if let Some(ev) = c.decide(at, Input::Present { site_id: *s, audio: true, video: true })? {
                let l = c.stamp(at, ev);
                store.append_control(meeting, &l)?;
                c.apply(&l);
            }
        }
        let with_store_us = (thread_cpu_ns()? - t2) as f64 / 1000.0 / site_ids.len() as f64;
        let with_store_wall_us = wall.elapsed().as_secs_f64() * 1e6 / site_ids.len() as f64;
        drop(store);
        let _ = std::fs::remove_file(&path);
        out.push(RollCallStep { sites: n, controller_us, with_store_us, with_store_wall_us });
    }
    Ok(out)
}
