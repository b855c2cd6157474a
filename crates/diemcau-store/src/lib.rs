//! Durable state of a diemcau bridge, in one SQLite file.
//!
//! The bridge keeps little on disk, but what it keeps must survive a crash or a restart in the middle of a province
//! meeting:
//!
//! - the **sites directory**: every command centre, department, district and commune, with its parent in the
//!   administrative hierarchy and a hint about its link (`fibre`, `adsl`, `4g`, `3g`, `vsat`). Sites are usually
//!   loaded from a spreadsheet with [`Store::import_sites_csv`] (all-or-nothing, with errors that name the line);
//! - **meetings**: a title, the chairing site and the invited sites, in the order they were invited;
//! - the **session log**: an append-only record of who joined and left when ([`Store::record_session`]), from which
//!   attendance is reported;
//! - **settings**, including the installation's secret key ([`Store::secret`]) that signs join tokens
//!   (module [`token`]) and the id of the demo meeting made by [`Store::seed_demo`].
//!
//! What lives elsewhere: live meeting state (who is connected, roll call, floor) is in `diemcau-meeting`'s sans-IO
//! state machines; the signalling layer (`diemcau-signal`) reads the directory from here when a meeting starts and
//! writes session events as sites come and go. Nothing on the media path touches this crate.
//!
//! # Shape
//! [`Store`] wraps one [`rusqlite::Connection`] behind a mutex: it is `Send + Sync`, every method takes `&self` and
//! runs one short statement or transaction. Calls are blocking; async callers should use `spawn_blocking` for
//! anything but the smallest reads. The file is opened in WAL mode with `synchronous = FULL` (a committed session
//! event is on disk), foreign keys enforced, and a busy timeout so that a CLI command and a running server can share
//! the file. The schema is versioned with `PRAGMA user_version` and brought up to date by an ordered list of
//! migrations when the store is opened; a database written by a newer build is refused rather than damaged.
//!
//! # Errors
//! [`StoreError::Invalid`] is the caller's fault (bad input, with a message naming the field or CSV line, fit to show
//! to an operator); [`StoreError::NotFound`] means an id given as the subject of a call does not exist; the other
//! variants are the environment's fault (database, file, CSV syntax).
//!
//! Time is an argument everywhere except [`Store::create_meeting`], which stamps the creation time from the system
//! clock ([`Store::create_meeting_at`] takes it explicitly).

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diemcau_proto::control::Logged;
use diemcau_proto::{LinkCheckResult, SiteKind};
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use serde::Serialize;

mod demo;
mod import;
mod schema;
pub mod token;

/// How long a statement waits for another process holding the write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest site code, in characters.
const MAX_CODE_CHARS: usize = 64;
/// Longest site name or meeting title, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Longest link hint, in characters.
const MAX_LINK_HINT_CHARS: usize = 32;
/// Longest session event name, in characters.
const MAX_EVENT_CHARS: usize = 64;

const SETTING_SECRET: &str = "secret";
const SETTING_DEMO_MEETING: &str = "demo_meeting_id";

/// Why a store operation failed.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The database failed (I/O, corruption, locked past the busy timeout, …).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The id that is the subject of the call does not exist, e.g. `"meeting 12"`.
    #[error("not found: {0}")]
    NotFound(String),
    /// Bad input from the caller; the message names the field or the CSV line and the problem.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The CSV could not be read as CSV.
    #[error("CSV error: {0}")]
    Csv(#[from] csv::Error),
    /// Reading the input or creating the data directory failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A site to add to the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSite {
    /// Unique code, e.g. the administrative unit code. Trimmed; must not be empty.
    pub code: String,
    /// Display name, e.g. "Xã La Bằng". Trimmed; must not be empty.
    pub name: String,
    /// Place in the hierarchy.
    pub kind: SiteKind,
    /// Parent site, which must exist.
    pub parent_id: Option<i64>,
    /// Kind of link the site usually has (`fibre`, `adsl`, `4g`, `3g`, `vsat`, …); stored trimmed and lower-case,
    /// empty means none.
    pub link_hint: Option<String>,
}

/// A site of the directory.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Database id.
    pub id: i64,
    /// Unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Place in the hierarchy.
    pub kind: SiteKind,
    /// Parent site, if any.
    pub parent_id: Option<i64>,
    /// Kind of link the site usually has, lower-case.
    pub link_hint: Option<String>,
}

