-- A drill that found the backup damaged records result 'damaged' (exit 13), not
-- 'infra_failed' ("neither proven good nor bad"). SQLite cannot change a CHECK constraint
-- in place: the drill tables are rebuilt. The children are copied first and the old
-- tables dropped children first, so no ON DELETE CASCADE fires on the rows being kept;
-- renaming drills_v2 rewrites the children's references to it.
CREATE TABLE drills_v2 (
    drill_id        TEXT PRIMARY KEY,
    repo_id         TEXT NOT NULL,
    plan            TEXT NOT NULL,
    job             TEXT NOT NULL,
    region          TEXT NOT NULL,
    snapshot_id     TEXT NOT NULL,
    started_ms      INTEGER NOT NULL,
    finished_ms     INTEGER NOT NULL,
    result          TEXT NOT NULL
        CHECK (result IN ('passed', 'check_failed', 'objective_missed', 'infra_failed', 'damaged')),
    rto_secs        REAL,
    rpo_secs        REAL,
    rto_target_secs REAL,
    rpo_target_secs REAL,
    detail          TEXT
);
INSERT INTO drills_v2 SELECT drill_id, repo_id, plan, job, region, snapshot_id, started_ms,
    finished_ms, result, rto_secs, rpo_secs, rto_target_secs, rpo_target_secs, detail FROM drills;

CREATE TABLE drill_phases_v2 (
    drill_id   TEXT NOT NULL REFERENCES drills_v2 (drill_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    phase      TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    secs       REAL NOT NULL,
    PRIMARY KEY (drill_id, seq)
);
INSERT INTO drill_phases_v2 SELECT drill_id, seq, phase, started_ms, secs FROM drill_phases;

CREATE TABLE drill_checks_v2 (
    drill_id TEXT NOT NULL REFERENCES drills_v2 (drill_id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    name     TEXT NOT NULL,
    passed   INTEGER NOT NULL,
    detail   TEXT NOT NULL,
    PRIMARY KEY (drill_id, seq)
);
INSERT INTO drill_checks_v2 SELECT drill_id, seq, name, passed, detail FROM drill_checks;

DROP TABLE drill_checks;
DROP TABLE drill_phases;
DROP TABLE drills;
ALTER TABLE drills_v2 RENAME TO drills;
ALTER TABLE drill_phases_v2 RENAME TO drill_phases;
ALTER TABLE drill_checks_v2 RENAME TO drill_checks;
CREATE INDEX drills_by_job ON drills (plan, job, region, started_ms);
