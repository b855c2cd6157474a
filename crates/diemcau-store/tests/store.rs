//! The store against a real SQLite file in a temporary directory.

use diemcau_proto::{CheckPhase, CheckStep, LinkCheckResult, LinkProfile, Role, SiteKind};
use diemcau_store::token::{self, Claims, TokenError};
use diemcau_store::{ImportReport, NewSite, SessionEvent, Store, StoreError};

type R = Result<(), Box<dyn std::error::Error>>;

fn site(code: &str, kind: SiteKind, parent_id: Option<i64>) -> NewSite {
    NewSite { code: code.into(), name: format!("Tên {code}"), kind, parent_id, link_hint: None }
}

fn invalid_msg<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

const GOOD_CSV: &str = "\u{feff}code,name,kind,parent_code,link_hint
19,UBND tỉnh Thái Nguyên,province,,fibre
19-SYT,Sở Y tế,department,19,fibre
173,Huyện Đại Từ,district,19,ADSL
\"5689\",\"Xã La Bằng, huyện Đại Từ\",commune,173,vsat
5692, Xã Hoàng Nông ,Commune,173,
";

#[test]
fn open_creates_dir_and_reopen_persists_data_and_secret() -> R {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested/data/diemcau.db");
    let (secret, id, meeting) = {
        let store = Store::open(&path)?;
        assert_eq!(store.schema_version()?, 3);
        let secret = store.secret()?;
        assert_eq!(secret.len(), 32);
        assert_eq!(store.secret()?, secret, "secret is stable within one open");
        let id =
            store.insert_site(&NewSite { link_hint: Some(" VSAT ".into()), ..site("01", SiteKind::Province, None) })?;
        let c = store.insert_site(&site("02", SiteKind::Commune, Some(id)))?;
        let meeting = store.create_meeting_at("Họp thử", id, &[c], 1_700_000_000)?;
        store.record_session(meeting, c, "join", 1_700_000_000_123)?;
        (secret, id, meeting)
    };
    assert!(path.exists());
    let store = Store::open(&path)?;
    assert_eq!(store.secret()?, secret, "secret survives a reopen");
    let s = store.site(id)?.ok_or("site lost")?;
    assert_eq!(s.code, "01");
    assert_eq!(s.link_hint.as_deref(), Some("vsat"));
    let m = store.meeting(meeting)?.ok_or("meeting lost")?;
    assert_eq!(m.title, "Họp thử");
    assert_eq!(m.created_at_unix, 1_700_000_000);
    assert_eq!(store.session_events(meeting)?.len(), 1);
    // Another store on a fresh file has another secret.
    let other = Store::open(&dir.path().join("other.db"))?;
    assert_ne!(other.secret()?, secret);
    Ok(())
}

#[test]
fn file_is_in_wal_mode() -> R {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.db");
    drop(Store::open(&path)?);
    // WAL is a property of the file: header bytes 18 and 19 (write and read format versions) are 2.
    let bytes = std::fs::read(&path)?;
    assert_eq!(bytes.get(18..20), Some(&[2u8, 2][..]));
    Ok(())
}

#[test]
fn migrations_are_idempotent() -> R {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.db");
    for _ in 0..3 {
        let store = Store::open(&path)?;
        assert_eq!(store.schema_version()?, 3);
        store.insert_site(&site(&format!("s{}", store.sites()?.len()), SiteKind::Commune, None))?;
    }
    let store = Store::open(&path)?;
    assert_eq!(store.sites()?.len(), 3);
    Ok(())
}

#[test]
fn in_memory_store_works() -> R {
    let store = Store::open_in_memory()?;
    assert_eq!(store.schema_version()?, 3);
    assert_eq!(store.secret()?.len(), 32);
    assert!(store.sites()?.is_empty());
    assert!(store.meetings()?.is_empty());
    assert!(store.demo()?.is_none());
    Ok(())
}

