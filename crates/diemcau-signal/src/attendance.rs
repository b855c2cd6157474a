//! The attendance report of a meeting: every invited site grouped by the hierarchy, with its roll-call result and
//! time, its A/V check, its join and leave times and its link quality over the meeting — as JSON
//! (`GET /api/meetings/{id}/attendance`), as CSV in UTF-8 with a BOM so that spreadsheet programs show Vietnamese
//! names right (`…/attendance.csv`), and as a printable HTML page (`…/attendance.html`).
//!
//! It is read from the store (control log replayed, session log, quality sums) with the open room's quality sums
//! laid over it, so it is the same during the meeting, after it, and after a restart.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use diemcau_meeting::{Controller, Outcome};
use diemcau_store::{QualitySums, Site};
use serde::Serialize;

use crate::api::TokenQuery;
use crate::{AppError, AppState, unix_now_ms};

/// The whole report.
#[derive(Debug, Serialize)]
pub(crate) struct Attendance {
    meeting_id: i64,
    title: String,
    chair_site_id: i64,
    chair_name: String,
    generated_at_ms: i64,
    /// Roll-call rounds held.
    rounds: u32,
    /// Invited sites by their latest result (`not_called`: no roll call decided them).
    totals: Totals,
    /// Every invited site, grouped by the hierarchy (parents' names, then its own).
    sites: Vec<Row>,
}

#[derive(Debug, Default, Serialize)]
struct Totals {
    invited: u32,
    present: u32,
    present_av: u32,
    present_audio_only: u32,
    present_no_media: u32,
    no_answer: u32,
    offline: u32,
    not_called: u32,
}

/// One invited site.
#[derive(Debug, Serialize)]
struct Row {
    site_id: i64,
    code: String,
    name: String,
    kind: diemcau_proto::SiteKind,
    /// Its ancestors' names, from the top (the group it is listed under).
    group: String,
    result: Option<Outcome>,
    result_at_ms: Option<i64>,
    round: Option<u32>,
    /// Its audio / video arrived at the bridge when it answered.
    audio_ok: Option<bool>,
    video_ok: Option<bool>,
    first_join_ms: Option<i64>,
    last_leave_ms: Option<i64>,
    joins: u32,
    /// Mean bitrate the bridge sent it, kbit/s.
    avg_kbps: Option<f64>,
    loss_pct: Option<f64>,
    rtt_ms: Option<f64>,
    /// The lowest picture height it decoded; 0: it had audio only at times.
    lowest_height: Option<i64>,
    /// Share of its audio played without concealment, 0–1.
    audio_continuity: Option<f64>,
}

