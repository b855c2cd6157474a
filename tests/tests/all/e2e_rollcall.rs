//! The roll call as the chair runs it, in headless Chromium: the chair's console and three commune pages with fake
//! cameras and microphones. The chair starts a roll call from its console; two communes press "Có mặt", the third
//! never does → the attendance report (the console's links: JSON behind it, the CSV downloaded and parsed) shows two
//! present with audio and video and one without answer. Then the chair gives the floor to the second commune from
//! its roster → the first commune's page decodes the second's picture and receives its sound.

use std::time::Duration;

use diemcau_e2e::browser::{ChromeDriver, eval_async, finish, per_site, wait_connected, wait_js};
use diemcau_proto::Role;
use thirtyfour::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chair_calls_the_roll_gives_the_floor_and_files_the_report() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = diemcau::Config::for_tests(dir.path());
    let running = diemcau::start(cfg).await?;
    let meeting = running.state.store().meeting(running.demo.meeting_id)?.ok_or_else(|| anyhow::anyhow!("demo"))?;
    let sites: Vec<i64> = meeting.invited.iter().copied().take(3).collect();
    let url = |s: i64| format!("{}/site?token={}", running.base_url, running.token(Role::Site, s));
    let chair_token = running.token(Role::Chair, running.demo.chair_site_id);

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&running.links.chair).await?;
        wait_connected(&browser, "chair").await?;
        let chair = browser.window().await?;
        let mut windows = Vec::new();
        for (i, s) in sites.iter().enumerate() {
            let w = browser.new_window().await?;
            browser.switch_to_window(w.clone()).await?;
            browser.goto(&url(*s)).await?;
            wait_connected(&browser, &format!("site {i}")).await?;
            windows.push(w);
        }
        // Media flows from every site before the roll call (the bridge checks it arrived).
        for (i, w) in windows.iter().enumerate() {
            browser.switch_to_window(w.clone()).await?;
            wait_js(
                &browser,
                "window.diemcau.stats && window.diemcau.stats.frames_decoded > 0",
                30,
                &format!("site {i} decoding the chair"),
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        // The chair starts an all-at-once roll call of 15 s from its console.
        browser.switch_to_window(chair.clone()).await?;
        browser.find(By::Id("rc-secs")).await?.send_keys("15").await?;
        browser.find(By::Id("rc-start")).await?.click().await?;
        // Sites 0 and 1 see the prompt with its countdown and press "Có mặt"; site 2 never does.
        for (i, w) in windows.iter().take(2).enumerate() {
            browser.switch_to_window(w.clone()).await?;
            wait_js(
                &browser,
                "!document.querySelector('#rollcall').hidden",
                10,
                &format!("site {i}'s roll-call prompt"),
            )
            .await?;
            let left = eval_async(&browser, "document.querySelector('#rc-left').textContent").await?;
            anyhow::ensure!(left.as_str().is_some_and(|s| s.chars().any(|c| c.is_ascii_digit())), "countdown {left}");
            browser.find(By::Id("present")).await?.click().await?;
            wait_js(
                &browser,
                "document.querySelector('#rollcall').hidden && window.diemcau.control?.result?.outcome",
                10,
                &format!("site {i}'s answer"),
            )
            .await?;
        }
        browser.switch_to_window(windows[2].clone()).await?;
        wait_js(&browser, "!document.querySelector('#rollcall').hidden", 10, "site 2's prompt").await?;
        // The deadline passes; the console shows the results.
        browser.switch_to_window(chair.clone()).await?;
        wait_js(
            &browser,
            "window.diemcau.ctl && window.diemcau.ctl.rounds === 1 && !window.diemcau.ctl.roll_call",
            30,
            "the roll call's end",
        )
        .await?;
        // The roster redraws at most every 100 ms (a site still called shows its countdown until then): wait for
        // the badges rather than read them once.
        let badges = format!(
            "JSON.stringify([{}].map((id) => document.querySelector(`#roster li[data-id=\"${{id}}\"] .rc`)?.dataset.outcome || null))",
            sites.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
        );
        let want = r#"["present_av","present_av","no_answer"]"#;
        if wait_js(&browser, &format!("{badges} === '{want}'"), 5, "roster badges").await.is_err() {
            let got = eval_async(&browser, &badges).await?;
            anyhow::bail!("roster badges {got}, wanted {want}");
        }

        // The report, from the console's links.
        let report_href = eval_async(&browser, "document.querySelector('#rc-report').href").await?;
        let csv_href = eval_async(&browser, "document.querySelector('#rc-csv').href").await?;
        let page = reqwest::get(report_href.as_str().unwrap_or_default()).await?.text().await?;
        anyhow::ensure!(page.contains("Báo cáo điểm danh"), "report page {page:.300}");
        let json_url = format!("{}/api/meetings/{}/attendance?token={chair_token}", running.base_url, meeting.id);
        let report: serde_json::Value = reqwest::get(&json_url).await?.json().await?;
        let outcome = |s: i64| {
            report["sites"].as_array().and_then(|a| a.iter().find(|r| r["site_id"] == s)).map(|r| r["result"].clone())
        };
        anyhow::ensure!(
            [outcome(sites[0]), outcome(sites[1]), outcome(sites[2])]
                == [Some("present_av".into()), Some("present_av".into()), Some("no_answer".into())],
            "report {report}"
        );
        anyhow::ensure!(
            report["totals"]["present_av"] == 2 && report["totals"]["no_answer"] == 1,
            "{}",
            report["totals"]
        );
        let csv = reqwest::get(csv_href.as_str().unwrap_or_default()).await?.bytes().await?;
        anyhow::ensure!(csv.starts_with("\u{feff}".as_bytes()), "the CSV starts with a BOM");
        let text = std::str::from_utf8(&csv[3..])?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let code =
            header.iter().position(|h| *h == "Mã kết quả").ok_or_else(|| anyhow::anyhow!("header {header:?}"))?;
        let names: Vec<String> = sites
            .iter()
            .map(|s| running.state.store().site(*s).ok().flatten().map(|x| x.name).unwrap_or_default())
            .collect();
        let mut found = Vec::new();
        for line in lines {
            // Names have no commas in the demo directory; the CSV quotes a field only when it must.
            let cells: Vec<&str> = line.split(',').collect();
            if let Some(i) = names.iter().position(|n| cells.get(1) == Some(&n.as_str())) {
                found.push((i, cells.get(code).copied().unwrap_or_default().to_owned()));
            }
        }
        found.sort();
        anyhow::ensure!(
            found == vec![(0, "present_av".into()), (1, "present_av".into()), (2, "no_answer".into())],
            "CSV rows {found:?}"
        );

        // The floor to site 1, from the chair's roster.
        browser.find(By::Css(format!("#roster li[data-id=\"{}\"] .fl", sites[1]))).await?.click().await?;
        browser.switch_to_window(windows[0].clone()).await?;
        wait_js(&browser, "!document.querySelector('#floor').hidden", 10, "site 0 told who holds the floor").await?;
        let before_v = per_site(&browser, false).await?.get(&sites[1]).copied().unwrap_or(0);
        let before_a = per_site(&browser, true).await?.get(&sites[1]).copied().unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let after_v = per_site(&browser, false).await?.get(&sites[1]).copied().unwrap_or(0);
        let after_a = per_site(&browser, true).await?.get(&sites[1]).copied().unwrap_or(0);
        anyhow::ensure!(after_v > before_v + 5, "site 0 decodes site 1's picture: {before_v} → {after_v} frames");
        anyhow::ensure!(after_a > before_a, "site 0 receives site 1's sound: {before_a} → {after_a} bytes");

        // One by one in a chosen order: the chair ticks site 2, then site 0, on its roster.
        browser.switch_to_window(chair.clone()).await?;
        eval_async(&browser, "(() => { const m = document.querySelector('#rc-mode'); m.value = 'one_by_one'; m.dispatchEvent(new Event('change')); })()").await?;
        for s in [sites[2], sites[0]] {
            let bx = format!("#roster li[data-id=\"{s}\"] > .row .ord-x");
            wait_js(&browser, &format!("!!document.querySelector('{bx}')"), 5, "the order boxes").await?;
            browser.find(By::Css(bx)).await?.click().await?;
            tokio::time::sleep(Duration::from_millis(300)).await; // the roster redraws
        }
        browser.find(By::Id("rc-start")).await?.click().await?;
        let want = format!("[{},{}]", sites[2], sites[0]);
        let got = wait_js(&browser, "window.diemcau.ctl.roll_call && JSON.stringify(window.diemcau.ctl.roll_call.sites)", 10, "the one-by-one roll call").await?;
        anyhow::ensure!(got == want.as_str(), "called {got}, ticked {want}");
        let calling = eval_async(&browser, "window.diemcau.ctl.roll_call.calling").await?;
        anyhow::ensure!(calling == sites[2], "the first ticked is called first: {calling}");
        // The console shows its stop button when it redraws with the roll call (after the state reached the page).
        wait_js(&browser, "!document.querySelector('#rc-cancel').hidden", 5, "the stop button").await?;
        browser.find(By::Id("rc-cancel")).await?.click().await?;
        Ok(())
    }
    .await;
    finish(browser, cd, running, result).await
}
