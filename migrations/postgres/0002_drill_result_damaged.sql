-- A drill that found the backup damaged records result 'damaged' (exit 13), not
-- 'infra_failed' ("neither proven good nor bad").
ALTER TABLE drills DROP CONSTRAINT IF EXISTS drills_result_check;
ALTER TABLE drills ADD CONSTRAINT drills_result_check
    CHECK (result IN ('passed', 'check_failed', 'objective_missed', 'infra_failed', 'damaged'));
