//! Emergency convening: which directory sites a request names.
//!
//! A request names sites by id, code, name, or a path of names from an ancestor down (`"Huyện Đại Từ / Xã La Bằng"`),
//! one by one or as whole subtrees. Names compare after Unicode NFC, lower-casing and collapsing spaces, so a name
//! typed on a phone matches one imported from a spreadsheet that stored it decomposed. Every problem of a request is
//! reported at once — each unknown name, and each ambiguous one with its candidates and their parents — so the chair
//! corrects the list in one go. Pure: the shell reads the directory and creates the meeting.

use std::collections::{HashMap, HashSet};
use std::fmt;

use diemcau_proto::control::SitePick;
use unicode_normalization::UnicodeNormalization;

/// Most sites one request may name (picks, not resolved sites: one subtree may be thousands).
pub const MAX_PICKS: usize = 10_000;
/// Longest name, code or path accepted, in characters.
pub const MAX_PICK_CHARS: usize = 300;

/// A site of the directory, as the resolver needs it.
#[derive(Debug, Clone, Copy)]
pub struct DirSite<'a> {
    /// Directory id.
    pub id: i64,
    /// Unique code.
    pub code: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Parent, if any.
    pub parent_id: Option<i64>,
}

/// What was wrong with a request's picks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolveError {
    /// Picks that match no site.
    pub unknown: Vec<String>,
    /// Picks that match several sites, each with its candidates (`"Xã Tân Thành (code) — Huyện Phú Bình"`).
    pub ambiguous: Vec<(String, Vec<String>)>,
    /// Anything else (too many picks, an empty or overlong text, nothing left to invite).
    pub other: Vec<String>,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        parts.extend(self.other.iter().cloned());
        if !self.unknown.is_empty() {
            let list: Vec<String> = self.unknown.iter().map(|u| format!("{u:?}")).collect();
            parts.push(format!("no site in the directory is called {}", list.join(", ")));
        }
        for (pick, candidates) in &self.ambiguous {
            parts.push(format!(
                "{pick:?} is the name of {} sites ({}): give the code or a path such as \"Huyện … / {pick}\"",
                candidates.len(),
                candidates.join("; ")
            ));
        }
        f.write_str(&parts.join(". "))
    }
}

impl std::error::Error for ResolveError {}

/// The key names compare by: NFC, lower case, single spaces.
fn key(s: &str) -> String {
    let nfc: String = s.nfc().collect::<String>().to_lowercase();
    nfc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The directory, indexed once per request.
struct Index<'a> {
    by_id: HashMap<i64, DirSite<'a>>,
    by_code: HashMap<String, i64>,
    by_name: HashMap<String, Vec<i64>>,
    children: HashMap<i64, Vec<i64>>,
}

