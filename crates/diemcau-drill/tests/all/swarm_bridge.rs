//! A swarm against the real bridge, in process: a synthetic chair publishes 500 kbit/s VP8-shaped video and Opus-shaped
//! audio; ten synthetic communes (half on fibre, half on 3G, each behind its own emulated link) join through the
//! signalling, connect with ICE/DTLS/SRTP and must all receive the chair, 3G ones with video FEC. Prints the swarm's CPU cost per received
//! packet (`swarm cost:`).

use std::time::Duration;

use diemcau_drill::{Swarm, SwarmConfig, parse_mix};
use diemcau_proto::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sites_on_fibre_and_3g_receive_the_chair() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let running = diemcau::start(diemcau::Config::for_tests(dir.path())).await?;
    let ws_url = format!("ws://{}/ws", running.http_addr);
    let meeting = running.demo.meeting_id;

    let chair_id = running.demo.chair_site_id;
    let mut chair = SwarmConfig::new(ws_url.clone(), vec![(chair_id, running.token(Role::Chair, chair_id))]);
    chair.publish = true;
    chair.duration = Duration::from_secs(10);
    chair.seed = 7;

    let invited = running.state.store().invited_sites(meeting)?;
    assert!(invited.len() >= 10, "the demo invites {} sites", invited.len());
    let tokens: Vec<(i64, String)> = invited.iter().take(10).map(|s| (s.id, running.token(Role::Site, s.id))).collect();
    let mut sites = SwarmConfig::new(ws_url, tokens);
    sites.mix = parse_mix("fibre:50,3g:50")?;
    sites.duration = Duration::from_secs(8);
    sites.join_spread = Duration::from_secs(1);
    sites.seed = 11;

    let chair_run = tokio::spawn(Swarm::new(chair)?.run(|_| {}));
    // Let the chair connect first, as in a real meeting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = Swarm::new(sites)?
        .run(|p| {
            eprintln!(
                "{:>4.1} s: {}/{} joined, {} connected, {} with video",
                p.elapsed.as_secs_f64(),
                p.joined,
                p.sites,
                p.connected,
                p.receiving_video
            )
        })
        .await?;
    let chair_report = chair_run.await??;
    running.shutdown().await;

    for s in &report.sites {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
        eprintln!(
            "site {:>3} {:<6} connected {:>7}, first frame {:>7}, {:>4} frames, audio continuity {:.3}, loss after repair \
             {:.4}",
            s.site_id,
            s.profile,
            ms(s.connect_ms),
            ms(s.first_frame_ms),
            s.video.frames,
            s.audio.continuity.unwrap_or(0.0),
            s.loss_after_repair
        );
    }
    eprintln!("{}", serde_json::to_string_pretty(&report.profiles)?);
    eprintln!("swarm cost over {:.1} s: {}", report.duration_ms / 1000.0, report.cost);

    let chair_site = &chair_report.sites[0];
    assert!(chair_site.connected, "chair: {chair_site:?}");
    assert_eq!(chair_site.role, "chair");
    // Ten sites joining within a second each ask for a keyframe (and 3G sites again after a loss): the bridge lets
    // at most one through per 500 ms, so over the chair's 10 s at most 2 a second reach it.
    let published = chair_site.published.ok_or("the chair published nothing")?;
    assert!(published.keyframes > 0);
    let secs = chair_site.duration_ms / 1000.0;
    let asked: u64 = report.sites.iter().map(|s| s.video.keyframe_requests).sum();
    eprintln!(
        "keyframe requests: sites sent {asked} PLIs (+ 10 joins); {} reached the chair",
        published.keyframe_requests
    );
    assert!(
        (published.keyframe_requests as f64) <= 2.0 * secs + 1.0,
        "{} keyframe requests reached the chair in {secs:.1} s",
        published.keyframe_requests
    );
    // Each of the ten joins asked within about a second: fewer than ten got through (4 in the run that set this).
    assert!(published.keyframe_requests < 10, "{} requests reached the chair", published.keyframe_requests);

    assert_eq!(report.sites.len(), 10);
    for s in &report.sites {
        let what = serde_json::to_string(s)?;
        assert!(s.error.is_none(), "{what}");
        assert!(s.connected, "{what}");
        assert_eq!(s.role, "site");
        assert!(s.video.frames > 0 && s.video.keyframes > 0, "no chair video: {what}");
        assert!(s.audio.packets > 0, "no chair audio: {what}");
        let ttff = s.first_frame_ms.unwrap_or(f64::INFINITY);
        assert!(ttff < 3_000.0, "time to first frame {ttff} ms: {what}");
        if s.profile == "fibre" {
            let cont = s.audio.continuity.unwrap_or(0.0);
            assert!(cont > 0.9, "audio continuity {cont} on fibre: {what}");
        }
    }
    // Video FEC goes only where the reports show loss: fibre loses nothing and gets none; 3G (1% loss) gets it once
    // a report shows a loss (one report in two, over the few reports of 8 s: not every 3G site does).
    for s in &report.sites {
        eprintln!(
            "site {} {}: {} FEC packets, {} packets rebuilt",
            s.site_id, s.profile, s.video.fec_packets, s.video.fec_recovered
        );
        if s.profile == "fibre" {
            assert_eq!(s.video.fec_packets, 0, "FEC toward lossless site {}", s.site_id);
        }
    }
    let fec_3g: u64 = report.sites.iter().filter(|s| s.profile == "3g").map(|s| s.video.fec_packets).sum();
    assert!(fec_3g > 0, "no FEC toward the 3G sites");
    let fibre = report.profiles.iter().find(|p| p.profile == "fibre").ok_or("no fibre summary")?;
    let g3 = report.profiles.iter().find(|p| p.profile == "3g").ok_or("no 3g summary")?;
    assert_eq!((fibre.sites, fibre.connected, g3.sites, g3.connected), (5, 5, 5, 5));
    assert!(report.cost.rtp_packets > 0);
    Ok(())
}