/// A meeting.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Meeting {
    /// Database id.
    pub id: i64,
    /// Title shown to every site.
    pub title: String,
    /// The chairing site.
    pub chair_site_id: i64,
    /// Invited sites in invitation order, the chair excluded.
    pub invited: Vec<i64>,
    /// Creation time, unix seconds.
    pub created_at_unix: i64,
}

/// The demo meeting made by [`Store::seed_demo`].
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demo {
    /// The demo meeting.
    pub meeting_id: i64,
    /// The province site chairing it.
    pub chair_site_id: i64,
    /// The first invited commune, handy for a commune-side link.
    pub first_commune_id: i64,
    /// The site a technician acts for: the chair's (technicians act on behalf of the chairing site).
    pub technician_site_id: i64,
}

/// What [`Store::import_sites_csv`] did.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows whose code was new.
    pub inserted: usize,
    /// Rows whose code already existed; their name, kind, parent and link hint were overwritten.
    pub updated: usize,
}

/// One entry of a meeting's session log.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionEvent {
    /// The site concerned.
    pub site_id: i64,
    /// What happened: `join`, `leave`, …
    pub event: String,
    /// When, unix milliseconds.
    pub at_unix_ms: i64,
}

/// One stored link check of a site.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct LinkCheckRecord {
    /// The site checked.
    pub site_id: i64,
    /// The site's code and name (read with the record).
    pub site_code: String,
    /// The site's name.
    pub site_name: String,
    /// The meeting whose link the site used, if any.
    pub meeting_id: Option<i64>,
    /// When it finished, unix milliseconds.
    pub at_unix_ms: i64,
    /// The measures and the recommendation, as the bridge sent them to the site.
    pub result: LinkCheckResult,
}

/// A site's link quality over a meeting, as sums of the samples taken while it was connected.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct QualitySums {
    /// Samples taken (one every few seconds while connected).
    pub samples: i64,
    /// Sum of the bitrate sent to the site, kbit/s.
    pub kbps_sum: f64,
    /// Sum of the loss it reported, percent, over `loss_samples`.
    pub loss_sum: f64,
    /// Samples with a loss figure.
    pub loss_samples: i64,
    /// Sum of the round-trip time, ms, over `rtt_samples`.
    pub rtt_sum: f64,
    /// Samples with a round-trip time.
    pub rtt_samples: i64,
    /// The lowest picture height it decoded (its lowest layer); `None`: no video decoded; 0: it was paused to audio
    /// only.
    pub lowest_height: Option<i64>,
    /// Audio samples it played (received).
    pub audio_samples: i64,
    /// Audio samples it concealed (lost or late).
    pub audio_concealed: i64,
}

