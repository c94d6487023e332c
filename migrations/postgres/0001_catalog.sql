-- lifeboat catalog, schema 1 (PostgreSQL). Keep in step with ../sqlite/0001_catalog.sql:
-- same tables, columns and meaning; only the type names differ.
-- Times are unix milliseconds (UTC) in *_ms columns; durations are seconds in *_secs columns.
-- plan/job are '' when a snapshot or run was not made from a plan (plain `lifeboat backup`).

CREATE TABLE repositories (
    repo_id       TEXT PRIMARY KEY,
    location      TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL
);

CREATE TABLE backup_runs (
    run_id          TEXT PRIMARY KEY,
    repo_id         TEXT NOT NULL,
    plan            TEXT NOT NULL,
    job             TEXT NOT NULL,
    region          TEXT NOT NULL,
    host            TEXT NOT NULL,
    started_ms      BIGINT NOT NULL,
    finished_ms     BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'partial', 'failed')),
    exit_code       BIGINT NOT NULL,
    snapshot_id     TEXT,
    bytes_processed BIGINT NOT NULL,
    bytes_added     BIGINT NOT NULL,
    bytes_stored    BIGINT NOT NULL,
    error           TEXT
);
CREATE INDEX backup_runs_by_time ON backup_runs (started_ms);
CREATE INDEX backup_runs_by_job ON backup_runs (plan, job, region, started_ms);

CREATE TABLE snapshots (
    repo_id         TEXT NOT NULL,
    region          TEXT NOT NULL,
    snapshot_id     TEXT NOT NULL,
    plan            TEXT NOT NULL,
    job             TEXT NOT NULL,
    lineage         TEXT NOT NULL,
    host            TEXT NOT NULL,
    paths           TEXT NOT NULL,
    tags            TEXT NOT NULL,
    time_ms         BIGINT NOT NULL,
    consistency_ms  BIGINT NOT NULL,
    source_kind     TEXT NOT NULL,
    bytes_processed BIGINT NOT NULL,
    bytes_added     BIGINT NOT NULL,
    bytes_stored    BIGINT NOT NULL,
    PRIMARY KEY (repo_id, region, snapshot_id)
);
CREATE INDEX snapshots_by_job ON snapshots (plan, job, region, consistency_ms);

CREATE TABLE drills (
    drill_id        TEXT PRIMARY KEY,
    repo_id         TEXT NOT NULL,
    plan            TEXT NOT NULL,
    job             TEXT NOT NULL,
    region          TEXT NOT NULL,
    snapshot_id     TEXT NOT NULL,
    started_ms      BIGINT NOT NULL,
    finished_ms     BIGINT NOT NULL,
    result          TEXT NOT NULL
        CHECK (result IN ('passed', 'check_failed', 'objective_missed', 'infra_failed')),
    rto_secs        DOUBLE PRECISION,
    rpo_secs        DOUBLE PRECISION,
    rto_target_secs DOUBLE PRECISION,
    rpo_target_secs DOUBLE PRECISION,
    detail          TEXT
);
CREATE INDEX drills_by_job ON drills (plan, job, region, started_ms);

CREATE TABLE drill_phases (
    drill_id   TEXT NOT NULL REFERENCES drills (drill_id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    phase      TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    secs       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (drill_id, seq)
);

CREATE TABLE drill_checks (
    drill_id TEXT NOT NULL REFERENCES drills (drill_id) ON DELETE CASCADE,
    seq      BIGINT NOT NULL,
    name     TEXT NOT NULL,
    passed   BIGINT NOT NULL,
    detail   TEXT NOT NULL,
    PRIMARY KEY (drill_id, seq)
);

-- The verification ledger: one row per pack and region, the last time it was read whole and
-- verified. verified_ms is NULL for a pack that was seen but never read.
CREATE TABLE pack_verifications (
    repo_id       TEXT NOT NULL,
    region        TEXT NOT NULL,
    pack_id       TEXT NOT NULL,
    size          BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    verified_ms   BIGINT,
    ok            BIGINT,
    verified_by   TEXT CHECK (verified_by IN ('verify', 'drill')),
    PRIMARY KEY (repo_id, region, pack_id)
);
CREATE INDEX pack_verifications_by_age ON pack_verifications (repo_id, region, verified_ms);

-- Rollback and deletion detection (SR-14, T15): the newest snapshot ever seen per lineage.
-- Only ever moves forward.
CREATE TABLE high_water (
    repo_id     TEXT NOT NULL,
    region      TEXT NOT NULL,
    lineage     TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    time_ms     BIGINT NOT NULL,
    seen_ms     BIGINT NOT NULL,
    PRIMARY KEY (repo_id, region, lineage)
);
