-- Facts have times and decisions have epochs (see src/handover/machine.rs); the reconciler
-- backs off per thread; an effect job whose outcome is unknown is marked in doubt.
ALTER TABLE threads ADD COLUMN state_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN notified_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN next_check_at BIGINT;
ALTER TABLE threads ADD COLUMN checks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN owner_in_doubt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN returned_at BIGINT;
ALTER TABLE threads ADD COLUMN asked_in_doubt TEXT;
UPDATE threads SET state_at = state_since;
-- Jobs queued by the previous version carry epoch 0: a welcome among them is still owed.
UPDATE threads SET notified_epoch = -1;
UPDATE threads SET next_check_at = state_since + 300000 WHERE state IN ('PASSING', 'RETURNING');
UPDATE threads SET next_check_at = state_since + 86400000 WHERE state = 'HUMAN';
CREATE INDEX threads_next_check ON threads (state, next_check_at);

ALTER TABLE jobs ADD COLUMN in_doubt BIGINT NOT NULL DEFAULT 0;