/// Builds the report of meeting `id`.
pub(crate) fn build(state: &AppState, id: i64) -> Result<Attendance, AppError> {
    let store = &state.store;
    let meeting = store.meeting(id)?.ok_or_else(|| AppError::NotFound(format!("meeting {id}")))?;
    let directory: HashMap<i64, Site> = store.sites()?.into_iter().map(|s| (s.id, s)).collect();
    let control = Controller::restore(meeting.invited.clone(), &store.control_log(id)?);
    let mut quality: HashMap<i64, QualitySums> = store.quality(id)?.into_iter().collect();
    if let Ok(rooms) = state.rooms.lock()
        && let Some(room) = rooms.get(&id)
    {
        quality.extend(room.quality.iter().map(|(s, q)| (*s, q.clone())));
    }
    let mut sessions: HashMap<i64, (Option<i64>, Option<i64>, u32)> = HashMap::new();
    for e in store.session_events(id)? {
        let s = sessions.entry(e.site_id).or_default();
        match e.event.as_str() {
            "join" => {
                s.0 = Some(s.0.map_or(e.at_unix_ms, |t| t.min(e.at_unix_ms)));
                s.2 += 1;
            }
            "leave" => s.1 = Some(s.1.map_or(e.at_unix_ms, |t| t.max(e.at_unix_ms))),
            _ => {}
        }
    }
    let ancestors = |site: &Site| -> Vec<String> {
        let mut names = Vec::new();
        let mut at = site.parent_id;
        while let Some(p) = at.and_then(|p| directory.get(&p)) {
            names.push(p.name.clone());
            at = p.parent_id;
            if names.len() > 16 {
                break; // the directory refuses cycles; this only bounds a damaged file
            }
        }
        names.reverse();
        names
    };
    let mut totals = Totals::default();
    let mut keyed: Vec<(Vec<String>, Row)> = Vec::new();
    for sid in &meeting.invited {
        let Some(site) = directory.get(sid) else { continue };
        let result = control.result(*sid);
        totals.invited += 1;
        match result.map(|r| r.outcome) {
            Some(Outcome::PresentAv) => totals.present_av += 1,
            Some(Outcome::PresentAudioOnly) => totals.present_audio_only += 1,
            Some(Outcome::PresentNoMedia) => totals.present_no_media += 1,
            Some(Outcome::NoAnswer) => totals.no_answer += 1,
            Some(Outcome::Offline) => totals.offline += 1,
            None => totals.not_called += 1,
        }
        let (first_join_ms, last_leave_ms, joins) = sessions.get(sid).copied().unwrap_or_default();
        let q = quality.get(sid);
        let mean = |sum: f64, n: i64| (n > 0).then(|| sum / n as f64);
        let path = ancestors(site);
        let row = Row {
            site_id: *sid,
            code: site.code.clone(),
            name: site.name.clone(),
            kind: site.kind,
            group: path.join(" / "),
            result: result.map(|r| r.outcome),
            result_at_ms: result.map(|r| r.at_ms),
            round: result.map(|r| r.round),
            audio_ok: result.filter(|r| r.outcome.present()).map(|r| r.audio),
            video_ok: result.filter(|r| r.outcome.present()).map(|r| r.video),
            first_join_ms,
            last_leave_ms,
            joins,
            avg_kbps: q.and_then(|q| mean(q.kbps_sum, q.samples)),
            loss_pct: q.and_then(|q| mean(q.loss_sum, q.loss_samples)),
            rtt_ms: q.and_then(|q| mean(q.rtt_sum, q.rtt_samples)),
            lowest_height: q.and_then(|q| q.lowest_height),
            audio_continuity: q.and_then(|q| {
                let all = q.audio_samples + q.audio_concealed;
                (all > 0).then(|| q.audio_samples as f64 / all as f64)
            }),
        };
        let mut key = path;
        key.push(site.name.clone());
        keyed.push((key, row));
    }
    totals.present = totals.present_av + totals.present_audio_only + totals.present_no_media;
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Attendance {
        meeting_id: id,
        title: meeting.title,
        chair_site_id: meeting.chair_site_id,
        chair_name: directory.get(&meeting.chair_site_id).map(|s| s.name.clone()).unwrap_or_default(),
        generated_at_ms: unix_now_ms(),
        rounds: control.state().rounds,
        totals,
        sites: keyed.into_iter().map(|(_, r)| r).collect(),
    })
}

/// Vietnamese label of a result (the CSV and the page).
fn label(o: Option<Outcome>) -> &'static str {
    match o {
        Some(Outcome::PresentAv) => "Có mặt — đủ hình và tiếng",
        Some(Outcome::PresentAudioOnly) => "Có mặt — chỉ có tiếng",
        Some(Outcome::PresentNoMedia) => "Có mặt — không nhận được tiếng",
        Some(Outcome::NoAnswer) => "Không trả lời",
        Some(Outcome::Offline) => "Không kết nối",
        None => "Chưa điểm danh",
    }
}

/// Vietnam's time (UTC+7, no daylight saving) of a unix-ms instant: `2026-12-01 09:30:05`.
pub(crate) fn vn_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000) + 7 * 3600;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn opt_time(ms: Option<i64>) -> String {
    ms.map(vn_time).unwrap_or_default()
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "có",
        Some(false) => "không",
        None => "",
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_default()
}