#[test]
fn insert_site_validation() -> R {
    let store = Store::open_in_memory()?;
    let p = store.insert_site(&site("P", SiteKind::Province, None))?;
    let m = invalid_msg(store.insert_site(&site("P", SiteKind::District, None)));
    assert!(m.contains("already used"), "{m}");
    let m = invalid_msg(store.insert_site(&site("  ", SiteKind::District, None)));
    assert!(m.contains("code"), "{m}");
    let m = invalid_msg(store.insert_site(&NewSite { name: " ".into(), ..site("X", SiteKind::District, None) }));
    assert!(m.contains("name"), "{m}");
    let m = invalid_msg(store.insert_site(&site("X", SiteKind::District, Some(p + 100))));
    assert!(m.contains("parent_id"), "{m}");
    assert_eq!(store.sites()?.len(), 1);
    assert_eq!(store.site(p + 100)?, None);
    Ok(())
}

#[test]
fn csv_import_happy_path_with_bom_and_vietnamese_names() -> R {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("d.db"))?;
    let report = store.import_sites_csv(GOOD_CSV.as_bytes())?;
    assert_eq!(report, ImportReport { inserted: 5, updated: 0 });
    let sites = store.sites()?;
    assert_eq!(sites.len(), 5);
    let by_code = |c: &str| sites.iter().find(|s| s.code == c).cloned();
    let prov = by_code("19").ok_or("19")?;
    assert_eq!(prov.name, "UBND tỉnh Thái Nguyên");
    assert_eq!(prov.kind, SiteKind::Province);
    assert_eq!(prov.parent_id, None);
    let dist = by_code("173").ok_or("173")?;
    assert_eq!(dist.parent_id, Some(prov.id));
    assert_eq!(dist.link_hint.as_deref(), Some("adsl"));
    let labang = by_code("5689").ok_or("5689")?;
    assert_eq!(labang.name, "Xã La Bằng, huyện Đại Từ");
    assert_eq!(labang.parent_id, Some(dist.id));
    let hn = by_code("5692").ok_or("5692")?;
    assert_eq!(hn.name, "Xã Hoàng Nông");
    assert_eq!(hn.kind, SiteKind::Commune);
    assert_eq!(hn.link_hint, None);
    // Sites come back in id order, parents first.
    assert!(sites.windows(2).all(|w| w[0].id < w[1].id));
    Ok(())
}

#[test]
fn csv_import_upserts_by_code() -> R {
    let store = Store::open_in_memory()?;
    store.import_sites_csv(GOOD_CSV.as_bytes())?;
    let before = store.sites()?;
    let csv = "link_hint,code,name,kind,parent_code
4g,5689,Xã La Bằng,commune,19
,5700,Xã Phú Xuyên,commune,173
";
    let report = store.import_sites_csv(csv.as_bytes())?;
    assert_eq!(report, ImportReport { inserted: 1, updated: 1 });
    let after = store.sites()?;
    assert_eq!(after.len(), 6);
    let old = before.iter().find(|s| s.code == "5689").ok_or("old")?;
    let new = after.iter().find(|s| s.code == "5689").ok_or("new")?;
    assert_eq!(new.id, old.id, "upsert keeps the id");
    assert_eq!(new.name, "Xã La Bằng");
    assert_eq!(new.link_hint.as_deref(), Some("4g"));
    assert_eq!(Some(new.parent_id), Some(before.iter().find(|s| s.code == "19").map(|s| s.id)));
    // Re-importing the same file changes nothing but counts every row as updated.
    assert_eq!(store.import_sites_csv(GOOD_CSV.as_bytes())?, ImportReport { inserted: 0, updated: 5 });
    assert_eq!(store.sites()?.len(), 6);
    Ok(())
}

#[test]
fn csv_import_minimal_columns_and_blank_lines() -> R {
    let store = Store::open_in_memory()?;
    let report =
        store.import_sites_csv("code,name,kind\r\nA,Tỉnh A,province\r\n\r\n,,\r\nB,Xã B,commune\r\n".as_bytes())?;
    assert_eq!(report, ImportReport { inserted: 2, updated: 0 });
    Ok(())
}