/// A chair publishing three simulcast layers (q 320×180, h 640×360, f 1280×720) and sites on different links: the
/// bridge estimates each site's downlink and chooses its layer. Fibre sites climb from the lowest layer to 720p; a
/// VSAT site (128 kbit/s) never gets more than 180p — it ends on audio alone when even that does not fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_site_receives_the_simulcast_layer_its_link_carries() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut cfg = diemcau::Config::for_tests(dir.path());
    cfg.media.adaptive = true;
    let running = diemcau::start(cfg).await?;
    let ws_url = format!("ws://{}/ws", running.http_addr);
    let chair_id = running.demo.chair_site_id;
    let mut chair = SwarmConfig::new(ws_url.clone(), vec![(chair_id, running.token(Role::Chair, chair_id))]);
    chair.publish = true;
    chair.publisher.simulcast = true;
    chair.duration = Duration::from_secs(16);
    let invited = running.state.store().invited_sites(running.demo.meeting_id)?;
    let tokens: Vec<(i64, String)> = invited.iter().take(3).map(|s| (s.id, running.token(Role::Site, s.id))).collect();
    let mut sites = SwarmConfig::new(ws_url, tokens);
    sites.mix = parse_mix("fibre:67,vsat:33")?;
    sites.duration = Duration::from_secs(14);
    // The directory knows the satellite site's link (as a drill's directory does): the bridge starts its estimate
    // low enough that it never sends that site video.
    let presets = diemcau_drill::swarm::assign_presets(&sites.mix, 3, sites.seed);
    let vsat_site = invited.iter().zip(&presets).find(|(_, p)| **p == 1).map(|(s, _)| s).ok_or("no vsat site")?;
    let csv = format!(
        "code,name,kind,parent_code,link_hint\n{},{},{},,vsat\n",
        vsat_site.code,
        vsat_site.name,
        vsat_site.kind.as_str()
    );
    running.state.store().import_sites_csv(csv.as_bytes())?;

    let chair_run = tokio::spawn(Swarm::new(chair)?.run(|_| {}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = Swarm::new(sites)?.run(|_| {}).await?;
    let chair_report = chair_run.await??;
    running.shutdown().await;

    assert!(chair_report.sites[0].connected);
    let series = |profile: &str| {
        report.series.iter().find(|s| s.profile == profile).map(|s| s.points.clone()).unwrap_or_default()
    };
    let fibre = series("fibre");
    let last = fibre.last().ok_or("no fibre series")?;
    eprintln!("fibre layers by second: {:?}", fibre.iter().map(|p| p.layers.clone()).collect::<Vec<_>>());
    // The climb takes three 2 s holds once the estimate allows, and the estimate's own ramp varies from run to run
    // (720p after 5 to 8 s here): both sites leave 180p, and 720p is reached.
    assert!(last.layers.keys().all(|h| *h >= 360), "a fibre site still on 180p at the end: {last:?}");
    assert!(fibre.iter().any(|p| p.layers.contains_key(&720)), "no fibre site reached 720p: {fibre:?}");
    for s in report.sites.iter().filter(|s| s.profile == "fibre") {
        assert!(s.video.frames > 30, "site {} decoded {} frames: {:?}", s.site_id, s.video.frames, s);
    }
    let vsat = series("vsat");
    eprintln!("vsat layers by second: {:?}", vsat.iter().map(|p| p.layers.clone()).collect::<Vec<_>>());
    assert!(vsat.iter().all(|p| p.layers.is_empty()), "the VSAT site got video its link cannot carry: {vsat:?}");
    let v = report.sites.iter().find(|s| s.profile == "vsat").ok_or("no vsat site")?;
    assert_eq!(v.site_id, vsat_site.id);
    assert_eq!(v.video.packets, 0, "no video toward the VSAT site: {v:?}");
    assert!(v.audio.packets > 0, "the VSAT site hears the chair: {v:?}");
    assert_eq!(v.told_audio_only, Some(true), "the VSAT site was told its video is paused: {v:?}");
    for s in report.sites.iter().filter(|s| s.profile == "fibre") {
        assert_ne!(s.told_audio_only, Some(true), "fibre site {} left on audio only", s.site_id);
    }
    Ok(())
}
