//! CSV import of the sites directory.
//!
//! The file usually comes from a provincial office's spreadsheet, so the messages are written for the person who
//! will fix that spreadsheet: each names the line (as a text editor counts, the header being line 1) and the problem.

use std::collections::HashMap;
use std::io::Read;

use diemcau_proto::SiteKind;
use rusqlite::{Connection, TransactionBehavior, params};

use crate::{ImportReport, StoreError, clean_code, clean_link_hint, clean_name, site_id_by_code};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const EXPECTED: &str = "code,name,kind,parent_code,link_hint";

/// Column positions found in the header.
struct Columns {
    code: usize,
    name: usize,
    kind: usize,
    parent_code: Option<usize>,
    link_hint: Option<usize>,
    count: usize,
}

fn invalid(line: u64, msg: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("line {line}: {msg}"))
}

/// Turns a CSV reader error into a store error; bad UTF-8 is the file's fault and gets its line.
fn csv_error(e: csv::Error) -> StoreError {
    if let csv::ErrorKind::Utf8 { pos, .. } = e.kind() {
        let line = pos.as_ref().map_or(0, csv::Position::line);
        return invalid(line, "not valid UTF-8 (save the file as \"CSV UTF-8\")");
    }
    StoreError::Csv(e)
}

fn header(rec: &csv::StringRecord) -> Result<Columns, StoreError> {
    let mut found: HashMap<String, usize> = HashMap::new();
    for (i, field) in rec.iter().enumerate() {
        let name = field.trim().to_lowercase();
        if !matches!(name.as_str(), "code" | "name" | "kind" | "parent_code" | "link_hint") {
            return Err(invalid(1, format!("unknown column `{}` in the header (expected {EXPECTED})", field.trim())));
        }
        if found.insert(name.clone(), i).is_some() {
            return Err(invalid(1, format!("column `{name}` appears twice in the header")));
        }
    }
    let need = |n: &str| {
        found
            .get(n)
            .copied()
            .ok_or_else(|| invalid(1, format!("missing column `{n}` in the header (expected {EXPECTED})")))
    };
    Ok(Columns {
        code: need("code")?,
        name: need("name")?,
        kind: need("kind")?,
        parent_code: found.get("parent_code").copied(),
        link_hint: found.get("link_hint").copied(),
        count: rec.len(),
    })
}

/// Whether making `parent` the parent of `site` would close a loop.
fn would_cycle(conn: &Connection, site: i64, parent: i64) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE up(id) AS (
             SELECT ?1
             UNION SELECT s.parent_id FROM sites s JOIN up ON s.id = up.id WHERE s.parent_id IS NOT NULL
         )
         SELECT 1 FROM up WHERE id = ?2",
    )?;
    Ok(stmt.exists(params![parent, site])?)
}

pub(crate) fn import<R: Read>(conn: &mut Connection, mut r: R) -> Result<ImportReport, StoreError> {
    let mut data = Vec::new();
    r.read_to_end(&mut data)?;
    let data = data.strip_prefix(UTF8_BOM).unwrap_or(&data);

    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(data);
    let mut records = rdr.records();
    let cols = match records.next() {
        Some(rec) => header(&rec.map_err(csv_error)?)?,
        None => {
            return Err(invalid(1, format!("the file is empty; expected the header {EXPECTED}")));
        }
    };

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = ImportReport::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for rec in records {
        let rec = rec.map_err(csv_error)?;
        let line = rec.position().map_or(0, csv::Position::line);
        if rec.iter().all(str::is_empty) {
            continue; // a row of empty cells, as spreadsheets leave at the end
        }
        if rec.len() != cols.count {
            return Err(invalid(line, format!("expected {} fields like the header, found {}", cols.count, rec.len())));
        }
        let field = |i: usize| rec.get(i).unwrap_or("");
        let opt = |i: Option<usize>| i.map(field).filter(|s| !s.is_empty());

        let code = clean_code(field(cols.code)).map_err(|m| invalid(line, m))?;
        if let Some(first) = seen.insert(code.to_owned(), line) {
            return Err(invalid(line, format!("code `{code}` already appears on line {first}")));
        }
        let name = clean_name(field(cols.name)).map_err(|m| invalid(line, format!("{m} (code `{code}`)")))?;
        let kind_text = field(cols.kind);
        let kind = SiteKind::parse(&kind_text.to_lowercase()).ok_or_else(|| {
            invalid(line, format!("unknown kind `{kind_text}` (expected province, department, district or commune)"))
        })?;
        let hint = clean_link_hint(opt(cols.link_hint)).map_err(|m| invalid(line, m))?;
        let existing = site_id_by_code(&tx, code)?;
        let parent_id = match opt(cols.parent_code) {
            None => None,
            Some(p) if p == code => {
                return Err(invalid(line, format!("site `{code}` cannot be its own parent")));
            }
            Some(p) => {
                let pid = site_id_by_code(&tx, p)?.ok_or_else(|| {
                    invalid(
                        line,
                        format!("unknown parent_code `{p}` (a parent must be on an earlier line or already exist)"),
                    )
                })?;
                if let Some(id) = existing
                    && would_cycle(&tx, id, pid)?
                {
                    return Err(invalid(line, format!("parent_code `{p}` would make `{code}` its own ancestor")));
                }
                Some(pid)
            }
        };

        match existing {
            Some(id) => {
                tx.prepare_cached(
                    "UPDATE sites SET name = ?2, kind = ?3, parent_id = ?4, link_hint = ?5 WHERE id = ?1",
                )?
                .execute(params![id, name, kind.as_str(), parent_id, hint])?;
                report.updated += 1;
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO sites (code, name, kind, parent_id, link_hint) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![code, name, kind.as_str(), parent_id, hint])?;
                report.inserted += 1;
            }
        }
    }
    tx.commit()?;
    Ok(report)
}