/// The store: one SQLite connection behind a mutex.
pub struct Store {
    conn: Mutex<Connection>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, creating its parent directory, and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(format!(
                "{}: could not switch the database to WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn)
    }

    /// Opens a fresh database in memory (tests, `swarm` runs that keep nothing).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// Schema version of the open database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::version(&self.conn())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open (it rolls back on drop), so the connection
        // is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The installation's 32-byte secret key for signing tokens: random on first call, the same ever after.
    pub fn secret(&self) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn();
        if let Some(s) = read_secret(&conn)? {
            return Ok(s);
        }
        let fresh: [u8; 32] = rand::random();
        // OR IGNORE: another process may have won the race; then its value is the one read back.
        conn.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
            params![SETTING_SECRET, &fresh[..]],
        )?;
        read_secret(&conn)?.ok_or_else(|| StoreError::NotFound("setting `secret`".into()))
    }

    /// Adds a site and returns its id.
    pub fn insert_site(&self, s: &NewSite) -> Result<i64, StoreError> {
        let conn = self.conn();
        insert_site_in(&conn, s)
    }

    /// The site with id `id`.
    pub fn site(&self, id: i64) -> Result<Option<Site>, StoreError> {
        site_in(&self.conn(), id)
    }

    /// Every site, by id (parents were inserted before their children, so this is hierarchy-friendly).
    pub fn sites(&self) -> Result<Vec<Site>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {SITE_COLUMNS} FROM sites ORDER BY id"))?;
        let rows = stmt.query_map([], site_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Imports sites from CSV with the header `code,name,kind,parent_code,link_hint`, upserting by code.
    ///
    /// All or nothing: on the first bad row nothing is written and [`StoreError::Invalid`] says `line N: …`.
    /// Columns may come in any order; `parent_code` and `link_hint` may be absent or empty. A parent must appear on
    /// an earlier line or already be in the directory. A UTF-8 byte-order mark is ignored.
    pub fn import_sites_csv<R: std::io::Read>(&self, r: R) -> Result<ImportReport, StoreError> {
        let mut conn = self.conn();
        import::import(&mut conn, r)
    }

    /// Creates a meeting chaired by `chair_site_id` with `invited` sites, stamped with the system clock.
    ///
    /// See [`Store::create_meeting_at`].
    pub fn create_meeting(&self, title: &str, chair_site_id: i64, invited: &[i64]) -> Result<i64, StoreError> {
        self.create_meeting_at(title, chair_site_id, invited, unix_now_secs())
    }

    /// Creates a meeting created at `created_at_unix` (seconds) and returns its id.
    ///
    /// The title must not be empty; the chair and every invited site must exist ([`StoreError::Invalid`] otherwise).
    /// The chair is dropped from `invited` if listed, and duplicates are dropped (first occurrence kept).
    pub fn create_meeting_at(
        &self,
        title: &str,
        chair_site_id: i64,
        invited: &[i64],
        created_at_unix: i64,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = create_meeting_in(&tx, title, chair_site_id, invited, created_at_unix)?;
        tx.commit()?;
        Ok(id)
    }

    /// The meeting with id `id`.
    pub fn meeting(&self, id: i64) -> Result<Option<Meeting>, StoreError> {
        meeting_in(&self.conn(), id)
    }

    /// Every meeting, by id.
    pub fn meetings(&self) -> Result<Vec<Meeting>, StoreError> {
        let conn = self.conn();
        let ids: Vec<i64> = {
            let mut stmt = conn.prepare_cached("SELECT id FROM meetings ORDER BY id")?;
            stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = meeting_in(&conn, id)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The sites invited to meeting `meeting_id`, in invitation order, the chair excluded.
    /// [`StoreError::NotFound`] if there is no such meeting.
    pub fn invited_sites(&self, meeting_id: i64) -> Result<Vec<Site>, StoreError> {
        let conn = self.conn();
        require_meeting(&conn, meeting_id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.id, s.code, s.name, s.kind, s.parent_id, s.link_hint
             FROM meeting_invites i JOIN sites s ON s.id = i.site_id
             WHERE i.meeting_id = ?1 ORDER BY i.position",
        )?;
        let rows = stmt.query_map([meeting_id], site_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes the demo province (a chairing province, 3 departments, 3 districts, 12 communes) and its meeting, once;
    /// later calls return the same [`Demo`].
    pub fn seed_demo(&self) -> Result<Demo, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(d) = demo::demo_in(&tx)? {
            tx.commit()?;
            return Ok(d);
        }
        let d = demo::seed_in(&tx)?;
        tx.commit()?;
        Ok(d)
    }

    /// The demo made by [`Store::seed_demo`], if any.
    pub fn demo(&self) -> Result<Option<Demo>, StoreError> {
        demo::demo_in(&self.conn())
    }

    /// Records the same `event` for many sites of a meeting at once, in one transaction (a convened meeting rings
    /// thousands of sites). Sites missing from the directory are skipped; returns how many rows were written.
    pub fn record_sessions(
        &self,
        meeting_id: i64,
        site_ids: &[i64],
        event: &str,
        at_unix_ms: i64,
    ) -> Result<usize, StoreError> {
        let event = event.trim();
        if event.is_empty() || event.chars().count() > MAX_EVENT_CHARS {
            return Err(StoreError::Invalid(format!("event: 1 to {MAX_EVENT_CHARS} characters")));
        }
        let mut conn = self.conn();
        require_meeting(&conn, meeting_id)?;
        let tx = conn.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO session_events (meeting_id, site_id, event, at_unix_ms) \
                 SELECT ?1, id, ?3, ?4 FROM sites WHERE id = ?2",
            )?;
            for site in site_ids {
                n += stmt.execute(params![meeting_id, site, event, at_unix_ms])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Appends `event` (`join`, `leave`, …) by `site_id` in meeting `meeting_id` at `at_unix_ms` to the session log.
    ///
    /// [`StoreError::NotFound`] if the meeting or the site does not exist; [`StoreError::Invalid`] if `event` is
    /// empty or longer than 64 characters.
    pub fn record_session(
        &self,
        meeting_id: i64,
        site_id: i64,
        event: &str,
        at_unix_ms: i64,
    ) -> Result<(), StoreError> {
        let event = event.trim();
        if event.is_empty() {
            return Err(StoreError::Invalid("event: must not be empty".into()));
        }
        if event.chars().count() > MAX_EVENT_CHARS {
            return Err(StoreError::Invalid(format!("event: longer than {MAX_EVENT_CHARS} characters")));
        }
        let conn = self.conn();
        require_meeting(&conn, meeting_id)?;
        if !site_exists(&conn, site_id)? {
            return Err(StoreError::NotFound(format!("site {site_id}")));
        }
        conn.prepare_cached(
            "INSERT INTO session_events (meeting_id, site_id, event, at_unix_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![meeting_id, site_id, event, at_unix_ms])?;
        Ok(())
    }

    /// Stores a finished link check of `site_id`. [`StoreError::NotFound`] if the site does not exist.
    pub fn record_link_check(
        &self,
        site_id: i64,
        meeting_id: Option<i64>,
        at_unix_ms: i64,
        result: &LinkCheckResult,
    ) -> Result<i64, StoreError> {
        let json = serde_json::to_string(result).map_err(|e| StoreError::Invalid(format!("link check: {e}")))?;
        let conn = self.conn();
        if !site_exists(&conn, site_id)? {
            return Err(StoreError::NotFound(format!("site {site_id}")));
        }
        conn.prepare_cached(
            "INSERT INTO link_checks (site_id, meeting_id, at_unix_ms, down_kbps, up_kbps, down_loss_pct, up_loss_pct, \
             rtt_ms, recommended, result_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            site_id,
            meeting_id,
            at_unix_ms,
            result.down_kbps,
            result.up_kbps,
            result.down_loss_pct,
            result.up_loss_pct,
            result.rtt_ms,
            result.recommended.as_str(),
            json
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// The latest link check of every site that ran one (of `site_id` only, if given), sites in id order.
    pub fn latest_link_checks(&self, site_id: Option<i64>) -> Result<Vec<LinkCheckRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.site_id, s.code, s.name, c.meeting_id, c.at_unix_ms, c.result_json FROM link_checks c \
             JOIN sites s ON s.id = c.site_id \
             WHERE c.id IN (SELECT max(id) FROM link_checks GROUP BY site_id) AND (?1 IS NULL OR c.site_id = ?1) \
             ORDER BY c.site_id",
        )?;
        let rows = stmt.query_map([site_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, String>(5)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (site_id, site_code, site_name, meeting_id, at_unix_ms, json) = row?;
            let result = serde_json::from_str(&json)
                .map_err(|e| StoreError::Invalid(format!("link check of site {site_id}: {e}")))?;
            out.push(LinkCheckRecord { site_id, site_code, site_name, meeting_id, at_unix_ms, result });
        }
        Ok(out)
    }

    /// Appends one entry to the control log of meeting `meeting_id`; [`StoreError::Invalid`] if its sequence number
    /// is already taken (two writers, or a replay), [`StoreError::NotFound`] if the meeting does not exist.
    pub fn append_control(&self, meeting_id: i64, entry: &Logged) -> Result<(), StoreError> {
        let json = serde_json::to_string(entry).map_err(|e| StoreError::Invalid(format!("control event: {e}")))?;
        let seq = i64::try_from(entry.seq).map_err(|_| StoreError::Invalid("control event: seq too large".into()))?;
        let conn = self.conn();
        require_meeting(&conn, meeting_id)?;
        let done = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO control_log (meeting_id, seq, at_unix_ms, event_json) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![meeting_id, seq, entry.at_ms, json])?;
        if done == 0 {
            return Err(StoreError::Invalid(format!("control log of meeting {meeting_id}: entry {seq} exists")));
        }
        Ok(())
    }

    /// The control log of meeting `meeting_id`, in order. An entry that does not parse (written by a newer build)
    /// is an error naming it: a state replayed without it would be wrong.
    pub fn control_log(&self, meeting_id: i64) -> Result<Vec<Logged>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT seq, event_json FROM control_log WHERE meeting_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([meeting_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, json) = row?;
            let entry = serde_json::from_str(&json)
                .map_err(|e| StoreError::Invalid(format!("control log of meeting {meeting_id}, entry {seq}: {e}")))?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Writes the quality sums of sites of meeting `meeting_id` (site id, sums), replacing what was there unless that
    /// has more samples (a late write of an older snapshot), in one transaction.
    pub fn save_quality(
        &self,
        meeting_id: i64,
        at_unix_ms: i64,
        sums: &[(i64, QualitySums)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO site_quality (meeting_id, site_id, samples, kbps_sum, loss_sum, loss_samples, \
                 rtt_sum, rtt_samples, lowest_height, audio_samples, audio_concealed, updated_unix_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (meeting_id, site_id) DO UPDATE SET samples = excluded.samples, \
                 kbps_sum = excluded.kbps_sum, loss_sum = excluded.loss_sum, loss_samples = excluded.loss_samples, \
                 rtt_sum = excluded.rtt_sum, rtt_samples = excluded.rtt_samples, \
                 lowest_height = excluded.lowest_height, audio_samples = excluded.audio_samples, \
                 audio_concealed = excluded.audio_concealed, updated_unix_ms = excluded.updated_unix_ms \
                 WHERE excluded.samples >= site_quality.samples",
            )?;
            for (site, q) in sums {
                stmt.execute(params![
                    meeting_id,
                    site,
                    q.samples,
                    q.kbps_sum,
                    q.loss_sum,
                    q.loss_samples,
                    q.rtt_sum,
                    q.rtt_samples,
                    q.lowest_height,
                    q.audio_samples,
                    q.audio_concealed,
                    at_unix_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The quality sums of every site of meeting `meeting_id` that has any.
    pub fn quality(&self, meeting_id: i64) -> Result<Vec<(i64, QualitySums)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT site_id, samples, kbps_sum, loss_sum, loss_samples, rtt_sum, rtt_samples, lowest_height, \
             audio_samples, audio_concealed FROM site_quality WHERE meeting_id = ?1 ORDER BY site_id",
        )?;
        let rows = stmt.query_map([meeting_id], |r| {
            Ok((
                r.get(0)?,
                QualitySums {
                    samples: r.get(1)?,
                    kbps_sum: r.get(2)?,
                    loss_sum: r.get(3)?,
                    loss_samples: r.get(4)?,
                    rtt_sum: r.get(5)?,
                    rtt_samples: r.get(6)?,
                    lowest_height: r.get(7)?,
                    audio_samples: r.get(8)?,
                    audio_concealed: r.get(9)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The session log of meeting `meeting_id`, in the order it was recorded.
    /// [`StoreError::NotFound`] if there is no such meeting.
    pub fn session_events(&self, meeting_id: i64) -> Result<Vec<SessionEvent>, StoreError> {
        let conn = self.conn();
        require_meeting(&conn, meeting_id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT site_id, event, at_unix_ms FROM session_events WHERE meeting_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([meeting_id], |r| {
            Ok(SessionEvent { site_id: r.get(0)?, event: r.get(1)?, at_unix_ms: r.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

// ---- helpers shared by the modules; they take a connection (or a transaction, which derefs to one) ----

/// The system clock in unix seconds; only for creation stamps.
pub(crate) fn unix_now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

const SITE_COLUMNS: &str = "id, code, name, kind, parent_id, link_hint";

fn site_from_row(r: &Row<'_>) -> rusqlite::Result<Site> {
    let kind: String = r.get(3)?;
    let kind = SiteKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown site kind {kind:?}").into(),
        )
    })?;
    Ok(Site { id: r.get(0)?, code: r.get(1)?, name: r.get(2)?, kind, parent_id: r.get(4)?, link_hint: r.get(5)? })
}

fn read_secret(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn.query_row("SELECT value FROM settings WHERE key = ?1", [SETTING_SECRET], |r| r.get(0)).optional()?)
}

pub(crate) fn setting_i64(conn: &Connection, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

pub(crate) fn set_setting_i64(conn: &Connection, key: &str, value: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

pub(crate) fn site_in(conn: &Connection, id: i64) -> Result<Option<Site>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {SITE_COLUMNS} FROM sites WHERE id = ?1"))?;
    Ok(stmt.query_row([id], site_from_row).optional()?)
}

pub(crate) fn site_exists(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM sites WHERE id = ?1")?;
    Ok(stmt.exists([id])?)
}

pub(crate) fn site_id_by_code(conn: &Connection, code: &str) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM sites WHERE code = ?1")?;
    Ok(stmt.query_row([code], |r| r.get(0)).optional()?)
}

fn require_meeting(conn: &Connection, id: i64) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM meetings WHERE id = ?1")?;
    if stmt.exists([id])? { Ok(()) } else { Err(StoreError::NotFound(format!("meeting {id}"))) }
}

/// Checks and normalises a site code; the error says what is wrong, without a field prefix.
pub(crate) fn clean_code(code: &str) -> Result<&str, String> {
    let code = code.trim();
    if code.is_empty() {
        return Err("code must not be empty".into());
    }
    if code.chars().count() > MAX_CODE_CHARS {
        return Err(format!("code `{code}` is longer than {MAX_CODE_CHARS} characters"));
    }
    if code.chars().any(char::is_control) {
        return Err(format!("code {code:?} contains control characters"));
    }
    Ok(code)
}

/// Checks and normalises a site name.
pub(crate) fn clean_name(name: &str) -> Result<&str, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("name is longer than {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("name {name:?} contains control characters"));
    }
    Ok(name)
}

/// Checks and normalises a link hint: trimmed, lower-case, empty means none.
pub(crate) fn clean_link_hint(hint: Option<&str>) -> Result<Option<String>, String> {
    let Some(hint) = hint.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    if hint.chars().count() > MAX_LINK_HINT_CHARS {
        return Err(format!("link_hint is longer than {MAX_LINK_HINT_CHARS} characters"));
    }
    if hint.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("link_hint {hint:?} contains spaces or control characters"));
    }
    Ok(Some(hint.to_lowercase()))
}

pub(crate) fn insert_site_in(conn: &Connection, s: &NewSite) -> Result<i64, StoreError> {
    let code = clean_code(&s.code).map_err(StoreError::Invalid)?;
    let name = clean_name(&s.name).map_err(StoreError::Invalid)?;
    let hint = clean_link_hint(s.link_hint.as_deref()).map_err(StoreError::Invalid)?;
    if let Some(p) = s.parent_id
        && !site_exists(conn, p)?
    {
        return Err(StoreError::Invalid(format!("parent_id: no site with id {p}")));
    }
    if let Some(other) = site_id_by_code(conn, code)? {
        return Err(StoreError::Invalid(format!("code `{code}` is already used by site {other}")));
    }
    conn.prepare_cached("INSERT INTO sites (code, name, kind, parent_id, link_hint) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![code, name, s.kind.as_str(), s.parent_id, hint])?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn create_meeting_in(
    conn: &Connection,
    title: &str,
    chair_site_id: i64,
    invited: &[i64],
    created_at_unix: i64,
) -> Result<i64, StoreError> {
    let title = title.trim();
    if title.is_empty() {
        return Err(StoreError::Invalid("title: must not be empty".into()));
    }
    if title.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::Invalid(format!("title: longer than {MAX_NAME_CHARS} characters")));
    }
    if !site_exists(conn, chair_site_id)? {
        return Err(StoreError::Invalid(format!("chair_site_id: no site with id {chair_site_id}")));
    }
    let mut seen = std::collections::HashSet::with_capacity(invited.len());
    let mut list = Vec::with_capacity(invited.len());
    for &id in invited {
        if id == chair_site_id || !seen.insert(id) {
            continue;
        }
        if !site_exists(conn, id)? {
            return Err(StoreError::Invalid(format!("invited: no site with id {id}")));
        }
        list.push(id);
    }
    conn.prepare_cached("INSERT INTO meetings (title, chair_site_id, created_at_unix) VALUES (?1, ?2, ?3)")?
        .execute(params![title, chair_site_id, created_at_unix])?;
    let meeting_id = conn.last_insert_rowid();
    let mut stmt =
        conn.prepare_cached("INSERT INTO meeting_invites (meeting_id, site_id, position) VALUES (?1, ?2, ?3)")?;
    for (pos, id) in (0_i64..).zip(list) {
        stmt.execute(params![meeting_id, id, pos])?;
    }
    Ok(meeting_id)
}

pub(crate) fn meeting_in(conn: &Connection, id: i64) -> Result<Option<Meeting>, StoreError> {
    let head = conn
        .prepare_cached("SELECT title, chair_site_id, created_at_unix FROM meetings WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
        .optional()?;
    let Some((title, chair_site_id, created_at_unix)) = head else {
        return Ok(None);
    };
    let mut stmt =
        conn.prepare_cached("SELECT site_id FROM meeting_invites WHERE meeting_id = ?1 ORDER BY position")?;
    let invited = stmt.query_map([id], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(Some(Meeting { id, title, chair_site_id, invited, created_at_unix }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_and_sync() {
        is_send_sync::<Store>();
    }

    #[test]
    fn link_hints_are_normalised() {
        assert_eq!(clean_link_hint(None), Ok(None));
        assert_eq!(clean_link_hint(Some("  ")), Ok(None));
        assert_eq!(clean_link_hint(Some(" VSAT ")), Ok(Some("vsat".into())));
        assert!(clean_link_hint(Some("4 g")).is_err());
    }
}
