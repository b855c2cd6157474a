//! The roll-call drill end to end: the shipped `config/drills/rollcall.toml` scaled down (300 signalling-only
//! communes, a 6 s roll call): the swarm answers after seeded random delays, a tenth never answers, and the drill's
//! report — read from the bridge's attendance report — counts exactly the planned present and absent sites.

use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roll_call_drill_counts_match_the_silent_share() -> anyhow::Result<()> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/drills/rollcall.toml");
    let mut scenario = diemcau_drill::Scenario::load(&file)?;
    assert!(!scenario.sites_media, "the shipped drill is signalling only");
    scenario.sites = 300;
    scenario.join_spread = Duration::from_secs(2);
    scenario.duration = Duration::from_secs(14);
    let plan = scenario.rollcall.as_mut().ok_or_else(|| anyhow::anyhow!("the shipped file has a [rollcall]"))?;
    assert_eq!(plan.silent_share, 0.1);
    plan.start = Duration::from_secs(4);
    plan.seconds = 6;
    plan.answer_within = Duration::from_secs(4);

    // Not beside a browser test or another drill: 300 clients and the bridge in this process take both cores.
    let _turn = diemcau_e2e::browser::heavy_test_turn().await;
    let data = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let output =
        diemcau::drill::run(diemcau::Config::for_tests(data.path()), &scenario, out.path(), |_| {}, |_| {}).await?;
    let rc = output.report.rollcall.ok_or_else(|| anyhow::anyhow!("no roll call in the report"))?;
    assert_eq!((rc.sites, rc.expected_present, rc.expected_absent), (300, 270, 30));
    assert_eq!((rc.present, rc.absent), (270, 30), "{rc:?}");
    assert!(rc.matches && output.report.passed, "{rc:?}");
    // Every answer was recorded within the answer window (plus the bridge's handling), before the deadline.
    assert!(rc.last_answer_ms.is_some_and(|t| t < 6_000), "{rc:?}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&output.json)?)?;
    assert_eq!(json["rollcall"]["present"], 270);
    Ok(())
}
