//! The body of `POST /api/convene`: any bytes parse to a request or fail cleanly, and any request the parser
//! accepts resolves against a directory (with shared names, a deep chain and a cycle) to a list of sites or a
//! message, without panicking; a resolved list never holds the chair or a site twice.
#![no_main]

use diemcau_meeting::convene::{DirSite, resolve};
use diemcau_proto::control::ConveneRequest;
use libfuzzer_sys::fuzz_target;

const DIR: &[DirSite<'static>] = &[
    DirSite { id: 1, code: "tinh", name: "UBND tỉnh", parent_id: None },
    DirSite { id: 2, code: "h-a", name: "Huyện A", parent_id: Some(1) },
    DirSite { id: 3, code: "h-b", name: "Huyện B", parent_id: Some(1) },
    DirSite { id: 4, code: "x-a", name: "Xã Tân Thành", parent_id: Some(2) },
    DirSite { id: 5, code: "x-b", name: "Xã Tân Thành", parent_id: Some(3) },
    DirSite { id: 6, code: "c1", name: "Vòng 1", parent_id: Some(7) },
    DirSite { id: 7, code: "c2", name: "Vòng 2", parent_id: Some(6) },
];

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<ConveneRequest>(data) else { return };
    let chair = req.chair_site_id.unwrap_or(1);
    match resolve(DIR, &req.sites, &req.subtrees, chair) {
        Ok(ids) => {
            let mut seen = std::collections::HashSet::new();
            assert!(!ids.is_empty());
            assert!(ids.iter().all(|id| *id != chair && seen.insert(*id)));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