#[test]
fn csv_bad_rows_name_the_line_and_insert_nothing() -> R {
    let header = "code,name,kind,parent_code,link_hint\n";
    let ok = "P,Tỉnh P,province,,\n";
    let cases: &[(&str, u64, &str)] = &[
        ("X,Xã X,village,P,\n", 3, "unknown kind"),
        ("X,Xã X,commune,NOPE,\n", 3, "unknown parent_code `NOPE`"),
        ("X,,commune,P,\n", 3, "name"),
        ("X,  ,commune,P,\n", 3, "name"),
        (",Xã X,commune,P,\n", 3, "code"),
        ("X,Xã X,commune,P\n", 3, "expected 5 fields"),
        ("X,Xã X,commune,P,,extra\n", 3, "expected 5 fields"),
        ("X,Xã X,commune,X,\n", 3, "own parent"),
        ("X,Xã X,commune,P,\nX,Xã X lần hai,commune,P,\n", 4, "already appears on line 3"),
        // A child before its parent.
        ("Y,Xã Y,commune,D,\nD,Huyện D,district,P,\n", 3, "unknown parent_code `D`"),
        ("X,Xã X,commune,P,4 g\n", 3, "link_hint"),
        // A line break inside a quoted cell (Alt+Enter in a spreadsheet) is refused; the record starts on line 3.
        ("X,\"Xã\nX\",commune,P,\n", 3, "control characters"),
    ];
    for (rows, line, needle) in cases {
        let store = Store::open_in_memory()?;
        let csv = format!("{header}{ok}{rows}");
        let m = invalid_msg(store.import_sites_csv(csv.as_bytes()));
        assert!(m.starts_with(&format!("line {line}: ")), "{rows:?}: {m}");
        assert!(m.contains(needle), "{rows:?}: {m}");
        assert!(store.sites()?.is_empty(), "{rows:?}: something was inserted");
    }
    Ok(())
}

#[test]
fn csv_bad_header_and_encoding() -> R {
    let store = Store::open_in_memory()?;
    let m = invalid_msg(store.import_sites_csv("".as_bytes()));
    assert!(m.starts_with("line 1: ") && m.contains("empty"), "{m}");
    let m = invalid_msg(store.import_sites_csv("code,name,parent_code\nA,B,\n".as_bytes()));
    assert!(m.starts_with("line 1: ") && m.contains("missing column `kind`"), "{m}");
    let m = invalid_msg(store.import_sites_csv("code,name,kind,parent\nA,B,province,\n".as_bytes()));
    assert!(m.starts_with("line 1: ") && m.contains("unknown column `parent`"), "{m}");
    let m = invalid_msg(store.import_sites_csv("code,name,kind,code\nA,B,province,A\n".as_bytes()));
    assert!(m.contains("twice"), "{m}");
    // Windows-1258 / Latin-1 bytes are not UTF-8.
    let bytes = b"code,name,kind\nA,Tinh A,province\nB,X\xe3 B,commune\n";
    let m = invalid_msg(store.import_sites_csv(&bytes[..]));
    assert!(m.starts_with("line 3: ") && m.contains("UTF-8"), "{m}");
    assert!(store.sites()?.is_empty());
    Ok(())
}

#[test]
fn csv_import_refuses_a_cycle_through_existing_sites() -> R {
    let store = Store::open_in_memory()?;
    store.import_sites_csv(
        "code,name,kind,parent_code\nA,Tỉnh A,province,\nB,Huyện B,district,A\nC,Xã C,commune,B\n".as_bytes(),
    )?;
    let m = invalid_msg(store.import_sites_csv("code,name,kind,parent_code\nA,Tỉnh A,province,C\n".as_bytes()));
    assert!(m.starts_with("line 2: ") && m.contains("ancestor"), "{m}");
    let a = store.sites()?.into_iter().find(|s| s.code == "A").ok_or("A")?;
    assert_eq!(a.parent_id, None);
    Ok(())
}

#[test]
fn csv_parents_may_already_exist_in_the_db() -> R {
    let store = Store::open_in_memory()?;
    let p = store.insert_site(&site("19", SiteKind::Province, None))?;
    let r =
        store.import_sites_csv("code,name,kind,parent_code,link_hint\n173,Huyện Đại Từ,district,19,\n".as_bytes())?;
    assert_eq!(r, ImportReport { inserted: 1, updated: 0 });
    assert_eq!(store.sites()?[1].parent_id, Some(p));
    Ok(())
}

