-- Schema 3: what `status` and every metrics scrape need, so that they read the catalog
-- alone and never open a repository (derive a key, list a region). Keep in step with
-- ../sqlite/0003_recovery_sets.sql.

-- Recovery-point sets: one row per committed set manifest and region that holds it
-- (recorded when the manifest commits, when a sync copies it, and by `catalog rebuild`).
-- committed_ms is when lifeboat saw the manifest committed in that region (a backup, or a
-- sync that copied it); NULL for a row rebuilt from the repository, which does not record
-- it. started_ms is the set run's start (the manifest's `time`).
CREATE TABLE recovery_sets (
    repo_id        TEXT NOT NULL,
    region         TEXT NOT NULL,
    manifest_id    TEXT NOT NULL,
    plan           TEXT NOT NULL,
    set_name       TEXT NOT NULL,
    set_id         TEXT NOT NULL,
    started_ms     BIGINT NOT NULL,
    consistency_ms BIGINT NOT NULL,
    committed_ms   BIGINT,
    PRIMARY KEY (repo_id, region, manifest_id)
);
CREATE INDEX recovery_sets_by_set ON recovery_sets (plan, set_name, region, consistency_ms);

-- When the repository was created (its config's `created`): SLO schedule slots before it
-- are not counted. NULL until lifeboat records the repository again after this migration.
ALTER TABLE repositories ADD COLUMN created_ms BIGINT;

-- A drill's measured RTO whether or not its restore tests passed (rto_secs is set only for a
-- drill whose checks all passed); NULL when the drill failed before it measured one, and for
-- drills recorded before schema 3. The RTO trend is computed from it.
ALTER TABLE drills ADD COLUMN measured_rto_secs DOUBLE PRECISION;
