//! A commune whose latest link check recommended `low` joins from headless Chromium: the bridge's welcome says so,
//! and the page sends Opus in 60 ms packets (≈ 17 a second instead of 50) and caps its camera at 150 kbit/s, while
//! the chair, with no such profile, sends 20 ms packets.

use std::time::{Duration, Instant};

use diemcau_e2e::browser::{ChromeDriver, eval_async, finish, wait_connected};
use diemcau_proto::{LinkCheckResult, LinkProfile};

/// Audio packets the page sent per second over 3 s.
const AUDIO_RATE: &str = "(async () => {
  const pc = window.diemcau.pc;
  const sent = async () => { let n = 0; (await pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'audio') n = s.packetsSent; }); return n; };
  const a = await sent();
  await new Promise((r) => setTimeout(r, 3000));
  return ((await sent()) - a) / 3;
})()";

const VIDEO_CAP: &str = "window.diemcau.pc.getSenders().find((s) => s.track && s.track.kind === 'video')
  .getParameters().encodings[0].maxBitrate ?? null";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_on_a_weak_link_sends_60_ms_opus_and_capped_video() -> anyhow::Result<()> {
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

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&running.links.chair).await?;
        wait_connected(&browser, "chair").await?;
        let chair_profile = eval_async(&browser, "window.diemcau.profile").await?;
        let chair_rate = eval_async(&browser, AUDIO_RATE).await?.as_f64().unwrap_or(0.0);

        let site = browser.new_window().await?;
        browser.switch_to_window(site).await?;
        browser.goto(&running.links.site).await?;
        wait_connected(&browser, "site").await?;
        let profile = eval_async(&browser, "window.diemcau.profile").await?;
        anyhow::ensure!(profile == "low", "the site's welcome profile: {profile}");
        let cap = eval_async(&browser, VIDEO_CAP).await?;
        anyhow::ensure!(cap == 150_000, "video maxBitrate {cap}");
        // Let the encoder settle on the answer's ptime, then count.
        let deadline = Instant::now() + Duration::from_secs(20);
        let rate = loop {
            let r = eval_async(&browser, AUDIO_RATE).await?.as_f64().unwrap_or(0.0);
            if (12.0..=21.0).contains(&r) || Instant::now() > deadline {
                break r;
            }
        };
        anyhow::ensure!((12.0..=21.0).contains(&rate), "site audio packets/s {rate} (60 ms packets ≈ 16.7)");
        anyhow::ensure!(chair_profile.is_null(), "the chair has no profile: {chair_profile}");
        anyhow::ensure!(chair_rate > 40.0, "chair audio packets/s {chair_rate} (20 ms packets = 50)");
        Ok(())
    }
    .await;
    finish(browser, cd, running, result).await
}