#[test]
fn meeting_creation_validation() -> R {
    let store = Store::open_in_memory()?;
    let chair = store.insert_site(&site("P", SiteKind::Province, None))?;
    let a = store.insert_site(&site("A", SiteKind::Commune, Some(chair)))?;
    let b = store.insert_site(&site("B", SiteKind::Commune, Some(chair)))?;

    let m = invalid_msg(store.create_meeting("  ", chair, &[a]));
    assert!(m.contains("title"), "{m}");
    let m = invalid_msg(store.create_meeting("Họp", 999, &[a]));
    assert!(m.contains("chair_site_id") && m.contains("999"), "{m}");
    let m = invalid_msg(store.create_meeting("Họp", chair, &[a, 777]));
    assert!(m.contains("invited") && m.contains("777"), "{m}");
    assert!(store.meetings()?.is_empty(), "a refused meeting left a row");

    // The chair is dropped from the invited list, duplicates too; order is kept.
    let id = store.create_meeting("Họp giao ban", chair, &[b, chair, a, b])?;
    let meeting = store.meeting(id)?.ok_or("meeting")?;
    assert_eq!(meeting.title, "Họp giao ban");
    assert_eq!(meeting.chair_site_id, chair);
    assert_eq!(meeting.invited, vec![b, a]);
    assert!(meeting.created_at_unix > 1_600_000_000);
    let invited: Vec<i64> = store.invited_sites(id)?.iter().map(|s| s.id).collect();
    assert_eq!(invited, vec![b, a]);
    assert_eq!(store.meetings()?.len(), 1);
    assert!(store.meeting(id + 1)?.is_none());
    assert!(matches!(store.invited_sites(id + 1), Err(StoreError::NotFound(_))));

    // A meeting with nobody invited (yet) is allowed.
    let lone = store.create_meeting("Chỉ chủ trì", chair, &[])?;
    assert!(store.invited_sites(lone)?.is_empty());
    Ok(())
}

#[test]
fn session_log_is_append_only_and_checked() -> R {
    let store = Store::open_in_memory()?;
    let chair = store.insert_site(&site("P", SiteKind::Province, None))?;
    let a = store.insert_site(&site("A", SiteKind::Commune, Some(chair)))?;
    let id = store.create_meeting("Họp", chair, &[a])?;
    store.record_session(id, a, "join", 1_000)?;
    store.record_session(id, chair, "join", 900)?;
    store.record_session(id, a, "leave", 5_000)?;
    assert_eq!(
        store.session_events(id)?,
        vec![
            SessionEvent { site_id: a, event: "join".into(), at_unix_ms: 1_000 },
            SessionEvent { site_id: chair, event: "join".into(), at_unix_ms: 900 },
            SessionEvent { site_id: a, event: "leave".into(), at_unix_ms: 5_000 },
        ]
    );
    assert!(
        matches!(store.record_session(id + 1, a, "join", 0), Err(StoreError::NotFound(m)) if m.contains("meeting"))
    );
    assert!(matches!(store.record_session(id, 999, "join", 0), Err(StoreError::NotFound(m)) if m.contains("site")));
    assert!(matches!(store.record_session(id, a, " ", 0), Err(StoreError::Invalid(_))));
    assert!(matches!(store.session_events(id + 1), Err(StoreError::NotFound(_))));
    assert_eq!(store.session_events(id)?.len(), 3);
    // Many sites at once (a ring): one row each, a site missing from the directory skipped.
    assert_eq!(store.record_sessions(id, &[a, 999, chair], "rung", 6_000)?, 2);
    let rung: Vec<i64> =
        store.session_events(id)?.into_iter().filter(|e| e.event == "rung").map(|e| e.site_id).collect();
    assert_eq!(rung, vec![a, chair]);
    assert!(matches!(store.record_sessions(id, &[a], "", 0), Err(StoreError::Invalid(_))));
    assert!(matches!(store.record_sessions(id + 1, &[a], "rung", 0), Err(StoreError::NotFound(_))));
    Ok(())
}

