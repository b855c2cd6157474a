//! Schema migrations.
//!
//! `PRAGMA user_version` holds how many entries of [`MIGRATIONS`] have been applied. Each migration runs in its own
//! transaction together with the version bump, so a crash leaves the database at a whole version. Append new
//! migrations at the end; never edit one that has shipped.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// The migrations, in order. Entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: sites, meetings, invitations, the session log and settings.
    r#"
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY NOT NULL,
        value ANY NOT NULL
    ) STRICT;

    CREATE TABLE sites (
        id        INTEGER PRIMARY KEY,
        code      TEXT NOT NULL UNIQUE CHECK (length(code) > 0),
        name      TEXT NOT NULL CHECK (length(name) > 0),
        kind      TEXT NOT NULL CHECK (kind IN ('province', 'department', 'district', 'commune')),
        parent_id INTEGER REFERENCES sites(id),
        link_hint TEXT
    ) STRICT;
    CREATE INDEX sites_parent ON sites(parent_id);

    CREATE TABLE meetings (
        id              INTEGER PRIMARY KEY,
        title           TEXT NOT NULL,
        chair_site_id   INTEGER NOT NULL REFERENCES sites(id),
        created_at_unix INTEGER NOT NULL
    ) STRICT;

    -- Invited sites, the chair excluded; `position` keeps the order the meeting was created with.
    CREATE TABLE meeting_invites (
        meeting_id INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        site_id    INTEGER NOT NULL REFERENCES sites(id),
        position   INTEGER NOT NULL,
        PRIMARY KEY (meeting_id, site_id)
    ) STRICT;
    CREATE INDEX meeting_invites_order ON meeting_invites(meeting_id, position);

    -- Append-only: join, leave, and whatever else the signalling layer reports.
    CREATE TABLE session_events (
        id         INTEGER PRIMARY KEY,
        meeting_id INTEGER NOT NULL REFERENCES meetings(id),
        site_id    INTEGER NOT NULL REFERENCES sites(id),
        event      TEXT NOT NULL,
        at_unix_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX session_events_meeting ON session_events(meeting_id, id);
    "#,
    // 2: link checks, one row per check a site ran (the latest is its current figure).
    r#"
    CREATE TABLE link_checks (
        id            INTEGER PRIMARY KEY,
        site_id       INTEGER NOT NULL REFERENCES sites(id),
        meeting_id    INTEGER REFERENCES meetings(id),
        at_unix_ms    INTEGER NOT NULL,
        down_kbps     REAL,
        up_kbps       REAL,
        down_loss_pct REAL,
        up_loss_pct   REAL,
        rtt_ms        REAL,
        recommended   TEXT NOT NULL,
        result_json   TEXT NOT NULL
    ) STRICT;
    CREATE INDEX link_checks_site ON link_checks(site_id, id);
    "#,
    // 3: the control log of each meeting (roll call, floor, mutes, lock: `diemcau_proto::control::Logged`), and
    // each site's link quality over a meeting, summed as it goes (one row per site, rewritten every half minute).
    r#"
    CREATE TABLE control_log (
        meeting_id INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        seq        INTEGER NOT NULL CHECK (seq > 0),
        at_unix_ms INTEGER NOT NULL,
        event_json TEXT NOT NULL,
        PRIMARY KEY (meeting_id, seq)
    ) STRICT;

    CREATE TABLE site_quality (
        meeting_id     INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        site_id        INTEGER NOT NULL REFERENCES sites(id),
        samples        INTEGER NOT NULL,
        kbps_sum       REAL NOT NULL,
        loss_sum       REAL NOT NULL,
        loss_samples   INTEGER NOT NULL,
        rtt_sum        REAL NOT NULL,
        rtt_samples    INTEGER NOT NULL,
        lowest_height  INTEGER,
        audio_samples  INTEGER NOT NULL,
        audio_concealed INTEGER NOT NULL,
        updated_unix_ms INTEGER NOT NULL,
        PRIMARY KEY (meeting_id, site_id)
    ) STRICT;
    "#,
];

/// Schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Current `user_version` of the database.
pub(crate) fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Brings the schema up to [`latest_version`]. Idempotent; refuses a database written by a newer build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let latest = latest_version();
    loop {
        // IMMEDIATE: two processes opening the same fresh file serialise here instead of both migrating.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = version(&tx)?;
        if current > latest {
            return Err(StoreError::Invalid(format!(
                "database schema version {current} is newer than this build supports ({latest}); upgrade diemcau"
            )));
        }
        if current == latest {
            tx.commit()?;
            return Ok(());
        }
        let idx = usize::try_from(current)
            .map_err(|_| StoreError::Invalid(format!("database schema version {current} is negative")))?;
        let sql = MIGRATIONS
            .get(idx)
            .ok_or_else(|| StoreError::Invalid(format!("no migration from schema version {current}")))?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
    }
}