/// The CSV text, BOM first.
pub(crate) fn csv(a: &Attendance) -> Result<String, AppError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "Mã",
        "Đơn vị",
        "Cấp",
        "Thuộc",
        "Kết quả điểm danh",
        "Mã kết quả",
        "Lúc",
        "Lượt",
        "Tiếng",
        "Hình",
        "Vào lúc",
        "Rời lúc",
        "Số lần vào",
        "Tốc độ TB (kbit/s)",
        "Mất gói TB (%)",
        "RTT TB (ms)",
        "Hình thấp nhất (p)",
        "Liên tục âm thanh (%)",
    ];
    let err = |e: csv::Error| AppError::Internal(format!("attendance CSV: {e}"));
    w.write_record(header).map_err(err)?;
    for r in &a.sites {
        w.write_record([
            r.code.clone(),
            r.name.clone(),
            r.kind.as_str().to_owned(),
            r.group.clone(),
            label(r.result).to_owned(),
            r.result.map(|o| o.as_str()).unwrap_or("not_called").to_owned(),
            opt_time(r.result_at_ms),
            r.round.map(|n| n.to_string()).unwrap_or_default(),
            yes_no(r.audio_ok).to_owned(),
            yes_no(r.video_ok).to_owned(),
            opt_time(r.first_join_ms),
            opt_time(r.last_leave_ms),
            r.joins.to_string(),
            num(r.avg_kbps, 0),
            num(r.loss_pct, 2),
            num(r.rtt_ms, 0),
            r.lowest_height.map(|h| h.to_string()).unwrap_or_default(),
            num(r.audio_continuity.map(|c| c * 100.0), 2),
        ])
        .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| AppError::Internal(format!("attendance CSV: {e}")))?;
    let body = String::from_utf8(bytes).map_err(|e| AppError::Internal(format!("attendance CSV: {e}")))?;
    Ok(format!("\u{feff}{body}"))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The printable page.
pub(crate) fn html(a: &Attendance) -> String {
    let t = &a.totals;
    let mut h = String::with_capacity(4096 + a.sites.len() * 400);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\"><title>Điểm danh — {title}</title><style>\
         body{{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#111}}h1{{font-size:18px;margin:0 0 4px}}\
         table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #bbb;padding:3px 5px;text-align:left}}\
         th{{background:#eee}}tr.g td{{background:#f6f6f6;font-weight:600}}.num{{text-align:right}}\
         .bar{{display:flex;height:14px;margin:8px 0;border:1px solid #999}}.bar span{{display:block}}\
         .av{{background:#2e7d32}}.ao{{background:#9ccc65}}.nm{{background:#fbc02d}}.na{{background:#e53935}}\
         .of{{background:#757575}}.nc{{background:#ddd}}.legend span{{margin-right:12px}}\
         @media print{{button{{display:none}}body{{margin:0}}}}</style></head><body>\
         <h1>Báo cáo điểm danh — {title}</h1>\
         <div>Chủ trì: {chair} · Lập lúc {at} (giờ Việt Nam, UTC+7) · {rounds} lượt điểm danh</div>",
        title = esc(&a.title),
        chair = esc(&a.chair_name),
        at = vn_time(a.generated_at_ms),
        rounds = a.rounds,
    );
    let pct = |n: u32| if t.invited == 0 { 0.0 } else { 100.0 * f64::from(n) / f64::from(t.invited) };
    let _ = write!(
        h,
        "<p><b>{present}/{invited}</b> đơn vị có mặt: {av} đủ hình và tiếng, {ao} chỉ có tiếng, {nm} không nhận được \
         tiếng; {na} không trả lời, {of} không kết nối, {nc} chưa điểm danh.</p><div class=\"bar\" \
         title=\"Tỉ lệ theo kết quả\"><span class=\"av\" style=\"width:{pav:.2}%\"></span><span class=\"ao\" \
         style=\"width:{pao:.2}%\"></span><span class=\"nm\" style=\"width:{pnm:.2}%\"></span><span class=\"na\" \
         style=\"width:{pna:.2}%\"></span><span class=\"of\" style=\"width:{pof:.2}%\"></span><span class=\"nc\" \
         style=\"width:{pnc:.2}%\"></span></div><button onclick=\"print()\">In báo cáo</button>",
        present = t.present,
        invited = t.invited,
        av = t.present_av,
        ao = t.present_audio_only,
        nm = t.present_no_media,
        na = t.no_answer,
        of = t.offline,
        nc = t.not_called,
        pav = pct(t.present_av),
        pao = pct(t.present_audio_only),
        pnm = pct(t.present_no_media),
        pna = pct(t.no_answer),
        pof = pct(t.offline),
        pnc = pct(t.not_called),
    );
    h.push_str(
        "<table><thead><tr><th>Mã</th><th>Đơn vị</th><th>Kết quả</th><th>Lúc</th><th>Tiếng</th><th>Hình</th>\
         <th>Vào lúc</th><th>Rời lúc</th><th class=\"num\">kbit/s</th><th class=\"num\">Mất gói %</th>\
         <th class=\"num\">RTT ms</th><th class=\"num\">Hình thấp nhất</th><th class=\"num\">Liên tục âm thanh</th>\
         </tr></thead><tbody>",
    );
    let mut group: Option<&str> = None;
    for r in &a.sites {
        if group != Some(r.group.as_str()) {
            group = Some(r.group.as_str());
            let g = if r.group.is_empty() { "—" } else { r.group.as_str() };
            let _ = write!(h, "<tr class=\"g\"><td colspan=\"13\">{}</td></tr>", esc(g));
        }
        let _ = write!(
            h,
            "<tr data-site=\"{id}\" data-result=\"{code}\"><td>{c}</td><td>{n}</td><td>{l}</td><td>{at}</td><td>{au}</td>\
             <td>{vi}</td><td>{j}</td><td>{lv}</td><td class=\"num\">{k}</td><td class=\"num\">{lo}</td>\
             <td class=\"num\">{rt}</td><td class=\"num\">{lh}</td><td class=\"num\">{ac}</td></tr>",
            id = r.site_id,
            code = r.result.map(|o| o.as_str()).unwrap_or("not_called"),
            c = esc(&r.code),
            n = esc(&r.name),
            l = label(r.result),
            at = opt_time(r.result_at_ms),
            au = yes_no(r.audio_ok),
            vi = yes_no(r.video_ok),
            j = opt_time(r.first_join_ms),
            lv = opt_time(r.last_leave_ms),
            k = num(r.avg_kbps, 0),
            lo = num(r.loss_pct, 2),
            rt = num(r.rtt_ms, 0),
            lh = match r.lowest_height {
                Some(0) => "chỉ tiếng".to_owned(),
                Some(h) => format!("{h}p"),
                None => String::new(),
            },
            ac = num(r.audio_continuity.map(|c| c * 100.0), 2),
        );
    }
    h.push_str("</tbody></table></body></html>");
    h
}

