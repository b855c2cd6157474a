//! A drill end to end: the shipped `config/drills/rural-mix.toml`, scaled down to fit the test suite (24 sites, 12 s),
//! runs against a bridge in this process with a synthetic chair; report.json must account for every site and every
//! second, and report.html, opened from disk in headless Chromium (no server: it must work offline), must draw every
//! chart with its data lines and show the same verdict as the JSON.

use std::path::Path;
use std::time::Duration;

use diemcau_e2e::browser::ChromeDriver;

const SITES: usize = 24;
const SECONDS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rural_mix_drill_writes_a_report_that_renders_in_chromium() -> anyhow::Result<()> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/drills/rural-mix.toml");
    let mut scenario = diemcau_drill::Scenario::load(&file)?;
    scenario.sites = SITES;
    scenario.duration = Duration::from_secs(SECONDS);
    scenario.join_spread = Duration::from_secs(3);

    // The drill (24 synthetic sites and a bridge) not beside a browser test; the turn is given back before this test
    // starts its own browser (which takes it again).
    let turn = diemcau_e2e::browser::heavy_test_turn().await;
    let data = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let mut ticks = 0;
    let mut live = String::new();
    let output = diemcau::drill::run(
        diemcau::Config::for_tests(data.path()),
        &scenario,
        out.path(),
        |u| live = u.to_string(),
        |_| ticks += 1,
    )
    .await?;
    assert!(ticks >= SECONDS as usize - 2, "progress was reported {ticks} times in {SECONDS} s");
    // The technician page of the drill's own bridge was offered for watching it live.
    assert!(live.starts_with("http://127.0.0.1:") && live.contains("/tech?token="), "live link: {live:?}");

    // report.json: every site, every preset of the mix with its share, one point per second.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&output.json)?)?;
    let sites = json["sites"].as_array().ok_or_else(|| anyhow::anyhow!("no sites"))?;
    assert_eq!(sites.len(), SITES);
    let count = |p: &str| sites.iter().filter(|s| s["profile"] == p).count();
    // 40/40/20 of 24 by largest remainder: 9.6, 9.6, 4.8 → 10, 9, 5 or 9, 10, 5.
    assert_eq!(count("3g") + count("adsl"), 19, "{:?}", (count("3g"), count("adsl")));
    assert_eq!(count("vsat"), 5);
    assert_eq!(json["chair"]["connected"], true, "the synthetic chair: {}", json["chair"]);
    let adsl = &json["profiles"].as_array().unwrap().iter().find(|p| p["profile"] == "adsl").unwrap();
    assert_eq!(adsl["connected"], adsl["sites"], "{adsl}");
    assert_eq!(adsl["with_video"], adsl["sites"], "every ADSL commune decodes the chair: {adsl}");
    for s in json["series"].as_array().unwrap() {
        let points = s["points"].as_array().unwrap();
        assert!(points.len() as u64 >= SECONDS - 1, "{} has {} points", s["profile"], points.len());
    }
    let adsl_series = json["series"].as_array().unwrap().iter().find(|s| s["profile"] == "adsl").unwrap();
    let last = adsl_series["points"].as_array().unwrap().last().unwrap();
    assert!(last["kbps_mean"].as_f64().unwrap() > 100.0, "ADSL sites receive the chair's 500 kbit/s: {last}");
    // The drill's chair sends simulcast and the bridge adapts (the defaults): 8 Mbit/s carries 360p or 720p, never
    // only 180p.
    let at = |h: &str| last["layers"][h].as_u64().unwrap_or(0);
    assert_eq!(at("360") + at("720"), last["watching"].as_u64().unwrap_or(u64::MAX), "ADSL layers: {last}");
    assert_eq!(json["passed"].as_bool(), Some(output.report.passed));

    // report.html from disk in Chromium.
    drop(turn);
    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&format!("file://{}", output.html.display())).await?;
        let charts = browser
            .execute(
                "const r = window.drillReport; if (!r || !r.ready) return null; \
                 return r.charts.map(c => { const cv = document.getElementById(c.id); \
                   const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data; let ink = 0; \
                   for (let i = 0; i < d.length; i += 4) { const mx = Math.max(d[i], d[i+1], d[i+2]), \
                     mn = Math.min(d[i], d[i+1], d[i+2]); if (d[i+3] > 0 && mx - mn > 60) ink++; } \
                   return { id: c.id, drawn: c.drawn, lines: c.lines, points: c.points, ink, w: cv.width }; });",
                vec![],
            )
            .await?
            .json()
            .clone();
        let charts = charts.as_array().ok_or_else(|| anyhow::anyhow!("the report's script did not run: {charts}"))?;
        assert_eq!(charts.len(), 6, "{charts:?}");
        for c in charts {
            // Coloured pixels are the data lines only: grid, text and background are grey or white.
            assert_eq!(c["drawn"], true, "{c}");
            assert!(c["w"].as_u64().unwrap_or(0) > 200, "{c}");
            assert!(c["ink"].as_u64().unwrap_or(0) > 100, "chart without its lines: {c}");
        }
        let verdict = browser.execute("return document.getElementById('verdict').textContent;", vec![]).await?;
        let verdict = verdict.json().as_str().unwrap_or_default().to_owned();
        let want = if output.report.passed { "ĐẠT · PASSED" } else { "KHÔNG ĐẠT · FAILED" };
        assert!(verdict.starts_with(want), "{verdict:?} for passed = {}", output.report.passed);
        let rows = browser.execute("return document.querySelectorAll('#sites tr').length;", vec![]).await?;
        assert_eq!(rows.json().as_u64(), Some(SITES as u64 + 1), "a row per site and the header");
        anyhow::Ok(())
    }
    .await;
    browser.quit().await?;
    result
}
