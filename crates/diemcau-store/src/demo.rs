//! The demo province: enough sites to see a grid, with a spread of link kinds for drills.
//!
//! Names are real places of Thái Nguyên; the codes carry a `demo-` prefix so they never collide with an imported
//! directory.

use diemcau_proto::SiteKind;
use rusqlite::Connection;

use crate::{
    Demo, NewSite, SETTING_DEMO_MEETING, StoreError, create_meeting_in, insert_site_in, meeting_in, set_setting_i64,
    setting_i64, site_id_by_code, unix_now_secs,
};

/// Title of the demo meeting.
pub(crate) const DEMO_TITLE: &str = "Họp trực tuyến toàn tỉnh (demo)";

/// `(code, name, link_hint)` of one demo site.
type Entry = (&'static str, &'static str, &'static str);

const PROVINCE: Entry = ("demo-tinh", "UBND tỉnh Thái Nguyên", "fibre");

const DEPARTMENTS: [Entry; 3] = [
    ("demo-so-yte", "Sở Y tế", "fibre"),
    ("demo-so-nnmt", "Sở Nông nghiệp và Môi trường", "fibre"),
    ("demo-so-gddt", "Sở Giáo dục và Đào tạo", "adsl"),
];

/// Districts, each with its four communes.
const DISTRICTS: [(Entry, [Entry; 4]); 3] = [
    (
        ("demo-h-daitu", "Huyện Đại Từ", "fibre"),
        [
            ("demo-x-labang", "Xã La Bằng", "fibre"),
            ("demo-x-hoangnong", "Xã Hoàng Nông", "adsl"),
            ("demo-x-phuxuyen", "Xã Phú Xuyên", "4g"),
            ("demo-x-tanthai", "Xã Tân Thái", "3g"),
        ],
    ),
    (
        ("demo-h-dinhhoa", "Huyện Định Hóa", "adsl"),
        [
            ("demo-x-phudinh", "Xã Phú Đình", "adsl"),
            ("demo-x-diemmac", "Xã Điềm Mặc", "4g"),
            ("demo-x-baolinh", "Xã Bảo Linh", "3g"),
            ("demo-x-quyky", "Xã Quy Kỳ", "vsat"),
        ],
    ),
    (
        ("demo-h-vonhai", "Huyện Võ Nhai", "4g"),
        [
            ("demo-x-lahien", "Xã La Hiên", "fibre"),
            ("demo-x-nghinhtuong", "Xã Nghinh Tường", "3g"),
            ("demo-x-thansa", "Xã Thần Sa", "vsat"),
            ("demo-x-sangmoc", "Xã Sảng Mộc", "vsat"),
        ],
    ),
];

/// The site with `code`, inserted if missing (a half-removed demo is completed, not duplicated).
fn ensure_site(
    conn: &Connection,
    (code, name, hint): Entry,
    kind: SiteKind,
    parent_id: Option<i64>,
) -> Result<i64, StoreError> {
    if let Some(id) = site_id_by_code(conn, code)? {
        return Ok(id);
    }
    insert_site_in(
        conn,
        &NewSite { code: code.into(), name: name.into(), kind, parent_id, link_hint: Some(hint.into()) },
    )
}

/// The recorded demo, if the setting names a meeting that still exists.
pub(crate) fn demo_in(conn: &Connection) -> Result<Option<Demo>, StoreError> {
    let Some(meeting_id) = setting_i64(conn, SETTING_DEMO_MEETING)? else {
        return Ok(None);
    };
    let Some(meeting) = meeting_in(conn, meeting_id)? else {
        return Ok(None);
    };
    let first_commune_id: i64 = conn
        .prepare_cached(
            "SELECT s.id FROM meeting_invites i JOIN sites s ON s.id = i.site_id
             WHERE i.meeting_id = ?1 AND s.kind = 'commune' ORDER BY i.position LIMIT 1",
        )?
        .query_row([meeting_id], |r| r.get(0))
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => {
                StoreError::NotFound(format!("a commune invited to the demo meeting {meeting_id}"))
            }
            e => StoreError::Sqlite(e),
        })?;
    Ok(Some(Demo {
        meeting_id,
        chair_site_id: meeting.chair_site_id,
        first_commune_id,
        technician_site_id: meeting.chair_site_id,
    }))
}

/// Inserts the demo sites and meeting and records the meeting id. Run inside a transaction.
pub(crate) fn seed_in(conn: &Connection) -> Result<Demo, StoreError> {
    let chair = ensure_site(conn, PROVINCE, SiteKind::Province, None)?;
    let mut invited = Vec::with_capacity(DEPARTMENTS.len() + DISTRICTS.len() * 5);
    for d in DEPARTMENTS {
        invited.push(ensure_site(conn, d, SiteKind::Department, Some(chair))?);
    }
    let mut first_commune = None;
    for (district, communes) in DISTRICTS {
        let did = ensure_site(conn, district, SiteKind::District, Some(chair))?;
        invited.push(did);
        for c in communes {
            let cid = ensure_site(conn, c, SiteKind::Commune, Some(did))?;
            first_commune.get_or_insert(cid);
            invited.push(cid);
        }
    }
    let first_commune_id = first_commune.ok_or_else(|| StoreError::NotFound("a commune in the demo data".into()))?;
    let meeting_id = create_meeting_in(conn, DEMO_TITLE, chair, &invited, unix_now_secs())?;
    set_setting_i64(conn, SETTING_DEMO_MEETING, meeting_id)?;
    Ok(Demo { meeting_id, chair_site_id: chair, first_commune_id, technician_site_id: chair })
}