/// The report of meeting `id` for a chair, technician or admin caller (built off the async workers: it reads the
/// store).
async fn authorized_report(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    tok: Option<&str>,
    id: i64,
) -> Result<Attendance, AppError> {
    crate::control::authorize(state, headers, tok, id, true)?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || build(&st, id))
        .await
        .map_err(|e| AppError::Internal(format!("attendance task: {e}")))?
}

/// `GET /api/meetings/{id}/attendance` (chair, technician or admin).
pub(crate) async fn json(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<Attendance>, AppError> {
    let a = authorized_report(&state, &headers, q.token.as_deref(), id).await?;
    Ok(Json(a))
}

/// `GET /api/meetings/{id}/attendance.csv`.
pub(crate) async fn csv_file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let a = authorized_report(&state, &headers, q.token.as_deref(), id).await?;
    let body = csv(&a)?;
    let disposition = format!("attachment; filename=\"diem-danh-{id}.csv\"");
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// `GET /api/meetings/{id}/attendance.html`: the printable page.
pub(crate) async fn html_page(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<axum::response::Html<String>, AppError> {
    let a = authorized_report(&state, &headers, q.token.as_deref(), id).await?;
    Ok(axum::response::Html(html(&a)))
}

#[cfg(test)]
mod tests {
    use super::vn_time;

    #[test]
    fn vietnam_time_is_utc_plus_seven() {
        assert_eq!(vn_time(0), "1970-01-01 07:00:00");
        // 2026-12-01 02:30:05 UTC.
        assert_eq!(vn_time(1_796_092_205_000), "2026-12-01 09:30:05");
        // Across a day and a leap day: 2024-02-29 20:00:00 UTC is 2024-03-01 03:00 in Vietnam.
        assert_eq!(vn_time(1_709_236_800_000), "2024-03-01 03:00:00");
    }
}