#[test]
fn seed_demo_is_idempotent_and_invites_twelve_communes() -> R {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.db");
    let demo = {
        let store = Store::open(&path)?;
        assert!(store.demo()?.is_none());
        let demo = store.seed_demo()?;
        assert_eq!(store.seed_demo()?, demo);
        assert_eq!(store.demo()?, Some(demo));
        demo
    };
    let store = Store::open(&path)?;
    assert_eq!(store.seed_demo()?, demo, "idempotent across reopen");
    assert_eq!(store.meetings()?.len(), 1);
    assert_eq!(store.sites()?.len(), 1 + 3 + 3 + 12);

    assert_eq!(demo.technician_site_id, demo.chair_site_id);
    let meeting = store.meeting(demo.meeting_id)?.ok_or("demo meeting")?;
    assert_eq!(meeting.title, "Họp trực tuyến toàn tỉnh (demo)");
    assert_eq!(meeting.chair_site_id, demo.chair_site_id);
    let chair = store.site(demo.chair_site_id)?.ok_or("chair")?;
    assert_eq!(chair.kind, SiteKind::Province);
    assert!(chair.name.contains("tỉnh"), "{}", chair.name);

    let invited = store.invited_sites(demo.meeting_id)?;
    assert_eq!(invited.len(), 18);
    assert!(invited.iter().all(|s| s.id != demo.chair_site_id));
    let count = |k: SiteKind| invited.iter().filter(|s| s.kind == k).count();
    assert_eq!(count(SiteKind::Department), 3);
    assert_eq!(count(SiteKind::District), 3);
    assert_eq!(count(SiteKind::Commune), 12);
    let districts: Vec<i64> = invited.iter().filter(|s| s.kind == SiteKind::District).map(|s| s.id).collect();
    for c in invited.iter().filter(|s| s.kind == SiteKind::Commune) {
        assert!(c.name.starts_with("Xã "), "{}", c.name);
        assert!(c.parent_id.is_some_and(|p| districts.contains(&p)), "{} has no district", c.name);
    }
    for d in &districts {
        let n = invited.iter().filter(|s| s.parent_id == Some(*d)).count();
        assert!(n >= 2, "communes are spread over the districts");
    }
    let first = store.site(demo.first_commune_id)?.ok_or("first commune")?;
    assert_eq!(first.kind, SiteKind::Commune);
    for s in invited.iter().chain(std::iter::once(&chair)) {
        let hint = s.link_hint.as_deref().unwrap_or("");
        assert!(["fibre", "adsl", "4g", "3g", "vsat"].contains(&hint), "{}: {hint}", s.name);
    }
    assert!(invited.iter().any(|s| s.link_hint.as_deref() == Some("vsat")));
    Ok(())
}

#[test]
fn seed_demo_beside_an_imported_directory() -> R {
    let store = Store::open_in_memory()?;
    store.import_sites_csv(GOOD_CSV.as_bytes())?;
    let demo = store.seed_demo()?;
    assert_eq!(store.invited_sites(demo.meeting_id)?.len(), 18, "only demo sites are invited");
    assert_eq!(store.sites()?.len(), 5 + 19);
    Ok(())
}

#[test]
fn tokens_with_the_stored_secret() -> R {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.db");
    let claims = Claims { meeting_id: 1, site_id: 2, role: Role::Technician, exp: 2_000 };
    let t = token::sign(&Store::open(&path)?.secret()?, &claims);
    let store = Store::open(&path)?;
    assert_eq!(token::verify(&store.secret()?, &t, 1_999), Ok(claims));
    assert_eq!(token::verify(&store.secret()?, &t, 2_000), Err(TokenError::Expired));
    let other = Store::open_in_memory()?;
    assert_eq!(token::verify(&other.secret()?, &t, 0), Err(TokenError::BadSignature));
    Ok(())
}

#[test]
fn store_is_shareable_across_threads() -> R {
    let store = std::sync::Arc::new(Store::open_in_memory()?);
    let chair = store.insert_site(&site("P", SiteKind::Province, None))?;
    let id = store.create_meeting("Họp", chair, &[])?;
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                for j in 0..25 {
                    store.record_session(id, chair, "join", i * 1000 + j)?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "thread panicked")??;
    }
    assert_eq!(store.session_events(id)?.len(), 100);
    Ok(())
}

#[test]
fn newer_schema_is_refused() -> R {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.db");
    drop(Store::open(&path)?);
    // Bump user_version past what this build knows, by patching the header (offset 60, big-endian u32).
    // In WAL mode the header in the main file is current after the last connection closed (checkpointed).
    let mut bytes = std::fs::read(&path)?;
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&path, bytes)?;
    let m = invalid_msg(Store::open(&path));
    assert!(m.contains("newer"), "{m}");
    Ok(())
}

