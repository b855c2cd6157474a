//! Low-bandwidth profiles in headless Chromium.
//!
//! A commune whose latest link check recommended `low` joins: the bridge's welcome says so, and the page sends Opus in
//! 60 ms packets (≈ 17 a second instead of 50) and caps its camera at 150 kbit/s. A chair whose meeting invites no
//! commune weaker than that sends 20 ms packets; the chair of the demo meeting, which invites satellite communes
//! (`weakest_link` = `audio_only`), sends 60 ms packets and its 180p layer at 64 kbit/s, and the bridge sees that
//! layer arrive in three temporal layers (L1T3), whose 15 fps lower half is what a satellite commune receives.

use std::time::{Duration, Instant};

use diemcau_e2e::browser::{ChromeDriver, chair_layers_in, eval_async, finish, wait_connected};
use diemcau_proto::{LinkCheckResult, LinkProfile, Role};

/// Audio packets the page sent per second over 3 s.
const AUDIO_RATE: &str = "(async () => {
  const pc = window.diemcau.pc;
  const sent = async () => { let n = 0; (await pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'audio') n = s.packetsSent; }); return n; };
  const a = await sent();
  await new Promise((r) => setTimeout(r, 3000));
  return ((await sent()) - a) / 3;
})()";

/// The chair's 180p encoding: [maxBitrate, scalabilityMode].
const Q_ENCODING: &str = "(() => { const e = window.diemcau.pc.getSenders()
  .find((s) => s.track && s.track.kind === 'video').getParameters().encodings.find((e) => e.rid === 'q');
  return [e.maxBitrate ?? null, e.scalabilityMode ?? null]; })()";

/// The camera's encodings: [[maxBitrate, active], …], lowest first.
const VIDEO_CAP: &str = "window.diemcau.pc.getSenders().find((s) => s.track && s.track.kind === 'video')
  .getParameters().encodings.map((e) => [e.maxBitrate ?? null, e.active])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_links_send_60_ms_opus_and_the_chair_sends_temporal_layers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let running = diemcau::start(diemcau::Config::for_tests(dir.path())).await?;
    let checked = LinkCheckResult {
        down_kbps: Some(400.0),
        down_saturated: true,
        up_kbps: Some(250.0),
        up_saturated: true,
        down_loss_pct: Some(1.0),
        up_loss_pct: Some(1.0),
        rtt_ms: Some(220.0),
        recommended: LinkProfile::Low,
        steps: Vec::new(),
        duration_ms: 13_000,
    };
    running.state.store().record_link_check(running.demo.first_commune_id, None, 1, &checked)?;

    // A second meeting of the same chair that invites only the commune above (`low`, not `audio_only`).
    let store = running.state.store();
    let plain = store.create_meeting("Họp giao ban", running.demo.chair_site_id, &[running.demo.first_commune_id])?;
    let plain_chair = format!(
        "{}/chair?token={}",
        running.base_url,
        running.state.mint_token(plain, running.demo.chair_site_id, Role::Chair, 3600)
    );

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&plain_chair).await?;
        wait_connected(&browser, "chair of a meeting without satellite communes").await?;
        let plain_weakest = eval_async(&browser, "window.diemcau.weakest").await?;
        let plain_rate = eval_async(&browser, AUDIO_RATE).await?.as_f64().unwrap_or(0.0);
        anyhow::ensure!(plain_weakest == "low", "weakest link of the plain meeting: {plain_weakest}");
        anyhow::ensure!(plain_rate > 40.0, "plain chair audio packets/s {plain_rate} (20 ms packets = 50)");

        browser.goto(&running.links.chair).await?;
        wait_connected(&browser, "chair").await?;
        let chair_profile = eval_async(&browser, "window.diemcau.profile").await?;
        anyhow::ensure!(chair_profile.is_null(), "the chair has no profile: {chair_profile}");
        let weakest = eval_async(&browser, "window.diemcau.weakest").await?;
        anyhow::ensure!(weakest == "audio_only", "weakest link of the demo meeting: {weakest}");
        let q = eval_async(&browser, Q_ENCODING).await?;
        anyhow::ensure!(q == serde_json::json!([64_000, "L1T3"]), "the chair's q encoding {q}");
        let chair_rate = settled_rate(&browser).await?;
        anyhow::ensure!((12.0..=21.0).contains(&chair_rate), "chair audio packets/s {chair_rate} (60 ms ≈ 16.7)");
        let layers = temporal_layers_in(&running, "q").await?;
        anyhow::ensure!(layers == 3, "the bridge sees {layers} temporal layers in the chair's q layer");

        let site = browser.new_window().await?;
        browser.switch_to_window(site).await?;
        browser.goto(&running.links.site).await?;
        wait_connected(&browser, "site").await?;
        let profile = eval_async(&browser, "window.diemcau.profile").await?;
        anyhow::ensure!(profile == "low", "the site's welcome profile: {profile}");
        // `low` caps the camera at 150 kbit/s: q only (at the 64 kbit/s of a meeting with satellite communes; h would
        // have the 86 left, too few for its 500).
        let cap = eval_async(&browser, VIDEO_CAP).await?;
        anyhow::ensure!(cap == serde_json::json!([[64_000, true], [86_000, false]]), "video encodings {cap}");
        let rate = settled_rate(&browser).await?;
        anyhow::ensure!((12.0..=21.0).contains(&rate), "site audio packets/s {rate} (60 ms packets ≈ 16.7)");
        Ok(())
    }
    .await;
    finish(browser, cd, running, result).await
}

/// Audio packets per second once the encoder has settled on the answer's ptime (within 20 s).
async fn settled_rate(browser: &thirtyfour::WebDriver) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = eval_async(browser, AUDIO_RATE).await?.as_f64().unwrap_or(0.0);
        if (12.0..=21.0).contains(&r) || Instant::now() > deadline {
            return Ok(r);
        }
    }
}

/// The temporal layers the bridge sees in the demo chair's simulcast layer `rid` (waits up to 10 s for it).
async fn temporal_layers_in(running: &diemcau::Running, rid: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let layers = chair_layers_in(running).await?;
        let n = layers.iter().find(|l| l["rid"] == rid).and_then(|l| l["temporal_layers"].as_u64()).unwrap_or(0);
        if n >= 3 || Instant::now() > deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
