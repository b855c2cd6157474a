//! Dynacast in headless Chromium: the chair's grid has one tile and two communes join. The second is in no tile, so
//! the bridge asks its page to stop encoding its camera (its video encoding goes inactive) while the first keeps
//! sending; when the first leaves, the second takes the tile and its camera comes back on.

use std::time::{Duration, Instant};

use diemcau_e2e::browser::{ChromeDriver, eval_async, finish, second_site_url, wait_connected};
use thirtyfour::WebDriver;

const VIDEO_ACTIVE: &str = "(() => { const s = window.diemcau.pc && window.diemcau.pc.getSenders()
  .find((x) => x.track && x.track.kind === 'video'); const e = s && s.getParameters().encodings;
  return e && e.length ? e[0].active : null; })()";

async fn wait_active(browser: &WebDriver, want: bool, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = eval_async(browser, VIDEO_ACTIVE).await?;
        if v == want {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: video encoding active = {v}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwatched_site_stops_its_camera_until_it_gets_a_tile() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = diemcau::Config::for_tests(dir.path());
    cfg.meeting.grid_size = 1;
    let running = diemcau::start(cfg).await?;
    let second_url = second_site_url(&running)?;

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&running.links.chair).await?;
        wait_connected(&browser, "chair").await?;
        let first = browser.new_window().await?;
        browser.switch_to_window(first.clone()).await?;
        browser.goto(&running.links.site).await?;
        wait_connected(&browser, "first site").await?;
        // The first site holds the only tile before the second joins.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let other = browser.new_window().await?;
        browser.switch_to_window(other.clone()).await?;
        browser.goto(&second_url).await?;
        wait_connected(&browser, "second site").await?;
        wait_active(&browser, false, "the second site, in no tile").await?;
        browser.switch_to_window(first.clone()).await?;
        wait_active(&browser, true, "the first site, in the tile").await?;
        // The first site leaves: the second takes the tile and sends again.
        browser.close_window().await?;
        browser.switch_to_window(other).await?;
        wait_active(&browser, true, "the second site, now in the tile").await?;
        Ok(())
    }
    .await;
    finish(browser, cd, running, result).await
}