impl<'a> Index<'a> {
    fn new(dir: &[DirSite<'a>]) -> Index<'a> {
        let mut ix = Index {
            by_id: HashMap::with_capacity(dir.len()),
            by_code: HashMap::with_capacity(dir.len()),
            by_name: HashMap::with_capacity(dir.len()),
            children: HashMap::new(),
        };
        for s in dir {
            ix.by_id.insert(s.id, *s);
            ix.by_code.insert(key(s.code), s.id);
            ix.by_name.entry(key(s.name)).or_default().push(s.id);
            if let Some(p) = s.parent_id {
                ix.children.entry(p).or_default().push(s.id);
            }
        }
        for ids in ix.by_name.values_mut().chain(ix.children.values_mut()) {
            ids.sort_unstable();
        }
        ix
    }

    /// `id`'s ancestors, nearest first (a cycle in a damaged directory stops at the first repeat).
    fn ancestors(&self, id: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([id]);
        let mut at = self.by_id.get(&id).and_then(|s| s.parent_id);
        while let Some(p) = at {
            if !seen.insert(p) {
                break;
            }
            out.push(p);
            at = self.by_id.get(&p).and_then(|s| s.parent_id);
        }
        out
    }

    /// Does `id` match one segment of a path: its code or its name?
    fn matches(&self, id: i64, segment: &str) -> bool {
        self.by_id.get(&id).is_some_and(|s| key(s.code) == segment || key(s.name) == segment)
    }

    /// "Name (code) — Parent" for an ambiguity message.
    fn describe(&self, id: i64) -> String {
        let Some(s) = self.by_id.get(&id) else { return id.to_string() };
        match s.parent_id.and_then(|p| self.by_id.get(&p)) {
            Some(p) => format!("{} ({}) — {}", s.name, s.code, p.name),
            None => format!("{} ({})", s.name, s.code),
        }
    }

    /// The sites a text names: by code, else by name; a path's last segment, whose ancestors (in order, nearest
    /// last, gaps allowed) match the earlier segments.
    fn lookup(&self, text: &str) -> Vec<i64> {
        let segments: Vec<String> = text.split('/').map(key).collect();
        let Some((last, above)) = segments.split_last() else { return Vec::new() };
        let mut found: Vec<i64> = match self.by_code.get(last) {
            Some(id) => vec![*id],
            None => self.by_name.get(last).cloned().unwrap_or_default(),
        };
        if !above.is_empty() {
            found.retain(|id| {
                // Walk up from the site, consuming the path's segments from its end.
                let mut want = above.iter().rev().peekable();
                for a in self.ancestors(*id) {
                    if want.peek().is_some_and(|seg| self.matches(a, seg)) {
                        want.next();
                    }
                }
                want.peek().is_none()
            });
        }
        found
    }

    /// `root` and everything under it, parents before children, siblings by id.
    fn subtree(&self, root: i64, out: &mut Vec<i64>) {
        let mut stack = vec![root];
        let mut seen = HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            out.push(id);
            if let Some(kids) = self.children.get(&id) {
                stack.extend(kids.iter().rev());
            }
        }
    }
}

/// The sites `sites` and `subtrees` name, in the order named (a subtree parents first), each once, `chair`
/// excluded. Errors if any pick is unknown or ambiguous, or if nothing is left to invite.
pub fn resolve(
    dir: &[DirSite<'_>],
    sites: &[SitePick],
    subtrees: &[SitePick],
    chair: i64,
) -> Result<Vec<i64>, ResolveError> {
    let mut err = ResolveError::default();
    if sites.len() + subtrees.len() > MAX_PICKS {
        err.other.push(format!("at most {MAX_PICKS} sites and subtrees may be named at once"));
        return Err(err);
    }
    let ix = Index::new(dir);
    let mut out = Vec::new();
    let picks = sites.iter().map(|p| (p, false)).chain(subtrees.iter().map(|p| (p, true)));
    for (pick, whole) in picks {
        let id = match pick {
            SitePick::Id(id) if ix.by_id.contains_key(id) => *id,
            SitePick::Id(id) => {
                err.unknown.push(format!("#{id}"));
                continue;
            }
            SitePick::Text(t) if t.trim().is_empty() => {
                err.other.push("an empty site name was given".into());
                continue;
            }
            SitePick::Text(t) if t.chars().count() > MAX_PICK_CHARS => {
                err.other.push(format!("a site name is longer than {MAX_PICK_CHARS} characters"));
                continue;
            }
            SitePick::Text(t) => match ix.lookup(t).as_slice() {
                [] => {
                    err.unknown.push(t.trim().to_string());
                    continue;
                }
                [id] => *id,
                many => {
                    err.ambiguous.push((t.trim().to_string(), many.iter().map(|id| ix.describe(*id)).collect()));
                    continue;
                }
            },
        };
        if whole {
            ix.subtree(id, &mut out);
        } else {
            out.push(id);
        }
    }
    let mut seen = HashSet::new();
    out.retain(|id| *id != chair && seen.insert(*id));
    if err == ResolveError::default() && out.is_empty() {
        err.other.push("no site to invite: name at least one site other than the chair".into());
    }
    if err == ResolveError::default() { Ok(out) } else { Err(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Vec<DirSite<'static>> {
        let s = |id, code, name, parent_id| DirSite { id, code, name, parent_id };
        vec![
            s(1, "tinh", "UBND tỉnh Thái Nguyên", None),
            s(2, "h-daitu", "Huyện Đại Từ", Some(1)),
            s(3, "h-phubinh", "Huyện Phú Bình", Some(1)),
            s(4, "x-labang", "Xã La Bằng", Some(2)),
            s(5, "x-tanthanh-dt", "Xã Tân Thành", Some(2)),
            s(6, "x-tanthanh-pb", "Xã Tân Thành", Some(3)),
            s(7, "x-kha-son", "Xã Kha Sơn", Some(3)),
            s(8, "so-yte", "Sở Y tế", Some(1)),
        ]
    }

    fn t(s: &str) -> SitePick {
        SitePick::Text(s.into())
    }

    #[test]
    fn names_codes_ids_and_paths() {
        let d = dir();
        // Decomposed "Xã La Bằng" (as some spreadsheets store it), odd case and spaces.
        let nfd: String = "  xã   la BẰNG ".nfd().collect();
        let got = resolve(&d, &[SitePick::Id(8), t(&nfd), t("X-KHA-SON"), t("Huyện Phú Bình / Xã Tân Thành")], &[], 1);
        assert_eq!(got, Ok(vec![8, 4, 7, 6]));
        // A path may skip levels and use codes.
        assert_eq!(resolve(&d, &[t("tinh / h-daitu / Xã Tân Thành")], &[], 1), Ok(vec![5]));
        assert_eq!(resolve(&d, &[t("UBND tỉnh Thái Nguyên / Xã Kha Sơn")], &[], 1), Ok(vec![7]));
    }

    #[test]
    fn subtrees_parents_first_without_repeats_or_the_chair() {
        let d = dir();
        let got = resolve(&d, &[t("Xã La Bằng")], &[t("Huyện Đại Từ"), SitePick::Id(3)], 1);
        assert_eq!(got, Ok(vec![4, 2, 5, 3, 6, 7]));
        // The whole province, chaired by the province: everyone but the chair.
        assert_eq!(resolve(&d, &[], &[t("tinh")], 1), Ok(vec![2, 4, 5, 3, 6, 7, 8]));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let d = dir();
        let err = resolve(&d, &[t("Xã Tân Thành"), t("Xã Không Có"), SitePick::Id(99), t(" ")], &[t("Huyện X")], 1)
            .unwrap_err();
        assert_eq!(err.unknown, vec!["Xã Không Có".to_string(), "#99".into(), "Huyện X".into()]);
        assert_eq!(err.ambiguous.len(), 1);
        assert_eq!(
            err.ambiguous[0].1,
            vec![
                "Xã Tân Thành (x-tanthanh-dt) — Huyện Đại Từ".to_string(),
                "Xã Tân Thành (x-tanthanh-pb) — Huyện Phú Bình".into()
            ]
        );
        let msg = err.to_string();
        assert!(msg.contains("an empty site name"), "{msg}");
        assert!(msg.contains("\"Xã Không Có\""), "{msg}");
        assert!(msg.contains("is the name of 2 sites"), "{msg}");
        // A path that does not lead to the site matches nothing.
        assert_eq!(resolve(&d, &[t("Huyện Phú Bình / Xã La Bằng")], &[], 1).unwrap_err().unknown.len(), 1);
    }

    #[test]
    fn nothing_to_invite_and_too_many_picks() {
        let d = dir();
        assert!(resolve(&d, &[SitePick::Id(1)], &[], 1).unwrap_err().to_string().contains("no site to invite"));
        assert!(resolve(&d, &[], &[], 1).is_err());
        let many = vec![SitePick::Id(4); MAX_PICKS + 1];
        assert!(resolve(&d, &many, &[], 1).unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn a_cycle_in_the_directory_does_not_hang() {
        let s = |id, code, name, parent_id| DirSite { id, code, name, parent_id };
        let d = vec![s(1, "a", "A", Some(2)), s(2, "b", "B", Some(1)), s(3, "c", "C", Some(1))];
        assert_eq!(resolve(&d, &[], &[t("a")], 9), Ok(vec![1, 2, 3]));
        assert_eq!(resolve(&d, &[t("B / A / C")], &[], 9), Ok(vec![3]));
    }
}