fn check_result(down: f64, recommended: LinkProfile) -> LinkCheckResult {
    LinkCheckResult {
        down_kbps: Some(down),
        down_saturated: true,
        up_kbps: None,
        up_saturated: true,
        down_loss_pct: Some(4.8),
        up_loss_pct: None,
        rtt_ms: Some(410.0),
        recommended,
        steps: vec![CheckStep { phase: CheckPhase::Down, kbps: 64, delivered_kbps: Some(61.0), loss_pct: Some(4.8) }],
        duration_ms: 9000,
    }
}

#[test]
fn link_checks_keep_history_and_list_the_latest_per_site() -> R {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("diemcau.db");
    {
        let store = Store::open(&path)?;
        let a = store.insert_site(&site("A", SiteKind::Commune, None))?;
        let b = store.insert_site(&site("B", SiteKind::Commune, None))?;
        store.record_link_check(a, None, 1_000, &check_result(120.0, LinkProfile::AudioOnly))?;
        store.record_link_check(a, None, 2_000, &check_result(700.0, LinkProfile::Standard))?;
        store.record_link_check(b, None, 1_500, &check_result(300.0, LinkProfile::Low))?;
        assert!(matches!(
            store.record_link_check(999, None, 1, &check_result(1.0, LinkProfile::AudioOnly)),
            Err(StoreError::NotFound(_))
        ));
    }
    // Reopened from the file: the latest of each site, the whole result kept.
    let store = Store::open(&path)?;
    let latest = store.latest_link_checks(None)?;
    assert_eq!(latest.len(), 2);
    assert_eq!((latest[0].site_code.as_str(), latest[0].at_unix_ms), ("A", 2_000));
    assert_eq!(latest[0].result, check_result(700.0, LinkProfile::Standard));
    assert_eq!(latest[1].result.recommended, LinkProfile::Low);
    let only_b = store.latest_link_checks(Some(latest[1].site_id))?;
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].site_name, "Tên B");
    Ok(())
}

#[test]
fn control_log_survives_a_reopen_in_order_and_refuses_a_taken_seq() -> R {
    use diemcau_proto::control::{Event, Logged};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("diemcau.db");
    let entries = vec![
        Logged { seq: 1, at_ms: 10, event: Event::FloorGiven { site_id: 2 } },
        Logged { seq: 2, at_ms: 20, event: Event::Confirmed { site_id: 2, audio: true, video: false } },
    ];
    let meeting = {
        let store = Store::open(&path)?;
        let chair = store.insert_site(&site("01", SiteKind::Province, None))?;
        let c = store.insert_site(&site("02", SiteKind::Commune, Some(chair)))?;
        let m = store.create_meeting("Họp", chair, &[c])?;
        for e in &entries {
            store.append_control(m, e)?;
        }
        let dup = Logged { seq: 2, at_ms: 30, event: Event::FloorTaken };
        assert!(invalid_msg(store.append_control(m, &dup)).contains("entry 2 exists"));
        assert!(matches!(store.append_control(m + 99, &dup), Err(StoreError::NotFound(_))));
        m
    };
    let store = Store::open(&path)?;
    assert_eq!(store.control_log(meeting)?, entries);
    assert_eq!(store.control_log(meeting + 1)?, Vec::new());
    Ok(())
}

#[test]
fn quality_sums_are_replaced_per_site() -> R {
    use diemcau_store::QualitySums;
    let store = Store::open_in_memory()?;
    let chair = store.insert_site(&site("01", SiteKind::Province, None))?;
    let c = store.insert_site(&site("02", SiteKind::Commune, Some(chair)))?;
    let m = store.create_meeting("Họp", chair, &[c])?;
    let q =
        |n: i64| QualitySums { samples: n, kbps_sum: 100.0 * n as f64, lowest_height: Some(180), ..Default::default() };
    store.save_quality(m, 1, &[(c, q(1))])?;
    store.save_quality(m, 2, &[(c, q(5))])?;
    assert_eq!(store.quality(m)?, vec![(c, q(5))]);
    // An older snapshot written late does not undo a newer one.
    store.save_quality(m, 3, &[(c, q(4))])?;
    assert_eq!(store.quality(m)?, vec![(c, q(5))]);
    Ok(())
}
