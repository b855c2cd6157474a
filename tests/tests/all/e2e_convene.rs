//! Emergency convening in headless Chromium: a commune's standby page is open; the chair picks a whole district
//! (the commune's) in its console's convene panel and convenes → the standby page rings with the meeting's title,
//! its staff press "Tham gia" and the page joins the new meeting with picture and sound; the chair opens the new
//! meeting's console from the panel's link and sees the commune connected and the others marked "no page open".

use diemcau_e2e::browser::{ChromeDriver, eval_async, finish, wait_connected, wait_js};
use thirtyfour::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chair_convenes_a_district_and_a_standby_commune_answers_the_ring() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = diemcau::Config::for_tests(dir.path());
    let running = diemcau::start(cfg).await?;
    let store = running.state.store().clone();
    let commune = store.site(running.demo.first_commune_id)?.ok_or_else(|| anyhow::anyhow!("first commune"))?;
    let district = commune.parent_id.ok_or_else(|| anyhow::anyhow!("the commune has a district"))?;
    let under: Vec<i64> = store.sites()?.into_iter().filter(|s| s.parent_id == Some(district)).map(|s| s.id).collect();
    let title = "Họp khẩn: ứng phó mưa lũ";

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        // The commune's standby page.
        browser.goto(&running.links.standby).await?;
        wait_js(&browser, "window.diemcau?.standby?.site_id", 15, "the standby page ready").await?;
        let standby = browser.window().await?;
        let shown = eval_async(&browser, "document.querySelector('#sb-site').textContent").await?;
        anyhow::ensure!(shown == commune.name.as_str(), "standby page shows {shown}");

        // The chair convenes the commune's district with everything under it.
        let chair = browser.new_window().await?;
        browser.switch_to_window(chair.clone()).await?;
        browser.goto(&running.links.chair).await?;
        wait_connected(&browser, "chair").await?;
        browser.find(By::Id("cv-open")).await?.click().await?;
        let tick = format!("#cv-tree li[data-id=\"{district}\"] > .row .cv-t");
        wait_js(&browser, &format!("!!document.querySelector('{tick}')"), 10, "the directory in the panel").await?;
        browser.find(By::Id("cv-name")).await?.send_keys(title).await?;
        browser.find(By::Css(tick)).await?.click().await?;
        let picked = eval_async(&browser, "document.querySelector('#cv-picked').textContent").await?;
        let n = under.len() + 1;
        anyhow::ensure!(picked.as_str().is_some_and(|p| p.contains(&n.to_string())), "picked {picked}, want {n}");
        browser.find(By::Id("cv-go")).await?.click().await?;
        let meeting = wait_js(&browser, "Number(document.querySelector('#cv-result').dataset.meeting)", 10, "convened")
            .await?
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("meeting id"))?;
        let stored = store.meeting(meeting)?.ok_or_else(|| anyhow::anyhow!("meeting {meeting} stored"))?;
        let mut want: Vec<i64> = under.clone();
        want.push(district);
        want.sort_unstable();
        let mut got = stored.invited.clone();
        got.sort_unstable();
        anyhow::ensure!(got == want, "invited {got:?}, want the district and its communes {want:?}");
        anyhow::ensure!(stored.title == title, "title {}", stored.title);
        let line = eval_async(&browser, "document.querySelector('#cv-result').textContent").await?;
        anyhow::ensure!(line.as_str().is_some_and(|l| l.contains(&format!("mời {n} điểm cầu"))), "result {line}");

        // The standby page rings; "Tham gia" joins the new meeting.
        browser.switch_to_window(standby.clone()).await?;
        wait_js(&browser, "!document.querySelector('#incoming').hidden", 10, "the incoming-meeting prompt").await?;
        let shown = eval_async(&browser, "document.querySelector('#inc-title').textContent").await?;
        anyhow::ensure!(shown == title, "prompt shows {shown}");
        browser.find(By::Id("inc-join")).await?.click().await?;
        wait_js(&browser, &format!("window.diemcau?.welcome?.meeting_id === {meeting}"), 15, "joined the new meeting")
            .await?;
        wait_connected(&browser, "the commune in the convened meeting").await?;
        let url = browser.current_url().await?;
        anyhow::ensure!(url.query().is_some_and(|q| q.contains("standby=")), "the standby link is kept: {url}");

        // The chair opens the new meeting's console from the panel.
        browser.switch_to_window(chair.clone()).await?;
        let href = eval_async(&browser, "document.querySelector('#cv-enter').href").await?;
        browser.goto(href.as_str().unwrap_or_default()).await?;
        wait_connected(&browser, "chair of the convened meeting").await?;
        let row = |id: i64| format!("document.querySelector('#roster li[data-id=\"{id}\"]')");
        wait_js(
            &browser,
            &format!("{}?.classList.contains('ps-connected')", row(commune.id)),
            20,
            "the commune connected on the new roster",
        )
        .await?;
        let others: Vec<String> = want
            .iter()
            .filter(|id| **id != commune.id)
            .map(|id| format!("{}?.querySelector('.ring')?.dataset.ring", row(*id)))
            .collect();
        let rings = wait_js(
            &browser,
            &format!(
                "(() => {{ const r = [{}]; return r.every((x) => x === 'unreachable') && JSON.stringify(r); }})()",
                others.join(",")
            ),
            10,
            "the others marked no page open",
        )
        .await?;
        anyhow::ensure!(rings.as_str().is_some_and(|r| r.matches("unreachable").count() == want.len() - 1), "{rings}");
        Ok(())
    }
    .await;
    finish(browser, cd, running, result).await
}
