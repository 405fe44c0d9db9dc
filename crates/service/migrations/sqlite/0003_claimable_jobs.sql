-- The claim scans claimable jobs in the order it takes them (due time, then id) and stops at
-- its limit, however long the queue: without this index it gathered and sorted every due job.
CREATE INDEX jobs_claimable ON jobs (run_at, id) WHERE status IN ('pending', 'running');
